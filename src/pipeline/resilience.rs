//! Resilience between the pipeline and the backend: retries for transient
//! failures and a circuit breaker, as a [`VectorStore`] wrapped around the
//! backend so every call, batched or not, goes through both.
//!
//! Every backend call vecmem makes is idempotent (upserts and deletes name
//! their point ids, payload updates set values), so any call may be retried.
//! Only the answers that say "the backend did not do this, try again" are
//! retried: the backend unavailable, and Qdrant reporting a failing replica
//! or peer of its cluster (`ClusterDegraded`). A call that ran into the backend timeout is
//! not: it may be slow rather than lost, and a retry would only add load to a
//! struggling backend and make the caller wait twice. Retries back off exponentially with jitter,
//! never outlast the caller's deadline, and draw from a budget (tower's
//! `TpsBudget`) refilled by first attempts, so during an outage retries add a
//! bounded fraction of load instead of multiplying it.
//!
//! The breaker opens after `failure_threshold` consecutive failures that say
//! the backend is unavailable (refused, UNAVAILABLE, or timed out). A
//! degraded cluster does not count: Qdrant answered, and only the calls that
//! touch its failing shards fail, so shutting out every call would turn a
//! partial failure into a whole one. While open, calls fail at once with UNAVAILABLE and a
//! `RetryInfo` of the time left, without touching the backend. After
//! `open_for`, one call is let through as a probe: success closes the
//! circuit, failure opens it again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;
use tower::retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::HasherRng;

use crate::backend::{
    MemoryKey, NamespaceStats, PayloadUpdate, ScrollQuery, StorePage, TenantDelete, TenantMemory,
    TenantSearch, VectorStore,
};
use crate::backup::SnapshotCopy;
use crate::config::ResilienceConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{Filter, Memory, ScoredMemory};

/// The breaker's state machine, separate from any I/O so it can be tested
/// step by step under paused time.
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is out; others fail fast until it reports or `until` passes.
    HalfOpen {
        until: Instant,
    },
}

/// Whether a call may go to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    No { retry_after: Duration },
}

impl CircuitBreaker {
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        Self {
            failure_threshold,
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value; a panic elsewhere cannot leave it torn.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_open(&self) -> bool {
        !matches!(*self.state(), State::Closed { .. })
    }

    pub fn admit(&self) -> Admit {
        if self.failure_threshold == 0 {
            return Admit::Yes;
        }
        let now = Instant::now();
        let mut state = self.state();
        match *state {
            State::Closed { .. } => Admit::Yes,
            State::Open { until } | State::HalfOpen { until } if now >= until => {
                // Probe; if it never reports back, another may go after
                // `open_for`.
                *state = State::HalfOpen {
                    until: now + self.open_for,
                };
                Admit::Yes
            }
            State::Open { until } | State::HalfOpen { until } => Admit::No {
                retry_after: until - now,
            },
        }
    }

    /// Records the outcome of an admitted call: `true` when the backend
    /// failed in a way that says it is unavailable.
    pub fn record(&self, failed: bool) {
        if self.failure_threshold == 0 {
            return;
        }
        let mut state = self.state();
        *state = match (*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 < self.failure_threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (State::Open { until }, true) => State::Open { until },
            (State::Closed { .. } | State::HalfOpen { .. }, true) => {
                tracing::warn!(open_for = ?self.open_for, "backend failing; circuit opened");
                State::Open {
                    until: Instant::now() + self.open_for,
                }
            }
        };
    }
}

pub struct ResilientStore {
    inner: Arc<dyn VectorStore>,
    /// Retries after the first attempt; 0 turns retrying off.
    max_retries: u32,
    breaker: CircuitBreaker,
    budget: TpsBudget,
    backoff: ExponentialBackoffMaker<HasherRng>,
    metrics: Arc<Metrics>,
}

impl ResilientStore {
    pub fn new(
        inner: Arc<dyn VectorStore>,
        settings: &ResilienceConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let backoff = ExponentialBackoffMaker::new(
            settings.backoff_min,
            settings.backoff_max,
            0.5,
            HasherRng::default(),
        )
        .map_err(|error| Error::internal(format!("retry backoff: {error}")))?;
        Ok(Self {
            inner,
            max_retries: settings.max_retries,
            breaker: CircuitBreaker::new(settings.circuit_failure_threshold, settings.circuit_open),
            budget: TpsBudget::new(
                Duration::from_secs(10),
                settings.retry_budget_min_per_sec,
                settings.retry_budget_ratio(),
            ),
            backoff,
            metrics,
        })
    }

