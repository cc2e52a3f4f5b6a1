//! The `[limits]` and `[admission]` sections: how large one request may be,
//! and how much load one replica takes before it sheds.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, millis};

/// Request limits enforced by validation before anything reaches a backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest `limit` a search or scroll may ask for.
    pub max_limit: NonZeroU32,
    /// `limit` used when a request leaves it 0; at most `max_limit`.
    pub default_limit: NonZeroU32,
    /// Most memories per upsert, ids per get/delete/update, searches per batch.
    pub max_batch: NonZeroUsize,
    /// Largest payload of one memory, as JSON bytes.
    pub max_payload_bytes: NonZeroUsize,
    pub max_filter_depth: NonZeroUsize,
    pub max_filter_conditions: NonZeroUsize,
}

impl Limits {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.default_limit > self.max_limit {
            return Err(ConfigError::new(
                "limits.default_limit",
                format!(
                    "must be between 1 and limits.max_limit ({})",
                    self.max_limit
                ),
            ));
        }
        Ok(())
    }
}

/// Admission control: how much load a replica takes before shedding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Calls of MemoryService and NamespaceService in flight at once; beyond
    /// it calls are shed with RESOURCE_EXHAUSTED, never queued.
    pub max_concurrency: NonZeroUsize,
    /// The retry delay shed callers are given.
    #[serde(rename = "retry_after_ms", deserialize_with = "millis")]
    pub retry_after: Duration,
    /// Per-tenant reads (searches, gets, scrolls, counts) per second; 0 = unlimited.
    pub tenant_read_rps: u32,
    /// Per-tenant writes (upserts, deletes, payload updates) per second; 0 = unlimited.
    pub tenant_write_rps: u32,
    /// Bucket size of both per-tenant limits; 0 = one second's worth.
    pub tenant_burst: u32,
}
