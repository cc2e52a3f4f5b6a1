//! Conversions between the generated protobuf types and the domain model.
//!
//! Requests convert with `TryFrom`, destructuring every field so that a new
//! proto field fails the build until it is handled. Structural problems the
//! proto allows but the API does not (a condition with no test, a value of
//! neither kind, a non-finite number in a payload) become field violations
//! here; semantic rules (dimensions, limits) are checked by the core.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbjson_types::value::Kind;
use serde_json::{Number, Value};

use crate::core::NamespaceInfo;
use crate::error::Error;
use crate::model::{
    self, AnyOf, Bounds, Condition, DeleteSelector, ExpiryChange, FieldTest, MatchValue, Payload,
    ReadConsistency, UpdateTarget, Violations, join,
};
use crate::proto;
use crate::{backend::NamespaceStats, config::Distance};

/// Largest integer a JSON number (an f64) holds exactly: 2^53.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;
/// Timestamps must lie in 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

impl TryFrom<proto::UpsertRequest> for model::UpsertRequest {
    type Error = Error;

    fn try_from(req: proto::UpsertRequest) -> Result<Self, Error> {
        let proto::UpsertRequest {
            namespace,
            tenant,
            memories,
        } = req;
        let mut violations = Violations::new();
        let memories = memories
            .into_iter()
            .enumerate()
            .map(|(i, memory)| {
                // `updated_at` is server-set; a client value is ignored.
                let memory = proto::Memory {
                    updated_at: None,
                    ..memory
                };
                memory_from_proto(memory, &format!("memories[{i}]"), &mut violations)
            })
            .collect();
        violations.into_result(model::UpsertRequest {
            namespace,
            tenant,
            memories,
        })
    }
}

/// A memory to write, as sent, `updated_at` included (Import keeps it).
pub fn memory_from_proto(
    memory: proto::Memory,
    path: &str,
    violations: &mut Violations,
) -> model::Memory {
    let proto::Memory {
        id,
        vector,
        payload,
        updated_at,
        expires_at,
        ttl,
    } = memory;
    let payload = payload_from_proto(payload, &join(path, "payload"), violations);
    let updated_at = updated_at
        .and_then(|at| timestamp_micros(at, &join(path, "updated_at"), violations))
        .map(system_time_from_micros);
    let expires_at = expiry_from_proto(expires_at, ttl, path, violations);
    model::Memory {
        id,
        vector,
        payload,
        updated_at,
        expires_at,
    }
}

impl TryFrom<proto::ExportRequest> for model::ExportRequest {
    type Error = Error;

    fn try_from(req: proto::ExportRequest) -> Result<Self, Error> {
        let proto::ExportRequest {
            namespace,
            tenant,
            filter,
            page_size,
        } = req;
        let mut violations = Violations::new();
        let filter = filter_from_proto(filter, "filter", &mut violations);
        violations.into_result(model::ExportRequest {
            namespace,
            tenant,
            filter,
            page_size,
        })
    }
}

