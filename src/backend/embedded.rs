//! `EmbeddedStore`: Qdrant's engine in-process (`qdrant-edge`), one shard per
//! namespace under `backend.embedded.path`, so vecmem runs with nothing else
//! installed.
//!
//! The engine is synchronous, so every call runs on tokio's blocking pool,
//! never on the async workers; a background thread builds indexes. Writes of
//! a namespace run one at a time; each is applied to the engine and made
//! durable in the journal before it is acknowledged, and never waits for an
//! index build (see `journal` for why the engine's own `flush()` cannot do
//! this). Between index builds the indexer checkpoints: it flushes the
//! engine and empties the journal. A snapshot copies a namespace's files at
//! a checkpoint, pausing its writes (not its reads) for the copy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use qdrant_edge::{
    CountRequest, EdgeShard, Filter as EdgeFilter, PayloadOps, PointId, PointInsertOperations,
    PointOperations, PointStructPersisted, ScrollRequest, SetPayloadOp, UpdateOperation,
    WithPayloadInterface, WithVector,
};
use tokio::sync::Mutex;

use crate::backend::layout;
use crate::backend::text::TextChange;
use crate::backend::{
    MemoryKey, NamespaceStats, PayloadUpdate, ScrollQuery, StorePage, TenantDelete, TenantMemory,
    TenantSearch, VectorStore, answer_keys,
};
use crate::backup::{self, SnapshotCopy};
use crate::config::{Distance, EmbeddedConfig, NamespaceConfig};
use crate::error::{Error, Result};
use crate::model::{DeleteSelector, Filter, Memory, ScoredMemory};

mod engine_wal;
mod indexer;
mod journal;
mod open;
mod pacing;
mod search;
mod translate;

use indexer::Indexer;
use journal::{Entry, Journal};
use open::open_shard;
use pacing::Pacer;
use search::search_one;
use translate::{live_filter, tenant_filter, tenant_ids_filter};

/// Ids per page when a delete by filter looks up the points it removes.
const DELETE_PAGE: usize = 1024;

pub struct EmbeddedStore {
    /// `backend.embedded.path`: a directory per namespace, and the staging
    /// area of snapshots.
    path: PathBuf,
    shards: HashMap<String, Arc<Shard>>,
    indexer: std::sync::Mutex<Option<Indexer>>,
}

/// One namespace's engine shard.
struct Shard {
    name: String,
    dir: PathBuf,
    distance: Distance,
    /// Whether the shard holds text vectors (it was created with them).
    has_text: bool,
    engine: EdgeShard,
    /// Held by a write while it changes the engine and appends, by a
    /// checkpoint, and by a scroll for a page.
    journal: Arc<Mutex<Journal>>,
    /// Held by a write from before it takes `journal` until its pacing
    /// pause is over: writes run one at a time, and a paused write holds
    /// the next write back without holding `journal`, so scroll pages wait
    /// for the write in progress only, not for the queue of paced ones.
    write_turn: Mutex<()>,
    /// Held by an index build and by a checkpoint: the engine's `flush()`
    /// must never run beside `optimize()`.
    maintenance: std::sync::Mutex<()>,
    /// Bumped on every write; the indexer records the value it caught up with.
    writes: AtomicU64,
    indexed_through: AtomicU64,
    /// Snapshots waiting for `maintenance`: the indexer starts no pass
    /// while there are any, so under steady writes (a pass after every
    /// pass) a snapshot waits for one build at most.
    snapshots_waiting: AtomicUsize,
    /// Slows the namespace's writes while too much of it is unindexed.
    pacer: Pacer,
}

impl EmbeddedStore {
    /// Opens (or creates) a shard per namespace and starts the indexer.
    /// Fails if existing data disagrees with the configured dim or distance.
    pub fn open(
        config: &EmbeddedConfig,
        namespaces: &BTreeMap<String, NamespaceConfig>,
    ) -> anyhow::Result<Self> {
        let mut store = Self::open_unindexed(config, namespaces)?;
        let shards = store.shards.values().cloned().collect();
        let indexer = Indexer::spawn(shards, config.optimize_interval)?;
        store.indexer = std::sync::Mutex::new(Some(indexer));
        Ok(store)
    }

