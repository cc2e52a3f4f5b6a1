//! The `[expiry]` section: how this replica sweeps expired memories off
//! disk. Reads never depend on it (they exclude the expired themselves);
//! it only bounds how long the expired take space.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use super::millis;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryConfig {
    /// Pause between sweeps; zero: this replica does not sweep.
    #[serde(rename = "sweep_interval_ms", deserialize_with = "millis")]
    pub sweep_interval: Duration,
    /// Most memories one delete of a sweep removes.
    pub sweep_batch: NonZeroUsize,
}
