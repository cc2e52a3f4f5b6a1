//! Admission control: shed load with a clear status instead of queueing it.
//!
//! Two independent gates:
//!
//! - A global concurrency limit on the vecmem services (`shed_layer`), built
//!   from tower's `GlobalConcurrencyLimit` and `LoadShed`: a slot is reserved
//!   in `poll_ready`, and a call that finds none is answered at once with
//!   RESOURCE_EXHAUSTED and a `RetryInfo`, never queued. It sits before
//!   decoding, so an overloaded replica spends nothing on shed calls. Health
//!   and reflection are outside it, so probes still answer under overload.
//! - Per-tenant token buckets (`TenantRates`), separate for reads and writes,
//!   checked in the core after validation (only the decoded request names its
//!   tenant), so one noisy tenant cannot starve the others.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::http::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, Layer, ServiceBuilder};

use crate::config::AdmissionConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// How often (in checks) idle tenants' buckets are dropped from memory.
const RETAIN_EVERY: u64 = 4096;

/// Sheds calls beyond `max_concurrency` in flight with RESOURCE_EXHAUSTED.
pub fn shed_layer<S>(
    max_concurrency: usize,
    retry_after: Duration,
    metrics: Arc<Metrics>,
) -> impl Layer<
    S,
    Service = impl tower::Service<
        axum::http::Request<Body>,
        Response = Response<Body>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone,
> + Clone
where
    S: tower::Service<axum::http::Request<Body>, Response = Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |err: BoxError| {
            let metrics = metrics.clone();
            async move { overloaded(err, retry_after, &metrics) }
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(max_concurrency))
}

/// The gRPC answer to a shed call.
fn overloaded(err: BoxError, retry_after: Duration, metrics: &Metrics) -> Response<Body> {
    let error = if err.is::<tower::load_shed::error::Overloaded>() {
        metrics.shed("concurrency");
        Error::ResourceExhausted {
            reason: "server overloaded; retry later".into(),
            retry_after,
        }
    } else {
        Error::internal(err)
    };
    tonic::Status::from(error).into_http()
}

/// Whether a call reads or writes; each has its own per-tenant budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

type KeyedLimiter =
    RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>;

/// Per-tenant token buckets for reads and writes; `None` means unlimited.
pub struct TenantRates {
    read: Option<KeyedLimiter>,
    write: Option<KeyedLimiter>,
    checks: AtomicU64,
    metrics: Arc<Metrics>,
}

impl TenantRates {
    pub fn new(config: &AdmissionConfig, metrics: Arc<Metrics>) -> Self {
        let limiter = |per_second: u32| {
            let rate = NonZeroU32::new(per_second)?;
            let burst = NonZeroU32::new(config.tenant_burst).unwrap_or(rate);
            Some(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        };
        Self {
            read: limiter(config.tenant_read_rps),
            write: limiter(config.tenant_write_rps),
            checks: AtomicU64::new(0),
            metrics,
        }
    }

    /// Takes one token of `tenant`'s budget, or says when to retry.
    pub fn check(&self, tenant: &str, access: Access) -> Result<()> {
        let limiter = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&tenant.to_owned()).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            self.metrics.shed(match access {
                Access::Read => "tenant_read_rate",
                Access::Write => "tenant_write_rate",
            });
            Error::ResourceExhausted {
                reason: format!("tenant {} rate limit exceeded", kind(access)),
                retry_after: retry_after.max(Duration::from_millis(1)),
            }
        })
    }
}

fn kind(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tonic::Code;
    use tonic_types::StatusExt;
    use tower::{Service, ServiceExt};

    fn config(read: u32, write: u32, burst: u32) -> AdmissionConfig {
        AdmissionConfig {
            max_concurrency: 1,
            retry_after_ms: 250,
            tenant_read_rps: read,
            tenant_write_rps: write,
            tenant_burst: burst,
        }
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_are_shed_at_once_with_retry_info() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let metrics = Arc::new(Metrics::new());
        let service = shed_layer(1, Duration::from_millis(250), metrics.clone()).layer(mock);

        // The first call takes the only slot and stays in flight.
        let first = tokio::spawn(service.clone().oneshot(Request::new(Body::empty())));
        let (_request, in_flight) = handle
            .next_request()
            .await
            .expect("first call reached the service");

        // The second is answered at once, without reaching the service.
        let shed = service
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .expect("infallible");
        let status = tonic::Status::from_header_map(shed.headers()).expect("grpc status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(Duration::from_millis(250)));
        assert!(
            metrics
                .encode()
                .contains(r#"vecmem_shed_total{reason="concurrency"} 1"#),
            "{}",
            metrics.encode()
        );

        // When the first finishes, its slot is free again.
        in_flight.send_response(Response::new(Body::empty()));
        let done = first.await.expect("join").expect("infallible");
        assert!(tonic::Status::from_header_map(done.headers()).is_none());
        let mut service = service;
        let third = tokio::spawn(async move {
            service
                .ready()
                .await
                .expect("ready")
                .call(Request::new(Body::empty()))
                .await
        });
        let (_request, respond) = handle.next_request().await.expect("third call admitted");
        respond.send_response(Response::new(Body::empty()));
        third.await.expect("join").expect("infallible");
    }

    #[test]
    fn each_tenant_has_its_own_read_and_write_budget() {
        // One token per hour after the burst: nothing refills during the test.
        let rates = TenantRates {
            read: Some(RateLimiter::keyed(
                Quota::per_hour(NonZeroU32::MIN).allow_burst(NonZeroU32::new(2).expect("2")),
            )),
            write: Some(RateLimiter::keyed(Quota::per_hour(NonZeroU32::MIN))),
            checks: AtomicU64::new(0),
            metrics: Arc::new(Metrics::new()),
        };
        assert!(rates.check("a", Access::Read).is_ok());
        assert!(rates.check("a", Access::Read).is_ok());
        match rates.check("a", Access::Read) {
            Err(Error::ResourceExhausted {
                retry_after,
                reason,
            }) => {
                assert!(retry_after > Duration::from_secs(60), "{retry_after:?}");
                assert!(reason.contains("read"));
            }
            other => panic!("expected the read budget to run out, got {other:?}"),
        }
        // Another tenant, and the same tenant's writes, are untouched.
        assert!(rates.check("b", Access::Read).is_ok());
        assert!(rates.check("a", Access::Write).is_ok());
        assert!(rates.check("a", Access::Write).is_err());
    }

    #[test]
    fn zero_means_unlimited() {
        let rates = TenantRates::new(&config(0, 0, 0), Arc::new(Metrics::new()));
        for _ in 0..10_000 {
            assert!(rates.check("a", Access::Write).is_ok());
        }
        let limited = TenantRates::new(&config(5, 0, 5), Arc::new(Metrics::new()));
        let allowed = (0..100)
            .filter(|_| limited.check("a", Access::Read).is_ok())
            .count();
        assert!((5..=6).contains(&allowed), "burst of 5, got {allowed}");
    }
}
