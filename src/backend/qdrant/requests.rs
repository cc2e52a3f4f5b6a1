//! vecmem's requests to Qdrant that carry dense vectors (`QueryBatch`,
//! `Upsert`), written with each vector's floats copied in one pass.
//!
//! prost writes a `repeated float` one float at a time through the
//! buffer's `BufMut` methods: counted with callgrind
//! (`benches/callgrind.sh`), ~13,500 of the ~331,000 instructions vecmem
//! spent on an uncached search of 1024 dims at c=1, and as many per memory
//! upserted. Here each message on the way to a dense vector is split:
//! prost writes all of it but the fields that lead to the vector (so a
//! field `qdrant-client` adds later is still sent), and this module appends
//! those fields, the vector's floats in one pass. Protobuf readers accept
//! fields in any order and each field is written once, so Qdrant reads the
//! message prost would have written. Whatever is not a plain dense vector
//! (a sparse or named-by-id query, a formula, a fusion) is written by
//! prost whole. Tags are those of Qdrant's `points.proto`; the messages on
//! the way are destructured field by field, so a field added to one of
//! them breaks the build here until it is handled.

use std::any::Any;
use std::mem;

use bytes::BufMut;
use prost::{EncodeError, Message, encode_length_delimiter, length_delimiter_len};
use qdrant_client::qdrant::{
    DenseVector, NamedVectors, PointStruct, PrefetchQuery, Query, QueryBatchPoints, QueryPoints,
    UpsertPoints, Vector, VectorInput, Vectors, query, vector, vector_input, vectors,
};

/// `QueryBatchPoints.query_points`.
const BATCH_QUERIES: u32 = 2;
/// `QueryPoints.prefetch` and `QueryPoints.query`.
const POINTS_PREFETCH: u32 = 2;
const POINTS_QUERY: u32 = 3;
/// `PrefetchQuery.prefetch` and `PrefetchQuery.query`.
const PREFETCH_PREFETCH: u32 = 1;
const PREFETCH_QUERY: u32 = 2;
/// `Query.nearest`, `VectorInput.dense`.
const QUERY_NEAREST: u32 = 1;
const INPUT_DENSE: u32 = 2;
/// `UpsertPoints.points`, `PointStruct.vectors`.
const UPSERT_POINTS: u32 = 3;
const POINT_VECTORS: u32 = 4;
/// `Vectors.vector`, `Vectors.vectors` (named), `NamedVectors.vectors`.
const VECTORS_ONE: u32 = 1;
const VECTORS_NAMED: u32 = 2;
const NAMED_MAP: u32 = 1;
/// A map entry's key and value.
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
/// `Vector.dense`.
const VECTOR_DENSE: u32 = 101;
/// `DenseVector.data`.
const DENSE_DATA: u32 = 1;

/// Writes `message`: a `QueryBatchPoints` or an `UpsertPoints` as this
/// module writes it, any other message through prost. The type tests are
/// resolved at compile time.
pub fn encode<M: Message + 'static>(
    mut message: M,
    buf: &mut impl BufMut,
) -> Result<(), EncodeError> {
    let any = &mut message as &mut dyn Any;
    if let Some(batch) = any.downcast_mut::<QueryBatchPoints>() {
        return write_query_batch(mem::take(batch), buf);
    }
    if let Some(upsert) = any.downcast_mut::<UpsertPoints>() {
        return write_upsert(mem::take(upsert), buf);
    }
    message.encode(buf)
}

fn write_query_batch(
    mut batch: QueryBatchPoints,
    buf: &mut impl BufMut,
) -> Result<(), EncodeError> {
    let queries: Vec<_> = mem::take(&mut batch.query_points)
        .into_iter()
        .map(points_stage)
        .collect();
    batch.encode(buf)?;
    queries
        .iter()
        .try_for_each(|query| write_field(BATCH_QUERIES, query, buf))
}

