//! Domain types of the service and the rules that make a request valid.
//!
//! Nothing here knows about protobuf or Qdrant: transports convert into these
//! types, the core validates them ([`validation`]), and backends translate
//! them into engine calls.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::error::FieldViolation;

mod validation;

pub use validation::{Validator, Violations, join};

/// A memory's JSON payload: always an object.
pub type Payload = serde_json::Map<String, Value>;

/// Ids are the caller's own strings, 1 to this many bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Tenants are the caller's own strings, 1 to this many bytes.
pub const MAX_TENANT_BYTES: usize = 128;

/// Whether a call reads or writes: an API key may be read-only, and each
/// has its own per-tenant rate budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A stored memory. `vector` is empty and `payload` empty when not requested.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    pub id: String,
    pub vector: Vec<f32>,
    pub payload: Payload,
    /// When this version was written; set by the server.
    pub updated_at: Option<SystemTime>,
    /// From when the memory is never read again (and soon deleted); `None`
    /// for a memory that never expires.
    pub expires_at: Option<SystemTime>,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredMemory {
    pub memory: Memory,
    pub score: f32,
}

/// Whether a read may be answered from the result cache: the proto's
/// `ReadConsistency`. (Not Qdrant's replica read consistency, which is
/// `config::QdrantReadConsistency`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadConsistency {
    #[default]
    Cached,
    Fresh,
}

/// An answer to a read and whether it is stale: taken from an expired
/// cache entry because the store was unavailable (`cache.serve_stale_on_error`).
#[derive(Debug, Clone, PartialEq)]
pub struct Served<T> {
    pub value: T,
    pub stale: bool,
}

impl<T> Served<T> {
    /// An answer as of now.
    pub fn current(value: T) -> Self {
        Self {
            value,
            stale: false,
        }
    }

    /// An answer from an expired entry.
    pub fn stale(value: T) -> Self {
        Self { value, stale: true }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Served<U> {
        Served {
            value: f(self.value),
            stale: self.stale,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpsertRequest {
    pub namespace: String,
    pub tenant: String,
    /// Memories as sent; an empty id asks the server to assign one.
    pub memories: Vec<Memory>,
}

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub namespace: String,
    pub tenant: String,
    /// The dense part; `None` for a search by text alone.
    pub query: Option<SearchQuery>,
    /// Search by text (BM25 over the namespace's `text_field`).
    pub text: Option<String>,
    /// How the dense and text rankings are merged when both are given.
    pub fusion: Fusion,
    pub boost: Option<Boost>,
    /// 0 means the configured default.
    pub limit: u32,
    pub min_score: Option<f32>,
    pub filter: Filter,
    pub with_payload: bool,
    pub with_vector: bool,
    pub consistency: ReadConsistency,
}

/// What a search looks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchQuery {
    /// The memories nearest to this vector.
    Vector(Vec<f32>),
    /// The memories most like one of the tenant's own.
    Like(Like),
}

/// How a search by both a vector and text merges the two rankings, in one
/// engine query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fusion {
    /// Reciprocal rank fusion (Qdrant's, k = 2): `sum of 1 / (rank + 2)`
    /// over the two lists, ranks from 0.
    #[default]
    Rrf,
    /// Distribution-based score fusion: each list's scores normalised by
    /// their mean and three standard deviations, then summed.
    Dbsf,
}

/// "More like this", with Qdrant's recommend semantics (`average_vector`):
/// the query vector is `like`'s, or `2 * like - mean(avoid)` when there are
/// ids to avoid; none of these memories is ever a hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Like {
    pub id: String,
    pub avoid_ids: Vec<String>,
}

impl Like {
    /// Every example id: the liked one first, then those to avoid.
    pub fn example_ids(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.id).chain(&self.avoid_ids)
    }

    /// The query vector from the examples' vectors, as Qdrant computes it.
    pub fn query_vector(like: Vec<f32>, avoid: &[Vec<f32>]) -> Vec<f32> {
        let Some((first, rest)) = avoid.split_first() else {
            return like;
        };
        // Qdrant sums in order, then divides by the count.
        let mut mean = first.clone();
        for vector in rest {
            for (sum, value) in mean.iter_mut().zip(vector) {
                *sum += value;
            }
        }
        let count = avoid.len() as f32;
        like.iter()
            .zip(mean)
            .map(|(like, sum)| like + like - sum / count)
            .collect()
    }
}

/// A search whose hits are grouped by the value at payload `group_by`.
#[derive(Debug, Clone)]
pub struct SearchGroupsRequest {
    /// Its `limit` is the number of groups.
    pub search: SearchRequest,
    pub group_by: String,
    /// 0 means 1.
    pub group_size: u32,
}

/// The value a group's hits share at the `group_by` key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupKey {
    Keyword(String),
    Integer(i64),
}

impl GroupKey {
    /// The group of a payload: the string or whole number at dotted `key`.
    pub fn of(payload: &Payload, key: &str) -> Option<Self> {
        let mut parts = key.split('.');
        let mut value = payload.get(parts.next()?)?;
        for part in parts {
            value = value.get(part)?;
        }
        match value {
            Value::String(keyword) => Some(Self::Keyword(keyword.clone())),
            Value::Number(number) => number.as_i64().map(Self::Integer),
            _ => None,
        }
    }
}

