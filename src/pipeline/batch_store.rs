//! The store seen through the batcher: a [`VectorStore`] that coalesces the
//! concurrent upserts, deletes, searches and gets of each namespace into one
//! backend call per batch, and passes everything else straight through.
//!
//! Each namespace has three lanes. Writes share one lane so that upserts and
//! deletes run in the order they arrived: the lane sends one batch at a time,
//! and a batch runs as consecutive groups of the same kind (`U U D U` is an
//! upsert of two requests, a delete, an upsert). Within an upsert group a
//! later write of the same id replaces an earlier one before the backend
//! sees it. Searches and gets have a lane each, with at most
//! `concurrent_searches` and `concurrent_gets` backend calls in flight,
//! since reads do not need an order. A read that finds one of those slots
//! free is sent at once from the caller's own task, alone: there is nothing
//! to batch it with, and a trip through the batcher's queue and worker would
//! only add wake-ups. Reads that arrive while every slot is busy queue, and
//! go as one batch when a slot frees: batches form exactly when the backend
//! is the bottleneck.
//! The two lanes have their own limits because batching pays differently:
//! a batch of gets is one lookup, costing Qdrant half as much per get, while
//! a batch of searches costs it about what the searches cost one by one, so
//! searches gain more from running side by side than from waiting to batch.
//! For the same reason search batches are smaller (`max_search_batch_size`):
//! every search of a batch waits for the slowest, so searches queued behind
//! busy slots go as several small batches rather than one large one.
//!
//! A batch must not fail for one caller's sake. When a group's combined call
//! fails, each request of the group is sent again on its own, in order,
//! before any caller is told it failed, and each caller gets its own answer.
//! That isolates a request the backend rejects, and, on a sharded Qdrant
//! collection, the callers whose memories live on a shard that is failing
//! from those whose shards are fine. Only a passed deadline or a backend
//! that timed out (slow, not failing; retrying each would multiply the wait)
//! fail the whole group at once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use futures::future::try_join_all;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimit;
use tower::{Service, ServiceExt};

use crate::backend::{
    MemoryKey, NamespaceStats, PayloadUpdate, ScrollQuery, StorePage, TenantDelete, TenantMemory,
    TenantSearch, VectorStore,
};
use crate::backup::SnapshotCopy;
use crate::config::BatchConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{Filter, Memory, ScoredMemory};
use crate::pipeline::batch::{self, Batch, BatchLimits, BatchResults, Batcher};

/// One write, as queued in a namespace's write lane.
#[derive(Debug)]
enum Write {
    Upsert(Vec<TenantMemory>),
    Delete(TenantDelete),
}

/// One get, as queued in a namespace's get lane.
#[derive(Debug)]
struct Lookup {
    keys: Vec<MemoryKey>,
    with_vector: bool,
}

type Hits = Vec<Vec<ScoredMemory>>;

/// A read lane: its batcher, and its slots (one permit per backend call in
/// flight), shared by the batcher's worker and the callers that go direct.
struct ReadLane<I, O> {
    batcher: Batcher<I, O>,
    slots: Arc<Semaphore>,
}

struct Lanes {
    writes: Batcher<Write, ()>,
    searches: ReadLane<Vec<TenantSearch>, Hits>,
    gets: ReadLane<Lookup, Vec<Option<Memory>>>,
}

pub struct BatchingStore {
    inner: Arc<dyn VectorStore>,
    lanes: HashMap<String, Lanes>,
    metrics: Arc<Metrics>,
}