fn write_upsert(mut upsert: UpsertPoints, buf: &mut impl BufMut) -> Result<(), EncodeError> {
    let points: Vec<_> = mem::take(&mut upsert.points)
        .into_iter()
        .map(point)
        .collect();
    upsert.encode(buf)?;
    points
        .iter()
        .try_for_each(|point| write_field(UPSERT_POINTS, point, buf))
}

/// A message this module writes: its length, then its bytes.
trait Out {
    fn len(&self) -> usize;
    fn write(&self, buf: &mut impl BufMut) -> Result<(), EncodeError>;
}

/// The key of length-delimited field `tag`.
fn key(tag: u32) -> usize {
    (tag as usize) << 3 | 2
}

/// The length of field `tag` holding `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    length_delimiter_len(key(tag)) + length_delimiter_len(len) + len
}

fn write_field(tag: u32, value: &impl Out, buf: &mut impl BufMut) -> Result<(), EncodeError> {
    encode_length_delimiter(key(tag), buf)?;
    encode_length_delimiter(value.len(), buf)?;
    value.write(buf)
}

/// A message written here, or one prost writes whole.
enum Either<T, M> {
    Ours(T),
    Prost(M),
}

impl<T: Out, M: Message> Out for Either<T, M> {
    fn len(&self) -> usize {
        match self {
            Either::Ours(ours) => ours.len(),
            Either::Prost(message) => message.encoded_len(),
        }
    }

    fn write(&self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        match self {
            Either::Ours(ours) => ours.write(buf),
            Either::Prost(message) => message.encode(buf),
        }
    }
}

/// A message whose one field, `tag`, holds another: a oneof's message
/// variant, always written (as prost writes a oneof), even when empty.
struct Nested<T>(u32, T);

impl<T: Out> Out for Nested<T> {
    fn len(&self) -> usize {
        field_len(self.0, self.1.len())
    }

    fn write(&self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        write_field(self.0, &self.1, buf)
    }
}

/// A `DenseVector`: its packed floats, little-endian, none written when
/// there are none (as prost does).
struct Floats(Vec<f32>);

impl Out for Floats {
    fn len(&self) -> usize {
        match self.0.len() {
            0 => 0,
            n => field_len(DENSE_DATA, n * 4),
        }
    }

    fn write(&self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        if self.0.is_empty() {
            return Ok(());
        }
        encode_length_delimiter(key(DENSE_DATA), buf)?;
        encode_length_delimiter(self.0.len() * 4, buf)?;
        crate::codec::put_floats(&self.0, buf);
        Ok(())
    }
}

/// A string field's bytes.
struct Text(String);

impl Out for Text {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn write(&self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        buf.put_slice(self.0.as_bytes());
        Ok(())
    }
}

/// A `QueryPoints` or a `PrefetchQuery`: prost writes `rest`, this module
/// its prefetches and its query.
struct Stage<M> {
    rest: M,
    prefetch_tag: u32,
    prefetch: Vec<Stage<PrefetchQuery>>,
    query_tag: u32,
    query: Option<QueryOut>,
}

impl<M: Message> Out for Stage<M> {
    fn len(&self) -> usize {
        let prefetch: usize = self
            .prefetch
            .iter()
            .map(|stage| field_len(self.prefetch_tag, stage.len()))
            .sum();
        let query = self
            .query
            .as_ref()
            .map_or(0, |query| field_len(self.query_tag, query.len()));
        self.rest.encoded_len() + prefetch + query
    }

    fn write(&self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        self.rest.encode(buf)?;
        for stage in &self.prefetch {
            write_field(self.prefetch_tag, stage, buf)?;
        }
        match &self.query {
            Some(query) => write_field(self.query_tag, query, buf),
            None => Ok(()),
        }
    }
}

fn points_stage(mut points: QueryPoints) -> Stage<QueryPoints> {
    Stage {
        prefetch_tag: POINTS_PREFETCH,
        prefetch: mem::take(&mut points.prefetch)
            .into_iter()
            .map(prefetch_stage)
            .collect(),
        query_tag: POINTS_QUERY,
        query: points.query.take().map(query_out),
        rest: points,
    }
}

