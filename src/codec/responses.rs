//! vecmem's responses that carry memories (`SearchResponse`,
//! `SearchBatchResponse`, `GetResponse`, `ScrollResponse`,
//! `ExportResponse`), written with each memory measured once.
//!
//! prost's generated code measures a nested message at every level above
//! it: a hit's `Memory` was measured for the `SearchResponse`, again for
//! its `ScoredMemory`, and its payload again inside the `Memory`. Counted
//! with callgrind (`benches/callgrind.sh`), writing the answer to a 10-hit
//! search took ~20,000 of the ~290,000 instructions vecmem spent on an
//! uncached search; written here, ~12,000 (and ~3,000 more to drop the
//! memories, which prost's writing left to its caller). Each memory is
//! measured once, just before it is written (twice in a `SearchBatch`,
//! whose every result is measured before it is written), and its vector's
//! floats are copied in bulk. The bytes are the ones prost writes (tested
//! below, byte for byte). Messages are destructured field by field, so a
//! field added to one of them breaks the build here until it is written.
//!
//! Writing into a `Vec` first and copying it into tonic's buffer in one
//! piece was tried and saved nothing measurable: the cost is in the
//! fields, not in the `BufMut` calls on tonic's buffer.

use std::any::Any;
use std::mem;

use bytes::BufMut;
use pbjson_types::{Duration, Timestamp};
use prost::encoding::encoded_len_varint;

use crate::proto::{
    ExportResponse, GetResponse, Memory, ScoredMemory, ScrollResponse, SearchBatchResponse,
    SearchResponse, Struct,
};
use crate::proto_struct::{self, delimited_len};

/// The key of length-delimited field `tag` (every tag here is under 16,
/// so a key is one byte).
const fn delimited(tag: u8) -> u8 {
    tag << 3 | 2
}

/// Writes `message` if it is one of the responses above, and says whether
/// it was; it is then left as its default. The type tests are resolved at
/// compile time.
pub fn write(message: &mut dyn Any, buf: &mut impl BufMut) -> bool {
    if let Some(search) = message.downcast_mut::<SearchResponse>() {
        write_search(mem::take(search), buf);
    } else if let Some(batch) = message.downcast_mut::<SearchBatchResponse>() {
        let SearchBatchResponse { results } = mem::take(batch);
        for result in results {
            write_len(delimited(1), search_len(&result), buf);
            write_search(result, buf);
        }
    } else if let Some(get) = message.downcast_mut::<GetResponse>() {
        let GetResponse {
            memories,
            missing_ids,
        } = mem::take(get);
        write_memories(delimited(1), memories, buf);
        for id in missing_ids {
            write_bytes(delimited(2), id.as_bytes(), buf);
        }
    } else if let Some(scroll) = message.downcast_mut::<ScrollResponse>() {
        let ScrollResponse {
            memories,
            next_page_token,
        } = mem::take(scroll);
        write_memories(delimited(1), memories, buf);
        if !next_page_token.is_empty() {
            write_bytes(delimited(2), next_page_token.as_bytes(), buf);
        }
    } else if let Some(export) = message.downcast_mut::<ExportResponse>() {
        let ExportResponse { memories } = mem::take(export);
        write_memories(delimited(1), memories, buf);
    } else {
        return false;
    }
    true
}

// Measuring.

/// A memory's length, and its payload's, measured once for writing.
#[derive(Clone, Copy)]
struct Measured {
    memory: usize,
    payload: usize,
}

fn measure(memory: &Memory) -> Measured {
    let Memory {
        id,
        vector,
        payload,
        updated_at,
        expires_at,
        ttl,
    } = memory;
    let payload_len = payload
        .as_ref()
        .map_or(0, |payload| proto_struct::entries_len(&payload.fields));
    let mut len = 0;
    if !id.is_empty() {
        len += delimited_len(id.len());
    }
    if !vector.is_empty() {
        len += delimited_len(vector.len() * 4);
    }
    if payload.is_some() {
        len += delimited_len(payload_len);
    }
    len += [updated_at, expires_at]
        .into_iter()
        .flatten()
        .map(|time| delimited_len(seconds_nanos_len(time.seconds, time.nanos)))
        .sum::<usize>();
    if let Some(ttl) = ttl {
        len += delimited_len(seconds_nanos_len(ttl.seconds, ttl.nanos));
    }
    Measured {
        memory: len,
        payload: payload_len,
    }
}

