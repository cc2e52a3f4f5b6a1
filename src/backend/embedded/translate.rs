//! Translation between the domain model and qdrant-edge's types: filters
//! (always wrapped in the tenant condition), points, records, text queries
//! and fusion.

use qdrant_edge::external::ordered_float::OrderedFloat;
use std::collections::HashMap;
use std::time::SystemTime;

use qdrant_edge::{
    AnyVariants, Condition as EdgeCondition, DEFAULT_VECTOR_NAME, DateTimeWrapper, DecayKind,
    Expression, FieldCondition, Filter as EdgeFilter, Formula, Fusion as EdgeFusion,
    HasIdCondition, IsEmptyCondition, IsNullCondition, JsonPath, Match, MatchAny, NamedQuery,
    PayloadSelector, PayloadSelectorInclude, PointId, PointStruct, PointStructPersisted, QueryEnum,
    Range, SparseVector as EdgeSparseVector, ValueVariants, VectorInternal, VectorPersisted,
    VectorStructInternal, VectorStructPersisted, WithPayloadInterface, WithVector,
};
use serde_json::Value;
use uuid::Uuid;

use crate::backend::boost::{self, Expr};
use crate::backend::layout::{self, EXPIRES_AT_FIELD, ID_FIELD, TENANT_FIELD, UPDATED_AT_FIELD};
use crate::backend::text::{SparseVector, TEXT_VECTOR, TextChange};
use crate::backend::{TenantMemory, TenantSearch, TimedBoost};
use crate::error::{Error, Result};
use crate::model::{
    AnyOf, Bounds, Condition, Decay, FieldTest, Filter, Fusion, MatchValue, Memory, Payload,
};

/// `filter` confined to `tenant`: the tenant condition AND the caller's filter.
pub fn tenant_filter(tenant: &str, filter: &Filter) -> Result<EdgeFilter> {
    let mut must = vec![match_keyword(json_path(TENANT_FIELD)?, tenant)];
    if !filter.is_empty() {
        must.push(EdgeCondition::Filter(translate_filter(filter)?));
    }
    Ok(EdgeFilter {
        should: None,
        min_should: None,
        must: Some(must),
        must_not: None,
    })
}

/// What a read of `tenant` sees: [`tenant_filter`] AND "not expired at
/// `now`".
pub fn live_filter(tenant: &str, filter: &Filter, now: SystemTime) -> Result<EdgeFilter> {
    let mut live = tenant_filter(tenant, filter)?;
    live.must_not = Some(vec![expired_condition(now)?]);
    Ok(live)
}

/// The memories of every tenant expired at `now`: what a sweep deletes.
pub fn expired_filter(now: SystemTime) -> Result<EdgeFilter> {
    Ok(EdgeFilter {
        should: None,
        min_should: None,
        must: Some(vec![expired_condition(now)?]),
        must_not: None,
    })
}

/// `expires_at_us <= now`; false for a memory that never expires.
fn expired_condition(now: SystemTime) -> Result<EdgeCondition> {
    Ok(EdgeCondition::Field(FieldCondition::new_range(
        json_path(EXPIRES_AT_FIELD)?,
        Range {
            lt: None,
            gt: None,
            gte: None,
            lte: Some(OrderedFloat(layout::expired_before(now))),
        },
    )))
}

/// The filter of a search at `now`: what the tenant sees through its
/// filter, AND "point id is none of the excluded ids" (the examples of a
/// "more like this" search).
pub fn search_filter(search: &TenantSearch, now: SystemTime) -> Result<EdgeFilter> {
    let mut filter = live_filter(&search.tenant, &search.filter, now)?;
    if !search.exclude_ids.is_empty() {
        let excluded: HasIdCondition = search
            .exclude_ids
            .iter()
            .map(|id| PointId::Uuid(layout::point_id(&search.tenant, id)))
            .collect();
        filter
            .must_not
            .get_or_insert_with(Vec::new)
            .push(EdgeCondition::HasId(excluded));
    }
    Ok(filter)
}

/// The formula a boosted search ranks its candidates by ([`boost`]).
pub fn formula(boost: &TimedBoost) -> Result<Formula> {
    Ok(Formula {
        formula: expression(boost::formula(&boost.boost, boost.now))?,
        defaults: Default::default(),
    })
}

fn expression(expr: Expr) -> Result<Expression> {
    let boxed = |expr: Box<Expr>| expression(*expr).map(Box::new);
    let all = |exprs: Vec<Expr>| exprs.into_iter().map(expression).collect::<Result<_>>();
    Ok(match expr {
        Expr::Constant(value) => Expression::Constant(value),
        Expr::Variable(name) => Expression::Variable(name),
        Expr::Datetime(datetime) => Expression::Datetime(datetime),
        Expr::DatetimeKey(path) => Expression::DatetimeKey(json_path(&path)?),
        Expr::Condition(condition) => {
            Expression::Condition(Box::new(translate_condition(&condition)?))
        }
        Expr::Sum(terms) => Expression::Sum(all(terms)?),
        Expr::Mult(factors) => Expression::Mult(all(factors)?),
        Expr::Div(left, right) => Expression::Div {
            left: boxed(left)?,
            right: boxed(right)?,
            by_zero_default: None,
        },
        Expr::Decay {
            kind,
            x,
            target,
            scale,
            midpoint,
        } => Expression::Decay {
            kind: match kind {
                Decay::Exponential => DecayKind::Exp,
                Decay::Linear => DecayKind::Lin,
                Decay::Gaussian => DecayKind::Gauss,
            },
            x: boxed(x)?,
            target: Some(boxed(target)?),
            midpoint: Some(midpoint),
            scale: Some(scale),
        },
    })
}

