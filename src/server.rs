//! Assembles the service: opens the store, builds the core, starts the
//! expiry sweeper, and serves gRPC and HTTP until told to stop, then shuts
//! down in the order a load balancer needs: readiness off, still serving for
//! `server.shutdown_delay_ms`, listeners drained (bounded by
//! `server.shutdown_grace_ms`), the sweeper stopped, storage flushed. The
//! gRPC port speaks HTTP/2 only ([`grpc_listener`] says why); on the HTTP
//! port, HTTP/1 answers close their connection once the shutdown has begun
//! ([`http_drain`]).

mod grpc_listener;
mod http_drain;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::api;
use crate::api::grpc::GrpcApi;
use crate::api::health::{self, Health};
use crate::api::layers::auth::AuthLayer;
use crate::api::layers::deadline::DeadlineLayer;
use crate::api::layers::{Edge, Transport};
use crate::auth::Authenticator;
use crate::backend::VectorStore;
use crate::backend::embedded::EmbeddedStore;
use crate::backend::qdrant::QdrantStore;
use crate::config::{BackendKind, Config, NamespaceConfig};
use crate::core::Core;
use crate::metrics::Metrics;
use crate::pipeline;
use crate::proto;
use crate::proto::memory_service_server::MemoryServiceServer;
use crate::proto::namespace_service_server::NamespaceServiceServer;
use crate::sweeper::Sweeper;
use crate::tls::{self, TlsListener};
use tokio_rustls::TlsAcceptor;

/// Room for protobuf framing and ids per memory on top of vector and payload.
const PER_MEMORY_OVERHEAD: usize = 1024;

/// A started server; [`Server::shutdown`] stops it gracefully.
pub struct Server {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    core: Arc<Core>,
    health: Arc<Health>,
    stop: CancellationToken,
    listeners: Vec<JoinHandle<std::io::Result<()>>>,
    checker: JoinHandle<()>,
    sweeper: Option<Sweeper>,
    grace: Duration,
    delay: Duration,
}

/// Runs the service until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Registered before anything listens: a SIGTERM that arrives as soon as
    // the server is up must still shut it down gracefully.
    let mut signals = ShutdownSignals::install()?;
    let server = Server::start(config).await?;
    signals.recv().await;
    tracing::info!("shutdown signal received");
    server.shutdown().await
}

impl Server {
    /// Opens storage and binds both listeners (port 0 picks a free port).
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let backend = open_store(&config).await?;
        let pipeline = pipeline::build(&config, backend, metrics.clone())?;
        let core = Arc::new(Core::new(&config, pipeline)?);
        let sweeper = Sweeper::spawn(
            core.store().clone(),
            config.namespaces.keys().cloned().collect(),
            &config.expiry,
            metrics.clone(),
        );

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health::new(core.clone(), reporter, metrics.clone());
        health.refresh().await;
        let checker = health.spawn_checker();

        let auth = Arc::new(Authenticator::new(&config.auth.keys)?);
        if !auth.is_enabled() {
            tracing::warn!(
                "auth is OFF: no [[auth.keys]] configured, so any caller may act for any tenant"
            );
        }
        // One edge for both ports: one concurrency limit for the replica.
        let edge = Edge::new(
            config.admission.max_concurrency.get(),
            config.admission.retry_after,
            auth.clone(),
            metrics.clone(),
        );
        let grpc = grpc_router(&config, core.clone(), health_service, &edge)?;
        let http = http_router(&config, core.clone(), health.clone(), metrics, auth, &edge);

        let grpc_listener = bind(config.server.grpc_addr, "server.grpc_addr").await?;
        let http_listener = bind(config.server.http_addr, "server.http_addr").await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;

        let tls = tls::acceptor(&config.server.tls)?;
        let stop = CancellationToken::new();
        let listeners = vec![
            serve(grpc_listener, grpc, tls.clone(), &stop, Protocol::Grpc)?,
            serve(http_listener, http, tls.clone(), &stop, Protocol::Http)?,
        ];
        tracing::info!(%grpc_addr, %http_addr, tls = tls.is_some(), version = env!("CARGO_PKG_VERSION"), "vecmem listening");
        Ok(Self {
            grpc_addr,
            http_addr,
            core,
            health,
            stop,
            listeners,
            checker,
            sweeper,
            grace: config.server.shutdown_grace,
            delay: config.server.shutdown_delay,
        })
    }

    /// Readiness off, stop accepting, let in-flight calls finish (up to the
    /// grace period), then flush storage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.checker.abort();
        self.health.begin_shutdown().await;
        if !self.delay.is_zero() {
            tracing::info!(
                delay_ms = self.delay.as_millis() as u64,
                "not ready; still serving while load balancers catch up"
            );
            tokio::time::sleep(self.delay).await;
        }
        self.stop.cancel();
        let drained = tokio::time::timeout(self.grace, futures_join(self.listeners)).await;
        match drained {
            Ok(results) => {
                for result in results {
                    result.context("listener task")?.context("listener")?;
                }
            }
            Err(_) => tracing::warn!(
                grace_ms = self.grace.as_millis() as u64,
                "in-flight calls outlived the shutdown grace period"
            ),
        }
        if let Some(sweeper) = self.sweeper {
            sweeper.stop().await;
        }
        self.core.store().close().await?;
        tracing::info!("vecmem stopped");
        Ok(())
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn VectorStore>> {
    match config.backend.kind {
        BackendKind::Embedded => {
            let embedded = config.backend.embedded.clone();
            let namespaces = config.namespaces.clone();
            let store =
                tokio::task::spawn_blocking(move || EmbeddedStore::open(&embedded, &namespaces))
                    .await??;
            tracing::info!(path = %config.backend.embedded.path.display(), "embedded engine opened");
            Ok(Arc::new(store))
        }
        BackendKind::Qdrant => {
            let store = QdrantStore::open(&config.backend.qdrant, &config.namespaces).await?;
            tracing::info!(url = %config.backend.qdrant.url, "qdrant backend configured");
            Ok(Arc::new(store))
        }
    }
}

