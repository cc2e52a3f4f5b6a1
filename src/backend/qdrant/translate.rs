//! Translation between the domain model and Qdrant's gRPC types
//! (`qdrant_client::qdrant`): filters (always wrapped in the tenant
//! condition), points, the points Qdrant returns, and the config's
//! distance, write ordering and read consistency.

use qdrant_client::qdrant::{
    self, Condition as QCondition, DatetimeRange, Filter as QFilter, NamedVectors, PointId,
    PointStruct, PointVectors, Range, Vector, Vectors, VectorsOutput, WithPayloadSelector,
    expression::Variant, point_id::PointIdOptions, vector_output, vectors_output::VectorsOptions,
};
use uuid::Uuid;

use super::answers;
use crate::backend::boost::{self, Expr};
use std::time::SystemTime;

use crate::backend::layout::{self, EXPIRES_AT_FIELD, ID_FIELD, TENANT_FIELD, UPDATED_AT_FIELD};
use crate::backend::text::{SparseVector, TEXT_VECTOR};
use crate::backend::{TenantMemory, TenantSearch, TimedBoost};
use crate::config::{Distance, QdrantReadConsistency, WriteOrdering};
use crate::model::{
    AnyOf, Bounds, Condition, Decay, FieldTest, Filter, MatchValue, Memory, Payload,
};

/// `filter` confined to `tenant`: the tenant condition AND the caller's filter.
pub fn tenant_filter(tenant: &str, filter: &Filter) -> QFilter {
    let mut must = vec![QCondition::matches(TENANT_FIELD, tenant.to_owned())];
    if !filter.is_empty() {
        must.push(QCondition::from(translate_filter(filter)));
    }
    QFilter::must(must)
}

/// What a read of `tenant` sees: [`tenant_filter`] AND "not expired at
/// `now`".
pub fn live_filter(tenant: &str, filter: &Filter, now: SystemTime) -> QFilter {
    let mut live = tenant_filter(tenant, filter);
    live.must_not.push(expired_condition(now));
    live
}

/// The memories of every tenant expired at `now`: what a sweep deletes.
pub fn expired_filter(now: SystemTime) -> QFilter {
    QFilter::must([expired_condition(now)])
}

/// `expires_at_us <= now`; false for a memory that never expires.
fn expired_condition(now: SystemTime) -> QCondition {
    QCondition::range(
        EXPIRES_AT_FIELD,
        Range {
            lte: Some(layout::expired_before(now)),
            ..Range::default()
        },
    )
}

/// The filter of a search at `now`: what the tenant sees through its
/// filter, AND "point id is none of the excluded ids" (the examples of a
/// "more like this" search).
pub fn search_filter(search: &TenantSearch, now: SystemTime) -> QFilter {
    let mut filter = live_filter(&search.tenant, &search.filter, now);
    if !search.exclude_ids.is_empty() {
        let excluded = search
            .exclude_ids
            .iter()
            .map(|id| point_id(&layout::point_id(&search.tenant, id)));
        filter.must_not.push(QCondition::has_id(excluded));
    }
    filter
}

/// The formula a boosted search ranks its candidates by ([`boost`]).
pub fn formula(boost: &TimedBoost) -> qdrant::Formula {
    qdrant::Formula {
        expression: Some(expression(boost::formula(&boost.boost, boost.now))),
        defaults: Default::default(),
    }
}

fn expression(expr: Expr) -> qdrant::Expression {
    let boxed = |expr: Box<Expr>| Some(Box::new(expression(*expr)));
    let variant = match expr {
        Expr::Constant(value) => Variant::Constant(value),
        Expr::Variable(name) => Variant::Variable(name),
        Expr::Datetime(datetime) => Variant::Datetime(datetime),
        Expr::DatetimeKey(path) => Variant::DatetimeKey(path),
        Expr::Condition(condition) => Variant::Condition(translate_condition(&condition)),
        Expr::Sum(terms) => Variant::Sum(qdrant::SumExpression {
            sum: terms.into_iter().map(expression).collect(),
        }),
        Expr::Mult(factors) => Variant::Mult(qdrant::MultExpression {
            mult: factors.into_iter().map(expression).collect(),
        }),
        Expr::Div(left, right) => Variant::Div(Box::new(qdrant::DivExpression {
            left: boxed(left),
            right: boxed(right),
            by_zero_default: None,
        })),
        Expr::Decay {
            kind,
            x,
            target,
            scale,
            midpoint,
        } => {
            let params = Box::new(qdrant::DecayParamsExpression {
                x: boxed(x),
                target: boxed(target),
                scale: Some(scale),
                midpoint: Some(midpoint),
            });
            match kind {
                Decay::Exponential => Variant::ExpDecay(params),
                Decay::Linear => Variant::LinDecay(params),
                Decay::Gaussian => Variant::GaussDecay(params),
            }
        }
    };
    qdrant::Expression {
        variant: Some(variant),
    }
}