impl From<model::ImportSummary> for proto::ImportResponse {
    fn from(summary: model::ImportSummary) -> Self {
        let model::ImportSummary {
            imported,
            rejected,
            expired,
            rejections,
        } = summary;
        Self {
            imported_count: imported,
            rejected_count: rejected,
            expired_count: expired,
            rejections: rejections
                .into_iter()
                .map(|rejection| proto::ImportRejection {
                    position: rejection.position,
                    id: rejection.id,
                    violations: rejection
                        .violations
                        .into_iter()
                        .map(|violation| proto::FieldViolation {
                            field: violation.field,
                            description: violation.description,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl TryFrom<proto::SearchRequest> for model::SearchRequest {
    type Error = Error;

    fn try_from(req: proto::SearchRequest) -> Result<Self, Error> {
        let mut violations = Violations::new();
        let search = search_from_proto(req, "", &mut violations);
        violations.into_result(search)
    }
}

/// Converts the searches of a batch, reporting fields as `searches[i].…`.
pub fn search_batch_from_proto(
    req: proto::SearchBatchRequest,
) -> Result<Vec<model::SearchRequest>, Error> {
    let proto::SearchBatchRequest { searches } = req;
    let mut violations = Violations::new();
    let searches = searches
        .into_iter()
        .enumerate()
        .map(|(i, search)| search_from_proto(search, &format!("searches[{i}]"), &mut violations))
        .collect();
    violations.into_result(searches)
}

fn search_from_proto(
    req: proto::SearchRequest,
    prefix: &str,
    violations: &mut Violations,
) -> model::SearchRequest {
    let proto::SearchRequest {
        namespace,
        tenant,
        vector,
        limit,
        min_score,
        filter,
        with_payload,
        with_vector,
        consistency,
        like_id,
        avoid_ids,
        boost,
        text,
        fusion,
    } = req;
    let text = (!text.is_empty()).then_some(text);
    model::SearchRequest {
        namespace,
        tenant,
        query: search_query_from_proto(
            vector,
            like_id,
            avoid_ids,
            text.is_some(),
            prefix,
            violations,
        ),
        text,
        fusion: fusion_from_proto(fusion, &join(prefix, "fusion"), violations),
        boost: boost.map(|boost| boost_from_proto(boost, &join(prefix, "boost"), violations)),
        limit,
        min_score,
        filter: filter_from_proto(filter, &join(prefix, "filter"), violations),
        with_payload,
        with_vector,
        consistency: consistency_from_proto(consistency, &join(prefix, "consistency"), violations),
    }
}

impl TryFrom<proto::SearchGroupsRequest> for model::SearchGroupsRequest {
    type Error = Error;

    fn try_from(req: proto::SearchGroupsRequest) -> Result<Self, Error> {
        let proto::SearchGroupsRequest {
            search,
            group_by,
            group_size,
        } = req;
        let mut violations = Violations::new();
        let search = search_from_proto(search.unwrap_or_default(), "search", &mut violations);
        violations.into_result(model::SearchGroupsRequest {
            search,
            group_by,
            group_size,
        })
    }
}

/// The dense part of a search: by vector, or by `like_id` (then with no
/// vector), or none for a search by text alone. A request with none of the
/// three is a vector search, whose empty vector validation reports.
fn search_query_from_proto(
    vector: Vec<f32>,
    like_id: String,
    avoid_ids: Vec<String>,
    has_text: bool,
    prefix: &str,
    violations: &mut Violations,
) -> Option<model::SearchQuery> {
    if like_id.is_empty() {
        if !avoid_ids.is_empty() {
            violations.add(join(prefix, "avoid_ids"), "is only allowed with like_id");
        }
        if vector.is_empty() && has_text {
            return None;
        }
        return Some(model::SearchQuery::Vector(vector));
    }
    if !vector.is_empty() {
        violations.add(
            join(prefix, "like_id"),
            "set either vector or like_id, not both",
        );
    }
    Some(model::SearchQuery::Like(model::Like {
        id: like_id,
        avoid_ids,
    }))
}

fn fusion_from_proto(fusion: i32, field: &str, violations: &mut Violations) -> model::Fusion {
    match proto::Fusion::try_from(fusion) {
        Ok(proto::Fusion::Rrf) => model::Fusion::Rrf,
        Ok(proto::Fusion::Dbsf) => model::Fusion::Dbsf,
        Err(_) => {
            violations.add(field, format!("unknown fusion {fusion}; use RRF or DBSF"));
            model::Fusion::Rrf
        }
    }
}

/// A boost; weights of 0 (unset) mean 1. Its numbers are checked by
/// validation, which knows the namespace's distance.
fn boost_from_proto(boost: proto::Boost, path: &str, violations: &mut Violations) -> model::Boost {
    let proto::Boost {
        recency,
        importance,
    } = boost;
    let weight = |weight: f32| if weight == 0.0 { 1.0 } else { weight };
    let recency = recency.map(|recency| {
        let path = join(path, "recency");
        let proto::RecencyBoost {
            weight: recency_weight,
            half_life,
            decay,
            key,
        } = recency;
        let half_life = match half_life.map(Duration::try_from) {
            Some(Ok(half_life)) if !half_life.is_zero() => half_life,
            _ => {
                violations.add(join(&path, "half_life"), "must be a positive duration");
                Duration::ZERO
            }
        };
        let decay = match proto::Decay::try_from(decay) {
            Ok(proto::Decay::Exponential) => model::Decay::Exponential,
            Ok(proto::Decay::Linear) => model::Decay::Linear,
            Ok(proto::Decay::Gaussian) => model::Decay::Gaussian,
            Err(_) => {
                violations.add(
                    join(&path, "decay"),
                    format!("unknown decay {decay}; use EXPONENTIAL, LINEAR or GAUSSIAN"),
                );
                model::Decay::Exponential
            }
        };
        model::RecencyBoost {
            weight: weight(recency_weight),
            half_life,
            decay,
            key: (!key.is_empty()).then_some(key),
        }
    });
    let importance = importance.map(|importance| model::ImportanceBoost {
        weight: weight(importance.weight),
        key: importance.key,
    });
    model::Boost {
        recency,
        importance,
    }
}

impl TryFrom<proto::GetRequest> for model::GetRequest {
    type Error = Error;

    fn try_from(req: proto::GetRequest) -> Result<Self, Error> {
        let proto::GetRequest {
            namespace,
            tenant,
            ids,
            with_vector,
            consistency,
        } = req;
        let mut violations = Violations::new();
        let consistency = consistency_from_proto(consistency, "consistency", &mut violations);
        violations.into_result(model::GetRequest {
            namespace,
            tenant,
            ids,
            with_vector,
            consistency,
        })
    }
}

impl TryFrom<proto::DeleteRequest> for model::DeleteRequest {
    type Error = Error;

    fn try_from(req: proto::DeleteRequest) -> Result<Self, Error> {
        use proto::delete_request::Selector;
        let proto::DeleteRequest {
            namespace,
            tenant,
            selector,
        } = req;
        let mut violations = Violations::new();
        let selector = match selector {
            Some(Selector::Ids(proto::MemoryIds { values })) => DeleteSelector::Ids(values),
            Some(Selector::Filter(filter)) => {
                DeleteSelector::Filter(filter_from_proto(Some(filter), "filter", &mut violations))
            }
            Some(Selector::All(true)) => DeleteSelector::All,
            Some(Selector::All(false)) => {
                return Err(Error::invalid(
                    "all",
                    "must be true when set; choose ids, filter or all",
                ));
            }
            None => {
                return Err(Error::invalid(
                    "selector",
                    "set exactly one of ids, filter or all",
                ));
            }
        };
        violations.into_result(model::DeleteRequest {
            namespace,
            tenant,
            selector,
        })
    }
}

impl TryFrom<proto::ScrollRequest> for model::ScrollRequest {
    type Error = Error;

    fn try_from(req: proto::ScrollRequest) -> Result<Self, Error> {
        let proto::ScrollRequest {
            namespace,
            tenant,
            filter,
            limit,
            page_token,
            with_vector,
        } = req;
        let mut violations = Violations::new();
        let filter = filter_from_proto(filter, "filter", &mut violations);
        violations.into_result(model::ScrollRequest {
            namespace,
            tenant,
            filter,
            limit,
            page_token,
            with_vector,
        })
    }
}

impl TryFrom<proto::CountRequest> for model::CountRequest {
    type Error = Error;

    fn try_from(req: proto::CountRequest) -> Result<Self, Error> {
        let proto::CountRequest {
            namespace,
            tenant,
            filter,
        } = req;
        let mut violations = Violations::new();
        let filter = filter_from_proto(filter, "filter", &mut violations);
        violations.into_result(model::CountRequest {
            namespace,
            tenant,
            filter,
        })
    }
}

impl TryFrom<proto::UpdatePayloadRequest> for model::UpdatePayloadRequest {
    type Error = Error;

    fn try_from(req: proto::UpdatePayloadRequest) -> Result<Self, Error> {
        let proto::UpdatePayloadRequest {
            namespace,
            tenant,
            ids,
            payload,
            replace,
            filter,
            expiry,
        } = req;
        let mut violations = Violations::new();
        let payload = payload_from_proto(payload, "payload", &mut violations);
        use proto::update_payload_request::Expiry;
        let expiry = match expiry {
            None => ExpiryChange::Keep,
            Some(Expiry::NeverExpire(true)) => ExpiryChange::Never,
            Some(Expiry::NeverExpire(false)) => {
                violations.add("never_expire", "must be true when set");
                ExpiryChange::Keep
            }
            Some(Expiry::ExpiresAt(at)) => expiry_from_proto(Some(at), None, "", &mut violations)
                .map_or(ExpiryChange::Keep, ExpiryChange::At),
            Some(Expiry::Ttl(ttl)) => expiry_from_proto(None, Some(ttl), "", &mut violations)
                .map_or(ExpiryChange::Keep, ExpiryChange::At),
        };
        let target = match (ids.is_empty(), filter) {
            (true, None) => {
                return Err(Error::invalid("ids", "set ids, or a filter"));
            }
            (false, Some(_)) => {
                return Err(Error::invalid("filter", "set ids or a filter, not both"));
            }
            (false, None) => UpdateTarget::Ids(ids),
            (true, Some(filter)) => {
                UpdateTarget::Filter(filter_from_proto(Some(filter), "filter", &mut violations))
            }
        };
        violations.into_result(model::UpdatePayloadRequest {
            namespace,
            tenant,
            target,
            payload,
            replace,
            expiry,
        })
    }
}

fn consistency_from_proto(value: i32, field: &str, violations: &mut Violations) -> ReadConsistency {
    match proto::ReadConsistency::try_from(value) {
        Ok(proto::ReadConsistency::Cached) => ReadConsistency::Cached,
        Ok(proto::ReadConsistency::Fresh) => ReadConsistency::Fresh,
        Err(_) => {
            violations.add(
                field,
                format!("unknown consistency {value}; use CACHED or FRESH"),
            );
            ReadConsistency::Cached
        }
    }
}

fn filter_from_proto(
    filter: Option<proto::Filter>,
    path: &str,
    violations: &mut Violations,
) -> model::Filter {
    let Some(proto::Filter {
        must,
        should,
        must_not,
    }) = filter
    else {
        return model::Filter::default();
    };
    let mut clause = |name: &str, conditions: Vec<proto::Condition>| -> Vec<Condition> {
        conditions
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| {
                condition_from_proto(c, &format!("{path}.{name}[{i}]"), violations)
            })
            .collect()
    };
    model::Filter {
        must: clause("must", must),
        should: clause("should", should),
        must_not: clause("must_not", must_not),
    }
}

fn condition_from_proto(
    condition: proto::Condition,
    path: &str,
    violations: &mut Violations,
) -> Option<Condition> {
    use proto::condition::Test;
    let proto::Condition { key, test } = condition;
    let test = match test {
        None => {
            violations.add(
                path,
                "set exactly one test: equals, any_of, range, datetime_range, exists or group",
            );
            return None;
        }
        Some(Test::Group(group)) => {
            if !key.is_empty() {
                violations.add(join(path, "key"), "must be empty for a group");
            }
            return Some(Condition::Group(filter_from_proto(
                Some(group),
                &join(path, "group"),
                violations,
            )));
        }
        Some(Test::Equals(proto::MatchValue { value })) => {
            use proto::match_value::Value as V;
            FieldTest::Equals(match value {
                Some(V::Keyword(s)) => MatchValue::Keyword(s),
                Some(V::Integer(i)) => MatchValue::Integer(i),
                Some(V::Boolean(b)) => MatchValue::Boolean(b),
                None => {
                    violations.add(
                        join(path, "equals"),
                        "set one of keyword, integer or boolean",
                    );
                    return None;
                }
            })
        }
        Some(Test::AnyOf(proto::AnyOf { keywords, integers })) => {
            if !keywords.is_empty() && !integers.is_empty() {
                violations.add(join(path, "any_of"), "set keywords or integers, not both");
                return None;
            }
            FieldTest::AnyOf(if integers.is_empty() {
                AnyOf::Keywords(keywords)
            } else {
                AnyOf::Integers(integers)
            })
        }
        Some(Test::Range(proto::NumberRange { gt, gte, lt, lte })) => {
            FieldTest::Range(Bounds { gt, gte, lt, lte })
        }
        Some(Test::DatetimeRange(proto::DatetimeRange { gt, gte, lt, lte })) => {
            let field = join(path, "datetime_range");
            let mut micros = |t: Option<pbjson_types::Timestamp>| {
                t.and_then(|t| timestamp_micros(t, &field, violations))
            };
            FieldTest::DatetimeRange(Bounds {
                gt: micros(gt),
                gte: micros(gte),
                lt: micros(lt),
                lte: micros(lte),
            })
        }
        Some(Test::Exists(proto::Exists {})) => FieldTest::Exists,
    };
    Some(Condition::Field { key, test })
}

/// When a memory to write expires: at `expires_at`, or `ttl` after now
/// (when the server received it), or `None` (the namespace's default).
/// Whether that lies in the future is the core's rule.
fn expiry_from_proto(
    expires_at: Option<pbjson_types::Timestamp>,
    ttl: Option<pbjson_types::Duration>,
    path: &str,
    violations: &mut Violations,
) -> Option<SystemTime> {
    match (expires_at, ttl) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            violations.add(join(path, "ttl"), "set expires_at or ttl, not both");
            None
        }
        (Some(at), None) => {
            let micros = timestamp_micros(at, &join(path, "expires_at"), violations)?;
            Some(system_time_from_micros(micros))
        }
        (None, Some(ttl)) => {
            let expires_at = Duration::try_from(ttl)
                .ok()
                .filter(|ttl| !ttl.is_zero())
                .and_then(|ttl| SystemTime::now().checked_add(ttl))
                .filter(|at| {
                    at.duration_since(UNIX_EPOCH)
                        .is_ok_and(|d| d.as_secs() <= MAX_TIMESTAMP_SECONDS as u64)
                });
            if expires_at.is_none() {
                violations.add(
                    join(path, "ttl"),
                    "must be a positive duration ending before the year 10000",
                );
            }
            expires_at
        }
    }
}

/// Microseconds since the epoch as a time; before the epoch is the epoch.
fn system_time_from_micros(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn timestamp_micros(
    t: pbjson_types::Timestamp,
    field: &str,
    violations: &mut Violations,
) -> Option<i64> {
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&t.seconds)
        || !(0..1_000_000_000).contains(&t.nanos)
    {
        violations.add(field, "timestamps must lie between years 1 and 9999");
        return None;
    }
    Some(t.seconds * 1_000_000 + i64::from(t.nanos / 1_000))
}

/// A `google.protobuf.Struct` as a JSON object. Whole numbers within 2^53
/// become integers so that integer filters match them.
fn payload_from_proto(
    payload: Option<pbjson_types::Struct>,
    path: &str,
    violations: &mut Violations,
) -> Payload {
    let Some(payload) = payload else {
        return Payload::new();
    };
    payload
        .fields
        .into_iter()
        .map(|(key, value)| {
            let value = json_from_proto(value, &join(path, &key), violations);
            (key, value)
        })
        .collect()
}

fn json_from_proto(value: pbjson_types::Value, path: &str, violations: &mut Violations) -> Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => {
            if !n.is_finite() {
                violations.add(path, "numbers must be finite");
                Value::Null
            } else if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
                Value::from(n as i64)
            } else {
                Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StructValue(s)) => Value::Object(payload_from_proto(Some(s), path, violations)),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| json_from_proto(v, &format!("{path}[{i}]"), violations))
                .collect(),
        ),
    }
}