fn prefetch_stage(mut stage: PrefetchQuery) -> Stage<PrefetchQuery> {
    Stage {
        prefetch_tag: PREFETCH_PREFETCH,
        prefetch: mem::take(&mut stage.prefetch)
            .into_iter()
            .map(prefetch_stage)
            .collect(),
        query_tag: PREFETCH_QUERY,
        query: stage.query.take().map(query_out),
        rest: stage,
    }
}

/// `Query { nearest: VectorInput { dense: DenseVector } }`, or any other
/// query.
type QueryOut = Either<Nested<Nested<Floats>>, Query>;

fn query_out(query: Query) -> QueryOut {
    match query {
        Query {
            variant:
                Some(query::Variant::Nearest(VectorInput {
                    variant: Some(vector_input::Variant::Dense(DenseVector { data })),
                })),
        } => Either::Ours(Nested(QUERY_NEAREST, Nested(INPUT_DENSE, Floats(data)))),
        query => Either::Prost(query),
    }
}

/// A `PointStruct`: prost writes all but its vectors.
struct PointOut {
    rest: PointStruct,
    vectors: Option<Either<VectorsOut, Vectors>>,
}

impl Out for PointOut {
    fn len(&self) -> usize {
        let vectors = self
            .vectors
            .as_ref()
            .map_or(0, |vectors| field_len(POINT_VECTORS, vectors.len()));
        self.rest.encoded_len() + vectors
    }

    fn write(&self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        self.rest.encode(buf)?;
        match &self.vectors {
            Some(vectors) => write_field(POINT_VECTORS, vectors, buf),
            None => Ok(()),
        }
    }
}

fn point(mut point: PointStruct) -> PointOut {
    PointOut {
        vectors: point.vectors.take().map(vectors_out),
        rest: point,
    }
}

/// A `Vector` that is one dense vector, or any other.
type VectorOut = Either<Nested<Floats>, Vector>;

/// `Vectors`: one vector, or named ones.
enum VectorsOut {
    One(Nested<VectorOut>),
    Named(Nested<NamedOut>),
}

impl Out for VectorsOut {
    fn len(&self) -> usize {
        match self {
            VectorsOut::One(one) => one.len(),
            VectorsOut::Named(named) => named.len(),
        }
    }

    fn write(&self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        match self {
            VectorsOut::One(one) => one.write(buf),
            VectorsOut::Named(named) => named.write(buf),
        }
    }
}

fn vectors_out(vectors: Vectors) -> Either<VectorsOut, Vectors> {
    match vectors {
        Vectors {
            vectors_options: Some(vectors::VectorsOptions::Vector(one)),
        } => Either::Ours(VectorsOut::One(Nested(VECTORS_ONE, vector_out(one)))),
        Vectors {
            vectors_options: Some(vectors::VectorsOptions::Vectors(NamedVectors { vectors })),
        } => Either::Ours(VectorsOut::Named(Nested(
            VECTORS_NAMED,
            NamedOut(
                vectors
                    .into_iter()
                    .map(|(name, vector)| (Text(name), vector_out(vector)))
                    .collect(),
            ),
        ))),
        vectors => Either::Prost(vectors),
    }
}

fn vector_out(vector: Vector) -> VectorOut {
    match vector {
        #[allow(deprecated)]
        Vector {
            data,
            indices: None,
            vectors_count: None,
            vector: Some(vector::Vector::Dense(DenseVector { data: dense })),
        } if data.is_empty() => Either::Ours(Nested(VECTOR_DENSE, Floats(dense))),
        vector => Either::Prost(vector),
    }
}

/// `NamedVectors`: the entries of its map, each a name and a vector; an
/// empty name is left out, as prost leaves out a map entry's default key.
struct NamedOut(Vec<(Text, VectorOut)>);

