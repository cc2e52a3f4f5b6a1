//! Qdrant gRPC messages into qdrant-edge types and back. Filters go through
//! Qdrant's documented REST JSON form, which qdrant-edge deserializes
//! natively; only the shapes `QdrantStore` sends are supported, anything else
//! is INVALID_ARGUMENT, as Qdrant answers a filter it cannot parse. Queries
//! (nearest dense or sparse, fusion, formula, nested prefetches) map one to
//! one onto the engine's own query stages.

use qdrant_client::qdrant::{
    self, condition::ConditionOneOf, r#match::MatchValue, point_id::PointIdOptions, vector_input,
    with_payload_selector::SelectorOptions as PayloadOptions,
    with_vectors_selector::SelectorOptions as VectorOptions,
};
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Fusion, NamedQuery, PayloadSelector, PayloadSelectorInclude, PointId, Prefetch, QueryEnum,
    ScoringQuery, VectorInternal, VectorPersisted, VectorStructInternal, VectorStructPersisted,
    WithPayloadInterface, WithVector,
};
use serde_json::{Value, json};
use tonic::Status;

pub fn filter(filter: Option<qdrant::Filter>) -> Result<Option<qdrant_edge::Filter>, Status> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    let json = filter_json(filter)?;
    serde_json::from_value(json)
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("filter: {e}")))
}

fn filter_json(filter: qdrant::Filter) -> Result<Value, Status> {
    if filter.min_should.is_some() {
        return Err(Status::invalid_argument(
            "the double does not support min_should",
        ));
    }
    let list = |conditions: Vec<qdrant::Condition>| {
        conditions
            .into_iter()
            .map(condition_json)
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(
        json!({"must": list(filter.must)?, "should": list(filter.should)?, "must_not": list(filter.must_not)?}),
    )
}

fn condition_json(condition: qdrant::Condition) -> Result<Value, Status> {
    Ok(match condition.condition_one_of {
        Some(ConditionOneOf::Field(field)) => field_json(field)?,
        Some(ConditionOneOf::IsEmpty(c)) => json!({"is_empty": {"key": c.key}}),
        Some(ConditionOneOf::IsNull(c)) => json!({"is_null": {"key": c.key}}),
        Some(ConditionOneOf::HasId(c)) => {
            let ids: Result<Vec<_>, _> = c
                .has_id
                .iter()
                .map(|id| point_uuid(id).map(|u| u.to_string()))
                .collect();
            json!({"has_id": ids?})
        }
        Some(ConditionOneOf::Filter(nested)) => filter_json(nested)?,
        other => {
            return Err(Status::invalid_argument(format!(
                "the double does not support condition {other:?}"
            )));
        }
    })
}

fn field_json(field: qdrant::FieldCondition) -> Result<Value, Status> {
    let key = field.key;
    if let Some(m) = field.r#match {
        let m = match m.match_value {
            Some(MatchValue::Keyword(s)) => json!({"value": s}),
            Some(MatchValue::Integer(i)) => json!({"value": i}),
            Some(MatchValue::Boolean(b)) => json!({"value": b}),
            Some(MatchValue::Keywords(list)) => json!({"any": list.strings}),
            Some(MatchValue::Integers(list)) => json!({"any": list.integers}),
            other => {
                return Err(Status::invalid_argument(format!(
                    "the double does not support match {other:?}"
                )));
            }
        };
        return Ok(json!({"key": key, "match": m}));
    }
    if let Some(r) = field.range {
        return Ok(
            json!({"key": key, "range": {"gt": r.gt, "gte": r.gte, "lt": r.lt, "lte": r.lte}}),
        );
    }
    if let Some(r) = field.datetime_range {
        let rfc3339 = |t: Option<prost_types::Timestamp>| {
            t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                .map(|d| d.to_rfc3339())
        };
        return Ok(
            json!({"key": key, "range": {"gt": rfc3339(r.gt), "gte": rfc3339(r.gte), "lt": rfc3339(r.lt), "lte": rfc3339(r.lte)}}),
        );
    }
    Err(Status::invalid_argument(format!(
        "the double does not support this condition on {key}"
    )))
}

pub fn point_uuid(id: &qdrant::PointId) -> Result<uuid::Uuid, Status> {
    match &id.point_id_options {
        Some(PointIdOptions::Uuid(s)) => uuid::Uuid::try_parse(s)
            .map_err(|_| Status::invalid_argument(format!("bad point id {s}"))),
        _ => Err(Status::invalid_argument(
            "the double only stores UUID point ids",
        )),
    }
}

pub fn edge_id(id: &qdrant::PointId) -> Result<PointId, Status> {
    point_uuid(id).map(PointId::Uuid)
}