    /// Runs `call` against the backend through the breaker, retrying
    /// transient failures while budget and deadline allow.
    async fn call<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.budget.deposit();
        let mut backoff = self.backoff.clone().make_backoff();
        let mut retries = 0;
        loop {
            if let Admit::No { retry_after } = self.breaker.admit() {
                return Err(Error::Unavailable {
                    message: "storage backend unavailable (circuit open)".into(),
                    retry_after,
                });
            }
            let started = Instant::now();
            let result = call().await;
            let failed = result.as_ref().is_err_and(Error::is_backend_unavailable);
            self.metrics
                .backend_call(op, started.elapsed().as_secs_f64(), result.as_ref().err());
            self.breaker.record(failed);
            self.metrics.set_circuit_open(self.breaker.is_open());
            let retryable = matches!(
                result,
                Err(Error::Unavailable { .. } | Error::ClusterDegraded { .. })
            );
            if !retryable
                || retries >= self.max_retries
                || self.breaker.is_open()
                || !self.budget.withdraw()
            {
                return result;
            }
            let pause = backoff.next_backoff();
            match crate::deadline::remaining() {
                Some(left) => {
                    if tokio::time::timeout(left, pause).await.is_err() {
                        return result;
                    }
                }
                None => pause.await,
            }
            retries += 1;
            self.metrics.backend_retry(op);
            tracing::debug!(op, retries, "retrying backend call");
        }
    }
}

#[async_trait]
impl VectorStore for ResilientStore {
    async fn upsert(&self, namespace: &str, memories: Vec<TenantMemory>) -> Result<()> {
        self.call("upsert", || self.inner.upsert(namespace, memories.clone()))
            .await
    }

    async fn search(
        &self,
        namespace: &str,
        searches: Vec<TenantSearch>,
    ) -> Result<Vec<Vec<ScoredMemory>>> {
        self.call("search", || self.inner.search(namespace, searches.clone()))
            .await
    }

    async fn get(
        &self,
        namespace: &str,
        keys: Vec<MemoryKey>,
        with_vector: bool,
    ) -> Result<Vec<Option<Memory>>> {
        self.call("get", || {
            self.inner.get(namespace, keys.clone(), with_vector)
        })
        .await
    }

    async fn delete(&self, namespace: &str, deletes: Vec<TenantDelete>) -> Result<()> {
        self.call("delete", || self.inner.delete(namespace, deletes.clone()))
            .await
    }

    async fn scroll(&self, namespace: &str, tenant: &str, query: ScrollQuery) -> Result<StorePage> {
        self.call("scroll", || {
            self.inner.scroll(namespace, tenant, query.clone())
        })
        .await
    }

    async fn count(&self, namespace: &str, tenant: &str, filter: Filter) -> Result<u64> {
        self.call("count", || {
            self.inner.count(namespace, tenant, filter.clone())
        })
        .await
    }

    async fn update_payload(&self, namespace: &str, update: PayloadUpdate) -> Result<()> {
        self.call("update_payload", || {
            self.inner.update_payload(namespace, update.clone())
        })
        .await
    }