/// The tenant condition AND "point id is one of `ids`".
pub fn tenant_ids_filter(tenant: &str, ids: &[Uuid]) -> QFilter {
    QFilter::must([
        QCondition::matches(TENANT_FIELD, tenant.to_owned()),
        QCondition::has_id(ids.iter().map(point_id)),
    ])
}

fn translate_filter(filter: &Filter) -> QFilter {
    let clause = |conditions: &[Condition]| {
        conditions
            .iter()
            .map(translate_condition)
            .collect::<Vec<_>>()
    };
    QFilter {
        must: clause(&filter.must),
        should: clause(&filter.should),
        must_not: clause(&filter.must_not),
        ..QFilter::default()
    }
}

fn translate_condition(condition: &Condition) -> QCondition {
    let (key, test) = match condition {
        Condition::Group(group) => return QCondition::from(translate_filter(group)),
        Condition::Field { key, test } => (layout::payload_key_path(key), test),
    };
    match test {
        FieldTest::Equals(MatchValue::Keyword(s)) => QCondition::matches(key, s.clone()),
        FieldTest::Equals(MatchValue::Integer(i)) => QCondition::matches(key, *i),
        FieldTest::Equals(MatchValue::Boolean(b)) => QCondition::matches(key, *b),
        FieldTest::AnyOf(AnyOf::Keywords(values)) => QCondition::matches(key, values.clone()),
        FieldTest::AnyOf(AnyOf::Integers(values)) => QCondition::matches(key, values.clone()),
        FieldTest::Range(Bounds { gt, gte, lt, lte }) => QCondition::range(
            key,
            Range {
                gt: *gt,
                gte: *gte,
                lt: *lt,
                lte: *lte,
            },
        ),
        FieldTest::DatetimeRange(bounds) => {
            let ts = |micros: Option<i64>| {
                micros.map(|m| prost_types::Timestamp {
                    seconds: m.div_euclid(1_000_000),
                    nanos: (m.rem_euclid(1_000_000) * 1_000) as i32,
                })
            };
            QCondition::datetime_range(
                key,
                DatetimeRange {
                    gt: ts(bounds.gt),
                    gte: ts(bounds.gte),
                    lt: ts(bounds.lt),
                    lte: ts(bounds.lte),
                },
            )
        }
        // Present and non-null: neither empty (missing or []) nor null.
        FieldTest::Exists => QCondition::from(QFilter::must_not([
            QCondition::is_empty(key.clone()),
            QCondition::is_null(key),
        ])),
    }
}

pub fn point_id(id: &Uuid) -> PointId {
    PointId::from(id.to_string())
}

pub fn uuid_of(id: &PointId) -> Option<Uuid> {
    match id.point_id_options.as_ref()? {
        PointIdOptions::Uuid(uuid) => Uuid::try_parse(uuid).ok(),
        PointIdOptions::Num(_) => None,
    }
}

/// Which stored payload fields a search or a scroll reads back: the id and
/// the timestamps, and the caller's payload when it was asked for. Never
/// the tenant, which the caller named: Qdrant would write it into every
/// point and vecmem read it back only to drop it. (A get reads the tenant:
/// a batched get names points of several tenants.)
pub fn payload_selector(with_payload: bool) -> WithPayloadSelector {
    let mut fields = vec![
        ID_FIELD.to_owned(),
        UPDATED_AT_FIELD.to_owned(),
        EXPIRES_AT_FIELD.to_owned(),
    ];
    if with_payload {
        fields.push(layout::PAYLOAD_FIELD.to_owned());
    }
    qdrant::with_payload_selector::SelectorOptions::Include(qdrant::PayloadIncludeSelector {
        fields,
    })
    .into()
}