impl Out for NamedOut {
    fn len(&self) -> usize {
        self.0
            .iter()
            .map(|entry| field_len(NAMED_MAP, entry_len(entry)))
            .sum()
    }

    fn write(&self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        for entry @ (name, vector) in &self.0 {
            encode_length_delimiter(key(NAMED_MAP), buf)?;
            encode_length_delimiter(entry_len(entry), buf)?;
            if !name.0.is_empty() {
                write_field(ENTRY_KEY, name, buf)?;
            }
            write_field(ENTRY_VALUE, vector, buf)?;
        }
        Ok(())
    }
}

fn entry_len((name, vector): &(Text, VectorOut)) -> usize {
    let name = match name.0.len() {
        0 => 0,
        len => field_len(ENTRY_KEY, len),
    };
    name + field_len(ENTRY_VALUE, vector.len())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use qdrant_client::qdrant::{
        Condition, Filter, Fusion, NamedVectors, PointId, Value, WithPayloadSelector,
    };

    use super::*;

    fn dense(seed: f32, dims: usize) -> Vec<f32> {
        (0..dims).map(|i| seed + i as f32 * 0.25 - 3.0).collect()
    }

    fn written<M: Message + Clone + 'static>(message: &M) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(message.clone(), &mut buf).expect("a Vec grows");
        buf
    }

    /// prost reads back what was written, and it is as long as what prost
    /// writes (the same fields, in another order).
    fn assert_reads_back<M: Message + Default + Clone + PartialEq + std::fmt::Debug + 'static>(
        message: M,
    ) {
        let bytes = written(&message);
        assert_eq!(bytes.len(), message.encoded_len(), "{message:?}");
        assert_eq!(M::decode(bytes.as_slice()), Ok(message));
    }

    fn stage(query: Option<Query>, prefetch: Vec<PrefetchQuery>) -> PrefetchQuery {
        PrefetchQuery {
            prefetch,
            query,
            using: Some("dense".into()),
            filter: Some(Filter::must([Condition::matches(
                "tenant",
                "t1".to_owned(),
            )])),
            limit: Some(40),
            ..PrefetchQuery::default()
        }
    }

    /// Every shape of query vecmem sends: a vector alone, fused with a
    /// text's sparse vector, under a boost's formula, nested prefetches,
    /// an empty vector, no query at all; and queries prost writes whole.
    #[test]
    fn query_batches_read_back_as_prost_reads_them() {
        let nearest = |seed| Query::new_nearest(dense(seed, 1024));
        let sparse = Query::new_nearest(VectorInput::new_sparse(vec![3_u32, 9], vec![0.5, 1.5]));
        let points = |prefetch, query| QueryPoints {
            collection_name: "vecmem_memories".into(),
            prefetch,
            query,
            filter: Some(Filter::must([Condition::matches(
                "tenant",
                "t1".to_owned(),
            )])),
            limit: Some(10),
            score_threshold: Some(0.25),
            with_payload: Some(WithPayloadSelector::from(true)),
            ..QueryPoints::default()
        };
        let queries = vec![
            points(vec![], Some(nearest(1.0))),
            points(
                vec![
                    stage(Some(nearest(2.0)), vec![]),
                    stage(Some(sparse.clone()), vec![]),
                ],
                Some(Query::new_fusion(Fusion::Rrf)),
            ),
            points(
                vec![stage(
                    Some(nearest(3.0)),
                    vec![stage(Some(nearest(4.0)), vec![]), stage(None, vec![])],
                )],
                Some(Query::new_nearest(VectorInput::new_id(PointId::from(7)))),
            ),
            points(vec![], Some(Query::new_nearest(Vec::<f32>::new()))),
            points(vec![], None),
            points(vec![], Some(sparse)),
        ];
        for query in &queries {
            assert_reads_back(QueryBatchPoints {
                collection_name: "vecmem_memories".into(),
                query_points: vec![query.clone()],
                read_consistency: None,
                timeout: None,
            });
        }
        assert_reads_back(QueryBatchPoints {
            collection_name: "vecmem_memories".into(),
            query_points: queries,
            read_consistency: Some(crate::backend::qdrant::read_consistency(
                crate::config::QdrantReadConsistency::Majority,
            )),
            timeout: Some(3),
        });
        assert_reads_back(QueryBatchPoints::default());
    }

    /// Every shape of point vecmem writes: one dense vector, a dense and a
    /// sparse vector by name, none; and vectors prost writes whole.
    #[test]
    fn upserts_read_back_as_prost_reads_them() {
        let payload: HashMap<String, Value> = [
            ("tenant".to_owned(), Value::from("t1")),
            ("memory_id".to_owned(), Value::from("m1")),
        ]
        .into();
        let point = |id: u64, vectors: Option<Vectors>| PointStruct {
            id: Some(PointId::from(id)),
            payload: payload.clone(),
            vectors,
        };
        let named = |entries: Vec<(&str, Vector)>| {
            Vectors::from(NamedVectors {
                vectors: entries
                    .into_iter()
                    .map(|(name, vector)| (name.to_owned(), vector))
                    .collect(),
            })
        };
        #[allow(deprecated)]
        let legacy = Vector {
            data: dense(5.0, 8),
            ..Vector::default()
        };
        let points = vec![
            point(1, Some(Vectors::from(dense(1.0, 1024)))),
            point(
                2,
                Some(named(vec![
                    ("dense", Vector::new_dense(dense(2.0, 1024))),
                    ("text", Vector::new_sparse(vec![1_u32, 4], vec![0.5, 2.0])),
                ])),
            ),
            point(3, None),
            point(4, Some(Vectors::from(Vec::<f32>::new()))),
            point(5, Some(Vectors::from(legacy.clone()))),
            point(6, Some(named(vec![("", Vector::new_dense(dense(6.0, 4)))]))),
            point(7, Some(named(vec![("old", legacy)]))),
            point(8, Some(Vectors::default())),
        ];
        for point in &points {
            assert_reads_back(UpsertPoints {
                collection_name: "vecmem_memories".into(),
                wait: Some(true),
                points: vec![point.clone()],
                ..UpsertPoints::default()
            });
        }
        assert_reads_back(UpsertPoints {
            collection_name: "vecmem_memories".into(),
            wait: Some(true),
            points,
            ..UpsertPoints::default()
        });
    }

    /// A vector's floats are written as prost writes them, bit for bit,
    /// whatever their values and however many (across the chunks of the
    /// stack buffer).
    #[test]
    fn floats_are_written_bit_for_bit() {
        let specials = [
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::INFINITY,
            -1.5e-42,
        ];
        for dims in [1, 255, 256, 257, 1024, 1536] {
            let mut data = dense(0.5, dims);
            for (at, special) in specials.iter().enumerate().take(dims) {
                data[at] = *special;
            }
            let query = Query::new_nearest(data.clone());
            let batch = QueryBatchPoints {
                query_points: vec![QueryPoints {
                    query: Some(query),
                    ..QueryPoints::default()
                }],
                ..QueryBatchPoints::default()
            };
            let read = QueryBatchPoints::decode(written(&batch).as_slice()).expect("reads back");
            let Some(query::Variant::Nearest(VectorInput {
                variant: Some(vector_input::Variant::Dense(DenseVector { data: read })),
            })) = read.query_points[0]
                .query
                .clone()
                .and_then(|query| query.variant)
            else {
                panic!("a dense query was written")
            };
            let bits = |floats: &[f32]| floats.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&read), bits(&data), "{dims} dims");
        }
    }

    /// Any other message is prost's own bytes.
    #[test]
    fn other_messages_are_prost_s_bytes() {
        let get = qdrant_client::qdrant::GetPoints {
            collection_name: "vecmem_memories".into(),
            ids: vec![PointId::from(1), PointId::from(2)],
            ..Default::default()
        };
        assert_eq!(written(&get), get.encode_to_vec());
    }
}
