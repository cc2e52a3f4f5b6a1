//! The protobuf codec of vecmem's gRPC services and of its calls to Qdrant:
//! an encoder that is prost's but for vecmem's responses with memories
//! ([`responses`]) and Qdrant's requests with vectors
//! ([`requests`](crate::backend::qdrant::requests)), and a decoder that
//! reads each message from one contiguous byte slice.
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
//! it goes (about 20 instructions per float, and a dozen reallocations for
//! 1024 of them). Vectors are by far the largest fields of our requests, so
//! the requests that carry them (`SearchRequest`, `SearchBatchRequest`,
//! `UpsertRequest`, `ImportRequest`) are read here: each vector's bytes
//! become floats in one pass into a vector of the right size, and prost
//! decodes every other field. The result is the message prost decodes,
//! vectors packed or not, fields in any order; what this reading does not
//! accept goes to prost whole, so a bad request fails with prost's error.
//! One difference is left: each element of a list (a memory of an upsert,
//! a search of a batch) is decoded on its own, so prost's limit of 100
//! nested messages counts from the element, and a payload nested one level
//! deeper than prost allows in a list is accepted. The stack stays bounded,
//! which is what the limit is for.
//!
//! Qdrant's answers with points are read from the slice in the same way,
//! by hand ([`answers::read`](crate::backend::qdrant::answers::read)).

use std::any::Any;
use std::marker::PhantomData;

use bytes::{Buf, BufMut};
use prost::{DecodeError, Message};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::proto;

mod responses;
pub(crate) mod wire;

use wire::Wire;

/// A [`Codec`] for prost messages, as `tonic_prost::ProstCodec` but for
/// the reading of requests with vectors (here) and the writing of Qdrant's
/// ([`requests`]); the generated services and clients name it in
/// `build.rs`, and vecmem's own calls to Qdrant use it.
///
/// [`requests`]: crate::backend::qdrant::requests
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
    type Encoder = BulkEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        BulkEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Encodes a `T` as prost does: vecmem's responses with memories through
/// [`responses::write`], Qdrant's requests with vectors through
/// [`requests::encode`](crate::backend::qdrant::requests::encode).
#[derive(Debug, Clone, Copy)]
pub struct BulkEncoder<T>(PhantomData<T>);

impl<T: Message + 'static> Encoder for BulkEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, mut item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        if responses::write(&mut item, buf) {
            return Ok(());
        }
        // prost fails only when the buffer cannot grow, which a `BytesMut`
        // always can.
        crate::backend::qdrant::requests::encode(item, buf)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

