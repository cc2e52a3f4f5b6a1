//! Search requests and their answers: a search, a batch of them and a
//! grouped search, with their dense query, fusion and boost; the hits back.

use std::time::Duration;

use serde_json::Value;

use super::values::{consistency_from_proto, filter_from_proto, json_to_proto};
use crate::error::Error;
use crate::model::{self, Violations, join};
use crate::proto;

impl TryFrom<proto::SearchRequest> for model::SearchRequest {
    type Error = Error;

    fn try_from(req: proto::SearchRequest) -> Result<Self, Error> {
        let mut violations = Violations::new();
        let search = search_from_proto(req, "", &mut violations);
        violations.into_result(search)
    }
}

/// Converts the searches of a batch, reporting fields as `searches[i].…`.
pub fn search_batch_from_proto(
    req: proto::SearchBatchRequest,
) -> Result<Vec<model::SearchRequest>, Error> {
    let proto::SearchBatchRequest { searches } = req;
    let mut violations = Violations::new();
    let searches = searches
        .into_iter()
        .enumerate()
        .map(|(i, search)| search_from_proto(search, &format!("searches[{i}]"), &mut violations))
        .collect();
    violations.into_result(searches)
}

fn search_from_proto(
    req: proto::SearchRequest,
    prefix: &str,
    violations: &mut Violations,
) -> model::SearchRequest {
    let proto::SearchRequest {
        namespace,
        tenant,
        vector,
        limit,
        min_score,
        filter,
        with_payload,
        with_vector,
        consistency,
        like_id,
        avoid_ids,
        boost,
        text,
        fusion,
    } = req;
    let text = (!text.is_empty()).then_some(text);
    model::SearchRequest {
        namespace,
        tenant,
        query: search_query_from_proto(
            vector,
            like_id,
            avoid_ids,
            text.is_some(),
            prefix,
            violations,
        ),
        text,
        fusion: fusion_from_proto(fusion, &join(prefix, "fusion"), violations),
        boost: boost.map(|boost| boost_from_proto(boost, &join(prefix, "boost"), violations)),
        limit,
        min_score,
        filter: filter_from_proto(filter, &join(prefix, "filter"), violations),
        with_payload,
        with_vector,
        consistency: consistency_from_proto(consistency, &join(prefix, "consistency"), violations),
    }
}

impl TryFrom<proto::SearchGroupsRequest> for model::SearchGroupsRequest {
    type Error = Error;

    fn try_from(req: proto::SearchGroupsRequest) -> Result<Self, Error> {
        let proto::SearchGroupsRequest {
            search,
            group_by,
            group_size,
        } = req;
        let mut violations = Violations::new();
        let search = search_from_proto(search.unwrap_or_default(), "search", &mut violations);
        violations.into_result(model::SearchGroupsRequest {
            search,
            group_by,
            group_size,
        })
    }
}

/// The dense part of a search: by vector, or by `like_id` (then with no
/// vector), or none for a search by text alone. A request with none of the
/// three is a vector search, whose empty vector validation reports.
fn search_query_from_proto(
    vector: Vec<f32>,
    like_id: String,
    avoid_ids: Vec<String>,
    has_text: bool,
    prefix: &str,
    violations: &mut Violations,
) -> Option<model::SearchQuery> {
    if like_id.is_empty() {
        if !avoid_ids.is_empty() {
            violations.add(join(prefix, "avoid_ids"), "is only allowed with like_id");
        }
        if vector.is_empty() && has_text {
            return None;
        }
        return Some(model::SearchQuery::Vector(vector));
    }
    if !vector.is_empty() {
        violations.add(
            join(prefix, "like_id"),
            "set either vector or like_id, not both",
        );
    }
    Some(model::SearchQuery::Like(model::Like {
        id: like_id,
        avoid_ids,
    }))
}

fn fusion_from_proto(fusion: i32, field: &str, violations: &mut Violations) -> model::Fusion {
    match proto::Fusion::try_from(fusion) {
        Ok(proto::Fusion::Rrf) => model::Fusion::Rrf,
        Ok(proto::Fusion::Dbsf) => model::Fusion::Dbsf,
        Err(_) => {
            violations.add(field, format!("unknown fusion {fusion}; use RRF or DBSF"));
            model::Fusion::Rrf
        }
    }
}

/// A boost; weights of 0 (unset) mean 1. Its numbers are checked by
/// validation, which knows the namespace's distance.
fn boost_from_proto(boost: proto::Boost, path: &str, violations: &mut Violations) -> model::Boost {
    let proto::Boost {
        recency,
        importance,
    } = boost;
    let weight = |weight: f32| if weight == 0.0 { 1.0 } else { weight };
    let recency = recency.map(|recency| {
        let path = join(path, "recency");
        let proto::RecencyBoost {
            weight: recency_weight,
            half_life,
            decay,
            key,
        } = recency;
        let half_life = match half_life.map(Duration::try_from) {
            Some(Ok(half_life)) if !half_life.is_zero() => half_life,
            _ => {
                violations.add(join(&path, "half_life"), "must be a positive duration");
                Duration::ZERO
            }
        };
        let decay = match proto::Decay::try_from(decay) {
            Ok(proto::Decay::Exponential) => model::Decay::Exponential,
            Ok(proto::Decay::Linear) => model::Decay::Linear,
            Ok(proto::Decay::Gaussian) => model::Decay::Gaussian,
            Err(_) => {
                violations.add(
                    join(&path, "decay"),
                    format!("unknown decay {decay}; use EXPONENTIAL, LINEAR or GAUSSIAN"),
                );
                model::Decay::Exponential
            }
        };
        model::RecencyBoost {
            weight: weight(recency_weight),
            half_life,
            decay,
            key: (!key.is_empty()).then_some(key),
        }
    });
    let importance = importance.map(|importance| model::ImportanceBoost {
        weight: weight(importance.weight),
        key: importance.key,
    });
    model::Boost {
        recency,
        importance,
    }
}

impl From<model::ScoredMemory> for proto::ScoredMemory {
    fn from(hit: model::ScoredMemory) -> Self {
        let model::ScoredMemory { memory, score } = hit;
        Self {
            memory: Some(memory.into()),
            score,
        }
    }
}

pub fn search_response(hits: Vec<model::ScoredMemory>) -> proto::SearchResponse {
    proto::SearchResponse {
        hits: hits.into_iter().map(Into::into).collect(),
    }
}

pub fn search_groups_response(groups: Vec<model::MemoryGroup>) -> proto::SearchGroupsResponse {
    proto::SearchGroupsResponse {
        groups: groups
            .into_iter()
            .map(|group| proto::MemoryGroup {
                key: Some(json_to_proto(match group.key {
                    model::GroupKey::Keyword(keyword) => Value::String(keyword),
                    model::GroupKey::Integer(integer) => Value::from(integer),
                })),
                hits: group.hits.into_iter().map(Into::into).collect(),
            })
            .collect(),
    }
}
