//! Liveness and readiness, one state for both transports.
//!
//! `/health/live` answers 200 while the process runs. `/health/ready` and
//! `grpc.health.v1.Health` (overall and per service) report SERVING only while
//! the backend is ready and no shutdown has begun: readiness turns false at
//! the start of a graceful shutdown, so load balancers drain a replica before
//! its listeners close. `probe_ready` is the client side, used by
//! `vecmem health` (Docker's HEALTHCHECK).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::grpc::GrpcApi;
use crate::core::Core;
use crate::metrics::Metrics;
use crate::proto::memory_service_server::MemoryServiceServer;
use crate::proto::namespace_service_server::NamespaceServiceServer;

/// How often backend readiness is re-checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Shared readiness of this replica.
pub struct Health {
    core: Arc<Core>,
    reporter: HealthReporter,
    metrics: Arc<Metrics>,
    backend_ready: AtomicBool,
    shutting_down: AtomicBool,
}

impl Health {
    pub fn new(core: Arc<Core>, reporter: HealthReporter, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            core,
            reporter,
            metrics,
            backend_ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Why the replica is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.is_shutting_down() {
            Some("shutting down")
        } else if !self.backend_ready.load(Ordering::SeqCst) {
            Some("backend not ready")
        } else {
            None
        }
    }

    /// Whether the replica has begun to shut down.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Re-checks the backend now and publishes the result.
    pub async fn refresh(&self) {
        let ready = self.core.is_ready().await;
        self.backend_ready.store(ready, Ordering::SeqCst);
        self.publish().await;
    }

    /// Marks the replica as draining; readiness stays false from now on.
    pub async fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.publish().await;
    }

    async fn publish(&self) {
        let ready = self.not_ready_reason().is_none();
        self.metrics.set_ready(ready);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // tonic-health only notifies watchers when a status actually changes.
        for name in [
            "",
            service_name::<MemoryServiceServer<GrpcApi>>(),
            service_name::<NamespaceServiceServer<GrpcApi>>(),
        ] {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Keeps readiness current until the process ends.
    pub fn spawn_checker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let health = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(CHECK_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                health.refresh().await;
            }
        })
    }
}

fn service_name<S: NamedService>() -> &'static str {
    S::NAME
}

/// `/health/live` and `/health/ready`.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(|| async { Json(json!({"status": "live"})) }),
        )
        .route("/health/ready", get(ready))
        .with_state(health)
}

async fn ready(State(health): State<Arc<Health>>) -> (StatusCode, Json<serde_json::Value>) {
    match health.not_ready_reason() {
        None => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason})),
        ),
    }
}

/// GETs `url` and reports whether it answered 200 within `timeout`.
pub async fn probe_ready(url: &str, timeout: Duration) -> anyhow::Result<bool> {
    probe_ready_with(url, timeout, None).await
}

/// [`probe_ready`], also for `https://` URLs: the server must present the
/// certificate in `pinned` (its own `server.tls.cert_path`).
pub async fn probe_ready_with(
    url: &str,
    timeout: Duration,
    pinned: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    let uri: axum::http::Uri = url.parse()?;
    let status = tokio::time::timeout(timeout, async {
        if uri.scheme_str() == Some("https") {
            let pinned = pinned.ok_or_else(|| {
                anyhow::anyhow!(
                    "an https URL needs the server's certificate (server.tls.cert_path)"
                )
            })?;
            get_over_tls(&uri, pinned).await
        } else {
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            Ok(client.get(uri.clone()).await?.status())
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))??;
    Ok(status == StatusCode::OK)
}

/// One HTTP/1.1 GET over TLS to a server that must present `pinned`.
async fn get_over_tls(
    uri: &axum::http::Uri,
    pinned: &std::path::Path,
) -> anyhow::Result<StatusCode> {
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("{uri}: no host"))?;
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        crate::tls::pinned_client_config(pinned)?,
    ));
    // The pinned certificate is checked whatever name is asked for.
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let tls = connector.connect(name, tcp).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = axum::http::Request::get(uri.path())
        .header(axum::http::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?.status())
}
