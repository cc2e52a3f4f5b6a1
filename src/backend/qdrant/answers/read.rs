//! Qdrant's answers with points read into the lean types by hand, from
//! one slice.
//!
//! prost reads a message through generic `Buf` calls, a string through a
//! `Vec` it clears, reserves and fills chunk by chunk, and a oneof through
//! a default it then replaces. Counted with callgrind
//! (`benches/callgrind.sh`), decoding the answer to an uncached search of
//! 10 hits took ~61,000 of the ~316,000 instructions vecmem spent on it,
//! ~6,000 per hit of five payload entries. Here each field is matched as
//! it is read off the slice ([`wire`]) and a string is copied once. A
//! payload entry is applied to the point's [`Stored`] fields as it is read:
//! its key matched as bytes, never copied, and its value built as JSON
//! straight from the wire, not first as entries.
//!
//! What this reading does not take as it is (malformed bytes, a known
//! field with another wire type, a field prost would merge with an earlier
//! one, nesting deeper than [`MAX_DEPTH`]) goes to prost whole, so a bad
//! answer fails with prost's error and an unusual one is read as prost
//! reads it. Unknown fields are skipped, as prost skips them.

use std::any::Any;

use prost::{DecodeError, Message};
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::{PointId, VectorsOutput};

use serde_json::Value as Json;

use super::stored::{Field, Stored, double};
use super::{GetAnswer, Hit, HitList, Point, QueryBatchAnswer, ScrollAnswer};
use crate::codec::wire::{self, Wire};
use crate::model::Payload;

/// Payloads with objects or lists nested deeper than this go to prost,
/// which applies its own limit of 100 nested messages; 32 of them are ~70
/// messages from the top, so everything read here is within prost's limit.
const MAX_DEPTH: u32 = 32;

/// `U` from one slice: Qdrant's answers with points read here, any other
/// message by prost. The type tests are resolved at compile time.
pub fn decode<U: Message + Default + 'static>(bytes: &[u8]) -> Result<U, DecodeError> {
    let mut decoded: Option<U> = None;
    let slot = &mut decoded as &mut dyn Any;
    if let Some(answer) = slot.downcast_mut::<Option<QueryBatchAnswer>>() {
        *answer = query_batch(bytes);
    } else if let Some(answer) = slot.downcast_mut::<Option<GetAnswer>>() {
        *answer = get(bytes);
    } else if let Some(answer) = slot.downcast_mut::<Option<ScrollAnswer>>() {
        *answer = scroll(bytes);
    }
    decoded.map_or_else(|| U::decode(bytes), Ok)
}

/// The messages of field 1, each read by `read`, of a message whose only
/// field read here is that `repeated` one; unknown fields are skipped.
fn repeated<T>(bytes: &[u8], read: impl Fn(&[u8]) -> Option<T>) -> Option<Vec<T>> {
    let mut items = Vec::new();
    for field in wire::fields(bytes) {
        match field?.into() {
            (1, Wire::Len(item)) => items.push(read(item)?),
            (1, _) => return None,
            _ => {}
        }
    }
    Some(items)
}

fn query_batch(bytes: &[u8]) -> Option<QueryBatchAnswer> {
    let result = repeated(bytes, |list| {
        Some(HitList {
            result: repeated(list, hit)?,
        })
    })?;
    Some(QueryBatchAnswer { result })
}

fn hit(bytes: &[u8]) -> Option<Hit> {
    let mut hit = Hit::default();
    for field in wire::fields(bytes) {
        match field?.into() {
            (1, Wire::Len(id)) if hit.id.is_none() => hit.id = Some(point_id(id)?),
            (2, Wire::Len(entry)) => stored_entry(entry, &mut hit.stored)?,
            (3, Wire::Fixed32(score)) => hit.score = f32::from_bits(score),
            (6, Wire::Len(vectors)) if hit.vectors.is_none() => {
                hit.vectors = Some(VectorsOutput::decode(vectors).ok()?);
            }
            (1 | 2 | 3 | 6, _) => return None,
            _ => {}
        }
    }
    Some(hit)
}

