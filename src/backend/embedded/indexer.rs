//! The background thread that builds the embedded engine's indexes:
//! `qdrant-edge` does not index by itself, so without it every search stays
//! a full scan. It visits each namespace in turn, runs an indexing pass and
//! a checkpoint, and sleeps only when a round found nothing to do.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use super::Shard;

/// The background thread that builds indexes.
pub struct Indexer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Indexer {
    pub fn spawn(shards: Vec<Arc<Shard>>, interval: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vecmem-indexer".into())
            .spawn(move || {
                loop {
                    let mut worked = false;
                    for shard in &shards {
                        if stopped.try_recv().is_ok() {
                            return;
                        }
                        let started = std::time::Instant::now();
                        if shard.optimize() {
                            worked = true;
                            let info = shard.engine.info();
                            let unindexed = shard.pacer.observe(super::pacing::unindexed_points(
                                &shard.engine,
                                &info,
                                shard.has_text,
                            ));
                            tracing::info!(
                                namespace = %shard.name,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                points = info.points_count,
                                indexed_vectors = info.indexed_vectors_count,
                                unindexed_points = unindexed,
                                writes_paused_ms = shard.pacer.paused().as_millis() as u64,
                                "index build finished"
                            );
                        }
                    }
                    let wait = if worked { Duration::ZERO } else { interval };
                    match stopped.recv_timeout(wait) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    /// Asks the thread to stop after the pass it is in. A build in progress
    /// is not interrupted; it finishes or dies with the process, and is
    /// redone on the next start.
    pub fn stop(self) {
        let _ = self.stop.send(());
        drop(self.thread);
    }
}
