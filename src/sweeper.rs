//! The sweeper: a background task that deletes expired memories from
//! storage, so they stop taking disk and index space.
//!
//! Reads never wait for it: every read excludes memories past their
//! `expires_at` by itself ([`crate::backend::layout`]). The sweeper only
//! bounds how long the expired stay on disk. Every `expiry.sweep_interval`
//! it asks the store, namespace by namespace, to delete up to
//! `expiry.sweep_batch` expired memories at a time until a delete finds
//! fewer: each write stays small, so a sweep after a mass expiry never
//! holds the backend for long, and the requests served meanwhile interleave
//! with its deletes. It goes through the same store as requests (retries
//! and circuit breaker included) but not through the cache: what it deletes
//! no read could see any more.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::VectorStore;
use crate::config::ExpiryConfig;
use crate::error::Error;
use crate::metrics::Metrics;

/// A running sweeper; [`Sweeper::stop`] ends it between two deletes.
pub struct Sweeper {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Sweeper {
    /// Starts sweeping `namespaces`, unless `config` turns sweeping off
    /// (`sweep_interval` zero).
    pub fn spawn(
        store: Arc<dyn VectorStore>,
        namespaces: Vec<String>,
        config: &ExpiryConfig,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        if config.sweep_interval.is_zero() {
            tracing::info!(
                "expired memories are not swept by this replica (expiry.sweep_interval_ms = 0)"
            );
            return None;
        }
        let stop = CancellationToken::new();
        let batch = config.sweep_batch.get();
        let interval = config.sweep_interval;
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = ticks.tick() => {}
                    }
                    let started = Instant::now();
                    let (deleted, failed) = sweep(store.as_ref(), &namespaces, batch, &stop).await;
                    metrics.sweep_finished(deleted, started.elapsed().as_secs_f64());
                    if deleted > 0 {
                        tracing::debug!(deleted, "expired memories deleted");
                    }
                    if let Some(error) = failed {
                        metrics.sweep_failed();
                        // An unreachable backend is reported by the health
                        // checks already; anything else is news.
                        if matches!(error, Error::Unavailable { .. }) {
                            tracing::debug!(%error, "sweep of expired memories failed");
                        } else {
                            tracing::warn!(%error, "sweep of expired memories failed");
                        }
                    }
                }
            }
        });
        Some(Self { stop, task })
    }

    /// Stops sweeping and waits for the delete in progress, if any, to end.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "sweeper task failed");
        }
    }
}

/// One sweep: every namespace, in bounded deletes, until none finds a full
/// batch (or `stop`). Returns how many memories it deleted, and the last
/// failure: a namespace whose delete failed is left for the next sweep,
/// the others are still swept.
async fn sweep(
    store: &dyn VectorStore,
    namespaces: &[String],
    batch: usize,
    stop: &CancellationToken,
) -> (usize, Option<Error>) {
    let mut deleted = 0;
    let mut failed = None;
    for namespace in namespaces {
        while !stop.is_cancelled() {
            match store
                .delete_expired(namespace, SystemTime::now(), batch)
                .await
            {
                Ok(found) => {
                    deleted += found;
                    if found < batch {
                        break;
                    }
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
    }
    (deleted, failed)
}