    /// Opens the data as [`open`](Self::open) does, journals replayed, but
    /// starts no indexer: for checking that data opens (`vecmem restore`),
    /// where an index build would only be abandoned at `close`.
    pub fn open_unindexed(
        config: &EmbeddedConfig,
        namespaces: &BTreeMap<String, NamespaceConfig>,
    ) -> anyhow::Result<Self> {
        backup::clear_staging(&config.path).map_err(|err| {
            anyhow::anyhow!(
                "cannot remove old snapshot copies from {}: {err}",
                config.path.display()
            )
        })?;
        let mut shards = HashMap::new();
        for (name, ns) in namespaces {
            let dir = config.path.join(name);
            let wal = dir.join("wal");
            let freed = engine_wal::truncate(&wal).map_err(|err| {
                anyhow::anyhow!("namespace {name}: cannot truncate {}: {err}", wal.display())
            })?;
            if freed > 0 {
                tracing::info!(namespace = %name, freed_bytes = freed, "engine WAL truncated");
            }
            let (engine, has_text) = open_shard(name, &dir, ns)?;
            let journal = recover(name, &dir, &engine)?;
            let shard = Shard {
                name: name.clone(),
                dir,
                distance: ns.distance,
                has_text,
                engine,
                journal: Arc::new(Mutex::new(journal)),
                write_turn: Mutex::new(()),
                maintenance: std::sync::Mutex::new(()),
                writes: AtomicU64::new(1),
                indexed_through: AtomicU64::new(0),
                snapshots_waiting: AtomicUsize::new(0),
                pacer: Pacer::new(
                    name,
                    config.max_unindexed_points,
                    ns.dim(),
                    ns.indexing_threshold_kb,
                ),
            };
            shards.insert(name.clone(), Arc::new(shard));
        }
        Ok(Self {
            path: config.path.clone(),
            shards,
            indexer: std::sync::Mutex::new(None),
        })
    }

    fn shard(&self, namespace: &str) -> Result<Arc<Shard>> {
        self.shards
            .get(namespace)
            .cloned()
            .ok_or_else(|| Error::NamespaceNotFound(namespace.to_owned()))
    }

    /// Runs a read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        namespace: &str,
        f: impl FnOnce(&EdgeShard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shard = self.shard(namespace)?;
        tokio::task::spawn_blocking(move || f(&shard.engine))
            .await
            .map_err(Error::internal)?
    }

    /// Runs a write on the blocking pool, alone among the namespace's writes:
    /// `change` applies it to the engine and says what it left behind, which
    /// is journaled before this returns `Ok`. The write is durable then.
    async fn write(
        &self,
        namespace: &str,
        change: impl FnOnce(&EdgeShard) -> Result<Entry> + Send + 'static,
    ) -> Result<()> {
        self.write_and_tell(namespace, |engine| Ok((change(engine)?, ())))
            .await
    }

    /// [`Self::write`], where `change` also answers something about what
    /// it did (the write is journaled before the answer is returned).
    async fn write_and_tell<T: Send + 'static>(
        &self,
        namespace: &str,
        change: impl FnOnce(&EdgeShard) -> Result<(Entry, T)> + Send + 'static,
    ) -> Result<T> {
        let shard = self.shard(namespace)?;
        let turn = shard.write_turn.lock().await;
        let mut journal = shard.journal.clone().lock_owned().await;
        let applying = shard.clone();
        let (answer, pause) = tokio::task::spawn_blocking(move || {
            let shard = applying;
            shard.writes.fetch_add(1, Ordering::SeqCst);
            let (entry, answer) = change(&shard.engine)?;
            journal.append(&entry).map_err(Error::internal)?;
            let added = match &entry {
                Entry::Put(points) => points.len(),
                Entry::Remove(_) => 0,
            };
            let pause = shard.pacer.pause(added, || {
                pacing::unindexed_points(&shard.engine, &shard.engine.info(), shard.has_text)
            });
            drop(journal);
            Ok::<_, Error>((answer, pause))
        })
        .await
        .map_err(Error::internal)??;
        // Durable already; the pause holds the namespace's next write back,
        // not its reads.
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        drop(turn);
        Ok(answer)
    }
}

impl Shard {
    /// Flushes the engine and empties the journal, if it holds anything.
    /// The caller holds `maintenance`.
    fn checkpoint(&self, journal: &mut Journal) -> Result<()> {
        if journal.is_empty() {
            return Ok(());
        }
        self.engine.flush();
        journal.clear().map_err(Error::internal)
    }

