//! Write pacing: keeps the part of a namespace that is not indexed yet
//! bounded, so searches stay indexed under a steady flood of writes, without
//! ever failing or stopping a write.
//!
//! The engine indexes in passes ([`super::indexer`]) that are far slower than
//! writes can arrive: 64 writers upserting 1024-dim memories flat out outran
//! them ten to one, and after 5 minutes 1.45 million points were unindexed,
//! so every search scanned them. As RocksDB delays writes under a compaction
//! backlog instead of stopping them, a namespace whose unindexed points
//! exceed `backend.embedded.max_unindexed_points` charges each point written
//! a pause that grows with the excess, from nothing at the limit to the pause
//! of [`FLOOR_POINTS_PER_SECOND`] at twice the limit and beyond. The pause is
//! taken while the namespace's write turn is held (not its journal), so it
//! paces the namespace's writes as a whole, whatever the number of writers;
//! reads are never paced, nor held behind a paused write. A write is durable
//! before its pause, which only delays its answer and the writes queued
//! behind it.
//!
//! This bounds the unindexed part, not the journal: the journal empties only
//! when an indexing pass ends with nothing new to index, which steady writes,
//! paced or not, do not allow.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qdrant_edge::{CountRequest, EdgeShard, Filter, HasVectorCondition, ShardInfo};

use crate::backend::text::TEXT_VECTOR;

/// The slowest a namespace is paced to, in points per second. With 64
/// single-point writers queued, each waits about 0.64 s at this rate.
pub const FLOOR_POINTS_PER_SECOND: f64 = 100.0;
/// The longest one write is paused, however many points it holds.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How long a reading of the backlog is used before it is read again:
/// reading it walks the engine's segments.
const REREAD_AFTER: Duration = Duration::from_millis(250);

/// One namespace's pacing: its limit and the backlog last read.
pub struct Pacer {
    namespace: String,
    /// Unindexed points above which writes slow down; 0 turns pacing off.
    limit: u64,
    /// Points the engine leaves unindexed on purpose: it indexes a segment
    /// only once its vectors exceed the namespace's `indexing_threshold_kb`,
    /// as a scan of fewer is as fast as an index. Not counted as backlog.
    left_unindexed: u64,
    backlog: AtomicU64,
    read_at: Mutex<Option<Instant>>,
    /// Microseconds of pause charged so far, for the logs and tests.
    paused_us: AtomicU64,
}

impl Pacer {
    /// `limit` as `backend.embedded.max_unindexed_points` gives it, for a
    /// namespace of `dim` dimensions indexed from `indexing_threshold_kb` on.
    pub fn new(namespace: &str, limit: usize, dim: usize, indexing_threshold_kb: usize) -> Self {
        let vector_bytes = (dim.max(1) * std::mem::size_of::<f32>()) as u64;
        let left_unindexed = match indexing_threshold_kb {
            // The engine's "never index": nothing is a backlog.
            0 => u64::MAX,
            kb => (kb as u64).saturating_mul(1024) / vector_bytes,
        };
        Self {
            namespace: namespace.to_owned(),
            limit: limit as u64,
            left_unindexed,
            backlog: AtomicU64::new(0),
            read_at: Mutex::new(None),
            paused_us: AtomicU64::new(0),
        }
    }

    /// The pause owed for writing `points` points, the backlog read again
    /// with `read_backlog` when the last reading is older than
    /// [`REREAD_AFTER`].
    pub fn pause(&self, points: usize, read_backlog: impl FnOnce() -> u64) -> Duration {
        if self.limit == 0 || points == 0 {
            return Duration::ZERO;
        }
        let stale = self
            .read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= REREAD_AFTER);
        let backlog = if stale {
            self.observe(read_backlog())
        } else {
            self.backlog.load(Ordering::Relaxed)
        };
        let pause = pause_per_point(self.limit, backlog)
            .saturating_mul(u32::try_from(points).unwrap_or(u32::MAX))
            .min(MAX_PAUSE);
        self.paused_us
            .fetch_add(pause.as_micros() as u64, Ordering::Relaxed);
        pause
    }

    /// Takes a fresh count of the namespace's unindexed points (as
    /// [`unindexed_points`] gives it), as writes do now and then and the
    /// indexer does after each build, so that a build that catches up
    /// releases the writes at once. Returns the backlog it makes of it.
    pub fn observe(&self, unindexed_points: u64) -> u64 {
        let backlog = unindexed_points.saturating_sub(self.left_unindexed);
        let before = self.backlog.swap(backlog, Ordering::Relaxed);
        *self.read_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.log_change(before, backlog);
        backlog
    }

    fn log_change(&self, before: u64, now: u64) {
        if self.limit == 0 {
            return;
        }
        match (before > self.limit, now > self.limit) {
            (false, true) => tracing::warn!(
                namespace = %self.namespace,
                unindexed_points = now,
                limit = self.limit,
                "writes paced: the index is behind; each point written now waits up to {} ms",
                1_000.0 / FLOOR_POINTS_PER_SECOND
            ),
            (true, false) => tracing::info!(
                namespace = %self.namespace,
                unindexed_points = now,
                paused_ms = self.paused().as_millis() as u64,
                "writes no longer paced: the index caught up"
            ),
            _ => {}
        }
    }

    /// The pauses charged so far, added up.
    pub fn paused(&self) -> Duration {
        Duration::from_micros(self.paused_us.load(Ordering::Relaxed))
    }
}

