//! The result cache for Search, SearchBatch, SearchGroups and Get:
//! correctness over hit rate.
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
//! An entry holding a memory that expires lives no longer than that memory:
//! a cached answer never returns a memory after its `expires_at`.
//!
//! Concurrent identical misses are coalesced into one store call (moka's
//! single-flight). With `serve_stale_on_error`, successful answers are also
//! kept in a second, longer-lived cache, used only when the store is
//! unavailable and only under the current generation: never after the
//! tenant's write, and never for `FRESH` reads.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::future::Cache;

use crate::backend::TenantSearch;
use crate::config::CacheConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{
    GetResult, Memory, MemoryGroup, Payload, ReadConsistency, ScoredMemory, Served,
};

/// Slots of the generation array; a power of two.
const GENERATION_SLOTS: usize = 4096;

/// The key of a cached answer of type `A`: a search's key can only find
/// search hits, a get's only a get's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey<A> {
    raw: RawKey,
    answer: PhantomData<fn() -> A>,
}

/// What the entries are indexed by. `query` begins with a byte naming the
/// kind of read, so keys of different kinds never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RawKey {
    namespace: String,
    tenant: String,
    generation: u64,
    query: Vec<u8>,
}

impl RawKey {
    fn bytes(&self) -> usize {
        self.namespace.len() + self.tenant.len() + self.query.len() + 8
    }
}

/// What an entry holds: one answer of any kind the cache serves.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Hits(Vec<ScoredMemory>),
    Found(GetResult),
    Groups(Vec<MemoryGroup>),
}

/// A kind of answer the cache serves. Its keys are only made by
/// [`ResultCache::search_key`] and [`ResultCache::get_key`], which tag the
/// kind, so an entry is read back only as what it was stored as.
pub trait Answer: Sized {
    fn into_entry(self) -> Entry;
    /// The answer an entry holds; `None` only if the kinds differ, which
    /// the keys rule out (and which would be a miss, not an error).
    fn from_entry(entry: Entry) -> Option<Self>;
}

impl Answer for Vec<ScoredMemory> {
    fn into_entry(self) -> Entry {
        Entry::Hits(self)
    }
    fn from_entry(entry: Entry) -> Option<Self> {
        match entry {
            Entry::Hits(hits) => Some(hits),
            Entry::Found(_) | Entry::Groups(_) => None,
        }
    }
}

impl Answer for GetResult {
    fn into_entry(self) -> Entry {
        Entry::Found(self)
    }
    fn from_entry(entry: Entry) -> Option<Self> {
        match entry {
            Entry::Found(found) => Some(found),
            Entry::Hits(_) | Entry::Groups(_) => None,
        }
    }
}

impl Answer for Vec<MemoryGroup> {
    fn into_entry(self) -> Entry {
        Entry::Groups(self)
    }
    fn from_entry(entry: Entry) -> Option<Self> {
        match entry {
            Entry::Groups(groups) => Some(groups),
            Entry::Hits(_) | Entry::Found(_) => None,
        }
    }
}

impl Entry {
    /// The memories the entry holds.
    fn memories(&self) -> Box<dyn Iterator<Item = &Memory> + '_> {
        match self {
            Entry::Hits(hits) => Box::new(hits.iter().map(|hit| &hit.memory)),
            Entry::Found(found) => Box::new(found.memories.iter()),
            Entry::Groups(groups) => Box::new(
                groups
                    .iter()
                    .flat_map(|group| &group.hits)
                    .map(|hit| &hit.memory),
            ),
        }
    }

    /// When the first of its memories expires: from then on the answer
    /// would hold a memory no read may return.
    fn first_expiry(&self) -> Option<SystemTime> {
        self.memories().filter_map(|memory| memory.expires_at).min()
    }

    /// Whether one of its memories is expired at `now`.
    fn holds_expired(&self, now: SystemTime) -> bool {
        self.first_expiry().is_some_and(|at| at <= now)
    }
}

/// How long an entry is served: the TTL, cut short when one of its
/// memories expires. (Entries can only lose memories to expiry, never gain
/// them: an answer without expiring memories stays right for the TTL.)
struct Lifetime {
    ttl: Duration,
}

impl Lifetime {
    fn of(&self, entry: &Entry) -> Duration {
        match entry.first_expiry() {
            None => self.ttl,
            Some(at) => at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(self.ttl),
        }
    }
}