impl BatchingStore {
    /// Starts the lanes of every namespace on the current runtime.
    pub fn new<'a>(
        inner: Arc<dyn VectorStore>,
        namespaces: impl IntoIterator<Item = &'a str>,
        config: &BatchConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limits = BatchLimits {
            max_batch_size: config.max_batch_size.get(),
            max_delay: config.max_delay,
            queue_capacity: config.queue_capacity.get(),
        };
        let search_limits = BatchLimits {
            max_batch_size: limits
                .max_batch_size
                .min(config.max_search_batch_size.get()),
            ..limits
        };
        let lanes = namespaces
            .into_iter()
            .map(|namespace| {
                let lanes = Lanes {
                    writes: lane(Arc::new(Semaphore::new(1)), limits, "writes", {
                        let (store, namespace, metrics) =
                            (inner.clone(), namespace.to_owned(), metrics.clone());
                        move |batch: Batch<Write>| {
                            let (store, namespace, metrics) =
                                (store.clone(), namespace.clone(), metrics.clone());
                            async move { run_writes(&*store, &namespace, batch, &metrics).await }
                        }
                    }),
                    searches: ReadLane::new(config.concurrent_searches, search_limits, "searches", {
                        let (store, namespace, metrics) =
                            (inner.clone(), namespace.to_owned(), metrics.clone());
                        move |batch: Batch<Vec<TenantSearch>>| {
                            let (store, namespace, metrics) =
                                (store.clone(), namespace.clone(), metrics.clone());
                            async move { run_searches(&*store, &namespace, batch, &metrics).await }
                        }
                    }),
                    gets: ReadLane::new(config.concurrent_gets, limits, "gets", {
                        let (store, namespace, metrics) =
                            (inner.clone(), namespace.to_owned(), metrics.clone());
                        move |batch: Batch<Lookup>| {
                            let (store, namespace, metrics) =
                                (store.clone(), namespace.clone(), metrics.clone());
                            async move { run_gets(&*store, &namespace, batch, &metrics).await }
                        }
                    }),
                };
                (namespace.to_owned(), lanes)
            })
            .collect();
        Self {
            inner,
            lanes,
            metrics,
        }
    }

    fn lanes(&self, namespace: &str) -> Result<&Lanes> {
        self.lanes
            .get(namespace)
            .ok_or_else(|| Error::NamespaceNotFound(namespace.to_owned()))
    }
}

/// A batcher whose inner service runs `flush` on a batch while it holds
/// one of `slots`.
fn lane<I, O, F, Fut>(
    slots: Arc<Semaphore>,
    limits: BatchLimits,
    name: &'static str,
    flush: F,
) -> Batcher<I, O>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(Batch<I>) -> Fut + Send + 'static,
    Fut: Future<Output = BatchResults<O>> + Send + 'static,
{
    let mut flush = flush;
    let service = tower::service_fn(move |batch: Batch<I>| {
        let deadline = batch.deadline;
        let results = flush(batch);
        async move {
            Ok::<_, Error>(match deadline {
                Some(deadline) => crate::deadline::scope(deadline, results).await,
                None => results.await,
            })
        }
    });
    batch::spawn(
        ConcurrencyLimit::with_semaphore(service, slots),
        limits,
        name,
    )
}

impl<I, O> ReadLane<I, O>
where
    I: Send + 'static,
    O: Send + 'static,
{
    /// A read lane of `concurrent` slots whose batches `flush` runs.
    fn new<F, Fut>(
        concurrent: NonZeroUsize,
        limits: BatchLimits,
        name: &'static str,
        flush: F,
    ) -> Self
    where
        F: FnMut(Batch<I>) -> Fut + Send + 'static,
        Fut: Future<Output = BatchResults<O>> + Send + 'static,
    {
        let slots = Arc::new(Semaphore::new(concurrent.get()));
        Self {
            batcher: lane(slots.clone(), limits, name, flush),
            slots,
        }
    }

    /// Sends `item` straight to the backend with `direct` when a slot is
    /// free, else through the batcher.
    async fn read<F>(&self, item: I, direct: impl FnOnce(I) -> F) -> Result<O>
    where
        F: Future<Output = Result<O>>,
    {
        match self.slots.clone().try_acquire_owned() {
            Ok(_slot) => direct(item).await,
            Err(_) => through(&self.batcher, item).await,
        }
    }
}

/// Sends one item through a lane and waits for its own result.
async fn through<I, O>(lane: &Batcher<I, O>, item: I) -> Result<O>
where
    I: Send + 'static,
    O: Send + 'static,
{
    lane.clone().ready().await?.call(item).await
}

/// Whether a failed group is worth sending again one request at a time.
fn worth_retrying_each(error: &Error) -> bool {
    match error {
        Error::DeadlineExceeded | Error::BackendTimedOut { .. } => false,
        Error::InvalidArgument(_)
        | Error::NamespaceNotFound(_)
        | Error::MemoryNotFound { .. }
        | Error::TextSearchUnavailable(_)
        | Error::SnapshotUnavailable
        | Error::Unauthenticated(_)
        | Error::PermissionDenied(_)
        | Error::ResourceExhausted { .. }
        | Error::Unavailable { .. }
        | Error::ClusterDegraded { .. }
        | Error::Internal(_) => true,
    }
}