/// Nothing up to `limit`; above it, linearly more up to the floor rate's
/// pause at twice the limit.
fn pause_per_point(limit: u64, backlog: u64) -> Duration {
    if backlog <= limit {
        return Duration::ZERO;
    }
    let excess = ((backlog - limit) as f64 / limit as f64).min(1.0);
    Duration::from_secs_f64(excess / FLOOR_POINTS_PER_SECOND)
}

/// The points of `engine` that no index covers yet, `info` being what its
/// `info()` said just now. The engine counts as indexed every vector of a
/// segment that has any index, and a namespace with text gives every
/// segment one (its sparse index over the text vectors, kept up to date on
/// each write): so every text vector is in `indexed_vectors_count`, and
/// what is left of it once they are taken out is the dense vectors an HNSW
/// index covers, one per indexed point.
pub fn unindexed_points(engine: &EdgeShard, info: &ShardInfo, has_text: bool) -> u64 {
    let points = info.points_count as u64;
    let indexed_vectors = info.indexed_vectors_count as u64;
    let indexed_points = if has_text {
        let with_text = engine
            .count(CountRequest {
                filter: Some(Filter::new_must(qdrant_edge::Condition::HasVector(
                    HasVectorCondition::from(TEXT_VECTOR.to_owned()),
                ))),
                exact: true,
            })
            .unwrap_or(0) as u64;
        indexed_vectors.saturating_sub(with_text)
    } else {
        indexed_vectors
    };
    points.saturating_sub(indexed_points)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pacer with no point left unindexed on purpose (1 KB holds no
    /// 1024-dim vector).
    fn pacer(limit: usize) -> Pacer {
        Pacer::new("ns", limit, 1024, 1)
    }

    #[test]
    fn no_pause_up_to_the_limit() {
        assert_eq!(pause_per_point(1_000, 0), Duration::ZERO);
        assert_eq!(pause_per_point(1_000, 1_000), Duration::ZERO);
    }

    #[test]
    fn the_pause_grows_with_the_excess_to_the_floor_rate() {
        let floor = Duration::from_secs_f64(1.0 / FLOOR_POINTS_PER_SECOND);
        let half = pause_per_point(1_000, 1_500);
        assert!(half > Duration::ZERO && half < floor, "{half:?}");
        assert_eq!(pause_per_point(1_000, 2_000), floor);
        assert_eq!(pause_per_point(1_000, 1_000_000), floor);
    }

    #[test]
    fn a_write_pays_for_its_points_up_to_a_bound() {
        let pacer = pacer(100);
        let one = pacer.pause(1, || 200);
        assert_eq!(pacer.pause(10, || 200), one * 10);
        assert_eq!(pacer.pause(1_000_000, || 200), MAX_PAUSE);
        assert_eq!(pacer.paused(), one * 11 + MAX_PAUSE);
    }

    #[test]
    fn points_below_the_indexing_threshold_are_no_backlog() {
        // 10,000 KB of 1024-dim vectors: 2,500 points stay unindexed by design.
        let pacer = Pacer::new("ns", 100, 1024, 10_000);
        assert_eq!(pacer.pause(1, || 2_600), Duration::ZERO);
        assert_eq!(pacer.observe(2_600), 100);
    }

    #[test]
    fn a_build_that_catches_up_releases_the_writes_at_once() {
        let pacer = pacer(100);
        assert!(pacer.pause(1, || 300) > Duration::ZERO);
        pacer.observe(50);
        // Within the re-read interval the observed count stands; a slow
        // machine that passes the interval reads the same count again.
        assert_eq!(pacer.pause(1, || 50), Duration::ZERO);
    }

    #[test]
    fn a_namespace_never_indexed_is_never_paced() {
        let pacer = Pacer::new("ns", 100, 8, 0);
        assert_eq!(pacer.pause(1, || 1_000_000), Duration::ZERO);
    }

    #[test]
    fn pacing_off_never_reads_the_backlog() {
        let pacer = pacer(0);
        assert_eq!(pacer.pause(1_000, || unreachable!()), Duration::ZERO);
    }
}
