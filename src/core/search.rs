//! How a search request becomes the search a store runs. Most carry their
//! query vector; a "more like this" search (`like_id`) first reads its
//! example memories and computes the vector from theirs, the way Qdrant's
//! recommend API does, so both backends answer it identically and it goes
//! through the cache and the batcher as an ordinary vector search. A search
//! by text carries the BM25 vector of its text, computed here with the
//! namespace's model ([`crate::backend::text`]).

use std::time::SystemTime;

use crate::backend::text::TextQuery;
use crate::backend::{MemoryKey, TenantSearch, TimedBoost};
use crate::error::{Error, Result};
use crate::model::{Like, ScoredMemory, SearchQuery, SearchRequest, Validator, join};

use super::Core;

/// A search ready for the store but for the vector of a "more like this"
/// search, which is read only when the search is not answered by the cache.
#[derive(Debug, Clone)]
pub(super) struct PlannedSearch {
    /// For a "more like this" search: no vector yet, and its examples as
    /// `exclude_ids` (which is how its cache key tells it apart).
    pub search: TenantSearch,
    pub like: Option<Like>,
    /// Where the request's fields are: empty, or `searches[3]` in a batch.
    pub prefix: String,
}

impl Core {
    pub(super) fn plan_search(&self, req: SearchRequest, prefix: String) -> Result<PlannedSearch> {
        let (vector, like) = match req.query {
            Some(SearchQuery::Vector(vector)) => (Some(vector), None),
            Some(SearchQuery::Like(like)) => (None, Some(like)),
            None => (None, None),
        };
        let text = match &req.text {
            None => None,
            Some(text) => {
                let index = self.text_index(&req.namespace).ok_or_else(|| {
                    Error::internal("a search by text passed validation without a text field")
                })?;
                Some(TextQuery {
                    vector: index.query(text),
                    fusion: req.fusion,
                })
            }
        };
        let exclude_ids = like.iter().flat_map(Like::example_ids).cloned().collect();
        Ok(PlannedSearch {
            search: TenantSearch {
                limit: Validator::resolve_limit(&self.limits, req.limit),
                tenant: req.tenant,
                vector,
                text,
                min_score: req.min_score,
                filter: req.filter,
                exclude_ids,
                boost: req.boost.map(|boost| TimedBoost {
                    boost,
                    now: SystemTime::now(),
                }),
                with_payload: req.with_payload,
                with_vector: req.with_vector,
            },
            like,
            prefix,
        })
    }

    /// Runs one search through the store's batch-shaped call.
    pub(super) async fn search_one(
        &self,
        namespace: &str,
        search: TenantSearch,
    ) -> Result<Vec<ScoredMemory>> {
        self.store
            .search(namespace, vec![search])
            .await?
            .pop()
            .ok_or_else(|| Error::internal("store returned no search result"))
    }

    /// The search with its query vector: as given, or computed from the
    /// vectors of its examples, read from the store (never from the cache,
    /// so they are as fresh as any read). An example the tenant does not
    /// have is NOT_FOUND, naming the field that named it.
    pub(super) async fn with_query_vector(
        &self,
        namespace: &str,
        planned: &PlannedSearch,
    ) -> Result<TenantSearch> {
        let mut search = planned.search.clone();
        let Some(like) = &planned.like else {
            return Ok(search);
        };
        let keys = like
            .example_ids()
            .map(|id| MemoryKey {
                tenant: search.tenant.clone(),
                id: id.clone(),
            })
            .collect();
        let found = self.store.get(namespace, keys, true).await?;
        if found.len() != 1 + like.avoid_ids.len() {
            return Err(Error::internal(
                "store answered a get with a wrong number of memories",
            ));
        }
        let mut vectors = Vec::with_capacity(found.len());
        for (i, (id, memory)) in like.example_ids().zip(found).enumerate() {
            let memory = memory.ok_or_else(|| Error::MemoryNotFound {
                field: example_field(&planned.prefix, i),
                id: id.clone(),
            })?;
            vectors.push(memory.vector);
        }
        let avoided = vectors.split_off(1);
        let liked = vectors.pop().unwrap_or_default();
        search.vector = Some(Like::query_vector(liked, &avoided));
        Ok(search)
    }
}

/// The field of example `i`: the liked memory, then those to avoid.
fn example_field(prefix: &str, i: usize) -> String {
    match i {
        0 => join(prefix, "like_id"),
        _ => format!("{}[{}]", join(prefix, "avoid_ids"), i - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_reported_by_the_field_that_named_them() {
        assert_eq!(example_field("", 0), "like_id");
        assert_eq!(example_field("", 1), "avoid_ids[0]");
        assert_eq!(example_field("searches[2]", 3), "searches[2].avoid_ids[2]");
    }

    #[test]
    fn the_query_is_the_liked_vector_or_twice_it_minus_the_mean_avoided() {
        assert_eq!(Like::query_vector(vec![1.0, 2.0], &[]), [1.0, 2.0]);
        let avoided = [vec![0.0, 1.0], vec![1.0, 1.0]];
        assert_eq!(Like::query_vector(vec![1.0, 0.0], &avoided), [1.5, -1.0]);
    }
}
