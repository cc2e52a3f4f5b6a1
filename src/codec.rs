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

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

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

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let bytes = buf.chunk();
        // One slice unless a future tonic splits a message's bytes; then
        // prost reads them through the view, as tonic-prost does.
        let message = if bytes.len() == len {
            let message = U::decode(bytes);
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

    #[tokio::test]
    async fn bytes_that_are_no_message_fail_as_tonic_prost_fails_them() {
        // A length-delimited field whose length runs past the message.
        let garbage = vec![0x0a, 0x7f, b'n'];
        let decoded = decode_framed(&[garbage], 1).await;
        let status = decoded[0].as_ref().expect_err("not a message");
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