    /// Copies the namespace's files into `into` at a checkpoint: they then
    /// hold every write acknowledged so far, and the journal is empty.
    /// Writes wait for the copy (they would change the files under it);
    /// reads go on. An index build in progress finishes first, while writes
    /// still flow. The engine's own WAL is copied too, as far as it numbers
    /// the next write ([`engine_wal`]): the engine ignores a write numbered
    /// below the version a point already has.
    fn copy_into(&self, into: &Path) -> Result<()> {
        self.snapshots_waiting.fetch_add(1, Ordering::SeqCst);
        let maintenance = self.maintenance.lock();
        self.snapshots_waiting.fetch_sub(1, Ordering::SeqCst);
        let _maintenance = maintenance.unwrap_or_else(PoisonError::into_inner);
        let mut journal = self.journal.blocking_lock();
        self.checkpoint(&mut journal)?;
        let copied = engine_wal::superseded_segments(&self.dir.join("wal")).and_then(|skip| {
            backup::copy_tree(&self.dir, into, &|path| skip.iter().any(|s| s == path))
        });
        copied.map_err(|err| Error::internal(format!("copying namespace {}: {err}", self.name)))
    }

    /// Runs one indexing pass, then a checkpoint; true if the pass did work.
    /// Gives way to a waiting snapshot instead.
    fn optimize(&self) -> bool {
        if self.snapshots_waiting.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let _maintenance = self
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let writes_seen = self.writes.load(Ordering::SeqCst);
        let worked = match self.engine.optimize() {
            Ok(true) => true,
            Ok(false) => {
                self.indexed_through.store(writes_seen, Ordering::SeqCst);
                false
            }
            Err(err) => {
                tracing::error!(namespace = %self.name, error = %err, "index build failed");
                false
            }
        };
        let mut journal = self.journal.blocking_lock();
        if let Err(err) = self.checkpoint(&mut journal) {
            tracing::error!(namespace = %self.name, error = %err, "checkpoint failed");
        }
        worked
    }
}