fn get(bytes: &[u8]) -> Option<GetAnswer> {
    Some(GetAnswer {
        result: repeated(bytes, point)?,
    })
}

fn scroll(bytes: &[u8]) -> Option<ScrollAnswer> {
    let mut answer = ScrollAnswer::default();
    for field in wire::fields(bytes) {
        match field?.into() {
            (1, Wire::Len(id)) if answer.next_page_offset.is_none() => {
                answer.next_page_offset = Some(point_id(id)?);
            }
            (2, Wire::Len(found)) => answer.result.push(point(found)?),
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    Some(answer)
}

fn point(bytes: &[u8]) -> Option<Point> {
    let mut point = Point::default();
    for field in wire::fields(bytes) {
        match field?.into() {
            (1, Wire::Len(id)) if point.id.is_none() => point.id = Some(point_id(id)?),
            (2, Wire::Len(entry)) => stored_entry(entry, &mut point.stored)?,
            (4, Wire::Len(vectors)) if point.vectors.is_none() => {
                point.vectors = Some(VectorsOutput::decode(vectors).ok()?);
            }
            (1 | 2 | 4, _) => return None,
            _ => {}
        }
    }
    Some(point)
}

/// `PointId`: a number or a UUID; the last one sent, as in a oneof.
fn point_id(bytes: &[u8]) -> Option<PointId> {
    let mut id = None;
    for field in wire::fields(bytes) {
        match field?.into() {
            (1, Wire::Varint(number)) => id = Some(PointIdOptions::Num(number)),
            (2, Wire::Len(uuid)) => id = Some(PointIdOptions::Uuid(text(uuid)?)),
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    Some(PointId {
        point_id_options: id,
    })
}

/// One entry of a point's payload, applied to `stored`. The key is matched
/// as bytes; only the value of one of vecmem's fields is kept. Any other
/// entry is read all the same, and dropped: prost would refuse a bad one.
fn stored_entry(bytes: &[u8], stored: &mut Stored) -> Option<()> {
    let (key, value) = key_and_value(bytes)?;
    let value = entry_value(value, 0)?;
    match Field::of(key) {
        Some(field) => stored.set(field, value),
        None => {
            std::str::from_utf8(key).ok()?;
        }
    }
    Some(())
}

/// The key and the value of a `map<string, Value>` entry, as sent: the last
/// key, and the value unless there are two (prost merges them).
fn key_and_value(bytes: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (mut key, mut value) = (&[][..], None);
    for field in wire::fields(bytes) {
        match field?.into() {
            (1, Wire::Len(next)) => {
                // prost checks every key it reads, the replaced ones too.
                if !key.is_empty() {
                    std::str::from_utf8(key).ok()?;
                }
                key = next;
            }
            (2, Wire::Len(sent)) if value.is_none() => value = Some(sent),
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    Some((key, value))
}

/// A map entry's value as JSON, `depth` objects and lists deep; an entry
/// sent without one holds a null, as prost reads it.
fn entry_value(value: Option<&[u8]>, depth: u32) -> Option<Json> {
    value.map_or(Some(Json::Null), |value| self::value(value, depth))
}

/// A `Value` as JSON, `depth` objects and lists deep: the last kind sent,
/// as in a oneof, unless an object or a list follows another kind (prost
/// merges those).
fn value(bytes: &[u8], depth: u32) -> Option<Json> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut kind = None;
    for field in wire::fields(bytes) {
        kind = Some(match field?.into() {
            // prost reads a null's int32 and then drops it.
            (1, Wire::Varint(_)) => Json::Null,
            (2, Wire::Fixed64(bits)) => double(f64::from_bits(bits)),
            (3, Wire::Varint(integer)) => Json::from(integer as i64),
            (4, Wire::Len(string)) => Json::String(text(string)?),
            (5, Wire::Varint(boolean)) => Json::Bool(boolean != 0),
            (6, Wire::Len(object)) if kind.is_none() => Json::Object(self::object(object, depth)?),
            (7, Wire::Len(list)) if kind.is_none() => Json::Array(self::list(list, depth)?),
            (1..=7, _) => return None,
            _ => continue,
        });
    }
    Some(kind.unwrap_or(Json::Null))
}

/// A `Struct` as a JSON object; a key sent twice keeps its first place and
/// its last value, as in a map.
fn object(bytes: &[u8], depth: u32) -> Option<Payload> {
    let mut object = Payload::new();
    for field in wire::fields(bytes) {
        match field?.into() {
            (1, Wire::Len(entry)) => {
                let (key, value) = key_and_value(entry)?;
                let key = text(key)?;
                let value = entry_value(value, depth + 1)?;
                object.insert(key, value);
            }
            (1, _) => return None,
            _ => {}
        }
    }
    Some(object)
}

fn list(bytes: &[u8], depth: u32) -> Option<Vec<Json>> {
    repeated(bytes, |value| self::value(value, depth + 1))
}

/// A string field's bytes as a `String`, copied once; `None` if not UTF-8.
fn text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use qdrant_client::qdrant;
    use serde_json::json;

    use super::super::stored::{Entry, Kind, List, Object, Value};
    use super::*;

    fn payload(json: serde_json::Value) -> HashMap<String, qdrant::Value> {
        let serde_json::Value::Object(map) = json else {
            unreachable!("an object literal")
        };
        qdrant_client::Payload::from(map).into()
    }

    fn vectors(data: Vec<f32>) -> Option<qdrant::VectorsOutput> {
        Some(qdrant::VectorsOutput {
            vectors_options: Some(qdrant::vectors_output::VectorsOptions::Vector(
                qdrant::VectorOutput {
                    vector: Some(qdrant::vector_output::Vector::Dense(qdrant::DenseVector {
                        data,
                    })),
                    ..Default::default()
                },
            )),
        })
    }

    fn payloads() -> Vec<serde_json::Value> {
        vec![
            json!({"tenant": "t1", "memory_id": "m1", "updated_at_us": 1_700_000_000_123_456_i64,
                "payload": {"source": "vecmem-bench", "sequence": 7}}),
            json!({"memory_id": "m2", "expires_at_us": -5, "payload": {"text": "hé 🙂", "n": 1.5,
                "tags": ["a", 2, null, true, {"deep": [[], {}]}], "none": null, "empty": {}}}),
            json!({}),
        ]
    }

    fn query_batch_response() -> Vec<u8> {
        let hit = |id: qdrant::PointId, json, with_vectors: bool| qdrant::ScoredPoint {
            id: Some(id),
            payload: payload(json),
            score: 0.75,
            version: 9,
            vectors: with_vectors
                .then(|| vectors(vec![0.5, -1.0, 3.25]))
                .flatten(),
            shard_key: None,
            order_value: None,
        };
        let uuid = || qdrant::PointId::from("a8098c1a-f86e-11da-bd1a-00112444be1e".to_owned());
        let result = payloads()
            .into_iter()
            .enumerate()
            .map(|(at, json)| qdrant::BatchResult {
                result: vec![
                    hit(uuid(), json.clone(), at == 0),
                    hit(qdrant::PointId::from(at as u64), json, false),
                ],
            })
            .chain([qdrant::BatchResult::default()])
            .collect();
        qdrant::QueryBatchResponse {
            result,
            time: 0.001,
            usage: Some(qdrant::Usage::default()),
        }
        .encode_to_vec()
    }

    fn retrieved(id: u64, json: serde_json::Value) -> qdrant::RetrievedPoint {
        qdrant::RetrievedPoint {
            id: Some(qdrant::PointId::from(id)),
            payload: payload(json),
            vectors: vectors(vec![1.0; 4]),
            shard_key: None,
            order_value: None,
        }
    }

    fn get_response() -> Vec<u8> {
        qdrant::GetResponse {
            result: payloads()
                .into_iter()
                .enumerate()
                .map(|(at, json)| retrieved(at as u64, json))
                .collect(),
            time: 0.002,
            usage: None,
        }
        .encode_to_vec()
    }

    fn scroll_response() -> Vec<u8> {
        qdrant::ScrollResponse {
            next_page_offset: Some(qdrant::PointId::from(99)),
            result: payloads()
                .into_iter()
                .enumerate()
                .map(|(at, json)| retrieved(at as u64, json))
                .collect(),
            time: 0.003,
            usage: None,
        }
        .encode_to_vec()
    }

    fn by_prost<M: Message + Default>(bytes: &[u8]) -> Result<M, String> {
        M::decode(bytes).map_err(|error| error.to_string())
    }

    fn by_reader<M: Message + Default + 'static>(bytes: &[u8]) -> Result<M, String> {
        decode(bytes).map_err(|error| error.to_string())
    }

    /// As written out: a changed byte can make a score NaN, which is not
    /// equal to itself.
    fn shown<M: std::fmt::Debug>(read: Result<M, String>) -> String {
        format!("{read:?}")
    }

    /// The answer prost reads, and prost's error where it fails: for the
    /// bytes themselves, every truncation, and every byte changed to
    /// each of a few values that make keys, lengths and varints wrong.
    fn assert_read_as_prost_reads<M>(valid: &[u8])
    where
        M: Message + Default + PartialEq + std::fmt::Debug + 'static,
    {
        assert!(by_prost::<M>(valid).is_ok());
        assert_eq!(by_reader::<M>(valid), by_prost::<M>(valid));
        for end in 0..valid.len() {
            let cut = &valid[..end];
            assert_eq!(by_reader::<M>(cut), by_prost::<M>(cut), "cut at {end}");
        }
        for at in 0..valid.len() {
            for byte in [0x00, 0x01, 0x0a, 0x12, 0x1d, 0x22, 0x38, 0x7f, 0x80, 0xff] {
                let mut changed = valid.to_vec();
                changed[at] = byte;
                assert_eq!(
                    shown(by_reader::<M>(&changed)),
                    shown(by_prost::<M>(&changed)),
                    "byte {at} set to {byte:#x}"
                );
            }
        }
    }

    #[test]
    fn answers_are_read_as_prost_reads_them() {
        assert_read_as_prost_reads::<QueryBatchAnswer>(&query_batch_response());
        assert_read_as_prost_reads::<GetAnswer>(&get_response());
        assert_read_as_prost_reads::<ScrollAnswer>(&scroll_response());
    }

    /// What Qdrant sends is read here, not handed to prost.
    #[test]
    fn qdrant_s_answers_are_read_without_prost() {
        let bytes = query_batch_response();
        assert_eq!(query_batch(&bytes).map(Ok), Some(by_prost(&bytes)));
        let bytes = get_response();
        assert_eq!(get(&bytes).map(Ok), Some(by_prost(&bytes)));
        let bytes = scroll_response();
        assert_eq!(scroll(&bytes).map(Ok), Some(by_prost(&bytes)));
    }

    /// `bytes` as field `tag` of a message.
    fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
        let mut field = Vec::new();
        prost::encode_length_delimiter((tag as usize) << 3 | 2, &mut field).expect("a Vec grows");
        prost::encode_length_delimiter(bytes.len(), &mut field).expect("a Vec grows");
        field.extend_from_slice(bytes);
        field
    }

    /// An answer of one hit, from the hit's bytes.
    fn answer_of(hit: &[u8]) -> Vec<u8> {
        field(1, &field(1, hit))
    }

    /// Fields prost merges with an earlier one are left to prost: a second
    /// value of an entry (an object after an object or a string, a list
    /// after a list), a second id of a hit. Two messages sent one after the
    /// other are one message, merged.
    #[test]
    fn fields_prost_merges_are_read_by_prost() {
        let value = |kind| Some(Value { kind: Some(kind) });
        let object = || {
            Kind::Object(Object {
                fields: vec![Entry {
                    key: "a".into(),
                    value: value(Kind::Integer(1)),
                }],
            })
        };
        let list = || {
            Kind::List(List {
                values: vec![Value {
                    kind: Some(Kind::Bool(true)),
                }],
            })
        };
        let string = || Kind::String("s".into());
        for (first, second) in [
            (object(), object()),
            (string(), object()),
            (list(), list()),
            (object(), string()),
        ] {
            let mut entry = Entry {
                key: "k".into(),
                value: value(first),
            }
            .encode_to_vec();
            entry.extend(
                Entry {
                    key: String::new(),
                    value: value(second),
                }
                .encode_to_vec(),
            );
            let bytes = answer_of(&field(2, &entry));
            assert!(query_batch(&bytes).is_none());
            assert!(by_prost::<QueryBatchAnswer>(&bytes).is_ok());
            assert_eq!(by_reader::<QueryBatchAnswer>(&bytes), by_prost(&bytes));
        }
        let hit = |id: u64| {
            Hit {
                id: Some(PointId::from(id)),
                ..Hit::default()
            }
            .encode_to_vec()
        };
        let bytes = answer_of(&[hit(1), hit(2)].concat());
        assert!(query_batch(&bytes).is_none());
        assert_eq!(by_reader::<QueryBatchAnswer>(&bytes), by_prost(&bytes));
    }

    /// A key sent twice is checked as UTF-8 both times, as prost checks
    /// it, whether or not the last one is one of vecmem's.
    #[test]
    fn every_key_sent_is_checked() {
        let value = Value {
            kind: Some(Kind::String("m1".into())),
        };
        for (first, last) in [
            (&b"\xff"[..], &b"memory_id"[..]),
            (b"memory_id", b"\xff"),
            (b"\xff", b"other"),
            (b"other", b"memory_id"),
        ] {
            let entry = [
                field(1, first),
                field(1, last),
                field(2, &value.encode_to_vec()),
            ]
            .concat();
            let bytes = answer_of(&field(2, &entry));
            assert_eq!(by_reader::<QueryBatchAnswer>(&bytes), by_prost(&bytes));
            let valid = std::str::from_utf8(first).is_ok() && std::str::from_utf8(last).is_ok();
            assert_eq!(by_prost::<QueryBatchAnswer>(&bytes).is_ok(), valid);
            assert_eq!(query_batch(&bytes).is_some(), valid);
        }
    }

    /// Payloads nested past what is read here go to prost, which reads
    /// them up to its own limit and refuses them past it.
    #[test]
    fn deep_payloads_are_read_as_prost_reads_them() {
        for depth in [MAX_DEPTH as usize, MAX_DEPTH as usize + 1, 45, 60] {
            let mut value = json!("leaf");
            for _ in 0..depth {
                value = json!({ "a": [value] });
            }
            let point = qdrant::RetrievedPoint {
                id: Some(qdrant::PointId::from(1)),
                payload: payload(json!({ "payload": value })),
                ..Default::default()
            };
            let bytes = qdrant::GetResponse {
                result: vec![point],
                ..Default::default()
            }
            .encode_to_vec();
            assert_eq!(by_reader::<GetAnswer>(&bytes), by_prost(&bytes), "{depth}");
        }
        let prost_limit = {
            let mut value = json!(1);
            for _ in 0..60 {
                value = json!([value]);
            }
            value
        };
        let bytes = qdrant::GetResponse {
            result: vec![retrieved(1, json!({ "payload": prost_limit }))],
            ..Default::default()
        }
        .encode_to_vec();
        assert!(by_prost::<GetAnswer>(&bytes).is_err(), "past prost's limit");
        assert_eq!(by_reader::<GetAnswer>(&bytes), by_prost(&bytes));
    }
}