/// The tenant condition AND "point id is one of `ids`".
pub fn tenant_ids_filter(tenant: &str, ids: &[Uuid]) -> Result<EdgeFilter> {
    let mut filter = tenant_filter(tenant, &Filter::default())?;
    let has_id: HasIdCondition = ids.iter().map(|id| PointId::Uuid(*id)).collect();
    filter
        .must
        .get_or_insert_with(Vec::new)
        .push(EdgeCondition::HasId(has_id));
    Ok(filter)
}

fn translate_filter(filter: &Filter) -> Result<EdgeFilter> {
    let clause = |conditions: &[Condition]| -> Result<Option<Vec<EdgeCondition>>> {
        if conditions.is_empty() {
            return Ok(None);
        }
        conditions
            .iter()
            .map(translate_condition)
            .collect::<Result<_>>()
            .map(Some)
    };
    Ok(EdgeFilter {
        should: clause(&filter.should)?,
        min_should: None,
        must: clause(&filter.must)?,
        must_not: clause(&filter.must_not)?,
    })
}

fn translate_condition(condition: &Condition) -> Result<EdgeCondition> {
    let (key, test) = match condition {
        Condition::Group(group) => return Ok(EdgeCondition::Filter(translate_filter(group)?)),
        Condition::Field { key, test } => (json_path(&layout::payload_key_path(key))?, test),
    };
    Ok(match test {
        FieldTest::Equals(value) => {
            let value = match value {
                MatchValue::Keyword(s) => ValueVariants::String(s.clone()),
                MatchValue::Integer(i) => ValueVariants::Integer(*i),
                MatchValue::Boolean(b) => ValueVariants::Bool(*b),
            };
            EdgeCondition::Field(FieldCondition::new_match(key, Match::new_value(value)))
        }
        FieldTest::AnyOf(any) => {
            let any = match any {
                AnyOf::Keywords(values) => AnyVariants::Strings(values.iter().cloned().collect()),
                AnyOf::Integers(values) => AnyVariants::Integers(values.iter().copied().collect()),
            };
            EdgeCondition::Field(FieldCondition::new_match(key, Match::Any(MatchAny { any })))
        }
        FieldTest::Range(bounds) => EdgeCondition::Field(FieldCondition::new_range(
            key,
            map_bounds(bounds, |v| Some(OrderedFloat(v)))?,
        )),
        FieldTest::DatetimeRange(bounds) => {
            EdgeCondition::Field(FieldCondition::new_datetime_range(
                key,
                map_bounds(bounds, DateTimeWrapper::from_timestamp)?,
            ))
        }
        // Present and non-null: neither empty (missing or []) nor null.
        FieldTest::Exists => EdgeCondition::Filter(EdgeFilter {
            should: None,
            min_should: None,
            must: None,
            must_not: Some(vec![
                EdgeCondition::IsEmpty(IsEmptyCondition::from(key.clone())),
                EdgeCondition::IsNull(IsNullCondition::from(key)),
            ]),
        }),
    })
}

fn map_bounds<T: Copy, U>(bounds: &Bounds<T>, f: impl Fn(T) -> Option<U>) -> Result<Range<U>> {
    let map = |v: Option<T>| -> Result<Option<U>> {
        v.map(|v| f(v).ok_or_else(|| Error::invalid("filter", "range bound out of range")))
            .transpose()
    };
    Ok(Range {
        lt: map(bounds.lt)?,
        gt: map(bounds.gt)?,
        gte: map(bounds.gte)?,
        lte: map(bounds.lte)?,
    })
}

fn match_keyword(key: JsonPath, value: &str) -> EdgeCondition {
    EdgeCondition::Field(FieldCondition::new_match(
        key,
        Match::new_value(ValueVariants::String(value.to_owned())),
    ))
}

/// Keys are validated before they get here, so a parse failure is a bug.
fn json_path(path: &str) -> Result<JsonPath> {
    path.parse()
        .map_err(|_| Error::internal(format!("payload path {path:?} does not parse")))
}

/// Which stored payload fields to read back.
pub fn payload_selector(with_payload: bool) -> Result<WithPayloadInterface> {
    if with_payload {
        return Ok(WithPayloadInterface::Bool(true));
    }
    // Without the caller's payload we still need the id and the timestamps.
    let include = vec![
        json_path(ID_FIELD)?,
        json_path(UPDATED_AT_FIELD)?,
        json_path(EXPIRES_AT_FIELD)?,
    ];
    Ok(WithPayloadInterface::Selector(PayloadSelector::Include(
        PayloadSelectorInclude::new(include),
    )))
}

