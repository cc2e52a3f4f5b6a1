//! Per-tenant admission: token buckets (`TenantRates`, from `governor`),
//! separate for reads and writes, so one noisy tenant cannot starve the
//! others. They are checked in the core after validation, since only the
//! decoded request names its tenant; a tenant over its budget gets
//! RESOURCE_EXHAUSTED with the time until its next token as `RetryInfo`.
//! The global concurrency limit in front of decoding is [`super::shed`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::config::AdmissionConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::Access;

/// How often (in checks) idle tenants' buckets are dropped from memory.
const RETAIN_EVERY: u64 = 4096;

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

    fn config(read: u32, write: u32, burst: u32) -> AdmissionConfig {
        AdmissionConfig {
            max_concurrency: std::num::NonZeroUsize::MIN,
            retry_after: std::time::Duration::from_millis(250),
            tenant_read_rps: read,
            tenant_write_rps: write,
            tenant_burst: burst,
        }
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