impl Expiry<RawKey, Arc<Entry>> for Lifetime {
    fn expire_after_create(&self, _: &RawKey, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(self.of(entry))
    }

    fn expire_after_update(
        &self,
        _: &RawKey,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(entry))
    }
}

/// The answer an entry holds, without a copy unless the cache keeps it too.
fn unwrap<A: Answer>(entry: Arc<Entry>) -> Option<A> {
    A::from_entry(Arc::unwrap_or_clone(entry))
}

type Entries = Cache<RawKey, Arc<Entry>>;

pub struct ResultCache {
    settings: CacheConfig,
    entries: Entries,
    stale: Option<Entries>,
    generations: Box<[AtomicU64]>,
    metrics: Arc<Metrics>,
}

impl ResultCache {
    pub fn new(settings: &CacheConfig, metrics: Arc<Metrics>) -> Self {
        let entries = |ttl| {
            Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(|key: &RawKey, value: &Arc<Entry>| {
                    u32::try_from(key.bytes() + entry_bytes(value)).unwrap_or(u32::MAX)
                })
                .expire_after(Lifetime { ttl })
                .build()
        };
        Self {
            settings: settings.clone(),
            entries: entries(settings.ttl),
            stale: (settings.enabled && settings.serve_stale_on_error)
                .then(|| entries(settings.stale_max_age.max(settings.ttl))),
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

    fn key<A>(&self, namespace: &str, tenant: &str, query: Vec<u8>) -> CacheKey<A> {
        CacheKey {
            raw: RawKey {
                namespace: namespace.to_owned(),
                tenant: tenant.to_owned(),
                generation: self.slot(namespace, tenant).load(Ordering::Acquire),
                query,
            },
            answer: PhantomData,
        }
    }

    /// The key of a search, under the tenant's current generation.
    pub fn search_key(
        &self,
        namespace: &str,
        search: &TenantSearch,
    ) -> CacheKey<Vec<ScoredMemory>> {
        self.key(namespace, &search.tenant, search_query(search))
    }

    /// The key of a grouped search, under the tenant's current generation.
    pub fn groups_key(
        &self,
        namespace: &str,
        search: &TenantSearch,
        group_by: &str,
        group_size: usize,
    ) -> CacheKey<Vec<MemoryGroup>> {
        let mut query = vec![b'G'];
        query.extend((group_size as u64).to_le_bytes());
        query.extend((group_by.len() as u64).to_le_bytes());
        query.extend(group_by.as_bytes());
        query.extend(search_query(search));
        self.key(namespace, &search.tenant, query)
    }

    /// The key of a get, under the tenant's current generation.
    pub fn get_key(
        &self,
        namespace: &str,
        tenant: &str,
        ids: &[String],
        with_vector: bool,
    ) -> CacheKey<GetResult> {
        self.key(namespace, tenant, get_query(ids, with_vector))
    }

    /// Whether a read of this consistency skips the cache (always, when the
    /// cache is off): its key need not even be computed.
    pub fn bypassed(&self, consistency: ReadConsistency) -> bool {
        !self.settings.enabled || consistency == ReadConsistency::Fresh
    }

    /// Answers from the cache under the key `key` makes, or runs `load`
    /// (once for all concurrent callers of the same key) and keeps its
    /// answer. A read that bypasses the cache computes no key.
    pub async fn get_or_load<A, K, F, Fut>(
        &self,
        key: K,
        consistency: ReadConsistency,
        load: F,
    ) -> Result<Served<A>>
    where
        A: Answer,
        K: FnOnce() -> CacheKey<A>,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<A>>,
    {
        if self.bypassed(consistency) {
            return Ok(Served::current(load().await?));
        }
        let key = key().raw;
        let loaded = self
            .entries
            .entry(key.clone())
            .or_try_insert_with(async { load().await.map(|answer| Arc::new(answer.into_entry())) })
            .await;
        let entry = match loaded {
            // Loaded by this call or one it joined: a miss.
            Ok(entry) if entry.is_fresh() => {
                self.metrics.cache_miss();
                let value = entry.into_value();
                self.keep_for_outages(key, value.clone()).await;
                value
            }
            Ok(entry) => {
                self.metrics.cache_hit();
                entry.into_value()
            }
            Err(error) => {
                self.metrics.cache_miss();
                let error = Arc::unwrap_or_clone(error);
                // A coalesced load runs under the deadline of whoever started
                // it; a caller with time left tries on its own.
                if matches!(error, Error::DeadlineExceeded)
                    && crate::deadline::remaining().is_none_or(|left| !left.is_zero())
                {
                    return Ok(Served::current(load().await?));
                }
                let value = self.stale_or(&key, error.clone()).await?;
                return unwrap(value).map(Served::stale).ok_or(error);
            }
        };
        // An answer loaded before one of its memories expired (by a call
        // this one joined, or just before its entry lapsed) is not served
        // after that memory's expiry: it is read again.
        if entry.holds_expired(SystemTime::now()) {
            return Ok(Served::current(load().await?));
        }
        match unwrap(entry) {
            Some(answer) => Ok(Served::current(answer)),
            None => Ok(Served::current(load().await?)),
        }
    }

    /// Answers a batch of reads, each under its key (`None`: the read
    /// bypasses the cache): from the cache where it has them, and all the
    /// misses with one call of `load`, which is given their positions in
    /// `keys` and answers each in that order. A miss whose load failed is
    /// answered from an entry kept for outages where it may be, and
    /// otherwise fails the whole batch.
    pub async fn get_many_or_load<A, F, Fut>(
        &self,
        keys: Vec<Option<CacheKey<A>>>,
        load: F,
    ) -> Result<Served<Vec<A>>>
    where
        A: Answer + Clone,
        F: FnOnce(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<Vec<Result<A>>>>,
    {
        let mut answers: Vec<Option<A>> = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let cached = match key {
                Some(key) => self
                    .peek(&key.raw)
                    .await
                    .filter(|entry| !entry.holds_expired(SystemTime::now()))
                    .and_then(unwrap),
                None => None,
            };
            if cached.is_none() {
                misses.push(i);
            }
            answers.push(cached);
        }
        let mut stale = false;
        if !misses.is_empty() {
            let loaded = load(misses.clone()).await?;
            if loaded.len() != misses.len() {
                return Err(Error::internal(
                    "a batch load returned a wrong number of answers",
                ));
            }
            for (i, outcome) in misses.into_iter().zip(loaded) {
                let key = keys[i].as_ref().map(|key| &key.raw);
                answers[i] = Some(match (outcome, key) {
                    (Ok(answer), Some(key)) => {
                        self.put(key.clone(), Arc::new(answer.clone().into_entry()))
                            .await;
                        answer
                    }
                    (Ok(answer), None) => answer,
                    (Err(error), None) => return Err(error),
                    (Err(error), Some(key)) => {
                        stale = true;
                        unwrap(self.stale_or(key, error.clone()).await?).ok_or(error)?
                    }
                });
            }
        }
        let value = answers
            .into_iter()
            .map(|answer| {
                answer.ok_or_else(|| Error::internal("a read of the batch got no answer"))
            })
            .collect::<Result<_>>()?;
        Ok(Served { value, stale })
    }

    /// The cached answer of `key`, if any, counted as a hit or a miss.
    async fn peek(&self, key: &RawKey) -> Option<Arc<Entry>> {
        let found = self.entries.get(key).await;
        match found {
            Some(_) => self.metrics.cache_hit(),
            None => self.metrics.cache_miss(),
        }
        found
    }

    /// Keeps an answer loaded under `key` (read before loading).
    async fn put(&self, key: RawKey, value: Arc<Entry>) {
        self.entries.insert(key.clone(), value.clone()).await;
        self.keep_for_outages(key, value).await;
    }

    async fn keep_for_outages(&self, key: RawKey, value: Arc<Entry>) {
        if let Some(stale) = &self.stale {
            stale.insert(key, value).await;
        }
    }

    /// The entry to serve instead of `error`: one kept for outages, when the
    /// store is unavailable and the tenant has not written since.
    async fn stale_or(&self, key: &RawKey, error: Error) -> Result<Arc<Entry>> {
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
            Some(value) if !value.holds_expired(SystemTime::now()) => {
                self.metrics.cache_stale_served();
                tracing::warn!(%error, "store unavailable; answering from an expired cache entry");
                Ok(value)
            }
            _ => Err(error),
        }
    }
}

/// The exact shape of a search: every field that changes its answer.
fn search_query(search: &TenantSearch) -> Vec<u8> {
    let TenantSearch {
        tenant: _,
        vector,
        text,
        limit,
        min_score,
        filter,
        exclude_ids,
        boost,
        with_payload,
        with_vector,
    } = search;
    let dense = vector.as_deref().unwrap_or_default();
    let mut query = Vec::with_capacity(dense.len() * 4 + 64);
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
    // A "more like this" search is keyed before its examples are read: by
    // their ids, with no vector.
    query.push(u8::from(vector.is_some()));
    query.extend((dense.len() as u64).to_le_bytes());
    for value in dense {
        query.extend(value.to_bits().to_le_bytes());
    }
    query.extend((exclude_ids.len() as u64).to_le_bytes());
    for id in exclude_ids {
        query.extend((id.len() as u64).to_le_bytes());
        query.extend(id.as_bytes());
    }
    // A text is keyed by its BM25 vector: texts with the same terms rank
    // the same.
    match text {
        Some(text) => {
            query.push(1 + text.fusion as u8);
            query.extend((text.vector.indices.len() as u64).to_le_bytes());
            for (index, value) in text.vector.indices.iter().zip(&text.vector.values) {
                query.extend(index.to_le_bytes());
                query.extend(value.to_bits().to_le_bytes());
            }
        }
        None => query.push(0),
    }
    // Debug output of the filter is exact: every float prints so that it
    // parses back to the same bits, and strings are quoted and escaped.
    query.extend(format!("{filter:?}").into_bytes());
    // So is a boost's. Not its `now`: a cached answer's recency is as of
    // when it was computed, at most the TTL ago.
    if let Some(boost) = boost {
        query.extend(format!("{:?}", boost.boost).into_bytes());
    }
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

fn entry_bytes(value: &Entry) -> usize {
    match value {
        Entry::Hits(hits) => hits.iter().map(|hit| memory_bytes(&hit.memory) + 4).sum(),
        Entry::Found(found) => {
            found.memories.iter().map(memory_bytes).sum::<usize>()
                + found.missing_ids.iter().map(String::len).sum::<usize>()
        }
        Entry::Groups(groups) => {
            groups
                .iter()
                .flat_map(|group| &group.hits)
                .map(|hit| memory_bytes(&hit.memory) + 4)
                .sum::<usize>()
                + groups.len() * 32
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
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;
    use crate::model::Filter;

    fn cache(serve_stale_on_error: bool) -> ResultCache {
        ResultCache::new(
            &CacheConfig {
                enabled: true,
                max_bytes: 1 << 20,
                ttl: Duration::from_secs(60),
                serve_stale_on_error,
                stale_max_age: Duration::from_secs(600),
            },
            Arc::new(Metrics::new()),
        )
    }

    fn search(tenant: &str, first: f32) -> TenantSearch {
        TenantSearch {
            tenant: tenant.into(),
            vector: Some(vec![first, 0.5]),
            text: None,
            limit: 10,
            min_score: None,
            filter: Filter::default(),
            exclude_ids: Vec::new(),
            boost: None,
            with_payload: true,
            with_vector: false,
        }
    }

    /// An answer whose one hit is named `id`.
    fn answer(id: &str) -> Vec<ScoredMemory> {
        vec![ScoredMemory {
            memory: Memory {
                id: id.into(),
                vector: Vec::new(),
                payload: Payload::new(),
                updated_at: None,
                expires_at: None,
            },
            score: 1.0,
        }]
    }

    fn id(served: &Served<Vec<ScoredMemory>>) -> &str {
        &served.value[0].memory.id
    }

    /// A load that counts its runs and answers `id`.
    fn counted<'a>(
        runs: &'a AtomicUsize,
        id: &'a str,
    ) -> impl Fn() -> std::future::Ready<Result<Vec<ScoredMemory>>> + 'a {
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(answer(id)))
        }
    }

