//! gRPC adapters: each handler takes the caller the auth layer attached,
//! runs the RPC ([`calls`]) and marks stale answers. Nothing about
//! validation, tenancy or storage lives here.

use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::api::calls::{self, ImportStream};
use crate::auth::Caller;
use crate::core::Core;
use crate::error::Error;
use crate::model::Served;
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
fn respond<T>(served: Served<T>) -> Response<T> {
    let mut response = Response::new(served.value);
    if served.stale {
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
        Ok(Response::new(
            calls::upsert(&self.core, &caller, message).await?,
        ))
    }

    async fn search(
        &self,
        request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        Ok(respond(calls::search(&self.core, &caller, message).await?))
    }

    async fn search_batch(
        &self,
        request: Request<proto::SearchBatchRequest>,
    ) -> Result<Response<proto::SearchBatchResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        Ok(respond(
            calls::search_batch(&self.core, &caller, message).await?,
        ))
    }

    async fn search_groups(
        &self,
        request: Request<proto::SearchGroupsRequest>,
    ) -> Result<Response<proto::SearchGroupsResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        Ok(respond(
            calls::search_groups(&self.core, &caller, message).await?,
        ))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        Ok(respond(calls::get(&self.core, &caller, message).await?))
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        Ok(Response::new(
            calls::delete(&self.core, &caller, message).await?,
        ))
    }

    async fn scroll(
        &self,
        request: Request<proto::ScrollRequest>,
    ) -> Result<Response<proto::ScrollResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        Ok(Response::new(
            calls::scroll(&self.core, &caller, message).await?,
        ))
    }

    async fn count(
        &self,
        request: Request<proto::CountRequest>,
    ) -> Result<Response<proto::CountResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        Ok(Response::new(
            calls::count(&self.core, &caller, message).await?,
        ))
    }

    async fn update_payload(
        &self,
        request: Request<proto::UpdatePayloadRequest>,
    ) -> Result<Response<proto::UpdatePayloadResponse>, Status> {
        let (caller, message) = authenticated(request)?;
        Ok(Response::new(
            calls::update_payload(&self.core, &caller, message).await?,
        ))
    }

    async fn import(
        &self,
        request: Request<Streaming<proto::ImportRequest>>,
    ) -> Result<Response<proto::ImportResponse>, Status> {
        let (caller, mut messages) = authenticated(request)?;
        // An empty stream opens nothing: it is answered as a first message
        // without a namespace.
        let first = messages.message().await?.unwrap_or_default();
        let mut import = ImportStream::open(
            &self.core,
            &caller,
            first.namespace.clone(),
            first.tenant.clone(),
            first.skip_invalid,
        )?;
        import.message(first).await?;
        while let Some(message) = messages.message().await? {
            import.message(message).await?;
        }
        Ok(Response::new(import.finish().await?))
    }

    type ExportStream = BoxStream<'static, Result<proto::ExportResponse, Status>>;

    async fn export(
        &self,
        request: Request<proto::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let (caller, message) = authenticated(request)?;
        let pages = calls::export(&self.core, &caller, message).await?;
        Ok(Response::new(pages.map_err(Status::from).boxed()))
    }
}

#[tonic::async_trait]
impl NamespaceService for GrpcApi {
    async fn list_namespaces(
        &self,
        _request: Request<proto::ListNamespacesRequest>,
    ) -> Result<Response<proto::ListNamespacesResponse>, Status> {
        Ok(Response::new(calls::list_namespaces(&self.core).await?))
    }

    async fn describe_namespace(
        &self,
        request: Request<proto::DescribeNamespaceRequest>,
    ) -> Result<Response<proto::NamespaceInfo>, Status> {
        let message = request.into_inner();
        Ok(Response::new(
            calls::describe_namespace(&self.core, message).await?,
        ))
    }

    type SnapshotStream = BoxStream<'static, Result<proto::SnapshotChunk, Status>>;

    async fn snapshot(
        &self,
        request: Request<proto::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let (caller, message) = authenticated(request)?;
        let chunks = calls::snapshot(&self.core, &caller, message).await?;
        let messages = chunks.map(|chunk| match chunk {
            Ok(data) => Ok(proto::SnapshotChunk { data: data.into() }),
            Err(error) => Err(Status::from(error)),
        });
        Ok(Response::new(messages.boxed()))
    }
}