/// Runs a group's combined call; if it fails, runs each item alone so that
/// every caller gets its own answer.
async fn combined_or_each<I, O, C, CF, E, EF>(
    items: Vec<I>,
    combined: C,
    each: E,
) -> BatchResults<O>
where
    O: Clone,
    C: FnOnce(&[I]) -> CF,
    CF: Future<Output = Result<Vec<O>>>,
    E: Fn(I) -> EF,
    EF: Future<Output = Result<O>>,
{
    let count = items.len();
    match combined(&items).await {
        Ok(outputs) => outputs.into_iter().map(Ok).collect(),
        Err(error) if count == 1 || !worth_retrying_each(&error) => {
            vec![Err(error); count]
        }
        Err(error) => {
            tracing::debug!(%error, count, "batch failed; retrying its requests one by one");
            let mut results = Vec::with_capacity(count);
            for item in items {
                results.push(each(item).await);
            }
            results
        }
    }
}

async fn run_writes(
    store: &dyn VectorStore,
    namespace: &str,
    batch: Batch<Write>,
    metrics: &Metrics,
) -> BatchResults<()> {
    metrics.observe_batch("write", batch.items.len());
    let mut results = Vec::with_capacity(batch.items.len());
    let mut writes = batch.items.into_iter().peekable();
    while let Some(first) = writes.next() {
        match first {
            Write::Upsert(memories) => {
                let mut group = vec![memories];
                while let Some(Write::Upsert(more)) =
                    writes.next_if(|next| matches!(next, Write::Upsert(_)))
                {
                    group.push(more);
                }
                let count = group.len();
                let outcome = combined_or_each(
                    group,
                    |group| {
                        let memories = last_write_wins(group);
                        async move {
                            store.upsert(namespace, memories).await?;
                            Ok(vec![(); count])
                        }
                    },
                    |memories| store.upsert(namespace, memories),
                )
                .await;
                results.extend(outcome);
            }
            Write::Delete(delete) => {
                let mut group = vec![delete];
                while let Some(Write::Delete(more)) =
                    writes.next_if(|next| matches!(next, Write::Delete(_)))
                {
                    group.push(more);
                }
                let count = group.len();
                let outcome = combined_or_each(
                    group,
                    |group| {
                        let deletes = group.to_vec();
                        async move {
                            store.delete(namespace, deletes).await?;
                            Ok(vec![(); count])
                        }
                    },
                    |delete| store.delete(namespace, vec![delete]),
                )
                .await;
                results.extend(outcome);
            }
        }
    }
    results
}

/// The memories of a group of upserts as one list, where a later write of a
/// (tenant, id) replaces every earlier one.
fn last_write_wins(group: &[Vec<TenantMemory>]) -> Vec<TenantMemory> {
    let mut seen = HashSet::new();
    let mut kept: Vec<TenantMemory> = group
        .iter()
        .flatten()
        .rev()
        .filter(|item| seen.insert((item.tenant.as_str(), item.memory.id.as_str())))
        .cloned()
        .collect();
    kept.reverse();
    kept
}

async fn run_searches(
    store: &dyn VectorStore,
    namespace: &str,
    batch: Batch<Vec<TenantSearch>>,
    metrics: &Metrics,
) -> BatchResults<Hits> {
    metrics.observe_batch("search", batch.items.len());
    combined_or_each(
        batch.items,
        |requests| {
            let searches: Vec<TenantSearch> = requests.iter().flatten().cloned().collect();
            let lengths: Vec<usize> = requests.iter().map(Vec::len).collect();
            async move {
                let hits = store.search(namespace, searches).await?;
                split(hits, &lengths).ok_or_else(|| {
                    Error::internal("store returned a wrong number of search results")
                })
            }
        },
        |searches| store.search(namespace, searches),
    )
    .await
}

