//! `min_score` as vecmem promises it: inclusive ("at least", or "at most"
//! for distances), whatever the engine does.
//!
//! Qdrant's `score_threshold` (on a server and in the embedded engine alike)
//! drops a hit whose score equals the threshold, and may compare in its own
//! internal score space (a squared distance, say), where rounding moves the
//! boundary. So the engine is handed a threshold loosened by a small margin,
//! and the hits are cut here at the exact bound, on the very scores the
//! caller sees. Loosening only admits hits that rank below every hit meeting
//! the exact bound, so after the cut the hits are exactly the best `limit`
//! that meet it.

use crate::config::Distance;
use crate::model::ScoredMemory;

/// Relative margin by which the engine's threshold is loosened: far above
/// float rounding (about 1e-7 relative), far below any useful bound.
const MARGIN: f32 = 1e-5;

/// Whether higher scores are better (similarities) or lower (distances).
fn higher_is_better(distance: Distance) -> bool {
    match distance {
        Distance::Cosine | Distance::Dot => true,
        Distance::Euclid | Distance::Manhattan => false,
    }
}

/// The threshold to give the engine for a caller's inclusive `min_score`.
pub fn engine_threshold(distance: Distance, min_score: Option<f32>) -> Option<f32> {
    let bound = min_score?;
    let slack = MARGIN * bound.abs().max(1.0);
    Some(if higher_is_better(distance) {
        bound - slack
    } else {
        bound + slack
    })
}

/// Drops the hits that do not meet `min_score` (inclusive).
pub fn cut(distance: Distance, min_score: Option<f32>, hits: &mut Vec<ScoredMemory>) {
    let Some(bound) = min_score else {
        return;
    };
    if higher_is_better(distance) {
        hits.retain(|hit| hit.score >= bound);
    } else {
        hits.retain(|hit| hit.score <= bound);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Memory;

    fn hits(scores: &[f32]) -> Vec<ScoredMemory> {
        scores
            .iter()
            .map(|&score| ScoredMemory {
                memory: Memory {
                    id: score.to_string(),
                    vector: vec![],
                    payload: Default::default(),
                    updated_at: None,
                },
                score,
            })
            .collect()
    }

    fn scores(hits: &[ScoredMemory]) -> Vec<f32> {
        hits.iter().map(|hit| hit.score).collect()
    }

    #[test]
    fn the_engine_gets_a_looser_threshold_on_the_side_of_worse_scores() {
        for bound in [-2.0f32, 0.0, 0.5, 1.0, 1e6] {
            let similarity = engine_threshold(Distance::Dot, Some(bound)).expect("set");
            let distance = engine_threshold(Distance::Euclid, Some(bound)).expect("set");
            assert!(similarity < bound, "{bound}");
            assert!(distance > bound, "{bound}");
        }
        assert_eq!(engine_threshold(Distance::Cosine, None), None);
    }

    #[test]
    fn a_score_equal_to_the_bound_is_kept() {
        let mut similar = hits(&[2.0, 1.0, 0.99999]);
        cut(Distance::Dot, Some(1.0), &mut similar);
        assert_eq!(scores(&similar), vec![2.0, 1.0]);

        let mut near = hits(&[0.0, 0.5, 0.50001]);
        cut(Distance::Euclid, Some(0.5), &mut near);
        assert_eq!(scores(&near), vec![0.0, 0.5]);

        let mut duplicates = hits(&[0.0, 0.1]);
        cut(Distance::Manhattan, Some(0.0), &mut duplicates);
        assert_eq!(scores(&duplicates), vec![0.0]);
    }
}
