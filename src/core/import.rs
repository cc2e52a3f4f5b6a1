//! Import: a stream of memories written into one tenant, at the rate the
//! backend sustains.
//!
//! The transport pushes the stream's memories one at a time; the importer
//! validates each, fills batches of the batch limit and writes them through
//! the same store call as Upsert (so the batcher, the retries and the
//! cache's write tracking apply as they do to any write). At most
//! [`WRITES_IN_FLIGHT`] batches are written at once: while they are, `push`
//! does not return, the transport stops reading, and HTTP/2 flow control
//! holds the client back. So memory stays bounded however long the stream,
//! and a slow backend slows the client instead of queueing.
//!
//! Not atomic, as a batch of unary Upserts would not be: an invalid memory
//! (without `skip_invalid`) ends the stream after everything before it is
//! written, and an error of the store ends it after the writes in flight
//! have settled.

use std::collections::HashSet;
use std::mem;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::auth::Caller;
use crate::backend::{TenantMemory, VectorStore};
use crate::error::{Error, Result};
use crate::model::{
    Access, ImportRejection, ImportSummary, ImportTarget, Memory, Validator, Violations,
};

use super::{Core, WriteDefaults};

/// Batches being written at once. Both backends apply concurrent writes
/// faster than one at a time (the batcher coalesces them; Qdrant updates
/// segments in parallel), and four batches are little memory.
const WRITES_IN_FLIGHT: usize = 4;
/// Rejections an Import reports one by one; later ones are only counted.
const MAX_REJECTIONS: usize = 100;

/// One Import stream, open for memories.
pub struct Importer<'a> {
    core: &'a Core,
    target: ImportTarget,
    store: Arc<dyn VectorStore>,
    /// Checks each memory against the namespace.
    validator: Validator<'a>,
    /// What each memory stored gets filled in.
    defaults: WriteDefaults<'a>,
    /// The batch being filled.
    batch: Vec<TenantMemory>,
    batch_size: usize,
    /// The writes in flight; each answers with the ids it wrote.
    writes: FuturesUnordered<BoxFuture<'static, (Vec<String>, Result<u64>)>>,
    /// The ids of the batch being filled and of the writes in flight. A
    /// memory with one of them waits until they have all settled, so that
    /// the later memory of an id is written last and wins.
    unsettled_ids: HashSet<String>,
    /// The position of the next memory pushed.
    position: u64,
    summary: ImportSummary,
}

impl Core {
    /// Opens an Import stream: the namespace exists, the tenant is valid,
    /// and `caller` may write for it. The stream is charged once to the
    /// tenant's write rate budget, as one call.
    pub fn import(&self, caller: &Caller, target: ImportTarget) -> Result<Importer<'_>> {
        let mut validator = self.validator("namespace", &target.namespace)?;
        validator.import_target(&target.tenant);
        validator.take_violations().into_result(())?;
        self.authorize(caller, &target.tenant, Access::Write)?;
        let batch_size = self.limits.max_batch.get();
        Ok(Importer {
            core: self,
            store: self.store.clone(),
            validator,
            defaults: self.write_defaults(&target.namespace),
            target,
            batch: Vec::with_capacity(batch_size),
            batch_size,
            writes: FuturesUnordered::new(),
            unsettled_ids: HashSet::new(),
            position: 0,
            summary: ImportSummary::default(),
        })
    }
}

impl Importer<'_> {
    /// Takes the stream's next memory, with what converting it found wrong
    /// (fields named relative to the memory). Returns when it is part of a
    /// batch, which may mean waiting for a write to settle.
    pub async fn push(&mut self, memory: Memory, conversion: Violations) -> Result<()> {
        let now = SystemTime::now();
        if conversion.is_empty() && memory.expires_at.is_some_and(|at| at <= now) {
            self.position += 1;
            self.summary.expired += 1;
            return Ok(());
        }
        let mut violations = conversion;
        self.validator.memory("", &memory, now);
        violations.add_all(self.validator.take_violations());
        if !violations.is_empty() {
            return self.reject(memory.id, violations).await;
        }
        self.position += 1;
        if self.unsettled_ids.contains(&memory.id) {
            self.settle().await?;
        }
        let item = self.defaults.to_store(&self.target.tenant, memory, now);
        self.unsettled_ids.insert(item.memory.id.clone());
        self.batch.push(item);
        if self.batch.len() >= self.batch_size {
            self.write_batch().await?;
        }
        Ok(())
    }

    /// Reports the stream's next memory invalid (fields named relative to
    /// it): skipped with `skip_invalid`, else the end of the stream, once
    /// everything before it is written.
    pub async fn reject(&mut self, id: String, violations: Violations) -> Result<()> {
        let position = self.position;
        self.position += 1;
        let violations = violations.under(&format!("memories[{position}]"));
        if !self.target.skip_invalid {
            self.settle().await?;
            return Err(Error::InvalidArgument(violations));
        }
        self.summary.rejected += 1;
        if self.summary.rejections.len() < MAX_REJECTIONS {
            self.summary.rejections.push(ImportRejection {
                position,
                id,
                violations,
            });
        }
        Ok(())
    }

    /// Writes what is left and answers once every memory is durable.
    pub async fn finish(mut self) -> Result<ImportSummary> {
        self.settle().await?;
        Ok(self.summary)
    }

    /// Writes the batch being filled and waits for every write to settle.
    async fn settle(&mut self) -> Result<()> {
        self.start_write();
        self.drain().await
    }

    /// Waits for every write in flight to settle; the first error, if any,
    /// once none is in flight, so nothing is written after the stream has
    /// been answered.
    async fn drain(&mut self) -> Result<()> {
        let mut outcome = Ok(());
        while !self.writes.is_empty() {
            let settled = self.next_written().await;
            outcome = outcome.and(settled);
        }
        outcome
    }

    /// Sends the batch being filled, after waiting for a write to settle
    /// if as many as allowed are in flight.
    async fn write_batch(&mut self) -> Result<()> {
        if self.writes.len() >= WRITES_IN_FLIGHT
            && let Err(error) = self.next_written().await
        {
            let _ = self.drain().await;
            return Err(error);
        }
        self.start_write();
        Ok(())
    }

    fn start_write(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        let ids = batch.iter().map(|item| item.memory.id.clone()).collect();
        let store = self.store.clone();
        let namespace = self.target.namespace.clone();
        self.writes.push(Box::pin(async move {
            let written = batch.len() as u64;
            (ids, store.upsert(&namespace, batch).await.map(|()| written))
        }));
    }

    /// Waits for one write in flight to settle and counts it.
    async fn next_written(&mut self) -> Result<()> {
        let Some((ids, written)) = self.writes.next().await else {
            return Ok(());
        };
        for id in ids {
            self.unsettled_ids.remove(&id);
        }
        // As after any write, failed or not: cached reads of the tenant
        // are no longer current.
        self.core
            .cache
            .written(&self.target.namespace, &self.target.tenant);
        self.summary.imported += written?;
        Ok(())
    }
}