pub fn grpc_id(id: &PointId) -> qdrant::PointId {
    qdrant::PointId::from(id.to_string())
}

pub fn with_payload(
    selector: Option<qdrant::WithPayloadSelector>,
) -> Result<WithPayloadInterface, Status> {
    Ok(match selector.and_then(|s| s.selector_options) {
        None => WithPayloadInterface::Bool(false),
        Some(PayloadOptions::Enable(enabled)) => WithPayloadInterface::Bool(enabled),
        Some(PayloadOptions::Include(include)) => {
            let fields: Result<Vec<_>, _> = include
                .fields
                .iter()
                .map(|f| {
                    f.parse()
                        .map_err(|_| Status::invalid_argument("payload field"))
                })
                .collect();
            WithPayloadInterface::Selector(PayloadSelector::Include(PayloadSelectorInclude::new(
                fields?,
            )))
        }
        Some(PayloadOptions::Exclude(_)) => {
            return Err(Status::invalid_argument(
                "the double does not support payload exclusion",
            ));
        }
    })
}

pub fn with_vector(selector: Option<qdrant::WithVectorsSelector>) -> WithVector {
    match selector.and_then(|s| s.selector_options) {
        Some(VectorOptions::Enable(enabled)) => WithVector::Bool(enabled),
        Some(VectorOptions::Include(include)) => WithVector::Selector(include.names),
        None => WithVector::Bool(false),
    }
}

/// A query vector: dense or sparse.
fn query_vector(input: qdrant::VectorInput) -> Result<VectorInternal, Status> {
    match input.variant {
        Some(vector_input::Variant::Dense(dense)) => Ok(VectorInternal::Dense(dense.data)),
        Some(vector_input::Variant::Sparse(sparse)) => {
            Ok(VectorInternal::Sparse(qdrant_edge::SparseVector {
                indices: sparse.indices,
                values: sparse.values,
            }))
        }
        _ => Err(Status::invalid_argument(
            "the double only supports dense and sparse query vectors",
        )),
    }
}

/// A stage's scoring: nearest to a vector (of `using`), a fusion of its
/// prefetches, or a formula over them.
pub fn scoring(
    query: Option<qdrant::Query>,
    using: Option<String>,
) -> Result<Option<ScoringQuery>, Status> {
    use qdrant::query::Variant;
    let Some(variant) = query.and_then(|q| q.variant) else {
        return Ok(None);
    };
    Ok(Some(match variant {
        Variant::Nearest(input) => ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
            query: query_vector(input)?,
            using,
        })),
        Variant::Fusion(fusion) => ScoringQuery::Fusion(match qdrant::Fusion::try_from(fusion) {
            // Qdrant's default k.
            Ok(qdrant::Fusion::Rrf) => Fusion::Rrf {
                k: 2,
                weights: None,
            },
            Ok(qdrant::Fusion::Dbsf) => Fusion::Dbsf,
            Err(_) => return Err(Status::invalid_argument("unknown fusion")),
        }),
        Variant::Formula(formula) => {
            let formula = formula_of(formula)?;
            ScoringQuery::Formula(
                formula
                    .try_into()
                    .map_err(|e| Status::invalid_argument(format!("formula: {e}")))?,
            )
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "the double does not support query {other:?}"
            )));
        }
    }))
}

/// A prefetch stage and the stages under it.
pub fn prefetch(given: qdrant::PrefetchQuery) -> Result<Prefetch, Status> {
    Ok(Prefetch {
        prefetches: given
            .prefetch
            .into_iter()
            .map(prefetch)
            .collect::<Result<_, _>>()?,
        query: scoring(given.query, given.using)?,
        limit: given.limit.unwrap_or(10) as usize,
        params: None,
        filter: filter(given.filter)?,
        score_threshold: given.score_threshold.map(OrderedFloat),
    })
}

/// A formula, in the expressions `QdrantStore` sends.
fn formula_of(formula: qdrant::Formula) -> Result<qdrant_edge::Formula, Status> {
    if !formula.defaults.is_empty() {
        return Err(Status::invalid_argument(
            "the double does not support formula defaults",
        ));
    }
    Ok(qdrant_edge::Formula {
        formula: expression(formula.expression)?,
        defaults: Default::default(),
    })
}

