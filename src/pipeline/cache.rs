//! The result cache for Search, SearchBatch and Get: correctness over hit
//! rate.
//!
//! A key is exact: namespace, tenant, every field that shapes the answer
//! (query vector bits, filter, limit, min_score, projection; or the ids and
//! projection of a get) and the tenant's *write generation*. The generation
//! is read before the store is asked and bumped after every write of that
//! tenant returns, so a search that started before a write and finishes after
//! it can only fill an entry under the old generation, which no later read
//! looks up: a client never reads older than its own acknowledged write
//! through this replica. Across replicas nothing is shared; the TTL bounds how
//! long another replica's write may stay unseen.
//!
//! Generations live in a fixed array of counters indexed by a hash of
//! (namespace, tenant). Two tenants that share a slot invalidate each other's
//! entries now and then, which costs hits, never correctness, and the memory
//! used does not grow with the number of tenants.
//!
//! Concurrent identical misses are coalesced into one store call (moka's
//! single-flight). With `serve_stale_on_error`, successful answers are also
//! kept in a second, longer-lived cache, used only when the store is
//! unavailable and only under the current generation: never after the
//! tenant's write, and never for `FRESH` reads.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;

use crate::backend::TenantSearch;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{Consistency, GetResult, Memory, Payload, ScoredMemory};

/// Slots of the generation array; a power of two.
const GENERATION_SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub enabled: bool,
    /// Bound on the cache's size, counted as the bytes of keys and results.
    pub max_bytes: u64,
    /// How long an entry is served; the staleness bound across replicas.
    pub ttl: Duration,
    /// Answer from an expired entry while the store is unavailable.
    pub serve_stale_on_error: bool,
    /// How long after it was stored an entry may still be served stale.
    pub stale_for: Duration,
}

/// An answer and whether it came from an expired entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<T> {
    pub value: T,
    pub stale: bool,
}