/// A `Timestamp`'s or a `Duration`'s length: `int64 seconds = 1` and
/// `int32 nanos = 2`, each left out when zero; a negative `int32` is
/// sign-extended to ten bytes, as protobuf has it.
fn seconds_nanos_len(seconds: i64, nanos: i32) -> usize {
    let mut len = 0;
    if seconds != 0 {
        len += 1 + encoded_len_varint(seconds as u64);
    }
    if nanos != 0 {
        len += 1 + encoded_len_varint(i64::from(nanos) as u64);
    }
    len
}

/// A `ScoredMemory` of a memory of `memory_len` bytes (`None`: no memory).
fn scored_len(memory_len: Option<usize>, score: f32) -> usize {
    memory_len.map_or(0, delimited_len) + if score != 0.0 { 5 } else { 0 }
}

fn search_len(search: &SearchResponse) -> usize {
    search
        .hits
        .iter()
        .map(|hit| {
            let memory_len = hit.memory.as_ref().map(|memory| measure(memory).memory);
            delimited_len(scored_len(memory_len, hit.score))
        })
        .sum()
}

// Writing.

fn write_varint(value: u64, buf: &mut impl BufMut) {
    if value < 0x80 {
        buf.put_u8(value as u8);
    } else {
        prost::encoding::encode_varint(value, buf);
    }
}

/// A key, then a length.
fn write_len(key: u8, len: usize, buf: &mut impl BufMut) {
    buf.put_u8(key);
    write_varint(len as u64, buf);
}

fn write_bytes(key: u8, bytes: &[u8], buf: &mut impl BufMut) {
    write_len(key, bytes.len(), buf);
    buf.put_slice(bytes);
}

fn write_search(search: SearchResponse, buf: &mut impl BufMut) {
    let SearchResponse { hits } = search;
    for ScoredMemory { memory, score } in hits {
        let measured = memory.as_ref().map(measure);
        write_len(
            delimited(1),
            scored_len(measured.map(|m| m.memory), score),
            buf,
        );
        if let (Some(memory), Some(measured)) = (&memory, measured) {
            write_memory(delimited(1), memory, measured, buf);
        }
        if score != 0.0 {
            buf.put_u8(2 << 3 | 5);
            buf.put_f32_le(score);
        }
    }
}

fn write_memories(key: u8, memories: Vec<Memory>, buf: &mut impl BufMut) {
    for memory in &memories {
        write_memory(key, memory, measure(memory), buf);
    }
}

/// `memory` as field `key`, measured as `measured`.
fn write_memory(key: u8, memory: &Memory, measured: Measured, buf: &mut impl BufMut) {
    let Memory {
        id,
        vector,
        payload,
        updated_at,
        expires_at,
        ttl,
    } = memory;
    write_len(key, measured.memory, buf);
    if !id.is_empty() {
        write_bytes(delimited(1), id.as_bytes(), buf);
    }
    if !vector.is_empty() {
        write_len(delimited(2), vector.len() * 4, buf);
        super::put_floats(vector, buf);
    }
    if let Some(Struct { fields, .. }) = payload {
        write_len(delimited(3), measured.payload, buf);
        proto_struct::write_entries(fields, buf);
    }
    for (tag, time) in [(4, updated_at), (5, expires_at)] {
        if let Some(Timestamp { seconds, nanos }) = time {
            write_seconds_nanos(delimited(tag), *seconds, *nanos, buf);
        }
    }
    if let Some(Duration { seconds, nanos }) = ttl {
        write_seconds_nanos(delimited(6), *seconds, *nanos, buf);
    }
}