async fn run_gets(
    store: &dyn VectorStore,
    namespace: &str,
    batch: Batch<Lookup>,
    metrics: &Metrics,
) -> BatchResults<Vec<Option<Memory>>> {
    metrics.observe_batch("get", batch.items.len());
    combined_or_each(
        batch.items,
        |lookups| {
            // One call for all: with vectors if anyone asked for them, which
            // are then dropped for those who did not.
            let with_vector = lookups.iter().any(|lookup| lookup.with_vector);
            let (keys, slots) = distinct_keys(lookups);
            let wanted: Vec<bool> = lookups.iter().map(|lookup| lookup.with_vector).collect();
            async move {
                let asked = keys.len();
                let found = store.get(namespace, keys, with_vector).await?;
                if found.len() != asked {
                    return Err(Error::internal("store returned a wrong number of memories"));
                }
                Ok(answer_each(&found, slots, &wanted))
            }
        },
        |lookup| store.get(namespace, lookup.keys, lookup.with_vector),
    )
    .await
}

/// The distinct keys of a batch of gets, each once, and for every lookup
/// where its keys sit in that list. Concurrent callers often read the same
/// memory; each caller still gets one answer per key it sent.
fn distinct_keys(lookups: &[Lookup]) -> (Vec<MemoryKey>, Vec<Vec<usize>>) {
    let mut keys: Vec<MemoryKey> = Vec::new();
    let mut position: HashMap<&MemoryKey, usize> = HashMap::new();
    let slots = lookups
        .iter()
        .map(|lookup| {
            lookup
                .keys
                .iter()
                .map(|key| {
                    *position.entry(key).or_insert_with(|| {
                        keys.push(key.clone());
                        keys.len() - 1
                    })
                })
                .collect()
        })
        .collect();
    (keys, slots)
}

/// Each lookup's answer from the answers to the distinct keys (`found`, one
/// per key, as long as the key list), without vectors for the lookups that
/// did not ask for them.
fn answer_each(
    found: &[Option<Memory>],
    slots: Vec<Vec<usize>>,
    wanted: &[bool],
) -> Vec<Vec<Option<Memory>>> {
    slots
        .into_iter()
        .zip(wanted)
        .map(|(slots, &with_vector)| {
            slots
                .into_iter()
                .map(|slot| {
                    let mut memory = found[slot].clone();
                    if let Some(memory) = memory.as_mut().filter(|_| !with_vector) {
                        memory.vector = Vec::new();
                    }
                    memory
                })
                .collect()
        })
        .collect()
}

/// Cuts `all` into consecutive parts of the given lengths; `None` unless the
/// lengths add up exactly.
fn split<T>(all: Vec<T>, lengths: &[usize]) -> Option<Vec<Vec<T>>> {
    if all.len() != lengths.iter().sum::<usize>() {
        return None;
    }
    let mut all = all.into_iter();
    Some(
        lengths
            .iter()
            .map(|&length| all.by_ref().take(length).collect())
            .collect(),
    )
}

#[async_trait]
impl VectorStore for BatchingStore {
    async fn upsert(&self, namespace: &str, memories: Vec<TenantMemory>) -> Result<()> {
        through(&self.lanes(namespace)?.writes, Write::Upsert(memories)).await
    }

    async fn search(&self, namespace: &str, searches: Vec<TenantSearch>) -> Result<Hits> {
        let lane = &self.lanes(namespace)?.searches;
        lane.read(searches, |searches| {
            self.metrics.observe_batch("search", 1);
            self.inner.search(namespace, searches)
        })
        .await
    }

    async fn get(
        &self,
        namespace: &str,
        keys: Vec<MemoryKey>,
        with_vector: bool,
    ) -> Result<Vec<Option<Memory>>> {
        let lane = &self.lanes(namespace)?.gets;
        lane.read(Lookup { keys, with_vector }, |lookup| {
            self.metrics.observe_batch("get", 1);
            self.inner.get(namespace, lookup.keys, lookup.with_vector)
        })
        .await
    }

    async fn delete(&self, namespace: &str, deletes: Vec<TenantDelete>) -> Result<()> {
        let lane = &self.lanes(namespace)?.writes;
        try_join_all(
            deletes
                .into_iter()
                .map(|delete| through(lane, Write::Delete(delete))),
        )
        .await?;
        Ok(())
    }

    async fn scroll(&self, namespace: &str, tenant: &str, query: ScrollQuery) -> Result<StorePage> {
        self.inner.scroll(namespace, tenant, query).await
    }