/// One group of a grouped search: its key and best hits, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryGroup {
    pub key: GroupKey,
    pub hits: Vec<ScoredMemory>,
}

/// What a search adds to each hit's similarity (through Qdrant's formula
/// queries): `recency.weight * decay(age) + importance.weight * value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Boost {
    pub recency: Option<RecencyBoost>,
    pub importance: Option<ImportanceBoost>,
}

/// `weight` for a memory written now, half of it at `half_life` of age;
/// written at its `updated_at`, or at the date-time at payload `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecencyBoost {
    pub weight: f32,
    pub half_life: Duration,
    pub decay: Decay,
    /// A payload key holding an RFC 3339 date-time; `None` for `updated_at`.
    pub key: Option<String>,
}

/// How a recency boost falls with age; each is half at the half-life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decay {
    Exponential,
    Linear,
    Gaussian,
}

/// `weight` times the number at payload `key` (nothing where there is none).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportanceBoost {
    pub key: String,
    pub weight: f32,
}

#[derive(Debug, Clone)]
pub struct GetRequest {
    pub namespace: String,
    pub tenant: String,
    pub ids: Vec<String>,
    pub with_vector: bool,
    pub consistency: ReadConsistency,
}

/// What `Get` found: memories in request order, and the ids it did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetResult {
    pub memories: Vec<Memory>,
    pub missing_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DeleteRequest {
    pub namespace: String,
    pub tenant: String,
    pub selector: DeleteSelector,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeleteSelector {
    Ids(Vec<String>),
    Filter(Filter),
    All,
}

#[derive(Debug, Clone)]
pub struct ScrollRequest {
    pub namespace: String,
    pub tenant: String,
    pub filter: Filter,
    /// 0 means the configured default.
    pub limit: u32,
    /// Empty for the first page.
    pub page_token: String,
    pub with_vector: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrollPage {
    pub memories: Vec<Memory>,
    /// Empty on the last page.
    pub next_page_token: String,
}

#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub namespace: String,
    pub tenant: String,
    pub filter: Filter,
    /// Memories per page; 0 means the configured default.
    pub page_size: u32,
}

/// Where an Import stream writes, from its first message.
#[derive(Debug, Clone)]
pub struct ImportTarget {
    pub namespace: String,
    pub tenant: String,
    /// Skip invalid memories instead of failing the stream at the first.
    pub skip_invalid: bool,
}

/// What an Import stream did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportSummary {
    pub imported: u64,
    pub rejected: u64,
    pub expired: u64,
    /// The first rejections, in stream order.
    pub rejections: Vec<ImportRejection>,
}

/// An invalid memory an Import stream skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRejection {
    /// From 0, across the stream.
    pub position: u64,
    pub id: String,
    /// Fields named `memories[POSITION].FIELD`.
    pub violations: Vec<FieldViolation>,
}

#[derive(Debug, Clone)]
pub struct CountRequest {
    pub namespace: String,
    pub tenant: String,
    pub filter: Filter,
}

#[derive(Debug, Clone)]
pub struct UpdatePayloadRequest {
    pub namespace: String,
    pub tenant: String,
    pub target: UpdateTarget,
    pub payload: Payload,
    pub replace: bool,
    pub expiry: ExpiryChange,
}

/// What a payload update does to the memories' expiry.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ExpiryChange {
    /// Each keeps its own.
    #[default]
    Keep,
    /// All expire at this time.
    At(SystemTime),
    /// None expires.
    Never,
}

/// Which of the tenant's memories a payload update changes.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateTarget {
    Ids(Vec<String>),
    /// Every memory matching a filter with at least one condition.
    Filter(Filter),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdatePayloadResult {
    /// The ids updated, for an update by ids; empty for one by filter.
    pub updated_ids: Vec<String>,
    pub missing_ids: Vec<String>,
    /// How many memories were updated.
    pub updated_count: u64,
}

/// A boolean combination of payload conditions; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }

    fn clauses(&self) -> [(&'static str, &[Condition]); 3] {
        [
            ("must", &self.must),
            ("should", &self.should),
            ("must_not", &self.must_not),
        ]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A test on the payload value at `key` (dot-separated path).
    Field { key: String, test: FieldTest },
    /// A nested filter.
    Group(Filter),
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldTest {
    Equals(MatchValue),
    AnyOf(AnyOf),
    Range(Bounds<f64>),
    /// Bounds in microseconds since the Unix epoch.
    DatetimeRange(Bounds<i64>),
    Exists,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MatchValue {
    Keyword(String),
    Integer(i64),
    Boolean(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnyOf {
    Keywords(Vec<String>),
    Integers(Vec<i64>),
}

/// Range bounds, combined with AND.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bounds<T> {
    pub gt: Option<T>,
    pub gte: Option<T>,
    pub lt: Option<T>,
    pub lte: Option<T>,
}

impl<T: Copy> Bounds<T> {
    fn values(&self) -> impl Iterator<Item = T> {
        [self.gt, self.gte, self.lt, self.lte].into_iter().flatten()
    }
}
