//! The floor under vecmem's CPU per call: a gRPC proxy with nothing in it.
//!
//! It serves vecmem's `Get` and `Search` and forwards each call to Qdrant
//! the stock way (tonic server, `qdrant-client`'s generated `PointsClient`
//! over a tonic `Channel`), with the same point ids, tenant filter and
//! payload selection as vecmem, and answers without converting anything:
//! no validation, no hits, no memories, no metrics, no cache, no batching.
//! Whatever it costs per call is what any tokio/tonic proxy in front of
//! Qdrant pays on the machine at hand, so `benches/proxy_cost.py --floor`
//! runs it beside vecmem and direct Qdrant to show how much of vecmem's CPU
//! per call is vecmem's own.
//!
//!     cargo build --profile profiling --example proxy_floor
//!     target/profiling/examples/proxy_floor LISTEN QDRANT_URL COLLECTION [WORKERS]
//!
//! Its answers are not vecmem's (every id missing, no hits): it is a
//! measuring device, not a server to call.

#[path = "common/qdrant_calls.rs"]
mod qdrant_calls;
#[path = "common/runtime.rs"]
mod runtime;

use qdrant_client::qdrant::points_client::PointsClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use vecmem::proto::memory_service_server::{MemoryService, MemoryServiceServer};
use vecmem::proto::*;

struct Floor {
    qdrant: PointsClient<Channel>,
    collection: String,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the floor proxy serves Get and Search only",
    ))
}

#[tonic::async_trait]
impl MemoryService for Floor {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        self.qdrant
            .clone()
            .get(qdrant_calls::get_points(&self.collection, &request))
            .await?;
        Ok(Response::new(GetResponse {
            memories: Vec::new(),
            missing_ids: request.ids,
        }))
    }

    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let request = request.into_inner();
        self.qdrant
            .clone()
            .query(qdrant_calls::query_points(&self.collection, request))
            .await?;
        Ok(Response::new(SearchResponse { hits: Vec::new() }))
    }

    async fn upsert(&self, _: Request<UpsertRequest>) -> Result<Response<UpsertResponse>, Status> {
        unimplemented()
    }

    async fn search_batch(
        &self,
        _: Request<SearchBatchRequest>,
    ) -> Result<Response<SearchBatchResponse>, Status> {
        unimplemented()
    }

    async fn search_groups(
        &self,
        _: Request<SearchGroupsRequest>,
    ) -> Result<Response<SearchGroupsResponse>, Status> {
        unimplemented()
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        unimplemented()
    }

    async fn scroll(&self, _: Request<ScrollRequest>) -> Result<Response<ScrollResponse>, Status> {
        unimplemented()
    }

    async fn count(&self, _: Request<CountRequest>) -> Result<Response<CountResponse>, Status> {
        unimplemented()
    }

    async fn update_payload(
        &self,
        _: Request<UpdatePayloadRequest>,
    ) -> Result<Response<UpdatePayloadResponse>, Status> {
        unimplemented()
    }

    async fn import(
        &self,
        _: Request<tonic::Streaming<ImportRequest>>,
    ) -> Result<Response<ImportResponse>, Status> {
        unimplemented()
    }

    type ExportStream = futures::stream::Empty<Result<ExportResponse, Status>>;

    async fn export(
        &self,
        _: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        unimplemented()
    }
}

fn main() -> anyhow::Result<()> {
    let usage = "usage: proxy_floor LISTEN QDRANT_URL COLLECTION [WORKERS]";
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(qdrant), Some(collection)) = (args.next(), args.next(), args.next())
    else {
        anyhow::bail!(usage);
    };
    runtime::runtime(args.next())?.block_on(async move {
        let channel = Channel::from_shared(qdrant)?
            .tcp_nodelay(true)
            .connect()
            .await?;
        let floor = Floor {
            qdrant: PointsClient::new(channel),
            collection,
        };
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(MemoryServiceServer::new(floor))
            .serve(listen.parse()?)
            .await?;
        Ok(())
    })
}