/// The point of a memory; with its text vector when the collection has
/// one (`with_text`) and the memory has text.
pub fn to_point(item: &TenantMemory, with_text: bool) -> PointStruct {
    let id = layout::point_id(&item.tenant, &item.memory.id);
    let payload = layout::stored_payload(&item.tenant, &item.memory);
    let dense = item.memory.vector.clone();
    let vectors = match &item.text {
        Some(text) if with_text => Vectors::from(
            NamedVectors::default()
                .add_vector(DEFAULT_VECTOR, Vector::new_dense(dense))
                .add_vector(TEXT_VECTOR, sparse_vector(text)),
        ),
        _ => Vectors::from(dense),
    };
    PointStruct::new(
        point_id(&id),
        vectors,
        qdrant_client::Payload::from(payload),
    )
}

/// The name of the unnamed dense vector, where vectors are named.
pub const DEFAULT_VECTOR: &str = "";

pub fn sparse_vector(text: &SparseVector) -> Vector {
    Vector::new_sparse(text.indices.clone(), text.values.clone())
}

/// The text vector of the points `ids` set to `text`, as a set-vectors
/// operation.
pub fn text_vectors(ids: &[Uuid], text: &SparseVector) -> Vec<PointVectors> {
    ids.iter()
        .map(|id| PointVectors {
            id: Some(point_id(id)),
            vectors: Some(Vectors::from(
                NamedVectors::default().add_vector(TEXT_VECTOR, sparse_vector(text)),
            )),
        })
        .collect()
}

/// Which vectors to read back: the dense one (a memory's `vector`) or
/// none. Never the text vector, which no answer shows.
pub fn vectors_selector(with_vector: bool) -> qdrant::WithVectorsSelector {
    if with_vector {
        vec![DEFAULT_VECTOR].into()
    } else {
        false.into()
    }
}

pub fn to_qdrant_payload(payload: Payload) -> std::collections::HashMap<String, qdrant::Value> {
    qdrant_client::Payload::from(payload).into()
}

/// A memory from a stored point's fields and (optional) vector; `None` for
/// a point vecmem did not write.
pub fn to_memory(
    stored: answers::Stored,
    vectors: Option<VectorsOutput>,
    with_payload: bool,
) -> Option<Memory> {
    let fields = stored.into_fields(with_payload)?;
    Some(fields.into_memory(vectors.and_then(dense_vector).unwrap_or_default()))
}

#[allow(deprecated)] // `data` is how Qdrant servers before 1.14 send dense vectors.
fn dense_vector(vectors: VectorsOutput) -> Option<Vec<f32>> {
    let output = match vectors.vectors_options? {
        VectorsOptions::Vector(output) => output,
        VectorsOptions::Vectors(mut named) => named.vectors.remove(DEFAULT_VECTOR)?,
    };
    match output.vector {
        Some(vector_output::Vector::Dense(dense)) => Some(dense.data),
        Some(_) => None,
        None => Some(output.data),
    }
}

pub fn write_ordering(ordering: WriteOrdering) -> qdrant::WriteOrderingType {
    match ordering {
        WriteOrdering::Weak => qdrant::WriteOrderingType::Weak,
        WriteOrdering::Medium => qdrant::WriteOrderingType::Medium,
        WriteOrdering::Strong => qdrant::WriteOrderingType::Strong,
    }
}

pub fn read_consistency(consistency: QdrantReadConsistency) -> qdrant::ReadConsistency {
    use qdrant::read_consistency::Value;
    let value = match consistency {
        QdrantReadConsistency::All => Value::Type(qdrant::ReadConsistencyType::All as i32),
        QdrantReadConsistency::Majority => {
            Value::Type(qdrant::ReadConsistencyType::Majority as i32)
        }
        QdrantReadConsistency::Quorum => Value::Type(qdrant::ReadConsistencyType::Quorum as i32),
        QdrantReadConsistency::Replicas(n) => Value::Factor(n),
    };
    qdrant::ReadConsistency { value: Some(value) }
}

pub fn qdrant_distance(distance: Distance) -> qdrant::Distance {
    match distance {
        Distance::Cosine => qdrant::Distance::Cosine,
        Distance::Dot => qdrant::Distance::Dot,
        Distance::Euclid => qdrant::Distance::Euclid,
        Distance::Manhattan => qdrant::Distance::Manhattan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_starts_with_the_tenant_condition() {
        let filter = tenant_filter("t1", &Filter::default());
        assert_eq!(filter.must.len(), 1);
        assert_eq!(
            filter.must[0],
            QCondition::matches(TENANT_FIELD, "t1".to_owned())
        );
    }

    #[test]
    fn point_ids_round_trip() {
        let id = layout::point_id("t", "m");
        assert_eq!(uuid_of(&point_id(&id)), Some(id));
    }
}
