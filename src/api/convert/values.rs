//! The values requests carry: filters and their conditions, read
//! consistency, expiry, timestamps, and payloads as JSON both ways. Their
//! structural problems become field violations at their path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbjson_types::value::Kind;
use serde_json::Value;

use crate::model::{
    self, AnyOf, Bounds, Condition, FieldTest, MatchValue, Payload, ReadConsistency, Violations,
    join,
};
use crate::proto;

/// Timestamps must lie in 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

pub(super) fn consistency_from_proto(
    value: i32,
    field: &str,
    violations: &mut Violations,
) -> ReadConsistency {
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

pub(super) fn filter_from_proto(
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

pub(super) fn condition_from_proto(
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
pub(super) fn expiry_from_proto(
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
pub(super) fn system_time_from_micros(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

pub(super) fn timestamp_micros(
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

/// A payload as a JSON object: the numbers its `Struct` could not hold
/// (read off the wire as NaN or ±infinity) are violations at their path.
pub(super) fn payload_from_proto(
    payload: Option<proto::Struct>,
    path: &str,
    violations: &mut Violations,
) -> Payload {
    let Some(payload) = payload else {
        return Payload::new();
    };
    for number in payload.non_finite_paths() {
        violations.add(join(path, number), "numbers must be finite");
    }
    payload.fields
}

/// A JSON value as a `google.protobuf.Value` (a group's key).
pub(super) fn json_to_proto(value: Value) -> pbjson_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.into_iter().map(json_to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(pbjson_types::Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, json_to_proto(v)))
                .collect(),
        }),
    };
    pbjson_types::Value { kind: Some(kind) }
}

pub(super) fn timestamp_to_proto(t: SystemTime) -> pbjson_types::Timestamp {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    pbjson_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::error::Error;

    /// A `Struct` with one number, as a client of another language sends it.
    fn payload_with(key: &str, n: f64) -> proto::Struct {
        let sent = pbjson_types::Struct {
            fields: [(
                key.to_owned(),
                pbjson_types::Value {
                    kind: Some(Kind::NumberValue(n)),
                },
            )]
            .into(),
        };
        proto::Struct::decode(sent.encode_to_vec().as_slice()).expect("decodes")
    }

    #[test]
    fn non_finite_payload_numbers_are_violations_with_their_path() {
        let mut violations = Violations::new();
        let payload = payload_from_proto(
            Some(payload_with("score", f64::NAN)),
            "memories[0].payload",
            &mut violations,
        );
        assert_eq!(payload["score"], Value::Null);
        match violations.into_result(()) {
            Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, "memories[0].payload.score"),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn finite_payload_numbers_pass() {
        let mut violations = Violations::new();
        let payload =
            payload_from_proto(Some(payload_with("score", 3.0)), "payload", &mut violations);
        assert_eq!(payload["score"], Value::from(3));
        assert!(violations.into_result(()).is_ok());
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
}
