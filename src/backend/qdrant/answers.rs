//! Qdrant's answers to the calls that return points (`QueryBatch`, `Get`,
//! `Scroll`), decoded into lean types of our own instead of
//! `qdrant-client`'s.
//!
//! `qdrant-client` decodes every payload, and every object inside one, into
//! a `HashMap` with SipHash, which vecmem then walks once to build JSON:
//! in profiles that was a sixth of a search's CPU in vecmem. Here a payload
//! is what it is on the wire, a list of key/value entries (protobuf encodes
//! `map<string, Value>` as repeated entries, so these types read Qdrant's
//! bytes unchanged), and becomes JSON in one pass. Fields vecmem does not
//! read (versions, shard keys, timings, usage) are skipped by the decoder,
//! which is [`read`]: these types read by hand from one slice, with prost's
//! derive below as the reference it is tested against and the fallback for
//! what it does not accept. Tags are those of Qdrant's `points.proto` and
//! `json_with_int.proto`.
//! [`lean_unary`] makes a call whose answer is decoded into them.

use qdrant_client::qdrant::{PointId, VectorsOutput};
use serde_json::Value as Json;
use tonic::Status;

use super::connection::Connections;
use crate::backend::layout::{self, StoredFields};
use crate::model::Payload;

pub mod read;

/// `QueryBatchResponse`: one list of hits per query, in query order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryBatchAnswer {
    #[prost(message, repeated, tag = "1")]
    pub result: Vec<HitList>,
}

/// `BatchResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HitList {
    #[prost(message, repeated, tag = "1")]
    pub result: Vec<Hit>,
}

/// `ScoredPoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hit {
    #[prost(message, optional, tag = "1")]
    pub id: Option<PointId>,
    #[prost(message, repeated, tag = "2")]
    pub payload: Vec<Entry>,
    #[prost(float, tag = "3")]
    pub score: f32,
    #[prost(message, optional, tag = "6")]
    pub vectors: Option<VectorsOutput>,
}

/// `GetResponse`: the points found, each once.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetAnswer {
    #[prost(message, repeated, tag = "1")]
    pub result: Vec<Point>,
}

/// `ScrollResponse`: a page of points and where the next one starts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScrollAnswer {
    #[prost(message, optional, tag = "1")]
    pub next_page_offset: Option<PointId>,
    #[prost(message, repeated, tag = "2")]
    pub result: Vec<Point>,
}

/// `RetrievedPoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Point {
    #[prost(message, optional, tag = "1")]
    pub id: Option<PointId>,
    #[prost(message, repeated, tag = "2")]
    pub payload: Vec<Entry>,
    #[prost(message, optional, tag = "4")]
    pub vectors: Option<VectorsOutput>,
}

/// One entry of a `map<string, Value>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Value>,
}

/// `Value` of `json_with_int.proto`: JSON with integers kept apart.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(int32, tag = "1")]
    Null(i32),
    #[prost(double, tag = "2")]
    Double(f64),
    #[prost(int64, tag = "3")]
    Integer(i64),
    #[prost(string, tag = "4")]
    String(String),
    #[prost(bool, tag = "5")]
    Bool(bool),
    #[prost(message, tag = "6")]
    Object(Object),
    #[prost(message, tag = "7")]
    List(List),
}

/// `Struct`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Object {
    #[prost(message, repeated, tag = "1")]
    pub fields: Vec<Entry>,
}

/// `ListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct List {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