    async fn delete_expired(
        &self,
        namespace: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<usize> {
        self.call("delete_expired", || {
            self.inner.delete_expired(namespace, now, limit)
        })
        .await
    }

    async fn stats(&self, namespace: &str) -> Result<NamespaceStats> {
        self.call("stats", || self.inner.stats(namespace)).await
    }

    async fn is_ready(&self) -> bool {
        self.inner.is_ready().await
    }

    /// Neither retried nor timed out: a copy takes as long as the data is
    /// large, and a second attempt would copy it all again.
    async fn snapshot(&self) -> Result<SnapshotCopy> {
        self.inner.snapshot().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fake_store::{FakeStore, unavailable};

    const OPEN_FOR: Duration = Duration::from_secs(2);

    fn settings(max_retries: u32, failure_threshold: u32) -> ResilienceConfig {
        ResilienceConfig {
            max_retries,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            retry_budget_percent: 20,
            retry_budget_min_per_sec: 10,
            circuit_failure_threshold: failure_threshold,
            circuit_open: OPEN_FOR,
        }
    }

    fn resilient(fake: &Arc<FakeStore>, settings: ResilienceConfig) -> ResilientStore {
        ResilientStore::new(fake.clone(), &settings, Arc::new(Metrics::new())).expect("settings")
    }

    fn key() -> Vec<MemoryKey> {
        vec![MemoryKey {
            tenant: "t".into(),
            id: "x".into(),
        }]
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_consecutive_failures_and_probes_after_a_while() {
        let breaker = CircuitBreaker::new(3, OPEN_FOR);
        for _ in 0..2 {
            assert_eq!(breaker.admit(), Admit::Yes);
            breaker.record(true);
        }
        assert!(!breaker.is_open(), "two failures are not enough");
        breaker.record(false);
        for _ in 0..3 {
            assert_eq!(breaker.admit(), Admit::Yes);
            breaker.record(true);
        }
        assert!(breaker.is_open());
        assert_eq!(
            breaker.admit(),
            Admit::No {
                retry_after: OPEN_FOR
            }
        );

        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(breaker.admit(), Admit::Yes, "one probe");
        assert!(
            matches!(breaker.admit(), Admit::No { .. }),
            "only one probe"
        );
        breaker.record(false);
        assert!(!breaker.is_open(), "a good probe closes the circuit");
        assert_eq!(breaker.admit(), Admit::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_the_circuit_again() {
        let breaker = CircuitBreaker::new(1, OPEN_FOR);
        breaker.record(true);
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(breaker.admit(), Admit::Yes);
        breaker.record(true);
        assert_eq!(
            breaker.admit(),
            Admit::No {
                retry_after: OPEN_FOR
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_does_not_keep_the_circuit_shut() {
        let breaker = CircuitBreaker::new(1, OPEN_FOR);
        breaker.record(true);
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(breaker.admit(), Admit::Yes, "a probe that is then dropped");
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(breaker.admit(), Admit::Yes, "another probe");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_backoff() {
        let fake = Arc::new(FakeStore::default());
        fake.fail_next(2, unavailable());
        let store = resilient(&fake, settings(2, 0));
        let started = Instant::now();
        store.get("ns", key(), false).await.expect("third attempt");
        assert_eq!(fake.calls().len(), 3);
        assert!(started.elapsed() >= Duration::from_millis(10), "backed off");
    }

    #[tokio::test(start_paused = true)]
    async fn a_degraded_cluster_is_retried_but_does_not_open_the_circuit() {
        let fake = Arc::new(FakeStore::default());
        let degraded = Error::ClusterDegraded {
            retry_after: Duration::from_secs(1),
        };
        fake.fail_next(1, degraded.clone());
        let store = resilient(&fake, settings(2, 1));
        store.get("ns", key(), false).await.expect("second attempt");
        assert_eq!(fake.calls().len(), 2);

        // Failing every attempt, many times over: the circuit stays closed
        // (threshold 1), so each call still reaches the backend and gets
        // Qdrant's answer, not "circuit open".
        fake.fail_next(30, degraded);
        for call in 1..=10 {
            let result = store.get("ns", key(), false).await;
            assert!(
                matches!(result, Err(Error::ClusterDegraded { .. })),
                "{result:?}"
            );
            assert!(
                fake.calls().len() >= 2 + call,
                "call {call} reached the backend"
            );
        }
        assert!(!store.breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_limit() {
        let fake = Arc::new(FakeStore::default());
        fake.fail_next(5, unavailable());
        let store = resilient(&fake, settings(1, 0));
        let result = store.get("ns", key(), false).await;
        assert!(matches!(result, Err(Error::Unavailable { .. })));
        assert_eq!(fake.calls().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_about_the_request_are_not_retried() {
        let fake = Arc::new(FakeStore::default());
        fake.fail_next(1, Error::internal("bad request"));
        let store = resilient(&fake, settings(3, 0));
        assert!(store.get("ns", key(), false).await.is_err());
        assert_eq!(fake.calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_end_with_the_callers_deadline() {
        let fake = Arc::new(FakeStore::default());
        fake.fail_next(10, unavailable());
        let mut slow_backoff = settings(5, 0);
        slow_backoff.backoff_min = Duration::from_secs(1);
        slow_backoff.backoff_max = Duration::from_secs(1);
        let store = resilient(&fake, slow_backoff);
        let deadline = Instant::now() + Duration::from_millis(500);
        let result = crate::deadline::scope(deadline, store.get("ns", key(), false)).await;
        assert!(result.is_err());
        assert_eq!(
            fake.calls().len(),
            1,
            "no retry that would end after the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_stops_retries() {
        let fake = Arc::new(FakeStore::default());
        fake.fail_next(1000, unavailable());
        let mut no_budget = settings(3, 0);
        no_budget.retry_budget_percent = 0;
        no_budget.retry_budget_min_per_sec = 0;
        let store = resilient(&fake, no_budget);
        for _ in 0..10 {
            assert!(store.get("ns", key(), false).await.is_err());
        }
        assert_eq!(fake.calls().len(), 10, "first attempts only");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_fails_fast_without_calling_the_backend() {
        let fake = Arc::new(FakeStore::default());
        fake.fail_next(3, unavailable());
        let store = resilient(&fake, settings(0, 3));
        for _ in 0..3 {
            assert!(store.get("ns", key(), false).await.is_err());
        }
        let result = store.get("ns", key(), false).await;
        match result {
            Err(Error::Unavailable { retry_after, .. }) => assert_eq!(retry_after, OPEN_FOR),
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
        assert_eq!(fake.calls().len(), 3, "the open circuit kept the call away");

        tokio::time::advance(OPEN_FOR).await;
        store
            .get("ns", key(), false)
            .await
            .expect("the probe succeeds");
        store.get("ns", key(), false).await.expect("closed again");
        assert_eq!(fake.calls().len(), 5);
    }
}