fn write_seconds_nanos(key: u8, seconds: i64, nanos: i32, buf: &mut impl BufMut) {
    write_len(key, seconds_nanos_len(seconds, nanos), buf);
    if seconds != 0 {
        buf.put_u8(1 << 3);
        write_varint(seconds as u64, buf);
    }
    if nanos != 0 {
        buf.put_u8(2 << 3);
        write_varint(i64::from(nanos) as u64, buf);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use super::*;

    fn payload(value: serde_json::Value) -> Option<Struct> {
        match value {
            serde_json::Value::Object(fields) => Some(Struct::from(fields)),
            _ => None,
        }
    }

    /// Memories with every field present and absent, at the edges of each
    /// field's encoding: empty strings, multi-byte lengths, negative and
    /// large times, an empty and a nested payload.
    fn memories() -> Vec<Memory> {
        let time = |seconds, nanos| Some(Timestamp { seconds, nanos });
        vec![
            Memory::default(),
            Memory {
                id: "m1".into(),
                vector: vec![0.5, -0.0, f32::MAX, f32::MIN_POSITIVE],
                payload: payload(json!({"source": "bench", "sequence": 7})),
                updated_at: time(1_700_000_000, 123_456_000),
                expires_at: None,
                ttl: None,
            },
            Memory {
                id: "x".repeat(200),
                vector: (0..1024).map(|i| i as f32 / 7.0).collect(),
                payload: payload(json!({})),
                updated_at: time(0, 0),
                expires_at: time(-62_135_596_800, -1),
                ttl: Some(Duration {
                    seconds: i64::MAX,
                    nanos: 999_999_999,
                }),
            },
            Memory {
                id: String::new(),
                vector: Vec::new(),
                payload: payload(json!({
                    "": null, "text": "hé".repeat(100), "n": [1, 2.5, null, [true, {"a": {}}]],
                    "nested": {"deep": {"deeper": ["x", 1e300, -3]}}
                })),
                updated_at: None,
                expires_at: time(1, 0),
                ttl: Some(Duration {
                    seconds: 0,
                    nanos: -5,
                }),
            },
        ]
    }

    fn hits() -> Vec<ScoredMemory> {
        let scores = [0.0, -0.0, 0.25, f32::NAN, -1.5];
        let mut hits: Vec<_> = memories()
            .into_iter()
            .zip(scores)
            .map(|(memory, score)| ScoredMemory {
                memory: Some(memory),
                score,
            })
            .collect();
        hits.extend(scores.iter().map(|&score| ScoredMemory {
            memory: None,
            score,
        }));
        hits
    }

    /// What this module writes for `message`, which must be one of its.
    fn written<M: Message + Clone + 'static>(message: &M) -> Vec<u8> {
        let mut message = message.clone();
        let mut buf = Vec::new();
        assert!(
            write(&mut message, &mut buf),
            "a response this module writes"
        );
        buf
    }

    fn same_as_prost<M: Message + Clone + 'static>(message: M) {
        assert_eq!(written(&message), message.encode_to_vec());
    }

    #[test]
    fn every_response_is_written_byte_for_byte_as_prost_writes_it() {
        same_as_prost(SearchResponse::default());
        same_as_prost(SearchResponse { hits: hits() });
        same_as_prost(SearchBatchResponse {
            results: vec![
                SearchResponse { hits: hits() },
                SearchResponse::default(),
                SearchResponse {
                    hits: hits().into_iter().rev().collect(),
                },
            ],
        });
        for missing_ids in [vec![], vec![String::new(), "gone".into(), "é".repeat(70)]] {
            same_as_prost(GetResponse {
                memories: memories(),
                missing_ids,
            });
        }
        for next_page_token in [String::new(), "next".into()] {
            same_as_prost(ScrollResponse {
                memories: memories(),
                next_page_token,
            });
        }
        same_as_prost(ExportResponse {
            memories: memories(),
        });
        same_as_prost(ExportResponse::default());
    }

    /// One memory at a time, so that a difference names the memory.
    #[test]
    fn each_memory_is_written_as_prost_writes_it() {
        for memory in memories() {
            let get = GetResponse {
                memories: vec![memory],
                missing_ids: Vec::new(),
            };
            assert_eq!(written(&get), get.encode_to_vec(), "{:?}", get.memories[0]);
        }
    }

    #[test]
    fn a_message_this_module_does_not_write_is_left_alone() {
        let mut other = crate::proto::CountResponse { count: 3 };
        let mut buf = Vec::new();
        assert!(!write(&mut other, &mut buf));
        assert!(buf.is_empty());
        assert_eq!(other.count, 3);
    }
}
