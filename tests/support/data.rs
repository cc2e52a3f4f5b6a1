//! Builders for requests, so tests read as what they check.

#![allow(dead_code)]

use pbjson_types::value::Kind;
use serde_json::Value;
use vecmem::proto::{self, condition::Test};

use super::NS;

pub fn to_struct(json: Value) -> proto::Struct {
    let Value::Object(map) = json else {
        panic!("payload must be an object");
    };
    proto::Struct::from(map)
}

/// A payload as a client reading the wire sees it: every number a double.
pub fn from_struct(s: &proto::Struct) -> Value {
    as_doubles(Value::Object(s.fields.clone()))
}

fn as_doubles(json: Value) -> Value {
    match json {
        Value::Number(n) => serde_json::json!(n.as_f64().expect("number")),
        Value::Array(items) => Value::Array(items.into_iter().map(as_doubles).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, as_doubles(v))).collect())
        }
        other => other,
    }
}

pub fn from_value(v: &pbjson_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_value(v)))
                .collect(),
        ),
    }
}

pub fn memory(id: &str, vector: [f32; 4], payload: Value) -> proto::Memory {
    proto::Memory {
        id: id.into(),
        vector: vector.to_vec(),
        payload: Some(to_struct(payload)),
        updated_at: None,
        expires_at: None,
        ttl: None,
    }
}

pub fn upsert(tenant: &str, memories: Vec<proto::Memory>) -> proto::UpsertRequest {
    proto::UpsertRequest {
        namespace: NS.into(),
        tenant: tenant.into(),
        memories,
    }
}

pub fn search(tenant: &str, vector: [f32; 4], limit: u32) -> proto::SearchRequest {
    proto::SearchRequest {
        namespace: NS.into(),
        tenant: tenant.into(),
        vector: vector.to_vec(),
        limit,
        with_payload: true,
        ..Default::default()
    }
}

/// A "more like this" search: by the tenant's memory `id`, avoiding `avoid`.
pub fn like(tenant: &str, id: &str, avoid: &[&str], limit: u32) -> proto::SearchRequest {
    proto::SearchRequest {
        namespace: NS.into(),
        tenant: tenant.into(),
        like_id: id.into(),
        avoid_ids: avoid.iter().map(|id| id.to_string()).collect(),
        limit,
        with_payload: true,
        ..Default::default()
    }
}

/// An UpdatePayload of `ids` of `tenant`: a merge, or with `replace` a
/// replacement.
pub fn update_payload(
    tenant: &str,
    ids: &[&str],
    payload: Value,
    replace: bool,
) -> proto::UpdatePayloadRequest {
    proto::UpdatePayloadRequest {
        namespace: NS.into(),
        tenant: tenant.into(),
        ids: ids.iter().map(|id| id.to_string()).collect(),
        payload: Some(to_struct(payload)),
        replace,
        filter: None,
        expiry: None,
    }
}

pub fn get(tenant: &str, ids: &[&str]) -> proto::GetRequest {
    proto::GetRequest {
        namespace: NS.into(),
        tenant: tenant.into(),
        ids: ids.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The first page of `tenant`'s memories, `limit` of them.
pub fn scroll(tenant: &str, limit: u32) -> proto::ScrollRequest {
    proto::ScrollRequest {
        namespace: NS.into(),
        tenant: tenant.into(),
        limit,
        ..Default::default()
    }
}

pub fn count(tenant: &str, filter: Option<proto::Filter>) -> proto::CountRequest {
    proto::CountRequest {
        namespace: NS.into(),
        tenant: tenant.into(),
        filter,
    }
}

pub fn must(conditions: Vec<proto::Condition>) -> proto::Filter {
    proto::Filter {
        must: conditions,
        ..Default::default()
    }
}

pub fn cond(key: &str, test: Test) -> proto::Condition {
    proto::Condition {
        key: key.into(),
        test: Some(test),
    }
}

pub fn keyword(key: &str, value: &str) -> proto::Condition {
    cond(
        key,
        Test::Equals(proto::MatchValue {
            value: Some(proto::match_value::Value::Keyword(value.into())),
        }),
    )
}

pub fn integer(key: &str, value: i64) -> proto::Condition {
    cond(
        key,
        Test::Equals(proto::MatchValue {
            value: Some(proto::match_value::Value::Integer(value)),
        }),
    )
}

pub fn ids_of(memories: &[proto::Memory]) -> Vec<String> {
    memories.iter().map(|m| m.id.clone()).collect()
}

pub fn hit_ids(response: &proto::SearchResponse) -> Vec<String> {
    response
        .hits
        .iter()
        .map(|h| h.memory.as_ref().expect("memory").id.clone())
        .collect()
}
