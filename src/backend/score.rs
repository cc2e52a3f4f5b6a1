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

use crate::backend::TenantSearch;
use crate::config::Distance;
use crate::model::ScoredMemory;

/// Relative margin by which the engine's threshold is loosened: far above
/// float rounding (about 1e-7 relative), far below any useful bound.
const MARGIN: f32 = 1e-5;

/// Whether a search's best hits score highest (similarities, BM25, fused
/// and boosted scores) or lowest (euclid and manhattan distances).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    HigherIsBetter,
    LowerIsBetter,
}

impl Order {
    /// The order of `search`'s scores in a namespace of `distance`: a
    /// search with text ranks by BM25 or fused scores, a boosted one by its
    /// formula, the rest by the distance.
    pub fn of(distance: Distance, search: &TenantSearch) -> Self {
        let by_distance = search.text.is_none() && search.boost.is_none();
        match distance {
            Distance::Euclid | Distance::Manhattan if by_distance => Self::LowerIsBetter,
            _ => Self::HigherIsBetter,
        }
    }
}

/// The threshold to give the engine for a caller's inclusive `min_score`.
pub fn engine_threshold(order: Order, min_score: Option<f32>) -> Option<f32> {
    let bound = min_score?;
    let slack = MARGIN * bound.abs().max(1.0);
    Some(match order {
        Order::HigherIsBetter => bound - slack,
        Order::LowerIsBetter => bound + slack,
    })
}

/// Drops the hits that do not meet `min_score` (inclusive).
pub fn cut(order: Order, min_score: Option<f32>, hits: &mut Vec<ScoredMemory>) {
    let Some(bound) = min_score else {
        return;
    };
    match order {
        Order::HigherIsBetter => hits.retain(|hit| hit.score >= bound),
        Order::LowerIsBetter => hits.retain(|hit| hit.score <= bound),
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
                    expires_at: None,
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
            let similarity = engine_threshold(Order::HigherIsBetter, Some(bound)).expect("set");
            let distance = engine_threshold(Order::LowerIsBetter, Some(bound)).expect("set");
            assert!(similarity < bound, "{bound}");
            assert!(distance > bound, "{bound}");
        }
        assert_eq!(engine_threshold(Order::HigherIsBetter, None), None);
    }

    #[test]
    fn a_score_equal_to_the_bound_is_kept() {
        let mut similar = hits(&[2.0, 1.0, 0.99999]);
        cut(Order::HigherIsBetter, Some(1.0), &mut similar);
        assert_eq!(scores(&similar), vec![2.0, 1.0]);

        let mut near = hits(&[0.0, 0.5, 0.50001]);
        cut(Order::LowerIsBetter, Some(0.5), &mut near);
        assert_eq!(scores(&near), vec![0.0, 0.5]);

        let mut duplicates = hits(&[0.0, 0.1]);
        cut(Order::LowerIsBetter, Some(0.0), &mut duplicates);
        assert_eq!(scores(&duplicates), vec![0.0]);
    }
}