impl<T> Served<T> {
    pub fn fresh(value: T) -> Self {
        Self {
            value,
            stale: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    namespace: String,
    tenant: String,
    generation: u64,
    query: Vec<u8>,
}

impl CacheKey {
    fn bytes(&self) -> usize {
        self.namespace.len() + self.tenant.len() + self.query.len() + 8
    }
}

/// What an entry holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    Hits(Vec<ScoredMemory>),
    Found(GetResult),
}

type Entries = Cache<CacheKey, Arc<Cached>>;

pub struct ResultCache {
    settings: CacheSettings,
    entries: Entries,
    stale: Option<Entries>,
    generations: Box<[AtomicU64]>,
    metrics: Arc<Metrics>,
}

impl ResultCache {
    pub fn new(settings: CacheSettings, metrics: Arc<Metrics>) -> Self {
        let entries = |ttl| {
            Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(|key: &CacheKey, value: &Arc<Cached>| {
                    u32::try_from(key.bytes() + cached_bytes(value)).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build()
        };
        Self {
            settings,
            entries: entries(settings.ttl),
            stale: (settings.enabled && settings.serve_stale_on_error)
                .then(|| entries(settings.stale_for.max(settings.ttl))),
            generations: (0..GENERATION_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            metrics,
        }
    }

    fn slot(&self, namespace: &str, tenant: &str) -> &AtomicU64 {
        let mut hasher = DefaultHasher::new();
        (namespace, tenant).hash(&mut hasher);
        // Truncation is the point: any slot will do, the same one every time.
        &self.generations[hasher.finish() as usize % GENERATION_SLOTS]
    }

    /// Marks every cached answer of `tenant` in `namespace` as outdated. Call
    /// it when a write returns, whether or not it succeeded: a failed write
    /// may still have been applied.
    pub fn written(&self, namespace: &str, tenant: &str) {
        self.slot(namespace, tenant).fetch_add(1, Ordering::AcqRel);
    }

    fn key(&self, namespace: &str, tenant: &str, query: Vec<u8>) -> CacheKey {
        CacheKey {
            namespace: namespace.to_owned(),
            tenant: tenant.to_owned(),
            generation: self.slot(namespace, tenant).load(Ordering::Acquire),
            query,
        }
    }

    /// The key of a search, under the tenant's current generation.
    pub fn search_key(&self, namespace: &str, search: &TenantSearch) -> CacheKey {
        self.key(namespace, &search.tenant, search_query(search))
    }

    /// The key of a get, under the tenant's current generation.
    pub fn get_key(
        &self,
        namespace: &str,
        tenant: &str,
        ids: &[String],
        with_vector: bool,
    ) -> CacheKey {
        self.key(namespace, tenant, get_query(ids, with_vector))
    }

    /// Whether a read of this consistency skips the cache (always, when the
    /// cache is off): its key need not even be computed.
    pub fn bypassed(&self, consistency: Consistency) -> bool {
        !self.settings.enabled || consistency == Consistency::Fresh
    }

    /// Answers from the cache under the key `key` makes, or runs `load`
    /// (once for all concurrent callers of the same key) and keeps its
    /// answer. A read that bypasses the cache computes no key.
    pub async fn get_or_load<K, F, Fut>(
        &self,
        key: K,
        consistency: Consistency,
        load: F,
    ) -> Result<Served<Arc<Cached>>>
    where
        K: FnOnce() -> CacheKey,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Cached>>,
    {
        if self.bypassed(consistency) {
            return Ok(Served::fresh(Arc::new(load().await?)));
        }
        let key = key();
        let loaded = self
            .entries
            .entry(key.clone())
            .or_try_insert_with(async { load().await.map(Arc::new) })
            .await;
        match loaded {
            Ok(entry) if entry.is_fresh() => {
                self.metrics.cache_miss();
                let value = entry.into_value();
                self.keep_for_outages(key, value.clone()).await;
                Ok(Served::fresh(value))
            }
            Ok(entry) => {
                self.metrics.cache_hit();
                Ok(Served::fresh(entry.into_value()))
            }
            Err(error) => {
                self.metrics.cache_miss();
                let error = Arc::unwrap_or_clone(error);
                // A coalesced load runs under the deadline of whoever started
                // it; a caller with time left tries on its own.
                if matches!(error, Error::DeadlineExceeded)
                    && crate::deadline::remaining().is_none_or(|left| !left.is_zero())
                {
                    return Ok(Served::fresh(Arc::new(load().await?)));
                }
                self.stale_or(&key, error)
                    .await
                    .map(|value| Served { value, stale: true })
            }
        }
    }

    /// The cached answer of `key`, if any, counted as a hit or a miss. For
    /// reads that are not [`Self::bypassed`].
    pub async fn peek(&self, key: &CacheKey) -> Option<Arc<Cached>> {
        let found = self.entries.get(key).await;
        match found {
            Some(_) => self.metrics.cache_hit(),
            None => self.metrics.cache_miss(),
        }
        found
    }

    /// Keeps an answer loaded by the caller under `key` (read before
    /// loading). For reads that are not [`Self::bypassed`].
    pub async fn put(&self, key: CacheKey, value: Arc<Cached>) {
        self.entries.insert(key.clone(), value.clone()).await;
        self.keep_for_outages(key, value).await;
    }

    async fn keep_for_outages(&self, key: CacheKey, value: Arc<Cached>) {
        if let Some(stale) = &self.stale {
            stale.insert(key, value).await;
        }
    }

    /// The answer to serve instead of `error`: an entry kept for outages,
    /// when the store is unavailable and the tenant has not written since.
    pub async fn stale_or(&self, key: &CacheKey, error: Error) -> Result<Arc<Cached>> {
        let Some(stale) = &self.stale else {
            return Err(error);
        };
        if !error.is_backend_unavailable()
            || self
                .slot(&key.namespace, &key.tenant)
                .load(Ordering::Acquire)
                != key.generation
        {
            return Err(error);
        }
        match stale.get(key).await {
            Some(value) => {
                self.metrics.cache_stale_served();
                tracing::warn!(%error, "store unavailable; answering from an expired cache entry");
                Ok(value)
            }
            None => Err(error),
        }
    }
}

/// The exact shape of a search: every field that changes its answer.
fn search_query(search: &TenantSearch) -> Vec<u8> {
    let TenantSearch {
        tenant: _,
        vector,
        limit,
        min_score,
        filter,
        with_payload,
        with_vector,
    } = search;
    let mut query = Vec::with_capacity(vector.len() * 4 + 64);
    query.push(b's');
    query.extend((*limit as u64).to_le_bytes());
    match min_score {
        Some(score) => {
            query.push(1);
            query.extend(score.to_bits().to_le_bytes());
        }
        None => query.push(0),
    }
    query.push(u8::from(*with_payload));
    query.push(u8::from(*with_vector));
    query.extend((vector.len() as u64).to_le_bytes());
    for value in vector {
        query.extend(value.to_bits().to_le_bytes());
    }
    // Debug output of the filter is exact: every float prints so that it
    // parses back to the same bits, and strings are quoted and escaped.
    query.extend(format!("{filter:?}").into_bytes());
    query
}

/// The exact shape of a get: its ids in order and the projection.
fn get_query(ids: &[String], with_vector: bool) -> Vec<u8> {
    let mut query = Vec::with_capacity(ids.iter().map(|id| id.len() + 8).sum::<usize>() + 2);
    query.push(b'g');
    query.push(u8::from(with_vector));
    for id in ids {
        query.extend((id.len() as u64).to_le_bytes());
        query.extend(id.as_bytes());
    }
    query
}

fn cached_bytes(value: &Cached) -> usize {
    match value {
        Cached::Hits(hits) => hits.iter().map(|hit| memory_bytes(&hit.memory) + 4).sum(),
        Cached::Found(found) => {
            found.memories.iter().map(memory_bytes).sum::<usize>()
                + found.missing_ids.iter().map(String::len).sum::<usize>()
        }
    }
}

fn memory_bytes(memory: &Memory) -> usize {
    64 + memory.id.len() + memory.vector.len() * 4 + payload_bytes(&memory.payload)
}

/// An estimate of a payload's heap size: its JSON length.
fn payload_bytes(payload: &Payload) -> usize {
    if payload.is_empty() {
        return 0;
    }
    serde_json::to_vec(payload).map_or(0, |json| json.len())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;

    use super::*;
    use crate::model::Filter;

    fn cache(serve_stale_on_error: bool) -> ResultCache {
        ResultCache::new(
            CacheSettings {
                enabled: true,
                max_bytes: 1 << 20,
                ttl: Duration::from_secs(60),
                serve_stale_on_error,
                stale_for: Duration::from_secs(600),
            },
            Arc::new(Metrics::new()),
        )
    }

    fn search(tenant: &str, first: f32) -> TenantSearch {
        TenantSearch {
            tenant: tenant.into(),
            vector: vec![first, 0.5],
            limit: 10,
            min_score: None,
            filter: Filter::default(),
            with_payload: true,
            with_vector: false,
        }
    }

    /// An answer whose one hit is named `id`.
    fn answer(id: &str) -> Cached {
        Cached::Hits(vec![ScoredMemory {
            memory: Memory {
                id: id.into(),
                vector: Vec::new(),
                payload: Payload::new(),
                updated_at: None,
            },
            score: 1.0,
        }])
    }

    fn id(served: &Served<Arc<Cached>>) -> &str {
        match &*served.value {
            Cached::Hits(hits) => &hits[0].memory.id,
            Cached::Found(_) => panic!("a get answer"),
        }
    }

    /// A load that counts its runs and answers `id`.
    fn counted<'a>(
        runs: &'a AtomicUsize,
        id: &'a str,
    ) -> impl Fn() -> std::future::Ready<Result<Cached>> + 'a {
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(answer(id)))
        }
    }