/// A memory's fields out of its stored payload's entries, as
/// [`layout::memory_from_stored`] reads them from JSON, without building
/// JSON for the fields vecmem keeps beside the caller's payload: only that
/// payload becomes JSON, and only when it was asked for. `None` for a point
/// that vecmem did not write (no string `memory_id`). A key sent twice
/// keeps its last value, as a map would.
pub fn stored_fields(entries: Vec<Entry>, with_payload: bool) -> Option<StoredFields> {
    let (mut id, mut updated_at_us, mut expires_at_us, mut payload) = (None, None, None, None);
    for Entry { key, value } in entries {
        let kind = value.and_then(|value| value.kind);
        match key.as_str() {
            layout::ID_FIELD => id = Some(kind),
            layout::UPDATED_AT_FIELD => updated_at_us = Some(kind),
            layout::EXPIRES_AT_FIELD => expires_at_us = Some(kind),
            layout::PAYLOAD_FIELD => payload = Some(kind),
            _ => {}
        }
    }
    let Some(Kind::String(id)) = id? else {
        return None;
    };
    let integer = |kind: Option<Option<Kind>>| match kind {
        Some(Some(Kind::Integer(number))) => Some(number),
        _ => None,
    };
    let payload = match payload {
        Some(Some(Kind::Object(object))) if with_payload => to_json(object.fields),
        _ => Payload::new(),
    };
    Some(StoredFields {
        id,
        updated_at_us: integer(updated_at_us),
        expires_at_us: integer(expires_at_us),
        payload,
    })
}

/// A payload's entries as a JSON object; a key sent twice keeps its last
/// value, as a map would.
pub fn to_json(entries: Vec<Entry>) -> Payload {
    entries
        .into_iter()
        .map(|entry| (entry.key, entry.value.map_or(Json::Null, value_to_json)))
        .collect()
}

fn value_to_json(value: Value) -> Json {
    match value.kind {
        None | Some(Kind::Null(_)) => Json::Null,
        Some(Kind::Double(number)) => {
            serde_json::Number::from_f64(number).map_or(Json::Null, Json::Number)
        }
        Some(Kind::Integer(number)) => Json::from(number),
        Some(Kind::String(string)) => Json::String(string),
        Some(Kind::Bool(boolean)) => Json::Bool(boolean),
        Some(Kind::Object(object)) => Json::Object(to_json(object.fields)),
        Some(Kind::List(list)) => Json::Array(list.values.into_iter().map(value_to_json).collect()),
    }
}

/// The string stored under `key`, if any.
pub fn string_field<'a>(entries: &'a [Entry], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .rev()
        .find(|entry| entry.key == key)
        .and_then(|entry| match entry.value.as_ref()?.kind.as_ref()? {
            Kind::String(string) => Some(string.as_str()),
            _ => None,
        })
}