/// Writes `floats` as a packed `repeated float`'s bytes (little-endian),
/// through a stack buffer, so the conversion is one loop the compiler
/// vectorises and the buffer is written once per chunk.
pub(crate) fn put_floats(floats: &[f32], buf: &mut impl BufMut) {
    let mut bytes = [0_u8; 1024];
    for floats in floats.chunks(bytes.len() / 4) {
        let chunk = &mut bytes[..floats.len() * 4];
        for (into, float) in chunk.chunks_exact_mut(4).zip(floats) {
            into.copy_from_slice(&float.to_le_bytes());
        }
        buf.put_slice(chunk);
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

/// `U` from one slice: the requests that carry vectors through
/// [`decode_vectors`] and [`decode_list`], Qdrant's answers with points
/// through [`answers::read`](crate::backend::qdrant::answers::read), any
/// other message through prost. The type tests are resolved at compile
/// time.
fn decode_slice<U: Message + Default + 'static>(bytes: &[u8]) -> Result<U, DecodeError> {
    let mut decoded: Option<U> = None;
    let slot = &mut decoded as &mut dyn Any;
    if let Some(search) = slot.downcast_mut::<Option<proto::SearchRequest>>() {
        *search = Some(decode_vectors(bytes)?);
    } else if let Some(batch) = slot.downcast_mut::<Option<proto::SearchBatchRequest>>() {
        *batch = Some(decode_list(bytes)?);
    } else if let Some(upsert) = slot.downcast_mut::<Option<proto::UpsertRequest>>() {
        *upsert = Some(decode_list(bytes)?);
    } else if let Some(import) = slot.downcast_mut::<Option<proto::ImportRequest>>() {
        *import = Some(decode_list(bytes)?);
    }
    match decoded {
        Some(message) => Ok(message),
        None => crate::backend::qdrant::answers::read::decode(bytes),
    }
}

/// A message with a `repeated float` field read in bulk.
trait BulkVector: Message + Default {
    /// The field's number.
    const FIELD: u32;
    fn vector(&mut self) -> &mut Vec<f32>;
}

impl BulkVector for proto::SearchRequest {
    const FIELD: u32 = 3;
    fn vector(&mut self) -> &mut Vec<f32> {
        &mut self.vector
    }
}

impl BulkVector for proto::Memory {
    const FIELD: u32 = 2;
    fn vector(&mut self) -> &mut Vec<f32> {
        &mut self.vector
    }
}

/// A message with a repeated field of [`BulkVector`] messages.
trait BulkList: Message + Default {
    type Item: BulkVector;
    /// The field's number.
    const FIELD: u32;
    fn items(&mut self) -> &mut Vec<Self::Item>;
}

impl BulkList for proto::SearchBatchRequest {
    type Item = proto::SearchRequest;
    const FIELD: u32 = 1;
    fn items(&mut self) -> &mut Vec<proto::SearchRequest> {
        &mut self.searches
    }
}

impl BulkList for proto::UpsertRequest {
    type Item = proto::Memory;
    const FIELD: u32 = 3;
    fn items(&mut self) -> &mut Vec<proto::Memory> {
        &mut self.memories
    }
}

impl BulkList for proto::ImportRequest {
    type Item = proto::Memory;
    const FIELD: u32 = 3;
    fn items(&mut self) -> &mut Vec<proto::Memory> {
        &mut self.memories
    }
}

/// `M` with its vector converted here and its other fields decoded by
/// prost. Bytes [`read_vectors`] does not accept (malformed, or a wire
/// type the field cannot have) go to prost whole, so errors are prost's own.
fn decode_vectors<M: BulkVector>(bytes: &[u8]) -> Result<M, DecodeError> {
    read_vectors(bytes).map_or_else(|| M::decode(bytes), Ok)
}

/// `M` with each element of its list read by [`read_vectors`], and its
/// other fields by prost; errors are prost's, as there.
fn decode_list<M: BulkList>(bytes: &[u8]) -> Result<M, DecodeError> {
    read_list(bytes).map_or_else(|| M::decode(bytes), Ok)
}

fn read_vectors<M: BulkVector>(bytes: &[u8]) -> Option<M> {
    let split = split_field(bytes, M::FIELD)?;
    let vector = floats(&split.values)?;
    let mut message = M::decode(split.others.as_slice()).ok()?;
    *message.vector() = vector;
    Some(message)
}

fn read_list<M: BulkList>(bytes: &[u8]) -> Option<M> {
    let split = split_field(bytes, M::FIELD)?;
    let items = split
        .values
        .iter()
        .map(|value| match *value {
            Wire::Len(value) => read_vectors(value),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    let mut message = M::decode(split.others.as_slice()).ok()?;
    *message.items() = items;
    Some(message)
}

/// A message's bytes split in two: the values of one field, in wire order
/// (as protobuf merges them), and the bytes of every other field,
/// unchanged.
struct Split<'a> {
    values: Vec<Wire<'a>>,
    others: Vec<u8>,
}

/// `None` if the bytes do not parse as fields.
fn split_field(bytes: &[u8], field: u32) -> Option<Split<'_>> {
    let mut values = Vec::new();
    let mut others = Vec::with_capacity(bytes.len().min(256));
    for read in wire::fields(bytes) {
        let read = read?;
        if read.number == field {
            values.push(read.value);
        } else {
            others.extend_from_slice(read.raw);
        }
    }
    Some(Split { values, others })
}

/// The floats of a `repeated float` field's values, packed or not; `None`
/// for a value that cannot be one.
fn floats(values: &[Wire<'_>]) -> Option<Vec<f32>> {
    let count = values
        .iter()
        .map(|value| match value {
            Wire::Len(bytes) => bytes.len() / 4,
            _ => 1,
        })
        .sum();
    let mut floats = Vec::with_capacity(count);
    for value in values {
        match *value {
            Wire::Len(bytes) if bytes.len() % 4 == 0 => floats.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            Wire::Fixed32(bits) => floats.push(f32::from_bits(bits)),
            _ => return None,
        }
    }
    Some(floats)
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

    fn memory(id: &str, vector: Vec<f32>) -> proto::Memory {
        let mut payload = serde_json::Map::new();
        payload.insert("kind".into(), "note".into());
        proto::Memory {
            id: id.into(),
            vector,
            payload: Some(payload.into()),
            ttl: Some(pbjson_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn upsert(memories: Vec<proto::Memory>) -> proto::UpsertRequest {
        proto::UpsertRequest {
            namespace: "docs".into(),
            tenant: "tenant-7".into(),
            memories,
        }
    }

    fn key(field: u64, wire_type: u64, into: &mut Vec<u8>) {
        // A field's key is a varint, as a length delimiter is.
        let key = usize::try_from(field << 3 | wire_type).expect("small key");
        prost::encode_length_delimiter(key, into).expect("a Vec grows");
    }

    /// What prost answers, and what the codec answers, as comparable values.
    fn by_prost<M: Message + Default>(bytes: &[u8]) -> Result<M, String> {
        M::decode(bytes).map_err(|e| e.to_string())
    }

    fn by_codec<M: Message + Default + 'static>(bytes: &[u8]) -> Result<M, String> {
        decode_slice(bytes).map_err(|e| e.to_string())
    }

    fn vectors() -> [Vec<f32>; 4] {
        [
            vec![],
            vec![1.5],
            (0..1024).map(|x| x as f32 * -0.125).collect(),
            vec![f32::MIN_POSITIVE, f32::MAX, -0.0, 1e-40],
        ]
    }

    #[test]
    fn requests_with_vectors_are_read_in_bulk_as_prost_decodes_them() {
        for vector in vectors() {
            for search in [full_search(vector.clone()), search(vector.clone())] {
                let bytes = search.encode_to_vec();
                assert_eq!(read_vectors(&bytes), Some(search.clone()));
                assert_eq!(by_codec(&bytes), Ok(search.clone()));
            }
            let batch = proto::SearchBatchRequest {
                searches: vec![full_search(vector.clone()), search(vec![2.0; 3])],
            };
            let bytes = batch.encode_to_vec();
            assert_eq!(read_list(&bytes), Some(batch.clone()));
            assert_eq!(by_codec(&bytes), Ok(batch));

            let upsert = upsert(vec![memory("a", vector.clone()), memory("b", vec![0.5; 7])]);
            let bytes = upsert.encode_to_vec();
            assert_eq!(read_list(&bytes), Some(upsert.clone()));
            assert_eq!(by_codec(&bytes), Ok(upsert.clone()));
            let import = proto::ImportRequest {
                namespace: upsert.namespace,
                tenant: upsert.tenant,
                memories: upsert.memories,
                skip_invalid: true,
            };
            let bytes = import.encode_to_vec();
            assert_eq!(read_list(&bytes), Some(import.clone()));
            assert_eq!(by_codec(&bytes), Ok(import));
        }
        assert_eq!(by_codec(&[]), Ok(proto::SearchRequest::default()));
        assert_eq!(by_codec(&[]), Ok(proto::UpsertRequest::default()));
    }

    #[test]
    fn vector_occurrences_packed_or_not_are_joined_in_wire_order() {
        // Protobuf parsers must accept a repeated scalar unpacked, and every
        // occurrence of the field appends, wherever it is in the message.
        let mut bytes = full_search(Vec::new()).encode_to_vec();
        key(3, 5, &mut bytes);
        bytes.extend_from_slice(&1.0f32.to_le_bytes());
        key(3, 2, &mut bytes);
        prost::encode_length_delimiter(8, &mut bytes).expect("a Vec grows");
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

        let read: proto::SearchRequest = read_vectors(&bytes).expect("read in bulk");
        assert_eq!(read.vector, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(read.limit, 99, "the later limit wins, as in prost");
        assert_eq!(Ok(read), by_prost(&bytes));
    }

    /// Every truncation and many single-byte changes of `valid`, each
    /// decoded by the codec and by prost; the answers must be the same.
    fn assert_decoded_as_prost_decodes<M>(valid: &[u8], extra: Vec<Vec<u8>>)
    where
        M: Message + Default + PartialEq + std::fmt::Debug + 'static,
    {
        let mut inputs = extra;
        for len in 0..valid.len() {
            inputs.push(valid[..len].to_vec());
        }
        for at in 0..valid.len() {
            for byte in [0x00, 0x07, 0x1d, 0x80, 0xff] {
                let mut changed = valid.to_vec();
                changed[at] = byte;
                inputs.push(changed);
            }
        }
        let mut refused = 0;
        for input in &inputs {
            let expected = by_prost::<M>(input);
            refused += usize::from(expected.is_err());
            assert_eq!(by_codec::<M>(input), expected, "input {input:02x?}");
        }
        assert!(refused > inputs.len() / 4, "only {refused} inputs refused");
    }

    #[test]
    fn bytes_prost_refuses_are_refused_with_prost_s_error() {
        // The vector's field with a length that is not whole floats, and
        // with wire types it cannot have.
        let mut wrong = Vec::new();
        for (wire_type, value) in [(2, vec![3, 1, 2, 3]), (0, vec![5]), (1, vec![0; 8])] {
            let mut bytes = Vec::new();
            key(3, wire_type, &mut bytes);
            bytes.extend(value);
            wrong.push(bytes);
        }
        let valid = full_search(vec![0.5, -2.0, 8.0]).encode_to_vec();
        assert_decoded_as_prost_decodes::<proto::SearchRequest>(&valid, wrong);

        // A memory whose vector is not whole floats, and a memory sent as
        // something other than a message.
        let mut wrong = Vec::new();
        for (wire_type, value) in [(2, vec![3, 0x12, 1, 0]), (0, vec![1])] {
            let mut bytes = Vec::new();
            key(3, wire_type, &mut bytes);
            bytes.extend(value);
            wrong.push(bytes);
        }
        let valid = upsert(vec![memory("a", vec![0.5, -2.0]), memory("b", vec![1.0])]);
        assert_decoded_as_prost_decodes::<proto::UpsertRequest>(&valid.encode_to_vec(), wrong);
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