fn expression(given: Option<qdrant::Expression>) -> Result<qdrant_edge::Expression, Status> {
    use qdrant::expression::Variant;
    use qdrant_edge::{DecayKind, Expression};
    let boxed = |e: Option<Box<qdrant::Expression>>| expression(e.map(|e| *e)).map(Box::new);
    let all = |list: Vec<qdrant::Expression>| {
        list.into_iter()
            .map(|e| expression(Some(e)))
            .collect::<Result<Vec<_>, _>>()
    };
    let decay = |kind, params: Box<qdrant::DecayParamsExpression>| {
        Ok::<_, Status>(Expression::Decay {
            kind,
            x: boxed(params.x)?,
            target: params.target.map(|t| boxed(Some(t))).transpose()?,
            midpoint: params.midpoint,
            scale: params.scale,
        })
    };
    Ok(match given.and_then(|e| e.variant) {
        Some(Variant::Constant(value)) => Expression::Constant(value),
        Some(Variant::Variable(name)) => Expression::Variable(name),
        Some(Variant::Datetime(datetime)) => Expression::Datetime(datetime),
        Some(Variant::DatetimeKey(path)) => Expression::DatetimeKey(
            path.parse()
                .map_err(|_| Status::invalid_argument(format!("bad datetime key {path}")))?,
        ),
        Some(Variant::Condition(condition)) => {
            let json = condition_json(condition)?;
            let condition = serde_json::from_value(json)
                .map_err(|e| Status::invalid_argument(format!("formula condition: {e}")))?;
            Expression::Condition(Box::new(condition))
        }
        Some(Variant::Sum(sum)) => Expression::Sum(all(sum.sum)?),
        Some(Variant::Mult(mult)) => Expression::Mult(all(mult.mult)?),
        Some(Variant::Div(div)) => Expression::Div {
            left: boxed(div.left)?,
            right: boxed(div.right)?,
            by_zero_default: div.by_zero_default,
        },
        Some(Variant::ExpDecay(params)) => decay(DecayKind::Exp, params)?,
        Some(Variant::LinDecay(params)) => decay(DecayKind::Lin, params)?,
        Some(Variant::GaussDecay(params)) => decay(DecayKind::Gauss, params)?,
        other => {
            return Err(Status::invalid_argument(format!(
                "the double does not support expression {other:?}"
            )));
        }
    })
}

/// A point's vectors: one unnamed dense vector, or named dense and sparse
/// ones.
pub fn vectors(vectors: Option<qdrant::Vectors>) -> Result<VectorStructPersisted, Status> {
    match vectors.and_then(|v| v.vectors_options) {
        Some(qdrant::vectors::VectorsOptions::Vector(vector)) => match vector_of(vector)? {
            VectorPersisted::Dense(dense) => Ok(VectorStructPersisted::Single(dense)),
            _ => Err(Status::invalid_argument("an unnamed vector must be dense")),
        },
        Some(qdrant::vectors::VectorsOptions::Vectors(named)) => Ok(VectorStructPersisted::Named(
            named
                .vectors
                .into_iter()
                .map(|(name, vector)| Ok((name, vector_of(vector)?)))
                .collect::<Result<_, Status>>()?,
        )),
        None => Err(Status::invalid_argument("a point needs a vector")),
    }
}

fn vector_of(vector: qdrant::Vector) -> Result<VectorPersisted, Status> {
    match vector.vector {
        Some(qdrant::vector::Vector::Dense(dense)) => Ok(VectorPersisted::Dense(dense.data)),
        Some(qdrant::vector::Vector::Sparse(sparse)) => {
            Ok(VectorPersisted::Sparse(qdrant_edge::SparseVector {
                indices: sparse.indices,
                values: sparse.values,
            }))
        }
        #[allow(deprecated)]
        None => Ok(VectorPersisted::Dense(vector.data)),
        Some(_) => Err(Status::invalid_argument(
            "the double stores dense and sparse vectors only",
        )),
    }
}

pub fn payload_to_json(
    payload: std::collections::HashMap<String, qdrant::Value>,
) -> serde_json::Map<String, Value> {
    payload
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect()
}

pub fn payload_to_grpc(
    payload: Option<qdrant_edge::Payload>,
) -> std::collections::HashMap<String, qdrant::Value> {
    payload
        .map(|p| {
            p.0.into_iter()
                .map(|(k, v)| (k, qdrant::Value::from(v)))
                .collect()
        })
        .unwrap_or_default()
}

pub fn vectors_to_grpc(vector: Option<VectorStructInternal>) -> Option<qdrant::VectorsOutput> {
    let dense = match vector? {
        VectorStructInternal::Single(dense) => dense,
        VectorStructInternal::Named(mut named) => match named.remove("")? {
            VectorInternal::Dense(dense) => dense,
            _ => return None,
        },
        VectorStructInternal::MultiDense(_) => return None,
    };
    #[allow(deprecated)]
    Some(qdrant::VectorsOutput {
        vectors_options: Some(qdrant::vectors_output::VectorsOptions::Vector(
            qdrant::VectorOutput {
                vector: Some(qdrant::vector_output::Vector::Dense(qdrant::DenseVector {
                    data: dense,
                })),
                ..qdrant::VectorOutput::default()
            },
        )),
    })
}
