//! Qdrant's answers to the calls that return points (`QueryBatch`, `Get`,
//! `Scroll`), decoded into lean types of our own instead of
//! `qdrant-client`'s.
//!
//! `qdrant-client` decodes every payload, and every object inside one, into
//! a `HashMap` with SipHash, which vecmem then walks once to build JSON:
//! in profiles that was a sixth of a search's CPU in vecmem. Here a point's
//! payload is read into [`Stored`]: the fields vecmem keeps beside the
//! caller's payload, matched by key as each entry is read, and the caller's
//! payload as JSON, built once. Fields vecmem does not read (versions,
//! shard keys, timings, usage) are skipped. The decoder is [`read`]: these
//! types read by hand from one slice, with prost (derived here, written
//! out for points in [`message`]) as the reference it is tested against and
//! the fallback for what it does not accept. Tags are those of Qdrant's
//! `points.proto` and `json_with_int.proto`.
//! [`lean_unary`] makes a call whose answer is decoded into them.

use qdrant_client::qdrant::{PointId, VectorsOutput};
use tonic::Status;

use super::connection::Connections;

mod message;
pub mod read;
mod stored;

pub use stored::Stored;

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

/// `ScoredPoint`, with its payload read into [`Stored`]
/// (`prost::Message` in [`message`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hit {
    pub id: Option<PointId>,
    pub stored: Stored,
    pub score: f32,
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