    #[tokio::test]
    async fn a_repeated_search_is_answered_from_the_cache() {
        let cache = cache(false);
        let runs = AtomicUsize::new(0);
        for _ in 0..3 {
            let key = cache.search_key("ns", &search("t", 1.0));
            let served = cache
                .get_or_load(|| key, Consistency::Cached, counted(&runs, "a"))
                .await
                .expect("served");
            assert_eq!(id(&served), "a");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn keys_differ_by_tenant_vector_and_projection() {
        let cache = cache(false);
        let base = search("t", 1.0);
        let key = cache.search_key("ns", &base);
        let mut other_tenant = base.clone();
        other_tenant.tenant = "u".into();
        let mut other_vector = base.clone();
        other_vector.vector[1] = 0.25;
        let mut other_projection = base.clone();
        other_projection.with_vector = true;
        for other in [other_tenant, other_vector, other_projection] {
            assert_ne!(cache.search_key("ns", &other), key, "{other:?}");
        }
        assert_ne!(cache.search_key("ns2", &base), key);
        assert_eq!(cache.search_key("ns", &base.clone()), key);
    }

    #[tokio::test]
    async fn fresh_reads_always_go_to_the_store() {
        let cache = cache(false);
        let runs = AtomicUsize::new(0);
        for _ in 0..2 {
            let key = cache.search_key("ns", &search("t", 1.0));
            cache
                .get_or_load(|| key, Consistency::Fresh, counted(&runs, "a"))
                .await
                .expect("served");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_search_that_started_before_a_write_cannot_serve_a_later_read() {
        let cache = Arc::new(cache(false));
        let (release, gate) = oneshot::channel::<()>();
        let (started, loading) = oneshot::channel::<()>();
        // A search reads the generation, then waits in the "store".
        let slow = tokio::spawn({
            let cache = cache.clone();
            async move {
                let key = cache.search_key("ns", &search("t", 1.0));
                let hooks = std::sync::Mutex::new(Some((started, gate)));
                cache
                    .get_or_load(
                        || key,
                        Consistency::Cached,
                        || {
                            let hooks = hooks.lock().expect("lock").take();
                            async move {
                                if let Some((started, gate)) = hooks {
                                    let _ = started.send(());
                                    let _ = gate.await;
                                }
                                Ok(answer("before-write"))
                            }
                        },
                    )
                    .await
            }
        });
        // The write is acknowledged while that search is in the store.
        loading.await.expect("slow search started");
        cache.written("ns", "t");
        release.send(()).expect("slow search waiting");
        let slow = slow.await.expect("task").expect("served");
        assert_eq!(id(&slow), "before-write");

        let runs = AtomicUsize::new(0);
        let key = cache.search_key("ns", &search("t", 1.0));
        let after = cache
            .get_or_load(|| key, Consistency::Cached, counted(&runs, "after-write"))
            .await
            .expect("served");
        assert_eq!(
            id(&after),
            "after-write",
            "the read after the write went to the store"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_identical_misses_load_once() {
        let cache = cache(false);
        let runs = AtomicUsize::new(0);
        let (release, gate) = tokio::sync::watch::channel(false);
        let load = || {
            runs.fetch_add(1, Ordering::SeqCst);
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok(answer("a"))
            }
        };
        let key = cache.search_key("ns", &search("t", 1.0));
        let first = cache.get_or_load(|| key.clone(), Consistency::Cached, load);
        let second = cache.get_or_load(|| key.clone(), Consistency::Cached, load);
        let opener = async {
            tokio::task::yield_now().await;
            release.send(true).expect("gate");
        };
        let (first, second, ()) = tokio::join!(first, second, opener);
        assert_eq!(id(&first.expect("first")), "a");
        assert_eq!(id(&second.expect("second")), "a");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unavailable_store_is_answered_stale_until_the_tenant_writes() {
        let cache = cache(true);
        let runs = AtomicUsize::new(0);
        let key = || cache.search_key("ns", &search("t", 1.0));
        cache
            .get_or_load(key, Consistency::Cached, counted(&runs, "kept"))
            .await
            .expect("served");
        // The entry expires; the copy kept for outages remains.
        cache.entries.invalidate(&key()).await;
        let down =
            || std::future::ready(Err::<Cached, _>(crate::pipeline::fake_store::unavailable()));

        let served = cache
            .get_or_load(key, Consistency::Cached, down)
            .await
            .expect("served stale");
        assert!(served.stale);
        assert_eq!(id(&served), "kept");

        let fresh = cache.get_or_load(key, Consistency::Fresh, down).await;
        assert!(
            matches!(fresh, Err(Error::Unavailable { .. })),
            "never stale for FRESH"
        );

        let broken = || std::future::ready(Err::<Cached, _>(Error::internal("bug")));
        let other = cache.get_or_load(key, Consistency::Cached, broken).await;
        assert!(
            matches!(other, Err(Error::Internal(_))),
            "only UNAVAILABLE is covered"
        );

        cache.written("ns", "t");
        let after_write = cache.get_or_load(key, Consistency::Cached, down).await;
        assert!(
            matches!(after_write, Err(Error::Unavailable { .. })),
            "never stale after the tenant's write"
        );
    }

    #[tokio::test]
    async fn without_serve_stale_an_outage_is_an_error() {
        let cache = cache(false);
        let runs = AtomicUsize::new(0);
        let key = || cache.search_key("ns", &search("t", 1.0));
        cache
            .get_or_load(key, Consistency::Cached, counted(&runs, "kept"))
            .await
            .expect("served");
        cache.entries.invalidate(&key()).await;
        let down =
            || std::future::ready(Err::<Cached, _>(crate::pipeline::fake_store::unavailable()));
        let result = cache.get_or_load(key, Consistency::Cached, down).await;
        assert!(matches!(result, Err(Error::Unavailable { .. })));
    }
}
