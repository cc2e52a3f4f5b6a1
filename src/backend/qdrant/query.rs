//! How one tenant's search becomes one query of a `QueryBatchPoints`: the
//! ranking stage (nearest to the vector, to the text, or both fused from a
//! prefetch of each), then a boost's formula over the best candidates when
//! the search has one. The embedded engine runs the same stages
//! (`backend::embedded::search`), so both backends rank alike.

use std::time::SystemTime;

use qdrant_client::qdrant::{self, PrefetchQuery, Query, QueryPoints, VectorInput};

use super::{QdrantStore, translate};
use crate::backend::text::TEXT_VECTOR;
use crate::backend::{TenantSearch, boost, score};
use crate::error::{Error, Result};
use crate::model::Fusion;

impl QdrantStore {
    /// One search of a `QueryBatchPoints`. The vector is moved into it, not
    /// copied: reading the answer needs the rest of the search only.
    /// A boosted search ranks its best candidates by its formula.
    pub(super) fn query(
        &self,
        namespace: &str,
        order: score::Order,
        search: &mut TenantSearch,
        now: SystemTime,
    ) -> Result<QueryPoints> {
        if search.text.is_some() && !self.has_text(namespace) {
            return Err(Error::TextSearchUnavailable(namespace.to_owned()));
        }
        let ranking = ranking(search, now)?;
        let (prefetch, query, using, filter) = match &search.boost {
            None => (
                ranking.prefetch,
                ranking.query,
                ranking.using,
                ranking.filter,
            ),
            Some(boost) => (
                vec![PrefetchQuery {
                    limit: Some(boost::candidates(search.limit) as u64),
                    ..ranking
                }],
                Some(Query::new_formula(translate::formula(boost))),
                None,
                None,
            ),
        };
        Ok(QueryPoints {
            collection_name: self.collection(namespace),
            prefetch,
            query,
            using,
            filter,
            limit: Some(search.limit as u64),
            score_threshold: score::engine_threshold(order, search.min_score),
            with_payload: Some(translate::payload_selector(search.with_payload)),
            with_vectors: Some(translate::vectors_selector(search.with_vector)),
            // Consistency and timeout are set once, on the batch.
            ..QueryPoints::default()
        })
    }
}

/// How a search ranks before any boost, as one query stage: nearest to its
/// vector, or to its text, or both fused from a prefetch of each (the best
/// candidates of each ranking). Moves the vectors out of `search`.
fn ranking(search: &mut TenantSearch, now: SystemTime) -> Result<PrefetchQuery> {
    let filter = translate::search_filter(search, now);
    let dense = search.vector.take().map(|vector| PrefetchQuery {
        query: Some(Query::new_nearest(vector)),
        filter: Some(filter.clone()),
        ..PrefetchQuery::default()
    });
    let text = search.text.take().map(|text| {
        let stage = PrefetchQuery {
            query: Some(Query::new_nearest(VectorInput::new_sparse(
                text.vector.indices,
                text.vector.values,
            ))),
            using: Some(TEXT_VECTOR.to_owned()),
            filter: Some(filter.clone()),
            ..PrefetchQuery::default()
        };
        (stage, text.fusion)
    });
    let candidates = Some(boost::candidates(search.limit) as u64);
    match (dense, text) {
        (Some(dense), None) => Ok(dense),
        (None, Some((text, _))) => Ok(text),
        (Some(dense), Some((text, fusion))) => Ok(PrefetchQuery {
            prefetch: vec![
                PrefetchQuery {
                    limit: candidates,
                    ..dense
                },
                PrefetchQuery {
                    limit: candidates,
                    ..text
                },
            ],
            query: Some(Query::new_fusion(match fusion {
                Fusion::Rrf => qdrant::Fusion::Rrf,
                Fusion::Dbsf => qdrant::Fusion::Dbsf,
            })),
            ..PrefetchQuery::default()
        }),
        (None, None) => Err(Error::internal("a search with neither a vector nor text")),
    }
}
