//! The formula a boosted search ranks by, written once for every backend.
//!
//! Qdrant's gRPC API and qdrant-edge take the same formula language (the
//! edge is Qdrant's own engine), so the formula is built here as a small
//! expression tree and each backend only spells it in its engine's types.
//! Both then rank by it identically:
//!
//! ```text
//! score = $score
//!       + recency.weight * decay(updated_at, target = now, scale = half_life, midpoint = 0.5)
//!       + importance.weight * (payload[key] if it is a number, else 0)
//! ```
//!
//! `updated_at` is stored as integer microseconds; it is divided by 10^6 so
//! it meets `now` in the seconds Qdrant gives datetimes; a payload date-time
//! (`recency.key`) is read as one. Terms read from a caller's payload are
//! guarded by a condition that the key holds a number (or a date-time):
//! Qdrant stops evaluating a product at its first 0, so a memory with a
//! string or nothing there adds 0 instead of failing the whole search.

use std::time::SystemTime;

use crate::backend::layout::{self, UPDATED_AT_FIELD};
use crate::model::{Boost, Bounds, Condition, Decay, FieldTest};

/// The score of the prefetched similarity search.
const SCORE: &str = "$score";

/// 0001-01-01T00:00:00Z: a lower bound every date-time meets, so that a
/// range from it holds exactly where a key holds a date-time.
const YEAR_1_MICROS: i64 = -62_135_596_800_000_000;

/// A boosted search ranks this many of the most similar memories.
pub fn candidates(limit: usize) -> usize {
    limit.saturating_mul(10).max(100)
}

/// An expression of Qdrant's formula language, in the variants vecmem uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Constant(f32),
    /// `$score`, or a path in the stored payload.
    Variable(String),
    /// An RFC 3339 date-time, as seconds since the epoch.
    Datetime(String),
    /// The date-time at a path in the stored payload, as seconds.
    DatetimeKey(String),
    /// 1 where the condition holds, else 0. Its key is a caller's payload
    /// key, translated like any filter condition.
    Condition(Condition),
    Sum(Vec<Expr>),
    Mult(Vec<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Decay {
        kind: Decay,
        x: Box<Expr>,
        target: Box<Expr>,
        scale: f32,
        midpoint: f32,
    },
}

/// The formula of a boosted search at time `now`.
pub fn formula(boost: &Boost, now: SystemTime) -> Expr {
    let mut terms = vec![Expr::Variable(SCORE.to_owned())];
    if let Some(recency) = &boost.recency {
        let mut factors = Vec::with_capacity(3);
        let written_at = match &recency.key {
            None => Expr::Div(
                Box::new(Expr::Variable(UPDATED_AT_FIELD.to_owned())),
                Box::new(Expr::Constant(1e6)),
            ),
            Some(key) => {
                factors.push(Expr::Condition(Condition::Field {
                    key: key.clone(),
                    test: FieldTest::DatetimeRange(Bounds {
                        gte: Some(YEAR_1_MICROS),
                        ..Bounds::default()
                    }),
                }));
                Expr::DatetimeKey(layout::payload_key_path(key))
            }
        };
        let now = humantime::format_rfc3339_micros(now).to_string();
        factors.push(Expr::Constant(recency.weight));
        factors.push(Expr::Decay {
            kind: recency.decay,
            x: Box::new(written_at),
            target: Box::new(Expr::Datetime(now)),
            scale: recency.half_life.as_secs_f32(),
            midpoint: 0.5,
        });
        terms.push(Expr::Mult(factors));
    }
    if let Some(importance) = &boost.importance {
        let is_a_number = Condition::Field {
            key: importance.key.clone(),
            test: FieldTest::Range(Bounds {
                gte: Some(f64::MIN),
                ..Bounds::default()
            }),
        };
        terms.push(Expr::Mult(vec![
            Expr::Condition(is_a_number),
            Expr::Constant(importance.weight),
            Expr::Variable(layout::payload_key_path(&importance.key)),
        ]));
    }
    Expr::Sum(terms)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::model::{ImportanceBoost, RecencyBoost};

    #[test]
    fn the_formula_adds_each_boost_to_the_score() {
        let boost = Boost {
            recency: Some(RecencyBoost {
                weight: 0.5,
                half_life: Duration::from_secs(3600),
                decay: Decay::Exponential,
                key: None,
            }),
            importance: Some(ImportanceBoost {
                key: "importance".into(),
                weight: 2.0,
            }),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let Expr::Sum(terms) = formula(&boost, now) else {
            panic!("a sum");
        };
        assert_eq!(terms[0], Expr::Variable("$score".into()));
        assert_eq!(
            terms[1],
            Expr::Mult(vec![
                Expr::Constant(0.5),
                Expr::Decay {
                    kind: Decay::Exponential,
                    x: Box::new(Expr::Div(
                        Box::new(Expr::Variable("updated_at_us".into())),
                        Box::new(Expr::Constant(1e6)),
                    )),
                    target: Box::new(Expr::Datetime("2027-01-15T08:00:00.000000Z".into())),
                    scale: 3600.0,
                    midpoint: 0.5,
                },
            ])
        );
        let Expr::Mult(importance) = &terms[2] else {
            panic!("a product");
        };
        assert!(matches!(importance[0], Expr::Condition(_)), "guarded first");
        assert_eq!(
            importance[1..],
            [
                Expr::Constant(2.0),
                Expr::Variable("payload.importance".into())
            ]
        );
        assert_eq!(candidates(3), 100);
        assert_eq!(candidates(50), 500);
    }
}
