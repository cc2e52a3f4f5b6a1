//! `prost::Message` for [`Hit`] and [`Point`], written out because their
//! payload is not a list of entries but the [`Stored`] fields vecmem reads
//! from it, which prost's derive cannot decode into.
//!
//! prost reads Qdrant's answers with these where [`read`](super::read) does
//! not (bytes it does not accept), and the tests hold the two to the same
//! result. Every field but the payload is read as prost's derive reads it,
//! through the same `prost::encoding` functions; a payload entry is decoded
//! whole as an [`Entry`] and then applied. Encoding writes the payload that
//! [`Stored::qdrant_payload`] gives back, as `qdrant-client` writes a
//! point's, so what is encoded decodes to the same value; vecmem never
//! sends these types, and only the tests encode them.

use bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, float, hash_map, message, skip_field, string};
use prost::{DecodeError, Message};
use qdrant_client::qdrant::{PointId, VectorsOutput};

use super::stored::{Entry, Stored};
use super::{Hit, Point};

/// Field numbers of `ScoredPoint` and `RetrievedPoint` in `points.proto`.
const ID: u32 = 1;
const PAYLOAD: u32 = 2;
const SCORE: u32 = 3;
const HIT_VECTORS: u32 = 6;
const POINT_VECTORS: u32 = 4;

impl Message for Hit {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_id_and_payload(&self.id, &self.stored, buf);
        if self.score != 0.0 {
            float::encode(SCORE, &self.score, buf);
        }
        if let Some(vectors) = &self.vectors {
            message::encode(HIT_VECTORS, vectors, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            ID => merge_id(&mut self.id, wire_type, buf, ctx, "ScoredPoint"),
            PAYLOAD => merge_entry(&mut self.stored, wire_type, buf, ctx, "ScoredPoint"),
            SCORE => float::merge(wire_type, &mut self.score, buf, ctx)
                .map_err(context("ScoredPoint", "score")),
            HIT_VECTORS => merge_vectors(&mut self.vectors, wire_type, buf, ctx, "ScoredPoint"),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        id_and_payload_len(&self.id, &self.stored)
            + if self.score != 0.0 {
                float::encoded_len(SCORE, &self.score)
            } else {
                0
            }
            + self
                .vectors
                .as_ref()
                .map_or(0, |vectors| message::encoded_len(HIT_VECTORS, vectors))
    }

    fn clear(&mut self) {
        *self = Hit::default();
    }
}

impl Message for Point {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_id_and_payload(&self.id, &self.stored, buf);
        if let Some(vectors) = &self.vectors {
            message::encode(POINT_VECTORS, vectors, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            ID => merge_id(&mut self.id, wire_type, buf, ctx, "RetrievedPoint"),
            PAYLOAD => merge_entry(&mut self.stored, wire_type, buf, ctx, "RetrievedPoint"),
            POINT_VECTORS => {
                merge_vectors(&mut self.vectors, wire_type, buf, ctx, "RetrievedPoint")
            }
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        id_and_payload_len(&self.id, &self.stored)
            + self
                .vectors
                .as_ref()
                .map_or(0, |vectors| message::encoded_len(POINT_VECTORS, vectors))
    }

    fn clear(&mut self) {
        *self = Point::default();
    }
}

/// Names the message and field an error was met in, as prost's derive does.
fn context(message: &'static str, field: &'static str) -> impl FnOnce(DecodeError) -> DecodeError {
    move |mut error| {
        error.push(message, field);
        error
    }
}

fn merge_id(
    id: &mut Option<PointId>,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
    name: &'static str,
) -> Result<(), DecodeError> {
    message::merge(wire_type, id.get_or_insert_with(PointId::default), buf, ctx)
        .map_err(context(name, "id"))
}

fn merge_entry(
    stored: &mut Stored,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
    name: &'static str,
) -> Result<(), DecodeError> {
    let mut entry = Entry::default();
    message::merge(wire_type, &mut entry, buf, ctx).map_err(context(name, "payload"))?;
    stored.apply(entry);
    Ok(())
}

fn merge_vectors(
    vectors: &mut Option<VectorsOutput>,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
    name: &'static str,
) -> Result<(), DecodeError> {
    let vectors = vectors.get_or_insert_with(VectorsOutput::default);
    message::merge(wire_type, vectors, buf, ctx).map_err(context(name, "vectors"))
}

/// The id, then the payload as `qdrant-client` encodes a point's.
fn encode_id_and_payload(id: &Option<PointId>, stored: &Stored, buf: &mut impl BufMut) {
    if let Some(id) = id {
        message::encode(ID, id, buf);
    }
    hash_map::encode(
        string::encode,
        string::encoded_len,
        message::encode,
        message::encoded_len,
        PAYLOAD,
        &stored.qdrant_payload(),
        buf,
    );
}

fn id_and_payload_len(id: &Option<PointId>, stored: &Stored) -> usize {
    id.as_ref().map_or(0, |id| message::encoded_len(ID, id))
        + hash_map::encoded_len(
            string::encoded_len,
            message::encoded_len,
            PAYLOAD,
            &stored.qdrant_payload(),
        )
}
