//! The protobuf codec of vecmem's gRPC services and of its calls to Qdrant:
//! tonic-prost's encoder, and a decoder that reads each message from one
//! contiguous byte slice.
//!
//! tonic hands a decoder the message's bytes behind its `DecodeBuf`, a
//! length-limited view of a `BytesMut`, and prost reads every scalar through
//! that view's `Buf` methods: for the 1024 packed floats of a search's
//! vector, one bounds-checked `chunk` and `advance` of the view and of the
//! `BytesMut` under it per float. The bytes of one message are always one
//! slice there, so the decoder reads the same bytes as a `&[u8]`, whose
//! `Buf` methods are a slice index, and then advances the view past them.
//! Counted with callgrind (`benches/callgrind.sh`), decoding those floats
//! took ~64,000 of the ~484,000 instructions vecmem spent on an uncached
//! search at c=1; from the slice, ~27,000.
//!
//! prost still reads packed floats one at a time into a `Vec` it grows as
//! it goes (about 20 instructions and a dozen reallocations for 1024 of
//! them). A search's query vector is by far the largest field of any
//! request, so a `SearchRequest` is decoded by [`decode_search`]: the
//! vector's bytes are turned into floats in one pass into a vector of the
//! right size, and prost decodes the other fields. The result is the
//! message prost decodes, vector occurrences packed or not, in any order.

use std::any::Any;
use std::marker::PhantomData;

use bytes::Buf;
use prost::{DecodeError, Message};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::proto;

/// A [`Codec`] for prost messages, as `tonic_prost::ProstCodec` but for
/// the decoder; the generated services and clients name it in `build.rs`.
#[derive(Debug, Clone, Copy)]
pub struct SliceCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes a `U` from the message's bytes as one slice.
#[derive(Debug, Clone, Copy)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let bytes = buf.chunk();
        // One slice unless a future tonic splits a message's bytes; then
        // prost reads them through the view, as tonic-prost does.
        let message = if bytes.len() == len {
            let message = decode_slice::<U>(bytes);
            buf.advance(len);
            message
        } else {
            U::decode(buf)
        };
        // What tonic-prost answers for bytes that are not the message.
        message
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

/// `U` from one slice: a `SearchRequest` through [`decode_search`], any
/// other message through prost. The type test is resolved at compile time.
fn decode_slice<U: Message + Default + 'static>(bytes: &[u8]) -> Result<U, DecodeError> {
    let mut decoded: Option<U> = None;
    if let Some(search) =
        (&mut decoded as &mut dyn Any).downcast_mut::<Option<proto::SearchRequest>>()
    {
        *search = Some(decode_search(bytes)?);
    }
    match decoded {
        Some(search) => Ok(search),
        None => U::decode(bytes),
    }
}

/// `SearchRequest.vector`'s field number.
const SEARCH_VECTOR_FIELD: u64 = 3;

/// A `SearchRequest` whose vector is read in bulk: the other fields' bytes
/// are gathered and decoded by prost, the vector's are converted here.
/// Bytes this reading does not accept (malformed, or a wire type the field
/// cannot have) go to prost whole, so errors are prost's own.
pub fn decode_search(bytes: &[u8]) -> Result<proto::SearchRequest, DecodeError> {
    let Some((vector, others)) = split_floats(bytes, SEARCH_VECTOR_FIELD) else {
        return proto::SearchRequest::decode(bytes);
    };
    let mut search = proto::SearchRequest::decode(others.as_slice())?;
    search.vector = vector;
    Ok(search)
}