/// `RetrievedPoint`, with its payload read into [`Stored`]
/// (`prost::Message` in [`message`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point {
    pub id: Option<PointId>,
    pub stored: Stored,
    pub vectors: Option<VectorsOutput>,
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
    use serde_json::{Value as Json, json};

    use super::stored::{Entry, Kind, Object, Value};
    use super::*;
    use crate::backend::layout;

    fn qdrant_payload(json: Json) -> std::collections::HashMap<String, qdrant::Value> {
        let Json::Object(map) = json else {
            unreachable!("an object literal")
        };
        qdrant_client::Payload::from(map).into()
    }

    /// What the hand reader and prost both read from `bytes`, which must be
    /// the same.
    fn decoded<M: Message + Default + PartialEq + std::fmt::Debug + 'static>(bytes: &[u8]) -> M {
        let by_prost = M::decode(bytes).expect("prost decodes");
        let by_reader = read::decode::<M>(bytes).expect("the reader decodes");
        assert_eq!(by_reader, by_prost);
        by_reader
    }

    /// What `qdrant-client` encodes is read into vecmem's fields, the rest
    /// of the payload skipped.
    #[test]
    fn qdrant_s_encoding_is_read_into_vecmem_s_fields() {
        let payload =
            json!({"text": "hé", "tags": ["a", 2, {"deep": [null, false]}], "empty": {}, "x": 1.5});
        let stored = qdrant_payload(json!({
            "memory_id": "m1",
            "tenant": "t",
            "updated_at_us": 1_700_000_000_123_456_i64,
            "expires_at_us": -5,
            "other": {"n": 3},
            "payload": payload,
        }));
        let expected = Stored {
            memory_id: Some("m1".into()),
            tenant: Some("t".into()),
            updated_at_us: Some(1_700_000_000_123_456),
            expires_at_us: Some(-5),
            payload: payload.as_object().cloned().unwrap_or_default(),
        };
        let id = Some(PointId::from(
            "a8098c1a-f86e-11da-bd1a-00112444be1e".to_owned(),
        ));
        let answer = qdrant::QueryBatchResponse {
            result: vec![qdrant::BatchResult {
                result: vec![qdrant::ScoredPoint {
                    id: id.clone(),
                    payload: stored.clone(),
                    score: 0.75,
                    version: 9,
                    vectors: None,
                    shard_key: None,
                    order_value: None,
                }],
            }],
            time: 0.001,
            usage: None,
        };
        let lean: QueryBatchAnswer = decoded(&answer.encode_to_vec());
        let hit = &lean.result[0].result[0];
        assert_eq!((&hit.id, hit.score), (&id, 0.75));
        assert_eq!(hit.stored, expected);

        let get = qdrant::GetResponse {
            result: vec![qdrant::RetrievedPoint {
                id,
                payload: stored,
                vectors: None,
                shard_key: None,
                order_value: None,
            }],
            time: 0.001,
            usage: None,
        };
        let lean: GetAnswer = decoded(&get.encode_to_vec());
        assert_eq!(lean.result[0].stored, expected);
    }

    /// The memory read off a point's entries is the one that reading its
    /// payload as JSON gives, whatever the point holds.
    #[test]
    fn stored_fields_read_what_the_json_layout_reads() {
        let payloads = [
            json!({"tenant": "t", "memory_id": "m1", "updated_at_us": 1_700_000_000_123_456_i64,
                "expires_at_us": 1_800_000_000_000_001_i64, "payload": {"text": "hé", "n": [1, 2.5, null]}}),
            json!({"memory_id": "m2", "payload": {}}),
            json!({"memory_id": 7, "payload": {"a": 1}}),
            json!({"tenant": "t", "payload": {"a": 1}}),
            json!({"memory_id": "m3", "updated_at_us": 1.5, "expires_at_us": "soon", "payload": "not an object"}),
            json!({"memory_id": "m4", "updated_at_us": -5, "expires_at_us": null}),
            json!({"memory_id": "m5", "tenant": 3, "updated_at_us": 2.0, "payload": null}),
        ];
        for json in payloads {
            let point = qdrant::RetrievedPoint {
                id: Some(qdrant::PointId::from(1)),
                payload: qdrant_payload(json.clone()),
                ..Default::default()
            };
            let bytes = qdrant::GetResponse {
                result: vec![point],
                ..Default::default()
            }
            .encode_to_vec();
            let read: GetAnswer = decoded(&bytes);
            for with_payload in [true, false] {
                let Json::Object(stored) = json.clone() else {
                    unreachable!("an object literal")
                };
                let expected = layout::memory_from_stored(stored, vec![0.5], with_payload);
                let memory = read.result[0]
                    .stored
                    .clone()
                    .into_fields(with_payload)
                    .map(|fields| fields.into_memory(vec![0.5]));
                assert_eq!(memory, expected, "{json} with_payload={with_payload}");
            }
        }
    }

    /// A key Qdrant sends twice keeps its last value, as in a map, in the
    /// caller's payload too; the first place of a key is kept, as JSON
    /// objects keep it.
    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let entry = |key: &str, kind: Kind| Entry {
            key: key.to_owned(),
            value: Some(Value { kind: Some(kind) }),
        };
        let payload = Object {
            fields: vec![
                entry("a", Kind::Integer(1)),
                entry("b", Kind::Integer(2)),
                entry("a", Kind::Integer(3)),
            ],
        };
        let entries = [
            entry("memory_id", Kind::String("first".into())),
            entry("updated_at_us", Kind::Integer(1)),
            entry("payload", Kind::Object(payload)),
            entry("memory_id", Kind::String("last".into())),
            entry("updated_at_us", Kind::String("not a number".into())),
        ];
        let mut bytes = Vec::new();
        prost::encoding::message::encode_repeated(2, &entries, &mut bytes);
        let mut answer = Vec::new();
        prost::encoding::bytes::encode(1, &bytes, &mut answer);
        let get: GetAnswer = decoded(&answer);
        let point = &get.result[0];
        assert_eq!(point.stored.memory_id.as_deref(), Some("last"));
        assert_eq!(point.stored.updated_at_us, None);
        assert_eq!(
            serde_json::to_string(&point.stored.payload).ok(),
            Some(r#"{"a":3,"b":2}"#.to_owned())
        );
    }

    /// What is encoded decodes to the same hit or point.
    #[test]
    fn encoded_points_decode_to_themselves() {
        let stored = Stored {
            memory_id: Some("m1".into()),
            tenant: Some("t".into()),
            updated_at_us: Some(-1),
            expires_at_us: Some(i64::MAX),
            payload: json!({"n": [1, 2.5, null, {"s": "x"}], "b": true})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        let hit = Hit {
            id: Some(PointId::from(7)),
            stored: stored.clone(),
            score: -0.5,
            vectors: None,
        };
        let bytes = hit.encode_to_vec();
        assert_eq!(bytes.len(), hit.encoded_len());
        assert_eq!(Hit::decode(bytes.as_slice()), Ok(hit));
        let point = Point {
            id: None,
            stored,
            vectors: Some(VectorsOutput::default()),
        };
        let bytes = point.encode_to_vec();
        assert_eq!(bytes.len(), point.encoded_len());
        assert_eq!(Point::decode(bytes.as_slice()), Ok(point));
        let empty = Point::default().encode_to_vec();
        assert_eq!(Point::decode(empty.as_slice()), Ok(Point::default()));
    }
}
