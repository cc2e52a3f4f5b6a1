//! Where `vecmem bench` sends its calls: a vecmem server over gRPC, or, with
//! `--direct-qdrant URL`, Qdrant itself.
//!
//! The direct target is the baseline "what would calling Qdrant cost": the
//! same requests, translated by the same code vecmem uses (tenant filter,
//! point ids, payload layout; `backend::qdrant`), each call one Qdrant call,
//! with no vecmem hop, no batching and no cache. So vecmem against direct,
//! on one Qdrant and one workload, measures what the service adds or saves.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;

use crate::api::calls;
use crate::auth::Caller;
use crate::backend::qdrant::QdrantStore;
use crate::bench::workload::Call;
use crate::config::Config;
use crate::core::Core;
use crate::metrics::Metrics;
use crate::proto;
use crate::proto::memory_service_client::MemoryServiceClient;

#[derive(Clone)]
pub enum Target {
    Vecmem(MemoryServiceClient<Channel>),
    Direct(Arc<Core>),
}

impl Target {
    pub fn vecmem(channel: Channel) -> Self {
        Target::Vecmem(
            MemoryServiceClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
    }

    /// Qdrant at `url`, with namespace `namespace` of `dim` dimensions (and
    /// `text_field`) as vecmem would lay it out (created if missing).
    pub async fn direct(
        url: &str,
        namespace: &str,
        dim: usize,
        text_field: Option<&str>,
    ) -> anyhow::Result<Self> {
        let key = namespace.to_uppercase().replace('-', "_");
        let mut env = vec![
            ("VECMEM__BACKEND__KIND".to_owned(), "qdrant".to_owned()),
            ("VECMEM__BACKEND__QDRANT__URL".to_owned(), url.to_owned()),
            (format!("VECMEM__NAMESPACES__{key}__DIM"), dim.to_string()),
            (
                "VECMEM__PIPELINE__BATCH__ENABLED".to_owned(),
                "false".to_owned(),
            ),
            (
                "VECMEM__PIPELINE__CACHE__ENABLED".to_owned(),
                "false".to_owned(),
            ),
            ("VECMEM__RESILIENCE__MAX_RETRIES".to_owned(), "0".to_owned()),
            (
                "VECMEM__RESILIENCE__CIRCUIT_FAILURE_THRESHOLD".to_owned(),
                "0".to_owned(),
            ),
        ];
        if let Some(field) = text_field {
            env.push((
                format!("VECMEM__NAMESPACES__{key}__TEXT_FIELD"),
                field.to_owned(),
            ));
        }
        let mut config = Config::load_with_env(None, env).context("direct-qdrant settings")?;
        // Only the namespace under test is touched on the user's Qdrant.
        config.namespaces.retain(|name, _| name == namespace);
        let store = QdrantStore::open(&config.backend.qdrant, &config.namespaces)
            .await
            .with_context(|| format!("--direct-qdrant {url}"))?;
        let pipeline = crate::pipeline::build(&config, Arc::new(store), Arc::new(Metrics::new()))?;
        Ok(Target::Direct(Arc::new(Core::new(&config, pipeline)?)))
    }

    pub async fn send(&mut self, call: Call, timeout: Duration) -> Result<(), tonic::Status> {
        match self {
            Target::Vecmem(client) => send_grpc(client, call, timeout).await,
            Target::Direct(core) => {
                let deadline = tokio::time::Instant::now() + timeout;
                crate::deadline::scope(deadline, send_direct(core, call))
                    .await
                    .map_err(tonic::Status::from)
            }
        }
    }

    pub async fn upsert(&mut self, request: proto::UpsertRequest) -> Result<(), tonic::Status> {
        self.send(Call::Upsert(request), Duration::from_secs(60))
            .await
    }
}

async fn send_grpc(
    client: &mut MemoryServiceClient<Channel>,
    call: Call,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        request
    }
    match call {
        Call::Search(r) => client.search(request(*r, timeout)).await.map(drop),
        Call::Upsert(r) => client.upsert(request(r, timeout)).await.map(drop),
        Call::Get(r) => client.get(request(r, timeout)).await.map(drop),
        Call::Delete(r) => client.delete(request(r, timeout)).await.map(drop),
    }
}

async fn send_direct(core: &Core, call: Call) -> crate::error::Result<()> {
    let anyone = Caller::Anyone;
    match call {
        Call::Search(r) => calls::search(core, &anyone, *r).await.map(drop),
        Call::Upsert(r) => calls::upsert(core, &anyone, r).await.map(drop),
        Call::Get(r) => calls::get(core, &anyone, r).await.map(drop),
        Call::Delete(r) => calls::delete(core, &anyone, r).await.map(drop),
    }
}