/// Replays the journal of the namespace in `dir` onto its engine, then
/// checkpoints: the engine then holds every acknowledged write.
fn recover(name: &str, dir: &Path, engine: &EdgeShard) -> anyhow::Result<Journal> {
    let (mut journal, replayed) = Journal::open(dir, |entry| {
        engine.update(operation(entry))?;
        Ok::<_, anyhow::Error>(())
    })
    .map_err(|err| anyhow::anyhow!("namespace {name}: cannot replay its journal: {err}"))?;
    if replayed > 0 {
        engine.flush();
        journal.clear()?;
        tracing::info!(namespace = name, entries = replayed, "journal replayed");
    }
    Ok(journal)
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    async fn upsert(&self, namespace: &str, memories: Vec<TenantMemory>) -> Result<()> {
        let has_text = self.shard(namespace)?.has_text;
        let points: Vec<_> = memories
            .iter()
            .map(|memory| translate::to_point(memory, has_text))
            .collect();
        self.write(namespace, move |engine| {
            let entry = Entry::Put(points);
            apply(engine, operation(entry.clone()))?;
            Ok(entry)
        })
        .await
    }

    async fn search(
        &self,
        namespace: &str,
        searches: Vec<TenantSearch>,
    ) -> Result<Vec<Vec<ScoredMemory>>> {
        let shard = self.shard(namespace)?;
        if !shard.has_text && searches.iter().any(|search| search.text.is_some()) {
            return Err(Error::TextSearchUnavailable(namespace.to_owned()));
        }
        let now = SystemTime::now();
        self.read(namespace, move |engine| {
            searches
                .into_iter()
                .map(|search| search_one(engine, shard.distance, search, now))
                .collect()
        })
        .await
    }

    async fn get(
        &self,
        namespace: &str,
        keys: Vec<MemoryKey>,
        with_vector: bool,
    ) -> Result<Vec<Option<Memory>>> {
        self.read(namespace, move |engine| {
            let ids: Vec<PointId> = keys
                .iter()
                .map(|key| PointId::Uuid(layout::point_id(&key.tenant, &key.id)))
                .collect();
            let records = engine
                .retrieve(
                    &ids,
                    Some(translate::payload_selector(true)?),
                    Some(translate::vectors_selector(with_vector)),
                )
                .map_err(Error::internal)?;
            // The engine answers each point once, however often it was named.
            let mut found = HashMap::with_capacity(records.len());
            for record in records {
                let Some(tenant) = translate::stored_tenant(record.payload.as_ref()) else {
                    continue;
                };
                let tenant = tenant.to_owned();
                if let Some(memory) = translate::to_memory(record.payload, record.vector, true) {
                    found.insert(record.id, (tenant, memory));
                }
            }
            Ok(answer_keys(&keys, &ids, found, SystemTime::now()))
        })
        .await
    }

    async fn delete(&self, namespace: &str, deletes: Vec<TenantDelete>) -> Result<()> {
        // A filter is resolved to the ids it matches inside the write, so the
        // journal records exactly the points removed.
        let mut ids = Vec::new();
        let mut filters = Vec::new();
        for delete in deletes {
            match delete.selector {
                DeleteSelector::Ids(named) => ids.extend(
                    named
                        .iter()
                        .map(|id| PointId::Uuid(layout::point_id(&delete.tenant, id))),
                ),
                DeleteSelector::Filter(filter) => {
                    filters.push(tenant_filter(&delete.tenant, &filter)?)
                }
                DeleteSelector::All => {
                    filters.push(tenant_filter(&delete.tenant, &Filter::default())?)
                }
            }
        }
        self.write(namespace, move |engine| {
            for filter in filters {
                ids.extend(matching_ids(engine, filter, usize::MAX)?);
            }
            let entry = Entry::Remove(ids);
            if !entry.is_empty() {
                apply(engine, operation(entry.clone()))?;
            }
            Ok(entry)
        })
        .await
    }

    async fn scroll(&self, namespace: &str, tenant: &str, query: ScrollQuery) -> Result<StorePage> {
        let filter = live_filter(tenant, &query.filter, SystemTime::now())?;
        // The engine reads a page in two steps, its point ids and then their
        // records, and drops an id whose point was deleted in between. The
        // page then comes back short and, as the engine tells the end of the
        // paging by a short page, without its next offset: an export would
        // stop early. Holding the namespace's writes off for the page keeps
        // every point of it in place, as Qdrant's server does with its
        // update lock around the same two steps (qdrant-edge 0.7.2 has none).
        let _writes = self.shard(namespace)?.journal.clone().lock_owned().await;
        self.read(namespace, move |engine| {
            let (records, next) = engine
                .scroll(ScrollRequest {
                    offset: query.offset.map(PointId::Uuid),
                    limit: Some(query.limit),
                    filter: Some(filter),
                    with_payload: Some(translate::payload_selector(true)?),
                    with_vector: translate::vectors_selector(query.with_vector),
                    order_by: None,
                })
                .map_err(Error::internal)?;
            let memories = records
                .into_iter()
                .filter_map(|r| translate::to_memory(r.payload, r.vector, true))
                .collect();
            Ok(StorePage {
                memories,
                next_offset: next.as_ref().and_then(translate::uuid_of),
            })
        })
        .await
    }

    async fn count(&self, namespace: &str, tenant: &str, filter: Filter) -> Result<u64> {
        let filter = live_filter(tenant, &filter, SystemTime::now())?;
        self.read(namespace, move |engine| {
            let count = engine
                .count(CountRequest {
                    filter: Some(filter),
                    exact: true,
                })
                .map_err(Error::internal)?;
            Ok(count as u64)
        })
        .await
    }

    async fn update_payload(&self, namespace: &str, update: PayloadUpdate) -> Result<()> {
        let ids: Vec<_> = update
            .ids
            .iter()
            .map(|id| layout::point_id(&update.tenant, id))
            .collect();
        let filter = tenant_ids_filter(&update.tenant, &ids)?;
        let operations = layout::payload_writes(
            update.payload,
            update.replace,
            update.updated_at,
            update.expiry,
        )
        .into_iter()
        .map(|write| {
            let key = write
                .key
                .map(|k| k.parse().map_err(|_| Error::internal("payload field path")))
                .transpose()?;
            Ok(UpdateOperation::PayloadOperation(PayloadOps::SetPayload(
                SetPayloadOp {
                    payload: qdrant_edge::Payload(write.fields.into_iter().collect()),
                    points: None,
                    filter: Some(filter.clone()),
                    key,
                },
            )))
        })
        .collect::<Result<Vec<_>>>()?;
        let ids: Vec<_> = ids.into_iter().map(PointId::Uuid).collect();
        let text = match update.text {
            _ if !self.shard(namespace)?.has_text => TextChange::Keep,
            change => change,
        };
        self.write(namespace, move |engine| {
            for set_payload in operations {
                apply(engine, set_payload)?;
            }
            // Writes run one at a time, so the ids that exist now are those
            // the payload change reached.
            let mut points = after_images(engine, &ids)?;
            if text != TextChange::Keep {
                for point in &mut points {
                    translate::set_text(point, &text);
                }
                apply(engine, operation(Entry::Put(points.clone())))?;
            }
            Ok(Entry::Put(points))
        })
        .await
    }

    async fn delete_expired(
        &self,
        namespace: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<usize> {
        let filter = translate::expired_filter(now)?;
        // Found inside the write, which runs alone: no upsert can give one
        // of these memories a new life between finding and deleting it.
        self.write_and_tell(namespace, move |engine| {
            let ids = matching_ids(engine, filter, limit)?;
            let deleted = ids.len();
            let entry = Entry::Remove(ids);
            if !entry.is_empty() {
                apply(engine, operation(entry.clone()))?;
            }
            Ok((entry, deleted))
        })
        .await
    }

    async fn stats(&self, namespace: &str) -> Result<NamespaceStats> {
        let shard = self.shard(namespace)?;
        let indexing =
            shard.indexed_through.load(Ordering::SeqCst) < shard.writes.load(Ordering::SeqCst);
        let has_text = shard.has_text;
        self.read(namespace, move |engine| {
            let info = engine.info();
            Ok(NamespaceStats {
                points_count: info.points_count as u64,
                indexed_vectors_count: info.indexed_vectors_count as u64,
                indexing,
                text_search: has_text,
            })
        })
        .await
    }

    async fn is_ready(&self) -> bool {
        true
    }

    /// One namespace at a time, in name order, so only one namespace's
    /// writes wait at any moment.
    async fn snapshot(&self) -> Result<SnapshotCopy> {
        let mut copy = SnapshotCopy::create(&self.path)?;
        let mut names: Vec<&String> = self.shards.keys().collect();
        names.sort();
        for name in names {
            let shard = self.shard(name)?;
            let into = copy.add_namespace(name);
            tokio::task::spawn_blocking(move || shard.copy_into(&into))
                .await
                .map_err(Error::internal)??;
        }
        Ok(copy)
    }

    async fn close(&self) -> Result<()> {
        let indexer = self
            .indexer
            .lock()
            .map_err(|_| Error::internal("indexer lock poisoned"))?
            .take();
        if let Some(indexer) = indexer {
            indexer.stop();
        }
        for shard in self.shards.values() {
            // Waits for the write in progress; later ones find the journal
            // empty or append after the checkpoint, durable either way.
            let mut journal = shard.journal.clone().lock_owned().await;
            let shard = shard.clone();
            tokio::task::spawn_blocking(move || match shard.maintenance.try_lock() {
                Ok(_maintenance) => shard.checkpoint(&mut journal),
                Err(_) => {
                    tracing::info!(
                        namespace = %shard.name,
                        "index build still running; its journal is replayed at the next start"
                    );
                    Ok(())
                }
            })
            .await
            .map_err(Error::internal)??;
        }
        Ok(())
    }
}

/// The engine operation that leaves what `entry` records: what a write
/// applies, and what replaying the journal applies again.
fn operation(entry: Entry) -> UpdateOperation {
    UpdateOperation::PointOperation(match entry {
        Entry::Put(points) => {
            PointOperations::UpsertPoints(PointInsertOperations::PointsList(points))
        }
        Entry::Remove(ids) => PointOperations::DeletePoints { ids },
    })
}

fn apply(engine: &EdgeShard, operation: UpdateOperation) -> Result<()> {
    engine.update(operation).map_err(Error::internal)
}

/// The ids of the points `filter` matches, the first `limit` of them.
fn matching_ids(engine: &EdgeShard, filter: EdgeFilter, limit: usize) -> Result<Vec<PointId>> {
    let mut ids = Vec::new();
    let mut offset = None;
    loop {
        let (records, next) = engine
            .scroll(ScrollRequest {
                offset,
                limit: Some(DELETE_PAGE.min(limit - ids.len())),
                filter: Some(filter.clone()),
                with_payload: Some(WithPayloadInterface::Bool(false)),
                with_vector: WithVector::Bool(false),
                order_by: None,
            })
            .map_err(Error::internal)?;
        ids.extend(records.into_iter().map(|record| record.id));
        match next {
            Some(next) if ids.len() < limit => offset = Some(next),
            _ => return Ok(ids),
        }
    }
}

/// The points among `ids` that exist, whole: what the journal keeps of a
/// payload change.
fn after_images(engine: &EdgeShard, ids: &[PointId]) -> Result<Vec<PointStructPersisted>> {
    let records = engine
        .retrieve(
            ids,
            Some(WithPayloadInterface::Bool(true)),
            Some(WithVector::Bool(true)),
        )
        .map_err(Error::internal)?;
    Ok(records
        .into_iter()
        .filter_map(|record| {
            Some(PointStructPersisted {
                id: record.id,
                vector: record.vector?.into(),
                payload: record.payload,
            })
        })
        .collect())
}