/// The gRPC services, served through axum so that our layers see every call.
fn grpc_router(
    config: &Config,
    core: Arc<Core>,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    edge: &Edge,
) -> anyhow::Result<Router> {
    let api = GrpcApi::new(core);
    let max_message = max_message_bytes(config);

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
    };
    let memory = MemoryServiceServer::new(api.clone())
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let namespaces = NamespaceServiceServer::new(api)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    // Only the vecmem services are behind the edge: health checks and
    // reflection must answer even when the replica is shedding load. They
    // are mounted the way tonic's own router mounts services.
    let vecmem = Router::new()
        .route_service(&grpc_path(MemoryServiceServer::<GrpcApi>::NAME), memory)
        .route_service(
            &grpc_path(NamespaceServiceServer::<GrpcApi>::NAME),
            namespaces,
        );
    let vecmem = edge.wrap(vecmem, Transport::Grpc);
    let operational = Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .into_axum_router()
        .layer(DeadlineLayer::new(Transport::Grpc));
    Ok(vecmem.merge(operational))
}

/// The largest request or response the limits allow: a full batch of the
/// widest namespace's vectors with the largest payloads.
fn max_message_bytes(config: &Config) -> usize {
    let max_dim = config
        .namespaces
        .values()
        .map(NamespaceConfig::dim)
        .max()
        .unwrap_or(0);
    config.limits.max_batch.get()
        * (max_dim * 4 + config.limits.max_payload_bytes.get() + PER_MEMORY_OVERHEAD)
}

/// Health, metrics and the REST gateway on the HTTP port.
fn http_router(
    config: &Config,
    core: Arc<Core>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    auth: Arc<Authenticator>,
    edge: &Edge,
) -> Router {
    // JSON spends ~10 bytes per float where protobuf spends 4.
    let body_limit = max_message_bytes(config).saturating_mul(3);
    let gateway = edge.wrap(api::rest::router(core, body_limit), Transport::Rest);
    let mut scrape = api::metrics::router(metrics);
    if config.auth.protect_metrics {
        scrape = scrape.layer(AuthLayer::new(auth, Transport::Rest));
    }
    health::router(health.clone())
        .merge(scrape)
        .merge(gateway)
        .merge(api::rest::openapi_router())
        .layer(axum::middleware::from_fn_with_state(
            health,
            http_drain::close_http1_while_draining,
        ))
}

/// The route of every method of a gRPC service.
fn grpc_path(service: &str) -> String {
    format!("/{service}/{{*method}}")
}

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({key})"))
}

/// What a listener serves, and so how its connections are driven.
#[derive(Clone, Copy)]
enum Protocol {
    /// HTTP/2 only: see [`grpc_listener`].
    Grpc,
    /// HTTP/1 and HTTP/2, as REST clients and scrapers speak both.
    Http,
}

fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    stop: &CancellationToken,
    protocol: Protocol,
) -> std::io::Result<JoinHandle<std::io::Result<()>>> {
    let stop = stop.clone().cancelled_owned();
    if let Some(acceptor) = tls {
        let listener = TlsListener::new(listener, acceptor)?;
        return Ok(tokio::spawn(serve_on(listener, router, stop, protocol)));
    }
    let listener = listener.tap_io(|tcp| {
        // Small unary calls: send each response at once, no Nagle delay.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    Ok(tokio::spawn(serve_on(listener, router, stop, protocol)))
}

async fn serve_on<L>(
    listener: L,
    router: Router,
    stop: WaitForCancellationFutureOwned,
    protocol: Protocol,
) -> std::io::Result<()>
where
    L: grpc_listener::Drain,
    L::Addr: std::fmt::Debug,
{
    match protocol {
        Protocol::Grpc => {
            grpc_listener::serve(listener, router, stop).await;
            Ok(())
        }
        Protocol::Http => {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}

async fn futures_join<T>(handles: Vec<JoinHandle<T>>) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await);
    }
    results
}

/// SIGINT and SIGTERM, registered when created.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