/// The point of a memory; with its text vector when the shard has one
/// (`with_text`) and the memory has text.
pub fn to_point(item: &TenantMemory, with_text: bool) -> PointStructPersisted {
    let id = layout::point_id(&item.tenant, &item.memory.id);
    let payload = layout::stored_payload(&item.tenant, &item.memory);
    let mut point: PointStructPersisted = PointStruct::new(
        PointId::Uuid(id),
        item.memory.vector.clone(),
        Value::Object(payload),
    )
    .into();
    if let Some(text) = item.text.as_ref().filter(|_| with_text) {
        set_text(&mut point, &TextChange::Set(text.clone()));
    }
    point
}

/// Sets or removes a point's text vector, as a payload change asks.
pub fn set_text(point: &mut PointStructPersisted, change: &TextChange) {
    let vector = std::mem::replace(
        &mut point.vector,
        VectorStructPersisted::Named(HashMap::new()),
    );
    let mut named = match vector {
        VectorStructPersisted::Single(dense) => HashMap::from([(
            DEFAULT_VECTOR_NAME.to_owned(),
            VectorPersisted::Dense(dense),
        )]),
        VectorStructPersisted::Named(named) => named,
        // vecmem never stores multi-vectors.
        other @ VectorStructPersisted::MultiDense(_) => {
            point.vector = other;
            return;
        }
    };
    match change {
        TextChange::Set(text) => {
            named.insert(
                TEXT_VECTOR.to_owned(),
                VectorPersisted::Sparse(sparse(text)),
            );
        }
        TextChange::Clear => {
            named.remove(TEXT_VECTOR);
        }
        TextChange::Keep => {}
    }
    point.vector = VectorStructPersisted::Named(named);
}

pub fn sparse(text: &SparseVector) -> EdgeSparseVector {
    EdgeSparseVector {
        indices: text.indices.clone(),
        values: text.values.clone(),
    }
}

/// The query "nearest to this text".
pub fn text_query(text: &SparseVector) -> QueryEnum {
    QueryEnum::Nearest(NamedQuery {
        query: VectorInternal::Sparse(sparse(text)),
        using: Some(TEXT_VECTOR.to_owned()),
    })
}

pub fn fusion(fusion: Fusion) -> EdgeFusion {
    match fusion {
        Fusion::Rrf => EdgeFusion::Rrf {
            k: QDRANT_RRF_K,
            weights: None,
        },
        Fusion::Dbsf => EdgeFusion::Dbsf,
    }
}

/// Qdrant's default `k` of reciprocal rank fusion, which a Qdrant server
/// uses for `Fusion::Rrf`.
const QDRANT_RRF_K: usize = 2;

/// Which vectors to read back: the dense one (a memory's `vector`) or
/// none. Never the text vector, which no answer shows.
pub fn vectors_selector(with_vector: bool) -> WithVector {
    if with_vector {
        WithVector::Selector(vec![DEFAULT_VECTOR_NAME.to_owned()])
    } else {
        WithVector::Bool(false)
    }
}

/// A memory from a stored point's payload and (optional) vector.
pub fn to_memory(
    payload: Option<qdrant_edge::Payload>,
    vector: Option<VectorStructInternal>,
    with_payload: bool,
) -> Option<Memory> {
    let stored: Payload = payload?.0.into_iter().collect();
    layout::memory_from_stored(
        stored,
        vector.and_then(dense_vector).unwrap_or_default(),
        with_payload,
    )
}

/// The tenant a stored payload belongs to.
pub fn stored_tenant(payload: Option<&qdrant_edge::Payload>) -> Option<&str> {
    payload?.0.get(TENANT_FIELD)?.as_str()
}

fn dense_vector(vector: VectorStructInternal) -> Option<Vec<f32>> {
    match vector {
        VectorStructInternal::Single(dense) => Some(dense),
        VectorStructInternal::Named(mut named) => match named.remove(DEFAULT_VECTOR_NAME)? {
            VectorInternal::Dense(dense) => Some(dense),
            VectorInternal::Sparse(_) | VectorInternal::MultiDense(_) => None,
        },
        VectorStructInternal::MultiDense(_) => None,
    }
}

pub fn uuid_of(id: &PointId) -> Option<Uuid> {
    match id {
        PointId::Uuid(uuid) => Some(*uuid),
        PointId::NumId(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_keys_parse_as_nested_payload_paths() {
        for key in ["kind", "source.kind", "a-b_c.d1"] {
            assert!(json_path(&layout::payload_key_path(key)).is_ok(), "{key}");
        }
    }

    #[test]
    fn every_filter_is_confined_to_the_tenant() {
        let filter = tenant_filter("t1", &Filter::default()).expect("translates");
        let must = filter.must.expect("tenant condition");
        assert_eq!(must.len(), 1);
        assert!(filter.should.is_none() && filter.must_not.is_none());
    }
}