    /// An answer whose one hit expires at `expires_at`.
    fn expiring(id: &str, expires_at: SystemTime) -> Vec<ScoredMemory> {
        let mut hits = answer(id);
        hits[0].memory.expires_at = Some(expires_at);
        hits
    }

    #[tokio::test]
    async fn an_answer_holding_an_expired_memory_is_never_served_again() {
        let cache = cache(false);
        let runs = AtomicUsize::new(0);
        let expired = SystemTime::now() - Duration::from_millis(1);
        let load = || {
            runs.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(expiring("gone", expired)))
        };
        for _ in 0..3 {
            let key = cache.search_key("ns", &search("t", 1.0));
            cache
                .get_or_load(|| key, ReadConsistency::Cached, load)
                .await
                .expect("served");
        }
        // Each read found no entry it could serve and loaded again: the
        // store, not the cache, decides whether an expired memory is hit.
        assert_eq!(runs.load(Ordering::SeqCst), 3 * 2);
    }

    #[tokio::test]
    async fn an_answer_whose_memories_expire_later_is_cached_until_then() {
        let cache = cache(false);
        let runs = AtomicUsize::new(0);
        let later = SystemTime::now() + Duration::from_secs(3600);
        let load = || {
            runs.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(expiring("lasting", later)))
        };
        for _ in 0..3 {
            let key = cache.search_key("ns", &search("t", 1.0));
            cache
                .get_or_load(|| key, ReadConsistency::Cached, load)
                .await
                .expect("served");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let entry = Entry::Hits(expiring("lasting", later));
        let lifetime = Lifetime {
            ttl: Duration::from_secs(60),
        };
        assert_eq!(lifetime.of(&entry), Duration::from_secs(60));
        let soon = Entry::Hits(expiring("soon", SystemTime::now() + Duration::from_secs(5)));
        assert!(lifetime.of(&soon) <= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_repeated_search_is_answered_from_the_cache() {
        let cache = cache(false);
        let runs = AtomicUsize::new(0);
        for _ in 0..3 {
            let key = cache.search_key("ns", &search("t", 1.0));
            let served = cache
                .get_or_load(|| key, ReadConsistency::Cached, counted(&runs, "a"))
                .await
                .expect("served");
            assert_eq!(id(&served), "a");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn keys_differ_by_tenant_vector_text_and_projection() {
        let cache = cache(false);
        let base = search("t", 1.0);
        let key = cache.search_key("ns", &base);
        let mut other_tenant = base.clone();
        other_tenant.tenant = "u".into();
        let mut other_vector = base.clone();
        other_vector.vector = Some(vec![1.0, 0.25]);
        let mut other_projection = base.clone();
        other_projection.with_vector = true;
        let text = |indices: Vec<u32>, fusion| {
            Some(crate::backend::text::TextQuery {
                vector: crate::backend::text::SparseVector {
                    values: vec![1.0; indices.len()],
                    indices,
                },
                fusion,
            })
        };
        let mut hybrid = base.clone();
        hybrid.text = text(vec![3, 7], crate::model::Fusion::Rrf);
        let mut other_terms = base.clone();
        other_terms.text = text(vec![3, 8], crate::model::Fusion::Rrf);
        let mut other_fusion = base.clone();
        other_fusion.text = text(vec![3, 7], crate::model::Fusion::Dbsf);
        let mut text_alone = hybrid.clone();
        text_alone.vector = None;
        let mut like = base.clone();
        like.vector = None;
        like.exclude_ids = vec!["m1".into()];
        let others = [
            other_tenant,
            other_vector,
            other_projection,
            hybrid.clone(),
            other_terms,
            other_fusion,
            text_alone,
            like,
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(cache.search_key("ns", other), key, "{other:?}");
            for later in &others[i + 1..] {
                assert_ne!(cache.search_key("ns", other), cache.search_key("ns", later));
            }
        }
        assert_eq!(
            cache.search_key("ns", &hybrid.clone()),
            cache.search_key("ns", &hybrid)
        );
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
                .get_or_load(|| key, ReadConsistency::Fresh, counted(&runs, "a"))
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
                        ReadConsistency::Cached,
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
            .get_or_load(
                || key,
                ReadConsistency::Cached,
                counted(&runs, "after-write"),
            )
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
        let first = cache.get_or_load(|| key.clone(), ReadConsistency::Cached, load);
        let second = cache.get_or_load(|| key.clone(), ReadConsistency::Cached, load);
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
            .get_or_load(key, ReadConsistency::Cached, counted(&runs, "kept"))
            .await
            .expect("served");
        // The entry expires; the copy kept for outages remains.
        cache.entries.invalidate(&key().raw).await;
        let down = || {
            std::future::ready(Err::<Vec<ScoredMemory>, _>(
                crate::pipeline::fake_store::unavailable(),
            ))
        };

        let served = cache
            .get_or_load(key, ReadConsistency::Cached, down)
            .await
            .expect("served stale");
        assert!(served.stale);
        assert_eq!(id(&served), "kept");

        let fresh = cache.get_or_load(key, ReadConsistency::Fresh, down).await;
        assert!(
            matches!(fresh, Err(Error::Unavailable { .. })),
            "never stale for FRESH"
        );

        let broken = || std::future::ready(Err::<Vec<ScoredMemory>, _>(Error::internal("bug")));
        let other = cache
            .get_or_load(key, ReadConsistency::Cached, broken)
            .await;
        assert!(
            matches!(other, Err(Error::Internal(_))),
            "only UNAVAILABLE is covered"
        );

        cache.written("ns", "t");
        let after_write = cache.get_or_load(key, ReadConsistency::Cached, down).await;
        assert!(
            matches!(after_write, Err(Error::Unavailable { .. })),
            "never stale after the tenant's write"
        );
    }

    #[tokio::test]
    async fn a_batch_loads_only_its_misses_in_one_call_and_keeps_them() {
        let cache = cache(false);
        let warm = cache.search_key("ns", &search("t", 1.0));
        cache
            .get_or_load(
                || warm,
                ReadConsistency::Cached,
                || async { Ok(answer("warm")) },
            )
            .await
            .expect("served");
        let keys = || {
            vec![
                Some(cache.search_key("ns", &search("t", 1.0))),
                Some(cache.search_key("ns", &search("t", 2.0))),
                // Bypasses the cache: loaded every time, never kept.
                None,
            ]
        };
        let loads = Mutex::new(Vec::new());
        let load = |misses: Vec<usize>| {
            loads.lock().expect("lock").push(misses.clone());
            let answers = misses
                .iter()
                .map(|i| Ok(answer(&format!("loaded-{i}"))))
                .collect();
            std::future::ready(Ok(answers))
        };
        for _ in 0..2 {
            let served = cache.get_many_or_load(keys(), load).await.expect("served");
            let ids: Vec<&str> = served
                .value
                .iter()
                .map(|hits| &*hits[0].memory.id)
                .collect();
            assert_eq!(ids, ["warm", "loaded-1", "loaded-2"]);
            assert!(!served.stale);
        }
        assert_eq!(*loads.lock().expect("lock"), [vec![1, 2], vec![2]]);
    }

    #[tokio::test]
    async fn a_failed_batch_load_is_served_stale_only_where_every_miss_can_be() {
        let cache = cache(true);
        let kept = || cache.search_key("ns", &search("t", 1.0));
        cache
            .get_or_load(kept, ReadConsistency::Cached, || async {
                Ok(answer("kept"))
            })
            .await
            .expect("served");
        cache.entries.invalidate(&kept().raw).await;
        let down = |misses: Vec<usize>| {
            let answers = misses
                .iter()
                .map(|_| Err(crate::pipeline::fake_store::unavailable()))
                .collect();
            std::future::ready(Ok(answers))
        };
        let served = cache
            .get_many_or_load(vec![Some(kept())], down)
            .await
            .expect("served stale");
        assert!(served.stale);
        assert_eq!(served.value[0][0].memory.id, "kept");

        let never_cached = cache.search_key("ns", &search("t", 2.0));
        let failed = cache
            .get_many_or_load(vec![Some(kept()), Some(never_cached)], down)
            .await;
        assert!(matches!(failed, Err(Error::Unavailable { .. })));
        let bypassed = cache.get_many_or_load(vec![Some(kept()), None], down).await;
        assert!(matches!(bypassed, Err(Error::Unavailable { .. })));
    }

    #[tokio::test]
    async fn without_serve_stale_an_outage_is_an_error() {
        let cache = cache(false);
        let runs = AtomicUsize::new(0);
        let key = || cache.search_key("ns", &search("t", 1.0));
        cache
            .get_or_load(key, ReadConsistency::Cached, counted(&runs, "kept"))
            .await
            .expect("served");
        cache.entries.invalidate(&key().raw).await;
        let down = || {
            std::future::ready(Err::<Vec<ScoredMemory>, _>(
                crate::pipeline::fake_store::unavailable(),
            ))
        };
        let result = cache.get_or_load(key, ReadConsistency::Cached, down).await;
        assert!(matches!(result, Err(Error::Unavailable { .. })));
    }
}
