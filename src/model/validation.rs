//! The rules that make a request valid, checked before anything reaches a
//! backend. Every violation of a request is collected with its field path
//! (`memories[3].vector`, `searches[1].filter.must[0].key`), so a client can
//! fix a request in one round trip.

use std::collections::HashSet;
use std::time::SystemTime;

use serde_json::Value;

use super::{
    AnyOf, Boost, Condition, CountRequest, DeleteRequest, DeleteSelector, ExpiryChange,
    ExportRequest, FieldTest, Filter, Fusion, GetRequest, Like, MAX_ID_BYTES, MAX_TENANT_BYTES,
    Memory, Payload, ScrollRequest, SearchGroupsRequest, SearchQuery, SearchRequest,
    UpdatePayloadRequest, UpdateTarget, UpsertRequest,
};
use crate::config::{Distance, Limits};
use crate::error::{Error, FieldViolation, Result};

/// Payload keys in filters are at most this long.
const MAX_KEY_BYTES: usize = 256;
/// A search's text is at most this long.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// Collects field violations of one request.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn add_all(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    /// Each violation, its field put under `prefix`: `memories[7]`.
    pub fn under(self, prefix: &str) -> Vec<FieldViolation> {
        self.0
            .into_iter()
            .map(|violation| FieldViolation {
                field: match violation.field.as_str() {
                    "" => prefix.to_owned(),
                    field => join(prefix, field),
                },
                description: violation.description,
            })
            .collect()
    }

    /// `Ok(value)` when nothing was reported, else INVALID_ARGUMENT with all of it.
    pub fn into_result<T>(self, value: T) -> Result<T> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

/// Joins a parent path and a field name: `join("", "tenant") == "tenant"`.
pub fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Checks requests against the configured limits and a namespace's
/// dimension, distance and text field.
pub struct Validator<'a> {
    limits: &'a Limits,
    dim: usize,
    distance: Distance,
    text_field: Option<&'a str>,
    violations: Violations,
}

impl<'a> Validator<'a> {
    pub fn new(limits: &'a Limits, dim: usize, distance: Distance) -> Self {
        Self {
            limits,
            dim,
            distance,
            text_field: None,
            violations: Violations::new(),
        }
    }

    /// For a namespace that indexes payload key `field` for search by text.
    pub fn with_text_field(mut self, field: Option<&'a str>) -> Self {
        self.text_field = field;
        self
    }

    pub fn finish(self) -> Result<()> {
        self.violations.into_result(())
    }

    /// The violations found so far, leaving none: for checking one item
    /// after another with the same validator.
    pub fn take_violations(&mut self) -> Violations {
        std::mem::take(&mut self.violations)
    }

    pub fn upsert(&mut self, req: &UpsertRequest) {
        self.tenant("tenant", &req.tenant);
        self.batch_len("memories", req.memories.len());
        let now = SystemTime::now();
        let mut seen = HashSet::new();
        for (i, memory) in req.memories.iter().enumerate() {
            let path = format!("memories[{i}]");
            if !memory.id.is_empty() && !seen.insert(memory.id.as_str()) {
                self.violations
                    .add(join(&path, "id"), "duplicate id within the request");
            }
            self.memory(&path, memory, now);
        }
    }

    /// One memory to write (of an Upsert, or of an Import stream), as of
    /// `now`.
    pub fn memory(&mut self, path: &str, memory: &Memory, now: SystemTime) {
        // An empty id is allowed: the server assigns a UUIDv7.
        if !memory.id.is_empty() {
            self.id(&join(path, "id"), &memory.id);
        }
        self.vector(&join(path, "vector"), &memory.vector);
        self.payload(&join(path, "payload"), &memory.payload);
        self.text_field_value(&join(path, "payload"), &memory.payload);
        if memory.expires_at.is_some_and(|at| at <= now) {
            self.violations.add(
                join(path, "expires_at"),
                "must lie in the future (to remove a memory now, delete it)",
            );
        }
    }

