//! gRPC adapters: each handler takes the caller the auth layer attached,
//! runs the RPC ([`calls`]) and marks stale answers. Nothing about
//! validation, tenancy or storage lives here.

use std::convert::identity;
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

/// A service's impl: each unary RPC one line, `rpc: Request => Response,
/// served;` running [`calls`]`::rpc` for the authenticated caller, where
/// `served` makes its answer a [`Served`] (`Served::current` for answers that
/// never come from the cache, `identity` for those already `Served`). The
/// streaming RPCs follow, written out.
macro_rules! service {
    (
        impl $service:ident {
            $($rpc:ident: $request:ident => $response:ident, $served:path;)*
        }
        $($streaming:tt)*
    ) => {
        #[tonic::async_trait]
        impl $service for GrpcApi {
            $(
                async fn $rpc(
                    &self,
                    request: Request<proto::$request>,
                ) -> Result<Response<proto::$response>, Status> {
                    let (caller, message) = authenticated(request)?;
                    let answer = calls::$rpc(&self.core, &caller, message).await?;
                    Ok(respond($served(answer)))
                }
            )*
            $($streaming)*
        }
    };
}

service! {
    impl MemoryService {
        upsert: UpsertRequest => UpsertResponse, Served::current;
        search: SearchRequest => SearchResponse, identity;
        search_batch: SearchBatchRequest => SearchBatchResponse, identity;
        search_groups: SearchGroupsRequest => SearchGroupsResponse, identity;
        get: GetRequest => GetResponse, identity;
        delete: DeleteRequest => DeleteResponse, Served::current;
        scroll: ScrollRequest => ScrollResponse, Served::current;
        count: CountRequest => CountResponse, Served::current;
        update_payload: UpdatePayloadRequest => UpdatePayloadResponse, Served::current;
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

service! {
    impl NamespaceService {
        list_namespaces: ListNamespacesRequest => ListNamespacesResponse, Served::current;
        describe_namespace: DescribeNamespaceRequest => NamespaceInfo, Served::current;
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
