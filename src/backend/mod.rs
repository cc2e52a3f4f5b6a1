//! The storage boundary: one trait, [`VectorStore`], implemented by the
//! embedded engine and (in production) by Qdrant.
//!
//! The trait takes batch-shaped calls where every item carries its own tenant
//! (`upsert` of many memories, `search` of many queries, `get` of many keys),
//! so the batching layer can coalesce concurrent callers into one backend call
//! without a second API. Inputs are already validated by the core; a backend
//! only translates and executes. Every call is confined to the tenants named
//! in its items: a backend adds the tenant condition to every read and write.
//! Every read also leaves out the memories expired at the time of the call
//! (by condition in the query, or for a get by id after it), the same way
//! on every backend ([`layout`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::SystemTime;

use async_trait::async_trait;
use uuid::Uuid;

use crate::backup::SnapshotCopy;
use crate::error::Result;
use crate::model::{Boost, DeleteSelector, ExpiryChange, Filter, Memory, Payload, ScoredMemory};

pub mod boost;
pub mod embedded;
pub mod layout;
pub mod qdrant;
pub mod score;
pub mod text;

use text::{SparseVector, TextChange, TextQuery};

/// A memory to write, with the tenant that owns it.
#[derive(Debug, Clone)]
pub struct TenantMemory {
    pub tenant: String,
    /// `id` is non-empty and `updated_at` is set by the core.
    pub memory: Memory,
    /// The BM25 vector of the memory's text, in a namespace with a text
    /// field and a memory with text there ([`text`]).
    pub text: Option<SparseVector>,
}

/// One search of one tenant. `limit` is resolved (never 0).
#[derive(Debug, Clone)]
pub struct TenantSearch {
    pub tenant: String,
    /// The dense query; `None` for a search by text alone.
    pub vector: Option<Vec<f32>>,
    /// The text query; with a vector too, both rankings are fused.
    pub text: Option<TextQuery>,
    pub limit: usize,
    /// Inclusive: a hit scoring exactly this is returned ([`score`]).
    pub min_score: Option<f32>,
    pub filter: Filter,
    /// Ids of the tenant's memories that are never hits (the examples of a
    /// "more like this" search).
    pub exclude_ids: Vec<String>,
    /// Ranks the most similar memories by [`boost::formula`] instead.
    pub boost: Option<TimedBoost>,
    pub with_payload: bool,
    pub with_vector: bool,
}

/// A search's boost, and the time its recency is measured from.
#[derive(Debug, Clone)]
pub struct TimedBoost {
    pub boost: Boost,
    pub now: SystemTime,
}

/// Addresses one memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemoryKey {
    pub tenant: String,
    pub id: String,
}

/// One delete of one tenant.
#[derive(Debug, Clone)]
pub struct TenantDelete {
    pub tenant: String,
    pub selector: DeleteSelector,
}

/// A page request of a scroll. `limit` is resolved (never 0).
#[derive(Debug, Clone)]
pub struct ScrollQuery {
    pub filter: Filter,
    pub limit: usize,
    /// Point id to start from (inclusive), from the previous page.
    pub offset: Option<Uuid>,
    pub with_vector: bool,
}

/// A page of a scroll and where the next one starts.
#[derive(Debug, Clone)]
pub struct StorePage {
    pub memories: Vec<Memory>,
    pub next_offset: Option<Uuid>,
}

/// A payload change for existing memories of one tenant.
#[derive(Debug, Clone)]
pub struct PayloadUpdate {
    pub tenant: String,
    pub ids: Vec<String>,
    pub payload: Payload,
    /// Replace the whole payload instead of merging keys into it.
    pub replace: bool,
    pub updated_at: SystemTime,
    /// What the change does to the memories' text vector.
    pub text: TextChange,
    /// What it does to their expiry.
    pub expiry: ExpiryChange,
}

/// Size and index state of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceStats {
    pub points_count: u64,
    pub indexed_vectors_count: u64,
    /// True while vectors wait for the index to be built.
    pub indexing: bool,
    /// Whether the namespace's collection holds text vectors (it has a
    /// `text_field` and was created with one).
    pub text_search: bool,
}

#[async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// Inserts or replaces memories. Returns once they are durable.
    async fn upsert(&self, namespace: &str, memories: Vec<TenantMemory>) -> Result<()>;

    /// Runs searches; one result list per search, in order, best first.
    async fn search(
        &self,
        namespace: &str,
        searches: Vec<TenantSearch>,
    ) -> Result<Vec<Vec<ScoredMemory>>>;

    /// Fetches memories; one entry per key, in order, `None` where absent.
    async fn get(
        &self,
        namespace: &str,
        keys: Vec<MemoryKey>,
        with_vector: bool,
    ) -> Result<Vec<Option<Memory>>>;

    /// Applies deletes. Returns once they are durable.
    async fn delete(&self, namespace: &str, deletes: Vec<TenantDelete>) -> Result<()>;

    /// Lists a tenant's memories in a stable order, one page at a time.
    async fn scroll(&self, namespace: &str, tenant: &str, query: ScrollQuery) -> Result<StorePage>;

    /// Counts a tenant's memories matching `filter`, exactly.
    async fn count(&self, namespace: &str, tenant: &str, filter: Filter) -> Result<u64>;

    /// Changes the payload of those `ids` that exist; absent ids are skipped.
    /// Returns once the change is durable.
    async fn update_payload(&self, namespace: &str, update: PayloadUpdate) -> Result<()>;

    /// Deletes up to `limit` memories, of any tenant, expired at `now`.
    /// Returns how many it deleted; fewer than `limit` means it found no
    /// more. Returns once the deletes are durable.
    async fn delete_expired(&self, namespace: &str, now: SystemTime, limit: usize)
    -> Result<usize>;

    /// Reports a namespace's size and index state (`points_count` counts
    /// the expired memories not yet deleted).
    async fn stats(&self, namespace: &str) -> Result<NamespaceStats>;

    /// Whether the store can serve requests now.
    async fn is_ready(&self) -> bool;

    /// A consistent copy of every namespace's data, taken while the store
    /// serves; [`Error::SnapshotUnavailable`] where vecmem does not hold the
    /// data itself (Qdrant).
    async fn snapshot(&self) -> Result<SnapshotCopy>;

    /// Persists what is buffered and stops background work.
    async fn close(&self) -> Result<()>;
}

/// One answer per key of a get, from the memories a backend found, by point
/// id (`ids[i]` is the point of `keys[i]`) with the tenant stored with each.
/// `None` for a key whose point is missing, expired at `now`, or stored for
/// another tenant (ids are derived from the tenant; that check is defence
/// in depth). A key named twice gets its memory twice: each memory is
/// copied for the earlier mentions and moved out at its last.
pub(crate) fn answer_keys<Id: Eq + Hash>(
    keys: &[MemoryKey],
    ids: &[Id],
    mut found: HashMap<Id, (String, Memory)>,
    now: SystemTime,
) -> Vec<Option<Memory>> {
    // A get reads points by id, which no filter applies to; the expired are
    // left out here instead, by the same rule the filters of other reads use.
    found.retain(|_, (_, memory)| !layout::is_expired(memory.expires_at, now));
    let last_mention: HashMap<&Id, usize> = ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
    keys.iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (key, id))| {
            if found
                .get(id)
                .is_none_or(|(tenant, _)| *tenant != key.tenant)
            {
                return None;
            }
            if last_mention.get(id) == Some(&i) {
                found.remove(id).map(|(_, memory)| memory)
            } else {
                found.get(id).map(|(_, memory)| memory.clone())
            }
        })
        .collect()
}