/// The floats of field `field` (every occurrence, packed or not, in wire
/// order, as protobuf merges them) and the bytes of every other field;
/// `None` if the message does not parse as this reading expects.
fn split_floats(bytes: &[u8], field: u64) -> Option<(Vec<f32>, Vec<u8>)> {
    const VARINT: u64 = 0;
    const FIXED64: u64 = 1;
    const LENGTH_DELIMITED: u64 = 2;
    const FIXED32: u64 = 5;

    let mut floats = Vec::new();
    let mut others = Vec::with_capacity(bytes.len().min(256));
    let mut rest = bytes;
    while !rest.is_empty() {
        let start = rest;
        let key = read_varint(&mut rest)?;
        let (number, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            VARINT => read_varint(&mut rest).map(|_| &[][..])?,
            FIXED64 => take(&mut rest, 8)?,
            LENGTH_DELIMITED => {
                let len = usize::try_from(read_varint(&mut rest)?).ok()?;
                take(&mut rest, len)?
            }
            FIXED32 => take(&mut rest, 4)?,
            // Groups, and wire types protobuf does not define.
            _ => return None,
        };
        match (number == field, wire_type) {
            (true, LENGTH_DELIMITED) if value.len() % 4 == 0 => {
                floats.reserve_exact(value.len() / 4);
                floats.extend(
                    value
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            (true, FIXED32) => floats.push(f32::from_le_bytes(value.try_into().ok()?)),
            (true, _) => return None,
            (false, _) => others.extend_from_slice(&start[..start.len() - rest.len()]),
        }
    }
    Some((floats, others))
}

/// The next `len` bytes, or `None` if there are fewer.
fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let (taken, rest) = bytes.split_at_checked(len)?;
    *bytes = rest;
    Some(taken)
}

/// A base-128 varint of at most ten bytes, as protobuf writes them.
fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use http_body_util::BodyExt;
    use tonic::codec::Streaming;

    use super::*;
    use crate::proto;

    fn search(vector: Vec<f32>) -> proto::SearchRequest {
        proto::SearchRequest {
            namespace: "ns".into(),
            tenant: "t".into(),
            vector,
            limit: 3,
            ..Default::default()
        }
    }

    /// Frames `messages` as gRPC does and decodes them through tonic's own
    /// streaming decoder with this codec, so the decoder is driven exactly
    /// as a call drives it, body chunk boundaries included.
    async fn decode_framed(
        messages: &[Vec<u8>],
        chunk: usize,
    ) -> Vec<Result<proto::SearchRequest, Status>> {
        let mut framed = BytesMut::new();
        for message in messages {
            framed.put_u8(0);
            framed.put_u32(message.len() as u32);
            framed.put_slice(message);
        }
        let chunks: Vec<Result<http_body::Frame<bytes::Bytes>, Status>> = framed
            .chunks(chunk)
            .map(|part| Ok(http_body::Frame::data(bytes::Bytes::copy_from_slice(part))))
            .collect();
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let mut codec = SliceCodec::<proto::SearchRequest, proto::SearchRequest>::default();
        let mut stream = Streaming::new_request(codec.decoder(), body.boxed_unsync(), None, None);
        let mut decoded = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(message)) => decoded.push(Ok(message)),
                Ok(None) => break,
                Err(status) => {
                    decoded.push(Err(status));
                    break;
                }
            }
        }
        decoded
    }

    #[tokio::test]
    async fn decodes_what_prost_encodes_whatever_the_chunking() {
        let sent: Vec<proto::SearchRequest> = (0..3)
            .map(|i| search((0..1024).map(|x| (x * 3 + i) as f32 * 0.25).collect()))
            .collect();
        let encoded: Vec<Vec<u8>> = sent.iter().map(Message::encode_to_vec).collect();
        for chunk in [1, 7, 4096, 1 << 20] {
            let decoded = decode_framed(&encoded, chunk).await;
            let decoded: Vec<_> = decoded.into_iter().map(|m| m.expect("decodes")).collect();
            assert_eq!(decoded, sent, "chunks of {chunk} bytes");
        }
    }

    /// A search with every kind of field around its vector: strings,
    /// varints, a fixed32, nested messages, a repeated string.
    fn full_search(vector: Vec<f32>) -> proto::SearchRequest {
        proto::SearchRequest {
            namespace: "docs".into(),
            tenant: "tenant-7".into(),
            vector,
            limit: 12,
            min_score: Some(0.25),
            filter: Some(proto::Filter {
                must: vec![proto::Condition {
                    key: "source.kind".into(),
                    test: Some(proto::condition::Test::Equals(proto::MatchValue {
                        value: Some(proto::match_value::Value::Keyword("note".into())),
                    })),
                }],
                ..Default::default()
            }),
            with_payload: true,
            consistency: 1,
            avoid_ids: vec!["a".into(), "b".into()],
            text: "hello".into(),
            ..Default::default()
        }
    }

    fn key(field: u64, wire_type: u64, into: &mut Vec<u8>) {
        prost::encoding::encode_varint(field << 3 | wire_type, into);
    }

    /// What prost answers, as a comparable value.
    fn by_prost(bytes: &[u8]) -> Result<proto::SearchRequest, String> {
        proto::SearchRequest::decode(bytes).map_err(|e| e.to_string())
    }

    fn in_bulk(bytes: &[u8]) -> Result<proto::SearchRequest, String> {
        decode_search(bytes).map_err(|e| e.to_string())
    }

    #[test]
    fn a_search_decodes_as_prost_decodes_it() {
        let vectors = [
            vec![],
            vec![1.5],
            (0..1024).map(|x| x as f32 * -0.125).collect(),
            vec![f32::MIN_POSITIVE, f32::MAX, -0.0, 1e-40],
        ];
        for vector in vectors {
            for search in [full_search(vector.clone()), search(vector.clone())] {
                let bytes = search.encode_to_vec();
                assert!(
                    split_floats(&bytes, SEARCH_VECTOR_FIELD).is_some(),
                    "read in bulk"
                );
                assert_eq!(in_bulk(&bytes), Ok(search.clone()));
                assert_eq!(in_bulk(&bytes), by_prost(&bytes));
            }
        }
        assert_eq!(in_bulk(&[]), Ok(proto::SearchRequest::default()));
    }

    #[test]
    fn vector_occurrences_packed_or_not_are_joined_in_wire_order() {
        // Protobuf parsers must accept a repeated scalar unpacked, and every
        // occurrence of the field appends, wherever it is in the message.
        let mut bytes = full_search(Vec::new()).encode_to_vec();
        key(3, 5, &mut bytes);
        bytes.extend_from_slice(&1.0f32.to_le_bytes());
        key(3, 2, &mut bytes);
        prost::encoding::encode_varint(8, &mut bytes);
        bytes.extend_from_slice(&2.0f32.to_le_bytes());
        bytes.extend_from_slice(&3.0f32.to_le_bytes());
        bytes.extend(
            proto::SearchRequest {
                limit: 99,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        key(3, 5, &mut bytes);
        bytes.extend_from_slice(&4.0f32.to_le_bytes());

        assert!(
            split_floats(&bytes, SEARCH_VECTOR_FIELD).is_some(),
            "read in bulk"
        );
        let decoded = in_bulk(&bytes).expect("decodes");
        assert_eq!(decoded.vector, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(decoded.limit, 99, "the later limit wins, as in prost");
        assert_eq!(Ok(decoded), by_prost(&bytes));
    }

    #[test]
    fn bytes_prost_refuses_are_refused_with_prost_s_error() {
        let valid = full_search(vec![0.5, -2.0, 8.0]).encode_to_vec();
        let mut inputs = Vec::new();
        // Every truncation, and every single-byte change of a valid search.
        for len in 0..valid.len() {
            inputs.push(valid[..len].to_vec());
        }
        for at in 0..valid.len() {
            for byte in [0x00, 0x07, 0x1d, 0x80, 0xff] {
                let mut changed = valid.clone();
                changed[at] = byte;
                inputs.push(changed);
            }
        }
        // The vector's field with a length that is not whole floats, and
        // with wire types it cannot have.
        for (wire_type, value) in [(2, vec![3, 1, 2, 3]), (0, vec![5]), (1, vec![0; 8])] {
            let mut bytes = Vec::new();
            key(3, wire_type, &mut bytes);
            bytes.extend(value);
            inputs.push(bytes);
        }
        let mut refused = 0;
        for input in &inputs {
            let expected = by_prost(input);
            refused += usize::from(expected.is_err());
            assert_eq!(in_bulk(input), expected, "input {input:02x?}");
        }
        assert!(refused > inputs.len() / 4, "only {refused} inputs refused");
    }

    #[tokio::test]
    async fn bytes_that_are_no_message_fail_as_tonic_prost_fails_them() {
        // A length-delimited field whose length runs past the message.
        let garbage = vec![0x0a, 0x7f, b'n'];
        let decoded = decode_framed(&[garbage], 1).await;
        let status = decoded[0].as_ref().expect_err("not a message");
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
