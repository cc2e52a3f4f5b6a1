//! The request pipeline between the transports and the backend, composed in
//! one place ([`build`]). Each concern lives in its own module and can be
//! switched off for side-by-side measurement.
//!
//! In request order: admission (the concurrency limit in the transports'
//! edge, `api::layers`, then the per-tenant rates in the core) → result
//! cache (called by the core, which knows each read's consistency and each
//! write's tenant) → batcher → resilience → backend. The last three are
//! [`VectorStore`]s wrapped around each other, so the core talks to one
//! store whatever is switched on.

use std::sync::Arc;

use crate::backend::VectorStore;
use crate::config::Config;
use crate::error::Result;
use crate::metrics::Metrics;

pub mod admission;
pub mod batch;
pub mod batch_store;
pub mod cache;
#[cfg(test)]
mod fake_store;
pub mod resilience;

use batch_store::BatchingStore;
use cache::ResultCache;
use resilience::ResilientStore;

/// What the core calls: the wrapped store and the result cache, and the
/// metrics the core's own admission checks record into.
pub struct Pipeline {
    pub store: Arc<dyn VectorStore>,
    pub cache: ResultCache,
    pub metrics: Arc<Metrics>,
}

/// Wraps `backend` in the layers the config switches on. Must run inside the
/// tokio runtime: the batcher's workers are spawned here.
pub fn build(
    config: &Config,
    backend: Arc<dyn VectorStore>,
    metrics: Arc<Metrics>,
) -> Result<Pipeline> {
    // Innermost: retries and the breaker see every backend call, one per
    // batch, so a batch is retried as a whole and an open circuit fails a
    // whole batch at once.
    let mut store: Arc<dyn VectorStore> = Arc::new(ResilientStore::new(
        backend,
        &config.resilience,
        metrics.clone(),
    )?);

    // Then the batcher: concurrent calls of a namespace become one call.
    if config.pipeline.batch.enabled {
        store = Arc::new(BatchingStore::new(
            store,
            config.namespaces.keys().map(String::as_str),
            &config.pipeline.batch,
            metrics.clone(),
        ));
    }

    // The cache sits above the batcher: a hit never waits in a queue.
    let cache = ResultCache::new(&config.pipeline.cache, metrics.clone());
    Ok(Pipeline {
        store,
        cache,
        metrics,
    })
}
