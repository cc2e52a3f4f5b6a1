//! gRPC adapters: each handler converts the request, calls the core, and
//! converts the result back. Nothing about validation, tenancy or storage
//! lives here.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::api::convert::{search_batch_from_proto, search_response};
use crate::auth::Caller;
use crate::core::Core;
use crate::error::Error;
use crate::proto;
use crate::proto::memory_service_server::MemoryService;
use crate::proto::namespace_service_server::NamespaceService;

/// Response metadata set on answers served stale.
pub const STALE_HEADER: &str = "x-vecmem-stale";

/// Serves `vecmem.v1.MemoryService` and `vecmem.v1.NamespaceService`.
#[derive(Clone)]
pub struct GrpcApi {
    core: Arc<Core>,
}

impl GrpcApi {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

/// The caller the auth layer attached, and the message.
fn authenticated<T>(request: Request<T>) -> Result<(Caller, T), Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Error::internal("a call reached its handler without authentication"))?;
    Ok((caller, request.into_inner()))
}

/// A response, marked `x-vecmem-stale: true` when it was served from an
/// expired cache entry because the backend is unavailable.
fn respond<T>(message: T, stale: bool) -> Response<T> {
    let mut response = Response::new(message);
    if stale {
        response
            .metadata_mut()
            .insert(STALE_HEADER, MetadataValue::from_static("true"));
    }
    response
}

#[tonic::async_trait]
impl MemoryService for GrpcApi {
    async fn upsert(
        &self,
        request: Request<proto::UpsertRequest>,
    ) -> Result<Response<proto::UpsertResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        let ids = self.core.upsert(&caller, message.try_into()?).await?;
        Ok(Response::new(proto::UpsertResponse { ids }))
    }

    async fn search(
        &self,
        request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        let served = self.core.search(&caller, message.try_into()?).await?;
        Ok(respond(search_response(served.value), served.stale))
    }

    async fn search_batch(
        &self,
        request: Request<proto::SearchBatchRequest>,
    ) -> Result<Response<proto::SearchBatchResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        let served = self
            .core
            .search_batch(&caller, search_batch_from_proto(message)?)
            .await?;
        let response = proto::SearchBatchResponse {
            results: served.value.into_iter().map(search_response).collect(),
        };
        Ok(respond(response, served.stale))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        let served = self.core.get(&caller, message.try_into()?).await?;
        let found = served.value;
        let response = proto::GetResponse {
            memories: found.memories.into_iter().map(Into::into).collect(),
            missing_ids: found.missing_ids,
        };
        Ok(respond(response, served.stale))
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        self.core.delete(&caller, message.try_into()?).await?;
        Ok(Response::new(proto::DeleteResponse {}))
    }

    async fn scroll(
        &self,
        request: Request<proto::ScrollRequest>,
    ) -> Result<Response<proto::ScrollResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        let page = self.core.scroll(&caller, message.try_into()?).await?;
        Ok(Response::new(proto::ScrollResponse {
            memories: page.memories.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn count(
        &self,
        request: Request<proto::CountRequest>,
    ) -> Result<Response<proto::CountResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        let count = self.core.count(&caller, message.try_into()?).await?;
        Ok(Response::new(proto::CountResponse { count }))
    }

    async fn update_payload(
        &self,
        request: Request<proto::UpdatePayloadRequest>,
    ) -> Result<Response<proto::UpdatePayloadResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        let result = self
            .core
            .update_payload(&caller, message.try_into()?)
            .await?;
        Ok(Response::new(proto::UpdatePayloadResponse {
            updated_ids: result.updated_ids,
            missing_ids: result.missing_ids,
        }))
    }
}

#[tonic::async_trait]
impl NamespaceService for GrpcApi {
    async fn list_namespaces(
        &self,
        _request: Request<proto::ListNamespacesRequest>,
    ) -> Result<Response<proto::ListNamespacesResponse>, Status> {
        let namespaces = self.core.list_namespaces().await?;
        Ok(Response::new(proto::ListNamespacesResponse {
            namespaces: namespaces.into_iter().map(Into::into).collect(),
        }))
    }

    async fn describe_namespace(
        &self,
        request: Request<proto::DescribeNamespaceRequest>,
    ) -> Result<Response<proto::NamespaceInfo>, Status> {
        let proto::DescribeNamespaceRequest { namespace } = request.into_inner();
        Ok(Response::new(
            self.core.describe_namespace(&namespace).await?.into(),
        ))
    }
}