    async fn count(&self, namespace: &str, tenant: &str, filter: Filter) -> Result<u64> {
        self.inner.count(namespace, tenant, filter).await
    }

    async fn update_payload(&self, namespace: &str, update: PayloadUpdate) -> Result<()> {
        self.inner.update_payload(namespace, update).await
    }

    /// Not batched: a sweep is one call every few seconds, and its deletes
    /// only remove memories no read sees any more, so its order among the
    /// namespace's writes does not matter.
    async fn delete_expired(
        &self,
        namespace: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<usize> {
        self.inner.delete_expired(namespace, now, limit).await
    }

    async fn stats(&self, namespace: &str) -> Result<NamespaceStats> {
        self.inner.stats(namespace).await
    }

    async fn is_ready(&self) -> bool {
        self.inner.is_ready().await
    }

    async fn snapshot(&self) -> Result<SnapshotCopy> {
        self.inner.snapshot().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use tokio::sync::OwnedRwLockWriteGuard;

    use super::*;
    use crate::model::DeleteSelector;
    use crate::pipeline::fake_store::{Call, FakeStore, unavailable};

    /// Two slots for searches and two for gets.
    fn batching(fake: &Arc<FakeStore>) -> BatchingStore {
        batching_with(fake, 2, 2, 64)
    }

    fn batching_with(
        fake: &Arc<FakeStore>,
        searches: usize,
        gets: usize,
        max_search_batch_size: usize,
    ) -> BatchingStore {
        BatchingStore::new(
            fake.clone(),
            ["ns"],
            &BatchConfig {
                enabled: true,
                max_batch_size: NonZeroUsize::new(64).expect("not zero"),
                max_search_batch_size: NonZeroUsize::new(max_search_batch_size).expect("not zero"),
                max_delay: Duration::ZERO,
                queue_capacity: NonZeroUsize::new(64).expect("not zero"),
                concurrent_searches: NonZeroUsize::new(searches).expect("not zero"),
                concurrent_gets: NonZeroUsize::new(gets).expect("not zero"),
            },
            Arc::new(Metrics::new()),
        )
    }

    fn memory(tenant: &str, id: &str, first: f32) -> Vec<TenantMemory> {
        vec![TenantMemory {
            tenant: tenant.into(),
            memory: Memory {
                id: id.into(),
                vector: vec![first, 0.0],
                payload: Default::default(),
                updated_at: None,
                expires_at: None,
            },
            text: None,
        }]
    }

    fn delete(tenant: &str, id: &str) -> Vec<TenantDelete> {
        vec![TenantDelete {
            tenant: tenant.into(),
            selector: DeleteSelector::Ids(vec![id.into()]),
        }]
    }

    fn search(tenant: &str) -> Vec<TenantSearch> {
        vec![TenantSearch {
            tenant: tenant.into(),
            vector: Some(vec![1.0, 0.0]),
            text: None,
            limit: 10,
            min_score: None,
            filter: Filter::default(),
            exclude_ids: Vec::new(),
            boost: None,
            with_payload: true,
            with_vector: false,
        }]
    }

    /// Upserts of ids "1" and "2" of tenant "t", sent at once (one batch).
    async fn two_concurrent_upserts(store: &BatchingStore) -> (Result<()>, Result<()>) {
        tokio::join!(
            store.upsert("ns", memory("t", "1", 1.0)),
            store.upsert("ns", memory("t", "2", 1.0)),
        )
    }

    fn upserted(tenant: &str, id: &str, first: f32) -> (String, String, f32) {
        (tenant.into(), id.into(), first)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_upserts_become_one_call_and_a_later_write_of_an_id_wins() {
        let fake = Arc::new(FakeStore::default());
        let store = batching(&fake);
        let (a, b, c) = tokio::join!(
            store.upsert("ns", memory("t1", "x", 1.0)),
            store.upsert("ns", memory("t2", "x", 2.0)),
            store.upsert("ns", memory("t1", "x", 3.0)),
        );
        a.expect("first");
        b.expect("second");
        c.expect("third");
        assert_eq!(
            fake.calls(),
            vec![Call::Upsert(vec![
                upserted("t2", "x", 2.0),
                upserted("t1", "x", 3.0),
            ])]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_keep_their_order_across_upserts_and_deletes() {
        let fake = Arc::new(FakeStore::default());
        let store = batching(&fake);
        let (a, b, c, d) = tokio::join!(
            store.upsert("ns", memory("t", "x", 1.0)),
            store.upsert("ns", memory("t", "y", 1.0)),
            store.delete("ns", delete("t", "x")),
            store.upsert("ns", memory("t", "x", 2.0)),
        );
        for result in [a, b, c, d] {
            result.expect("write");
        }
        assert_eq!(
            fake.calls(),
            vec![
                Call::Upsert(vec![upserted("t", "x", 1.0), upserted("t", "y", 1.0)]),
                Call::Delete(1),
                Call::Upsert(vec![upserted("t", "x", 2.0)]),
            ]
        );
        let found = store
            .get(
                "ns",
                vec![MemoryKey {
                    tenant: "t".into(),
                    id: "x".into(),
                }],
                true,
            )
            .await
            .expect("get");
        assert_eq!(found[0].as_ref().map(|m| m.vector[0]), Some(2.0));
    }

    #[tokio::test(start_paused = true)]
    async fn one_rejected_request_does_not_fail_the_others() {
        let fake = Arc::new(FakeStore::default());
        *fake.poisoned_tenant.lock().expect("lock") = Some("bad".into());
        let store = batching(&fake);
        let (a, b, c) = tokio::join!(
            store.upsert("ns", memory("good", "1", 1.0)),
            store.upsert("ns", memory("bad", "2", 1.0)),
            store.upsert("ns", memory("good", "3", 1.0)),
        );
        a.expect("unaffected");
        b.expect_err("rejected");
        c.expect("unaffected");
        // The combined call, then each request on its own.
        assert_eq!(fake.calls().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_is_retried_per_caller_before_anyone_is_told() {
        let fake = Arc::new(FakeStore::default());
        fake.fail_next(1, unavailable());
        let store = batching(&fake);
        let (a, b) = two_concurrent_upserts(&store).await;
        a.expect("retried alone");
        b.expect("retried alone");
        // The combined call, then each caller's write on its own.
        assert_eq!(
            fake.calls(),
            vec![
                Call::Upsert(vec![upserted("t", "1", 1.0), upserted("t", "2", 1.0)]),
                Call::Upsert(vec![upserted("t", "1", 1.0)]),
                Call::Upsert(vec![upserted("t", "2", 1.0)]),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_caller_gets_its_own_failure_when_the_backend_stays_down() {
        let fake = Arc::new(FakeStore::default());
        fake.fail_next(2, unavailable());
        let store = batching(&fake);
        let (a, b) = two_concurrent_upserts(&store).await;
        assert!(matches!(a, Err(Error::Unavailable { .. })), "{a:?}");
        b.expect("the backend was back for the second caller's retry");
        assert_eq!(fake.calls().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_batch_fails_every_caller_without_retrying_each() {
        let fake = Arc::new(FakeStore::default());
        fake.fail_next(
            1,
            Error::BackendTimedOut {
                retry_after: Duration::from_secs(1),
            },
        );
        let store = batching(&fake);
        let (a, b) = two_concurrent_upserts(&store).await;
        for result in [a, b] {
            assert!(
                matches!(result, Err(Error::BackendTimedOut { .. })),
                "{result:?}"
            );
        }
        assert_eq!(fake.calls().len(), 1);
    }

    /// Lets every task that can run do so, a bounded number of times.
    async fn settle() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    /// Waits (bounded) until the store has seen `count` calls in all.
    async fn until_calls(fake: &FakeStore, count: usize) {
        for _ in 0..1000 {
            if fake.calls().len() >= count {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the store saw {:?}, expected {count} calls", fake.calls());
    }

    fn key(tenant: &str, id: &str) -> MemoryKey {
        MemoryKey {
            tenant: tenant.into(),
            id: id.into(),
        }
    }

    type Task<T> = tokio::task::JoinHandle<Result<T>>;

    fn spawn_search(store: &Arc<BatchingStore>, tenant: &str) -> Task<Hits> {
        let (store, tenant) = (store.clone(), tenant.to_owned());
        tokio::spawn(async move { store.search("ns", search(&tenant)).await })
    }

    fn spawn_get(
        store: &Arc<BatchingStore>,
        keys: Vec<MemoryKey>,
        with_vector: bool,
    ) -> Task<Vec<Option<Memory>>> {
        let store = store.clone();
        tokio::spawn(async move { store.get("ns", keys, with_vector).await })
    }

    async fn answer<T>(task: Task<T>) -> T {
        task.await.expect("task").expect("read")
    }

    fn hit_ids(hits: Hits) -> Vec<String> {
        hits.concat().into_iter().map(|h| h.memory.id).collect()
    }

    fn found_ids(found: Vec<Option<Memory>>) -> Vec<Option<String>> {
        found.into_iter().map(|m| m.map(|m| m.id)).collect()
    }

    /// A store with memories a1 (tenant a), b1 (tenant b) and x (tenant t),
    /// and two slots for searches and two for gets.
    async fn seeded() -> (Arc<FakeStore>, Arc<BatchingStore>) {
        seeded_with(2, 2, 64).await
    }

    /// The same memories, with `searches` and `gets` slots and search
    /// batches of at most `max_search_batch_size`.
    async fn seeded_with(
        searches: usize,
        gets: usize,
        max_search_batch_size: usize,
    ) -> (Arc<FakeStore>, Arc<BatchingStore>) {
        let fake = Arc::new(FakeStore::default());
        let store = Arc::new(batching_with(&fake, searches, gets, max_search_batch_size));
        for (tenant, id) in [("a", "a1"), ("b", "b1"), ("t", "x")] {
            store
                .upsert("ns", memory(tenant, id, 1.0))
                .await
                .expect("upsert");
        }
        (fake, store)
    }

    /// Holds the store's reads and fills both slots of a read lane (each
    /// has 2 in `batching`) with the calls `start` makes for tenant a
    /// (memory a1) and tenant b (b1), once the store has seen them: the
    /// reads sent next queue.
    async fn fill_read_slots<T>(
        fake: &FakeStore,
        start: impl Fn(&str, &str) -> Task<T>,
    ) -> (OwnedRwLockWriteGuard<()>, [Task<T>; 2]) {
        let before = fake.calls().len();
        let held = fake.hold_reads().await;
        let busy = [start("a", "a1"), start("b", "b1")];
        until_calls(fake, before + 2).await;
        (held, busy)
    }

    #[tokio::test(start_paused = true)]
    async fn reads_go_straight_through_while_a_slot_is_free_and_batch_when_none_is() {
        let (fake, store) = seeded().await;
        let before = fake.calls().len();
        // Two search slots: two searches go alone, at once.
        let (held, first) = fill_read_slots(&fake, |tenant, _| spawn_search(&store, tenant)).await;
        // Every slot busy: these wait, and go together when one frees.
        let queued = [
            spawn_search(&store, "b"),
            spawn_search(&store, "c"),
            spawn_search(&store, "a"),
        ];
        settle().await;
        assert_eq!(fake.calls().len(), before + 2, "queued, not sent");
        drop(held);
        let [a, b] = first;
        assert_eq!(hit_ids(answer(a).await), ["a1"]);
        assert_eq!(hit_ids(answer(b).await), ["b1"]);
        let [b, c, a] = queued;
        assert_eq!(hit_ids(answer(b).await), ["b1"]);
        assert!(hit_ids(answer(c).await).is_empty());
        assert_eq!(hit_ids(answer(a).await), ["a1"]);
        assert_eq!(
            fake.calls()[before..],
            [Call::Search(1), Call::Search(1), Call::Search(3)]
        );
        // Idle again: a lone search goes alone.
        assert_eq!(hit_ids(answer(spawn_search(&store, "a")).await), ["a1"]);
        assert_eq!(fake.calls().last(), Some(&Call::Search(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn queued_gets_of_one_memory_ask_the_store_for_it_once() {
        let (fake, store) = seeded().await;
        let before = fake.calls().len();
        let (held, busy) = fill_read_slots(&fake, |tenant, id| {
            spawn_get(&store, vec![key(tenant, id)], false)
        })
        .await;
        let one = spawn_get(&store, vec![key("t", "x")], false);
        let twice = spawn_get(&store, vec![key("t", "x"), key("t", "x")], true);
        let with_other = spawn_get(&store, vec![key("t", "y"), key("t", "x")], false);
        settle().await;
        drop(held);
        for task in busy {
            assert_eq!(found_ids(answer(task).await).len(), 1);
        }
        assert_eq!(found_ids(answer(one).await), [Some("x".into())]);
        let twice = answer(twice).await;
        assert!(
            twice
                .iter()
                .all(|m| m.as_ref().is_some_and(|m| m.vector == [1.0, 0.0]))
        );
        assert_eq!(twice.len(), 2);
        assert_eq!(
            found_ids(answer(with_other).await),
            [None, Some("x".into())]
        );
        assert_eq!(
            fake.calls()[before..],
            [Call::Get(1), Call::Get(1), Call::Get(2)],
            "x and y, once each"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn batched_gets_return_vectors_only_to_those_who_asked() {
        let (fake, store) = seeded().await;
        let before = fake.calls().len();
        let (held, busy) = fill_read_slots(&fake, |tenant, id| {
            spawn_get(&store, vec![key(tenant, id)], false)
        })
        .await;
        let with = spawn_get(&store, vec![key("t", "x")], true);
        let without = spawn_get(&store, vec![key("t", "x")], false);
        settle().await;
        drop(held);
        for task in busy {
            answer(task).await;
        }
        let with = answer(with).await.remove(0).expect("found");
        let without = answer(without).await.remove(0).expect("found");
        assert_eq!(with.vector, vec![1.0, 0.0]);
        assert!(without.vector.is_empty());
        // One key, asked for once, with its vector.
        assert_eq!(fake.calls().last(), Some(&Call::Get(1)));
        assert_eq!(fake.calls().len(), before + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn searches_and_gets_are_limited_by_their_own_slots() {
        let (fake, store) = seeded_with(3, 1, 64).await;
        let before = fake.calls().len();
        let held = fake.hold_reads().await;
        // Three search slots: three searches go alone, at once.
        let searches = [
            spawn_search(&store, "a"),
            spawn_search(&store, "b"),
            spawn_search(&store, "a"),
        ];
        until_calls(&fake, before + 3).await;
        // One get slot, still free: the first get goes alone, the next two
        // wait for it and then go together.
        let first_get = spawn_get(&store, vec![key("t", "x")], false);
        until_calls(&fake, before + 4).await;
        let queued_gets = [
            spawn_get(&store, vec![key("a", "a1")], false),
            spawn_get(&store, vec![key("b", "b1")], false),
        ];
        settle().await;
        assert_eq!(fake.calls().len(), before + 4, "the later gets queued");
        drop(held);
        let [a, b, a_again] = searches;
        assert_eq!(hit_ids(answer(a).await), ["a1"]);
        assert_eq!(hit_ids(answer(b).await), ["b1"]);
        assert_eq!(hit_ids(answer(a_again).await), ["a1"]);
        assert_eq!(found_ids(answer(first_get).await), [Some("x".into())]);
        let [a, b] = queued_gets;
        assert_eq!(found_ids(answer(a).await), [Some("a1".into())]);
        assert_eq!(found_ids(answer(b).await), [Some("b1".into())]);
        assert_eq!(
            fake.calls()[before..],
            [
                Call::Search(1),
                Call::Search(1),
                Call::Search(1),
                Call::Get(1),
                Call::Get(2)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn queued_searches_go_in_batches_of_at_most_max_search_batch_size() {
        let (fake, store) = seeded_with(1, 1, 2).await;
        let before = fake.calls().len();
        let held = fake.hold_reads().await;
        let alone = spawn_search(&store, "a");
        until_calls(&fake, before + 1).await;
        // The only slot is busy: five searches queue.
        let queued = ["a", "b", "t", "a", "b"].map(|tenant| spawn_search(&store, tenant));
        settle().await;
        assert_eq!(fake.calls().len(), before + 1, "queued, not sent");
        drop(held);
        assert_eq!(hit_ids(answer(alone).await), ["a1"]);
        let expected = [vec!["a1"], vec!["b1"], vec!["x"], vec!["a1"], vec!["b1"]];
        for (task, ids) in queued.into_iter().zip(expected) {
            assert_eq!(hit_ids(answer(task).await), ids);
        }
        // Two, two, then the last one: never more than two in one call.
        assert_eq!(
            fake.calls()[before..],
            [
                Call::Search(1),
                Call::Search(2),
                Call::Search(2),
                Call::Search(1)
            ]
        );
    }
}