    /// Where an Import stream writes.
    pub fn import_target(&mut self, tenant: &str) {
        self.tenant("tenant", tenant);
    }

    /// The namespace's text field, where a payload has it, holds text.
    fn text_field_value(&mut self, payload_path: &str, payload: &Payload) {
        let Some(field) = self.text_field else {
            return;
        };
        match payload.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => self.violations.add(
                join(payload_path, field),
                "must be a string: the namespace indexes this key for search by text",
            ),
        }
    }

    /// `prefix` is empty for a single search, `searches[i]` inside a batch.
    pub fn search(&mut self, prefix: &str, req: &SearchRequest) {
        self.tenant(&join(prefix, "tenant"), &req.tenant);
        match &req.query {
            Some(SearchQuery::Vector(vector)) => self.vector(&join(prefix, "vector"), vector),
            Some(SearchQuery::Like(like)) => self.like(prefix, like),
            None if req.text.is_none() => self
                .violations
                .add(join(prefix, "vector"), "set vector, like_id or text"),
            None => {}
        }
        if let Some(text) = &req.text {
            self.text(&join(prefix, "text"), text);
        }
        if req.fusion == Fusion::Dbsf {
            self.dbsf(&join(prefix, "fusion"), req);
        }
        if let Some(boost) = &req.boost {
            self.boost(&join(prefix, "boost"), boost, req.text.is_some());
        }
        self.limit(&join(prefix, "limit"), req.limit);
        if let Some(min_score) = req.min_score
            && !min_score.is_finite()
        {
            self.violations
                .add(join(prefix, "min_score"), "must be a finite number");
        }
        self.filter(&join(prefix, "filter"), &req.filter);
    }

    pub fn search_groups(&mut self, req: &SearchGroupsRequest) {
        self.search("search", &req.search);
        self.key("group_by", &req.group_by);
        self.limit("group_size", req.group_size);
    }

    pub fn get(&mut self, req: &GetRequest) {
        self.tenant("tenant", &req.tenant);
        self.ids("ids", &req.ids);
    }

    pub fn delete(&mut self, req: &DeleteRequest) {
        self.tenant("tenant", &req.tenant);
        match &req.selector {
            DeleteSelector::Ids(ids) => self.ids("ids.values", ids),
            DeleteSelector::Filter(filter) => {
                if filter.is_empty() {
                    self.violations.add(
                        "filter",
                        "must have at least one condition; use `all` to delete every memory",
                    );
                }
                self.filter("filter", filter);
            }
            DeleteSelector::All => {}
        }
    }

    pub fn scroll(&mut self, req: &ScrollRequest) {
        self.tenant("tenant", &req.tenant);
        self.limit("limit", req.limit);
        self.filter("filter", &req.filter);
    }

    pub fn export(&mut self, req: &ExportRequest) {
        self.tenant("tenant", &req.tenant);
        self.limit("page_size", req.page_size);
        self.filter("filter", &req.filter);
    }

    pub fn count(&mut self, req: &CountRequest) {
        self.tenant("tenant", &req.tenant);
        self.filter("filter", &req.filter);
    }

    pub fn update_payload(&mut self, req: &UpdatePayloadRequest) {
        self.tenant("tenant", &req.tenant);
        match &req.target {
            UpdateTarget::Ids(ids) => self.ids("ids", ids),
            UpdateTarget::Filter(filter) => {
                if filter.is_empty() {
                    self.violations
                        .add("filter", "must have at least one condition");
                }
                self.filter("filter", filter);
            }
        }
        self.payload("payload", &req.payload);
        self.text_field_value("payload", &req.payload);
        if let ExpiryChange::At(at) = req.expiry
            && at <= SystemTime::now()
        {
            self.violations.add(
                "expires_at",
                "must lie in the future (to remove memories now, delete them)",
            );
        }
    }

    /// The effective limit of a search or scroll (0 means the default).
    pub fn resolve_limit(limits: &Limits, limit: u32) -> usize {
        if limit == 0 {
            limits.default_limit.get() as usize
        } else {
            limit as usize
        }
    }

    fn tenant(&mut self, field: &str, tenant: &str) {
        if tenant.is_empty() {
            self.violations.add(field, "is required");
        } else if tenant.len() > MAX_TENANT_BYTES {
            self.violations
                .add(field, format!("must be at most {MAX_TENANT_BYTES} bytes"));
        } else if tenant.chars().any(char::is_control) {
            self.violations
                .add(field, "must not contain control characters");
        }
    }

    fn id(&mut self, field: &str, id: &str) {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            self.violations
                .add(field, format!("must be 1 to {MAX_ID_BYTES} bytes"));
        }
    }

    fn ids(&mut self, field: &str, ids: &[String]) {
        self.batch_len(field, ids.len());
        for (i, id) in ids.iter().enumerate() {
            self.id(&format!("{field}[{i}]"), id);
        }
    }

    fn like(&mut self, prefix: &str, like: &Like) {
        self.id(&join(prefix, "like_id"), &like.id);
        let field = join(prefix, "avoid_ids");
        let max = self.limits.max_batch.get();
        if like.avoid_ids.len() > max {
            self.violations.add(
                &field,
                format!(
                    "has {} items; at most {max} are allowed",
                    like.avoid_ids.len()
                ),
            );
        }
        for (i, id) in like.avoid_ids.iter().enumerate() {
            let field = format!("{field}[{i}]");
            self.id(&field, id);
            if *id == like.id {
                self.violations.add(
                    field,
                    "is the like_id: a memory cannot be liked and avoided",
                );
            }
        }
    }

    /// Whether the namespace's vector scores grow with similarity.
    fn similarity_scores(&self) -> bool {
        matches!(self.distance, Distance::Cosine | Distance::Dot)
    }

    fn text(&mut self, field: &str, text: &str) {
        if self.text_field.is_none() {
            self.violations.add(
                field,
                "the namespace has no text field; declare `text_field` in its config to \
                 search it by text",
            );
        }
        if text.len() > MAX_TEXT_BYTES {
            self.violations
                .add(field, format!("must be at most {MAX_TEXT_BYTES} bytes"));
        }
    }

    fn dbsf(&mut self, field: &str, req: &SearchRequest) {
        if req.text.is_none() || req.query.is_none() {
            self.violations.add(
                field,
                "only applies to a search by both a vector (or like_id) and text",
            );
        } else if !self.similarity_scores() {
            self.violations.add(
                field,
                "DBSF needs a cosine or dot namespace: it sums normalised scores, and under \
                 euclid and manhattan a lower score is better; use RRF",
            );
        }
    }

    /// A search with text ranks by BM25 or fused scores, which grow with
    /// relevance under every distance.
    fn boost(&mut self, path: &str, boost: &Boost, has_text: bool) {
        if !has_text && !self.similarity_scores() {
            self.violations.add(
                path,
                "needs a cosine or dot namespace (or a search with text): under euclid and \
                 manhattan a score is a distance, which a boost cannot add to",
            );
        }
        if boost.recency.is_none() && boost.importance.is_none() {
            self.violations.add(path, "set recency, importance or both");
        }
        if let Some(recency) = &boost.recency {
            let path = join(path, "recency");
            if !(recency.weight.is_finite() && recency.weight >= 0.0) {
                self.violations
                    .add(join(&path, "weight"), "must be a finite number, at least 0");
            }
            if let Some(key) = &recency.key {
                self.key(&join(&path, "key"), key);
            }
        }
        if let Some(importance) = &boost.importance {
            let path = join(path, "importance");
            self.key(&join(&path, "key"), &importance.key);
            if !importance.weight.is_finite() {
                self.violations
                    .add(join(&path, "weight"), "must be a finite number");
            }
        }
    }

    fn batch_len(&mut self, field: &str, len: usize) {
        let max = self.limits.max_batch.get();
        if len == 0 {
            self.violations.add(field, "must not be empty");
        } else if len > max {
            self.violations
                .add(field, format!("has {len} items; at most {max} are allowed"));
        }
    }

    fn vector(&mut self, field: &str, vector: &[f32]) {
        if vector.len() != self.dim {
            self.violations.add(
                field,
                format!(
                    "has {} dimensions; the namespace expects {}",
                    vector.len(),
                    self.dim
                ),
            );
        } else if let Some(i) = first_non_finite(vector) {
            self.violations
                .add(field, format!("component {i} is not a finite number"));
        }
    }

    fn limit(&mut self, field: &str, limit: u32) {
        let max = self.limits.max_limit.get();
        if limit > max {
            self.violations
                .add(field, format!("is {limit}; at most {max} is allowed"));
        }
    }

    fn payload(&mut self, field: &str, payload: &Payload) {
        let size = json_size(payload);
        let max = self.limits.max_payload_bytes.get();
        if size > max {
            self.violations.add(
                field,
                format!("is {size} bytes as JSON; at most {max} are allowed"),
            );
        }
    }

    fn filter(&mut self, field: &str, filter: &Filter) {
        let mut conditions = 0;
        self.filter_at(field, filter, 1, &mut conditions);
        let max = self.limits.max_filter_conditions.get();
        if conditions > max {
            self.violations.add(
                field,
                format!("has {conditions} conditions; at most {max} are allowed"),
            );
        }
    }

    fn filter_at(&mut self, path: &str, filter: &Filter, depth: usize, conditions: &mut usize) {
        for (clause, list) in filter.clauses() {
            for (i, condition) in list.iter().enumerate() {
                *conditions += 1;
                let path = format!("{path}.{clause}[{i}]");
                match condition {
                    Condition::Group(group) => {
                        let max = self.limits.max_filter_depth.get();
                        if depth >= max {
                            self.violations.add(
                                join(&path, "group"),
                                format!("nests deeper than {max} levels"),
                            );
                        } else {
                            self.filter_at(&join(&path, "group"), group, depth + 1, conditions);
                        }
                    }
                    Condition::Field { key, test } => {
                        self.key(&join(&path, "key"), key);
                        self.test(&path, test);
                    }
                }
            }
        }
    }

    fn key(&mut self, field: &str, key: &str) {
        if !is_valid_key(key) {
            self.violations.add(
                field,
                format!(
                    "must be 1-{MAX_KEY_BYTES} bytes of dot-separated names made of \
                     letters, digits, '_' and '-'"
                ),
            );
        }
    }

    fn test(&mut self, path: &str, test: &FieldTest) {
        match test {
            FieldTest::Equals(_) | FieldTest::Exists => {}
            FieldTest::AnyOf(any) => {
                let len = match any {
                    AnyOf::Keywords(values) => values.len(),
                    AnyOf::Integers(values) => values.len(),
                };
                let field = join(path, "any_of");
                let max = self.limits.max_batch.get();
                if len == 0 {
                    self.violations.add(field, "needs at least one value");
                } else if len > max {
                    self.violations.add(
                        field,
                        format!("has {len} values; at most {max} are allowed"),
                    );
                }
            }
            FieldTest::Range(bounds) => {
                let field = join(path, "range");
                if bounds.values().count() == 0 {
                    self.violations.add(field, "needs at least one bound");
                } else if bounds.values().any(|v| !v.is_finite()) {
                    self.violations.add(field, "bounds must be finite numbers");
                }
            }
            FieldTest::DatetimeRange(bounds) => {
                if bounds.values().count() == 0 {
                    self.violations
                        .add(join(path, "datetime_range"), "needs at least one bound");
                }
            }
        }
    }
}

