//! The Qdrant calls both floor devices make for vecmem's `Get` and
//! `Search` (`proxy_floor` over tonic, `h2_floor` over h2): the same point
//! ids, tenant filter, payload selection and limit as vecmem asks for.
//! Written once, so the devices cannot drift apart and what differs
//! between them is the transport alone.

use qdrant_client::qdrant::{Condition, Filter, GetPoints, PointId, Query, QueryPoints};
use vecmem::backend::layout;
use vecmem::proto::{GetRequest, SearchRequest};

/// The `Points/Get` call for `request`, in `collection`.
pub fn get_points(collection: &str, request: &GetRequest) -> GetPoints {
    let ids = request
        .ids
        .iter()
        .map(|id| PointId::from(layout::point_id(&request.tenant, id).to_string()))
        .collect();
    GetPoints {
        collection_name: collection.to_owned(),
        ids,
        with_payload: Some(true.into()),
        with_vectors: Some(request.with_vector.into()),
        ..GetPoints::default()
    }
}

/// The `Points/Query` call for `request` (its vector moved, not copied),
/// in `collection`.
pub fn query_points(collection: &str, request: SearchRequest) -> QueryPoints {
    QueryPoints {
        collection_name: collection.to_owned(),
        query: Some(Query::new_nearest(request.vector)),
        filter: Some(Filter::must([Condition::matches(
            layout::TENANT_FIELD,
            request.tenant,
        )])),
        limit: Some(u64::from(request.limit)),
        with_payload: Some(true.into()),
        with_vectors: Some(request.with_vector.into()),
        ..QueryPoints::default()
    }
}
