//! How one tenant's search runs on the engine: by its vector alone through
//! the engine's plain search (the common case, which skips the query
//! planner), or as a query with prefetch stages when it has text, a fusion
//! of both or a boost. The stages are those the Qdrant backend asks Qdrant
//! for (`backend::qdrant::query`), so both backends rank alike.

use std::time::SystemTime;

use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    EdgeShard, Filter as EdgeFilter, NamedQuery, Prefetch, QueryEnum, QueryRequest, ScoringQuery,
    SearchRequest,
};

use super::translate;
use crate::backend::{TenantSearch, boost, score};
use crate::config::Distance;
use crate::error::{Error, Result};
use crate::model::ScoredMemory;

/// Runs `search` on `engine`: its hits, best first, cut at its `min_score`.
pub fn search_one(
    engine: &EdgeShard,
    distance: Distance,
    mut search: TenantSearch,
    now: SystemTime,
) -> Result<Vec<ScoredMemory>> {
    let order = score::Order::of(distance, &search);
    let filter = translate::search_filter(&search, now)?;
    let with_payload = translate::payload_selector(search.with_payload)?;
    let with_vector = translate::vectors_selector(search.with_vector);
    let score_threshold = score::engine_threshold(order, search.min_score);
    let plain_vector = search.text.is_none() && search.boost.is_none();
    let hits = match search.vector.take() {
        // The common search, by vector alone, skips the query planner.
        Some(vector) if plain_vector => engine.search(SearchRequest {
            query: QueryEnum::Nearest(NamedQuery::default_dense(vector)),
            filter: Some(filter),
            params: None,
            limit: search.limit,
            offset: 0,
            with_payload: Some(with_payload),
            with_vector: Some(with_vector),
            score_threshold,
        }),
        vector => {
            search.vector = vector;
            let ranking = ranking(&mut search, filter)?;
            // A boosted search ranks its best candidates by its formula.
            let (prefetches, query, filter) = match &search.boost {
                None => (ranking.prefetches, ranking.query, ranking.filter),
                Some(boost) => (
                    vec![Prefetch {
                        limit: boost::candidates(search.limit),
                        ..ranking
                    }],
                    Some(ScoringQuery::Formula(
                        translate::formula(boost)?
                            .try_into()
                            .map_err(Error::internal)?,
                    )),
                    None,
                ),
            };
            engine.query(QueryRequest {
                prefetches,
                query,
                filter,
                score_threshold: score_threshold.map(OrderedFloat),
                limit: search.limit,
                offset: 0,
                params: None,
                with_vector,
                with_payload,
            })
        }
    }
    .map_err(Error::internal)?;
    let mut hits = hits
        .into_iter()
        .filter_map(|hit| {
            let memory = translate::to_memory(hit.payload, hit.vector, search.with_payload)?;
            Some(ScoredMemory {
                memory,
                score: hit.score,
            })
        })
        .collect();
    score::cut(order, search.min_score, &mut hits);
    Ok(hits)
}

/// How a search ranks before any boost, as one query stage: nearest to its
/// vector, or to its text, or both fused from a prefetch of each (the best
/// candidates of each ranking), exactly as the Qdrant backend asks Qdrant.
/// Moves the vectors out of `search`.
fn ranking(search: &mut TenantSearch, filter: EdgeFilter) -> Result<Prefetch> {
    let stage = |query: QueryEnum, limit: usize| Prefetch {
        prefetches: Vec::new(),
        query: Some(ScoringQuery::Vector(query)),
        limit,
        params: None,
        filter: Some(filter.clone()),
        score_threshold: None,
    };
    let dense = search
        .vector
        .take()
        .map(|vector| QueryEnum::Nearest(NamedQuery::default_dense(vector)));
    let text = search.text.take();
    let candidates = boost::candidates(search.limit);
    match (dense, text) {
        (Some(dense), None) => Ok(stage(dense, search.limit)),
        (None, Some(text)) => Ok(stage(translate::text_query(&text.vector), search.limit)),
        (Some(dense), Some(text)) => Ok(Prefetch {
            prefetches: vec![
                stage(dense, candidates),
                stage(translate::text_query(&text.vector), candidates),
            ],
            query: Some(ScoringQuery::Fusion(translate::fusion(text.fusion))),
            limit: search.limit,
            params: None,
            filter: None,
            score_threshold: None,
        }),
        (None, None) => Err(Error::internal("a search with neither a vector nor text")),
    }
}