/// Where the first component that is not a finite number is, if any. A
/// valid vector (nearly every one) is checked without an early exit, which
/// the compiler can vectorize: callgrind counted ~7 instructions per
/// component with `position` alone, ~2 this way.
fn first_non_finite(vector: &[f32]) -> Option<usize> {
    if vector.iter().fold(true, |finite, x| finite & x.is_finite()) {
        return None;
    }
    vector.iter().position(|x| !x.is_finite())
}

/// Payload keys: dot-separated names of letters, digits, `_` and `-`.
fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Size of a payload serialised as JSON, without allocating it.
fn json_size(payload: &Payload) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Map<String, Value>` cannot fail: every value is representable.
    let _ = serde_json::to_writer(&mut counter, payload);
    counter.0
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroUsize};

    use super::*;
    use crate::model::{Bounds, MatchValue, Memory, ReadConsistency};
    use serde_json::json;

    fn limits() -> Limits {
        let n = |n: usize| NonZeroUsize::new(n).expect("not zero");
        Limits {
            max_limit: NonZeroU32::new(100).expect("not zero"),
            default_limit: NonZeroU32::new(10).expect("not zero"),
            max_batch: n(4),
            max_payload_bytes: n(64),
            max_filter_depth: n(2),
            max_filter_conditions: n(5),
        }
    }

    fn memory(id: &str, vector: Vec<f32>) -> Memory {
        Memory {
            id: id.into(),
            vector,
            payload: Payload::new(),
            updated_at: None,
            expires_at: None,
        }
    }

    /// A valid search by a 3-dimensional vector, with every option unset.
    fn vector_search() -> SearchRequest {
        SearchRequest {
            namespace: "ns".into(),
            tenant: "t".into(),
            query: Some(SearchQuery::Vector(vec![0.0; 3])),
            text: None,
            fusion: Fusion::Rrf,
            boost: None,
            limit: 0,
            min_score: None,
            filter: Filter::default(),
            with_payload: false,
            with_vector: false,
            consistency: ReadConsistency::Cached,
        }
    }

    fn violations(result: Result<()>) -> Vec<String> {
        match result {
            Ok(()) => vec![],
            Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    fn check_upsert(req: &UpsertRequest) -> Vec<String> {
        let limits = limits();
        let mut v = Validator::new(&limits, 3, Distance::Cosine);
        v.upsert(req);
        violations(v.finish())
    }

    fn field(key: &str, test: FieldTest) -> Condition {
        Condition::Field {
            key: key.into(),
            test,
        }
    }

    fn check_filter(filter: Filter) -> Vec<String> {
        let limits = limits();
        let mut v = Validator::new(&limits, 3, Distance::Cosine);
        v.count(&CountRequest {
            namespace: "ns".into(),
            tenant: "t".into(),
            filter,
        });
        violations(v.finish())
    }

    #[test]
    fn a_valid_upsert_passes() {
        let req = UpsertRequest {
            namespace: "ns".into(),
            tenant: "t".into(),
            memories: vec![
                memory("a", vec![0.1, 0.2, 0.3]),
                memory("", vec![1.0, 0.0, 0.0]),
            ],
        };
        assert!(check_upsert(&req).is_empty());
    }

    #[test]
    fn every_bad_memory_is_reported_with_its_index() {
        let mut big = memory("c", vec![0.0; 3]);
        big.payload.insert("text".into(), json!("x".repeat(100)));
        let req = UpsertRequest {
            namespace: "ns".into(),
            tenant: String::new(),
            memories: vec![
                memory("a", vec![0.0; 3]),
                memory("b", vec![0.0; 2]),
                big,
                memory("a", vec![f32::NAN, 0.0, 0.0]),
            ],
        };
        assert_eq!(
            check_upsert(&req),
            [
                "tenant",
                "memories[1].vector",
                "memories[2].payload",
                "memories[3].id",
                "memories[3].vector"
            ]
        );
    }

    #[test]
    fn the_first_component_that_is_not_finite_is_named() {
        let mut vector = vec![0.5_f32; 1024];
        assert_eq!(first_non_finite(&vector), None);
        vector[1023] = f32::NEG_INFINITY;
        assert_eq!(first_non_finite(&vector), Some(1023));
        vector[17] = f32::NAN;
        assert_eq!(first_non_finite(&vector), Some(17));
        assert_eq!(first_non_finite(&[]), None);
    }

    #[test]
    fn ids_tenants_and_batch_sizes_are_bounded() {
        let long_id = "x".repeat(MAX_ID_BYTES + 1);
        let req = UpsertRequest {
            namespace: "ns".into(),
            tenant: "t".repeat(MAX_TENANT_BYTES + 1),
            memories: vec![memory(&long_id, vec![0.0; 3])],
        };
        assert_eq!(check_upsert(&req), ["tenant", "memories[0].id"]);

        let too_many = UpsertRequest {
            namespace: "ns".into(),
            tenant: "t".into(),
            memories: (0..5)
                .map(|i| memory(&i.to_string(), vec![0.0; 3]))
                .collect(),
        };
        assert_eq!(check_upsert(&too_many), ["memories"]);
    }

    #[test]
    fn search_limit_and_min_score_are_checked_with_the_batch_prefix() {
        let limits = limits();
        let mut v = Validator::new(&limits, 3, Distance::Cosine);
        v.search(
            "searches[1]",
            &SearchRequest {
                limit: 101,
                min_score: Some(f32::INFINITY),
                ..vector_search()
            },
        );
        assert_eq!(
            violations(v.finish()),
            ["searches[1].limit", "searches[1].min_score"]
        );
        assert_eq!(Validator::resolve_limit(&limits, 0), 10);
        assert_eq!(Validator::resolve_limit(&limits, 7), 7);
    }

    #[test]
    fn boosts_need_a_similarity_and_sound_numbers() {
        let limits = limits();
        let search = |boost: Boost| SearchRequest {
            boost: Some(boost),
            ..vector_search()
        };
        let sound = Boost {
            recency: Some(crate::model::RecencyBoost {
                weight: 1.0,
                half_life: std::time::Duration::from_secs(60),
                decay: crate::model::Decay::Linear,
                key: Some("meta.at".into()),
            }),
            importance: Some(crate::model::ImportanceBoost {
                key: "importance".into(),
                weight: -0.5,
            }),
        };
        let check = |distance, boost| {
            let mut v = Validator::new(&limits, 3, distance);
            v.search("", &search(boost));
            violations(v.finish())
        };
        assert!(check(Distance::Cosine, sound.clone()).is_empty());
        assert!(check(Distance::Dot, sound.clone()).is_empty());
        assert_eq!(check(Distance::Euclid, sound.clone()), ["boost"]);
        assert_eq!(check(Distance::Manhattan, sound.clone()), ["boost"]);
        let mut unsound = sound;
        if let Some(recency) = &mut unsound.recency {
            recency.weight = -1.0;
            recency.key = Some("no spaces".into());
        }
        if let Some(importance) = &mut unsound.importance {
            importance.weight = f32::NAN;
        }
        assert_eq!(
            check(Distance::Cosine, unsound),
            [
                "boost.recency.weight",
                "boost.recency.key",
                "boost.importance.weight"
            ]
        );
        let empty = Boost {
            recency: None,
            importance: None,
        };
        assert_eq!(check(Distance::Cosine, empty), ["boost"]);
    }

    #[test]
    fn text_needs_a_text_field_and_dbsf_needs_both_halves_and_a_similarity() {
        let limits = limits();
        let search = |query: Option<SearchQuery>, text: Option<&str>, fusion| SearchRequest {
            query,
            text: text.map(str::to_owned),
            fusion,
            ..vector_search()
        };
        let check = |distance, text_field, req: SearchRequest| {
            let mut v = Validator::new(&limits, 3, distance).with_text_field(text_field);
            v.search("", &req);
            violations(v.finish())
        };
        let vector = || Some(SearchQuery::Vector(vec![0.0; 3]));
        let text = Some("text");
        let hybrid = search(vector(), Some("cats"), Fusion::Dbsf);
        assert!(check(Distance::Dot, text, hybrid.clone()).is_empty());
        assert_eq!(check(Distance::Euclid, text, hybrid.clone()), ["fusion"]);
        assert_eq!(check(Distance::Dot, None, hybrid), ["text"]);
        let text_alone = search(None, Some("cats"), Fusion::Dbsf);
        assert_eq!(check(Distance::Dot, text, text_alone), ["fusion"]);
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        let too_long = search(None, Some(&long), Fusion::Rrf);
        assert_eq!(check(Distance::Dot, text, too_long), ["text"]);
        let nothing = search(None, None, Fusion::Rrf);
        assert_eq!(check(Distance::Dot, text, nothing), ["vector"]);

        let mut memory = memory("a", vec![0.0; 3]);
        memory
            .payload
            .insert("text".into(), json!(["not", "a", "string"]));
        let upsert = UpsertRequest {
            namespace: "ns".into(),
            tenant: "t".into(),
            memories: vec![memory],
        };
        let mut v = Validator::new(&limits, 3, Distance::Dot).with_text_field(text);
        v.upsert(&upsert);
        assert_eq!(violations(v.finish()), ["memories[0].payload.text"]);
    }

    #[test]
    fn filters_are_bounded_in_depth_count_and_shape() {
        let ok = Filter {
            must: vec![field(
                "source.kind",
                FieldTest::Equals(MatchValue::Keyword("a".into())),
            )],
            ..Filter::default()
        };
        assert!(check_filter(ok).is_empty());

        let bad_key = Filter {
            must: vec![
                field("a..b", FieldTest::Exists),
                field("", FieldTest::Exists),
            ],
            ..Filter::default()
        };
        assert_eq!(
            check_filter(bad_key),
            ["filter.must[0].key", "filter.must[1].key"]
        );

        let deep = Filter {
            should: vec![Condition::Group(Filter {
                must: vec![Condition::Group(Filter::default())],
                ..Filter::default()
            })],
            ..Filter::default()
        };
        assert_eq!(check_filter(deep), ["filter.should[0].group.must[0].group"]);

        let many = Filter {
            must_not: (0..6).map(|_| field("k", FieldTest::Exists)).collect(),
            ..Filter::default()
        };
        assert_eq!(check_filter(many), ["filter"]);

        let empty_tests = Filter {
            must: vec![
                field("k", FieldTest::AnyOf(AnyOf::Keywords(vec![]))),
                field("k", FieldTest::Range(Bounds::default())),
                field(
                    "k",
                    FieldTest::Range(Bounds {
                        gt: Some(f64::NAN),
                        ..Bounds::default()
                    }),
                ),
                field("k", FieldTest::DatetimeRange(Bounds::default())),
            ],
            ..Filter::default()
        };
        assert_eq!(
            check_filter(empty_tests),
            [
                "filter.must[0].any_of",
                "filter.must[1].range",
                "filter.must[2].range",
                "filter.must[3].datetime_range"
            ]
        );
    }

    #[test]
    fn delete_by_empty_filter_is_refused() {
        let limits = limits();
        let mut v = Validator::new(&limits, 3, Distance::Cosine);
        v.delete(&DeleteRequest {
            namespace: "ns".into(),
            tenant: "t".into(),
            selector: DeleteSelector::Filter(Filter::default()),
        });
        assert_eq!(violations(v.finish()), ["filter"]);
    }
}
