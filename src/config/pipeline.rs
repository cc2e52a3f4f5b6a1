//! The `[pipeline]` and `[resilience]` sections: the batcher, the result
//! cache, and the retries and circuit breaker in front of the backend. Each
//! layer takes its own section as it is.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, micros, millis, nonzero_millis};

/// The layers between admission and the backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub batch: BatchConfig,
    pub cache: CacheConfig,
}

/// Coalescing of concurrent calls into batched backend calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    pub enabled: bool,
    /// Most requests in one backend call.
    pub max_batch_size: NonZeroUsize,
    /// Most search requests in one backend call, within `max_batch_size`.
    pub max_search_batch_size: NonZeroUsize,
    /// Longest wait for more requests after the first; zero takes only
    /// what is already queued.
    #[serde(rename = "max_delay_us", deserialize_with = "micros")]
    pub max_delay: Duration,
    /// Requests that may wait per namespace and kind before callers are
    /// pushed back.
    pub queue_capacity: NonZeroUsize,
    /// Search calls of one namespace to the backend in flight at once.
    pub concurrent_searches: NonZeroUsize,
    /// Get calls of one namespace to the backend in flight at once.
    pub concurrent_gets: NonZeroUsize,
}

/// The result cache of searches and gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Size bound, in bytes of cached keys and results.
    pub max_bytes: u64,
    /// How long an entry is served; the staleness bound across replicas.
    #[serde(rename = "ttl_ms", deserialize_with = "millis")]
    pub ttl: Duration,
    /// Answer from an expired entry while the backend is unavailable.
    pub serve_stale_on_error: bool,
    /// How old (since stored) an entry served that way may be.
    #[serde(rename = "stale_max_age_ms", deserialize_with = "millis")]
    pub stale_max_age: Duration,
}

impl CacheConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        // Zero is fine for a cache that is off, so these are checked here.
        if self.enabled && (self.ttl.is_zero() || self.max_bytes == 0) {
            let key = if self.ttl.is_zero() {
                "pipeline.cache.ttl_ms"
            } else {
                "pipeline.cache.max_bytes"
            };
            return Err(ConfigError::new(
                key,
                "must be at least 1 (set pipeline.cache.enabled = false to turn the cache off)",
            ));
        }
        Ok(())
    }
}

/// Retries and the circuit breaker in front of the backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Retries of a call that failed with UNAVAILABLE; 0 = none.
    pub max_retries: u32,
    #[serde(rename = "backoff_min_ms", deserialize_with = "millis")]
    pub backoff_min: Duration,
    #[serde(rename = "backoff_max_ms", deserialize_with = "nonzero_millis")]
    pub backoff_max: Duration,
    /// Retries allowed on top of first attempts, in percent of them.
    pub retry_budget_percent: u32,
    /// Retries per second always allowed, whatever the percentage.
    pub retry_budget_min_per_sec: u32,
    /// Consecutive failures that open the circuit; 0 = no breaker.
    pub circuit_failure_threshold: u32,
    /// How long the circuit stays open before one call probes the backend.
    #[serde(rename = "circuit_open_ms", deserialize_with = "millis")]
    pub circuit_open: Duration,
}

impl ResilienceConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.backoff_min > self.backoff_max {
            return Err(ConfigError::new(
                "resilience.backoff_max_ms",
                "must be at least 1 and not below resilience.backoff_min_ms",
            ));
        }
        if self.retry_budget_min_per_sec > 1_000_000 {
            return Err(ConfigError::new(
                "resilience.retry_budget_min_per_sec",
                "must be at most 1000000",
            ));
        }
        if self.retry_budget_percent > 1000 {
            return Err(ConfigError::new(
                "resilience.retry_budget_percent",
                "must be between 0 and 1000",
            ));
        }
        Ok(())
    }

    /// Retries allowed on top of first attempts, as a fraction of them.
    pub fn retry_budget_ratio(&self) -> f32 {
        self.retry_budget_percent as f32 / 100.0
    }
}