fn json_to_proto(value: Value) -> pbjson_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.into_iter().map(json_to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(payload_to_proto(map)),
    };
    pbjson_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`.
pub fn payload_to_proto(payload: Payload) -> pbjson_types::Struct {
    pbjson_types::Struct {
        fields: payload
            .into_iter()
            .map(|(k, v)| (k, json_to_proto(v)))
            .collect(),
    }
}

impl From<model::Memory> for proto::Memory {
    fn from(memory: model::Memory) -> Self {
        let model::Memory {
            id,
            vector,
            payload,
            updated_at,
            expires_at,
        } = memory;
        Self {
            id,
            vector,
            payload: (!payload.is_empty()).then(|| payload_to_proto(payload)),
            updated_at: updated_at.map(timestamp_to_proto),
            expires_at: expires_at.map(timestamp_to_proto),
            ttl: None,
        }
    }
}

fn timestamp_to_proto(t: SystemTime) -> pbjson_types::Timestamp {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    pbjson_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

impl From<model::ScoredMemory> for proto::ScoredMemory {
    fn from(hit: model::ScoredMemory) -> Self {
        let model::ScoredMemory { memory, score } = hit;
        Self {
            memory: Some(memory.into()),
            score,
        }
    }
}

pub fn search_response(hits: Vec<model::ScoredMemory>) -> proto::SearchResponse {
    proto::SearchResponse {
        hits: hits.into_iter().map(Into::into).collect(),
    }
}

pub fn search_groups_response(groups: Vec<model::MemoryGroup>) -> proto::SearchGroupsResponse {
    proto::SearchGroupsResponse {
        groups: groups
            .into_iter()
            .map(|group| proto::MemoryGroup {
                key: Some(json_to_proto(match group.key {
                    model::GroupKey::Keyword(keyword) => Value::String(keyword),
                    model::GroupKey::Integer(integer) => Value::from(integer),
                })),
                hits: group.hits.into_iter().map(Into::into).collect(),
            })
            .collect(),
    }
}

impl From<NamespaceInfo> for proto::NamespaceInfo {
    fn from(info: NamespaceInfo) -> Self {
        let NamespaceInfo {
            name,
            dim,
            distance,
            text_field,
            default_ttl,
            stats,
        } = info;
        let NamespaceStats {
            points_count,
            indexed_vectors_count,
            indexing,
            text_search,
        } = stats;
        let distance = match distance {
            Distance::Cosine => proto::Distance::Cosine,
            Distance::Dot => proto::Distance::Dot,
            Distance::Euclid => proto::Distance::Euclid,
            Distance::Manhattan => proto::Distance::Manhattan,
        };
        let status = if indexing {
            proto::IndexStatus::Indexing
        } else {
            proto::IndexStatus::Indexed
        };
        Self {
            name,
            dim,
            distance: distance.into(),
            points_count,
            indexed_vectors_count,
            index_status: status.into(),
            text_field: text_field.unwrap_or_default(),
            text_search,
            default_ttl: default_ttl.map(pbjson_types::Duration::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(n: f64) -> pbjson_types::Value {
        pbjson_types::Value {
            kind: Some(Kind::NumberValue(n)),
        }
    }

    #[test]
    fn whole_numbers_become_integers_and_fractions_stay_floats() {
        let mut violations = Violations::new();
        assert_eq!(
            json_from_proto(number(3.0), "p", &mut violations),
            Value::from(3)
        );
        assert_eq!(
            json_from_proto(number(-2.5), "p", &mut violations),
            Value::from(-2.5)
        );
        assert_eq!(
            json_from_proto(number(1e300), "p", &mut violations),
            Value::from(1e300)
        );
        assert!(violations.into_result(()).is_ok());
    }

    #[test]
    fn non_finite_payload_numbers_are_violations_with_their_path() {
        let mut violations = Violations::new();
        json_from_proto(
            number(f64::NAN),
            "memories[0].payload.score",
            &mut violations,
        );
        match violations.into_result(()) {
            Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, "memories[0].payload.score"),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn a_condition_without_a_test_is_reported() {
        let req = proto::CountRequest {
            namespace: "ns".into(),
            tenant: "t".into(),
            filter: Some(proto::Filter {
                must: vec![proto::Condition {
                    key: "k".into(),
                    test: None,
                }],
                ..Default::default()
            }),
        };
        match model::CountRequest::try_from(req) {
            Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, "filter.must[0]"),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn payloads_round_trip_through_struct() {
        let json = serde_json::json!({"a": [1, "x", null, {"b": true}], "f": 0.5});
        let Value::Object(map) = json.clone() else {
            unreachable!()
        };
        let proto = payload_to_proto(map);
        let mut violations = Violations::new();
        let back = payload_from_proto(Some(proto), "p", &mut violations);
        assert_eq!(Value::Object(back), json);
    }
}