/// One unary call to Qdrant's method at `path` through vecmem's codec: the
/// request written by [`requests`](super::requests) (vectors in one copy),
/// the answer decoded as `A` (one of the lean [`answers`], or
/// `qdrant-client`'s type). What the generated client does otherwise,
/// including its error when the service is not ready.
pub async fn lean_unary<M, A>(
    peer: Connections,
    request: tonic::Request<M>,
    path: &'static str,
) -> Result<tonic::Response<A>, Status>
where
    M: prost::Message + Send + Sync + 'static,
    A: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(peer);
    grpc.ready()
        .await
        .map_err(|err| Status::unknown(format!("Service was not ready: {err}")))?;
    let codec = crate::codec::SliceCodec::<M, A>::default();
    grpc.unary(
        request,
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use qdrant_client::qdrant;

    use super::*;

    /// What `qdrant-client` encodes, these types decode to the same JSON.
    #[test]
    fn qdrants_encoding_decodes_to_the_same_json() {
        let json = serde_json::json!({
            "id": "m1",
            "tenant": "t",
            "n": 3,
            "x": 1.5,
            "ok": true,
            "none": null,
            "payload": {"text": "hé", "tags": ["a", 2, {"deep": [null, false]}], "empty": {}},
        });
        let Json::Object(map) = json.clone() else {
            unreachable!("an object literal")
        };
        let payload: std::collections::HashMap<String, qdrant::Value> =
            qdrant_client::Payload::from(map).into();
        let point = qdrant::ScoredPoint {
            id: Some(PointId::from(
                "a8098c1a-f86e-11da-bd1a-00112444be1e".to_owned(),
            )),
            payload: payload.clone(),
            score: 0.75,
            version: 9,
            vectors: None,
            shard_key: None,
            order_value: None,
        };
        let answer = qdrant::QueryBatchResponse {
            result: vec![qdrant::BatchResult {
                result: vec![point.clone()],
            }],
            time: 0.001,
            usage: None,
        };
        let lean = QueryBatchAnswer::decode(answer.encode_to_vec().as_slice()).expect("decodes");
        let hit = &lean.result[0].result[0];
        assert_eq!(hit.id, point.id);
        assert_eq!(hit.score, 0.75);
        assert_eq!(string_field(&hit.payload, "tenant"), Some("t"));
        assert_eq!(string_field(&hit.payload, "n"), None);
        assert_eq!(Json::Object(to_json(hit.payload.clone())), json);

        let get = qdrant::GetResponse {
            result: vec![qdrant::RetrievedPoint {
                id: point.id.clone(),
                payload,
                vectors: None,
                shard_key: None,
                order_value: None,
            }],
            time: 0.001,
            usage: None,
        };
        let lean = GetAnswer::decode(get.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(Json::Object(to_json(lean.result[0].payload.clone())), json);
    }

    /// `json` as the entries Qdrant sends for it (integers kept apart).
    fn entries(json: Json) -> Vec<Entry> {
        let Json::Object(map) = json else {
            unreachable!("an object literal")
        };
        map.into_iter()
            .map(|(key, value)| Entry {
                key,
                value: Some(wire_value(value)),
            })
            .collect()
    }

    fn wire_value(json: Json) -> Value {
        let kind = match json {
            Json::Null => Kind::Null(0),
            Json::Bool(boolean) => Kind::Bool(boolean),
            Json::Number(number) => match number.as_i64() {
                Some(integer) => Kind::Integer(integer),
                None => Kind::Double(number.as_f64().unwrap_or_default()),
            },
            Json::String(string) => Kind::String(string),
            Json::Array(values) => Kind::List(List {
                values: values.into_iter().map(wire_value).collect(),
            }),
            object @ Json::Object(_) => Kind::Object(Object {
                fields: entries(object),
            }),
        };
        Value { kind: Some(kind) }
    }

    /// Reading the fields off the entries gives the memory that reading
    /// them off the payload's JSON gives, whatever the point holds.
    #[test]
    fn stored_fields_read_what_the_json_layout_reads() {
        let payloads = [
            serde_json::json!({"tenant": "t", "memory_id": "m1", "updated_at_us": 1_700_000_000_123_456_i64,
                "expires_at_us": 1_800_000_000_000_001_i64, "payload": {"text": "hé", "n": [1, 2.5, null]}}),
            serde_json::json!({"memory_id": "m2", "payload": {}}),
            serde_json::json!({"memory_id": 7, "payload": {"a": 1}}),
            serde_json::json!({"tenant": "t", "payload": {"a": 1}}),
            serde_json::json!({"memory_id": "m3", "updated_at_us": 1.5, "expires_at_us": "soon", "payload": "not an object"}),
            serde_json::json!({"memory_id": "m4", "updated_at_us": -5, "expires_at_us": null}),
        ];
        for json in payloads {
            for with_payload in [true, false] {
                let Json::Object(stored) = json.clone() else {
                    unreachable!("an object literal")
                };
                let expected = layout::memory_from_stored(stored, vec![0.5], with_payload);
                let read = stored_fields(entries(json.clone()), with_payload)
                    .map(|fields| fields.into_memory(vec![0.5]));
                assert_eq!(read, expected, "{json} with_payload={with_payload}");
            }
        }
    }

    /// A key Qdrant sends twice keeps its last value, as in a map.
    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let mut sent = entries(serde_json::json!({"memory_id": "first", "payload": {"a": 1}}));
        sent.extend(entries(
            serde_json::json!({"memory_id": "last", "payload": {"b": 2}}),
        ));
        let memory = stored_fields(sent, true).map(|fields| fields.into_memory(vec![]));
        assert_eq!(memory.as_ref().map(|m| m.id.as_str()), Some("last"));
        assert_eq!(
            memory.map(|m| Json::Object(m.payload)),
            Some(serde_json::json!({"b": 2}))
        );
    }
}
