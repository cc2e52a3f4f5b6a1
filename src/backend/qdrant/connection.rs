//! One Qdrant peer's HTTP/2 connections, called straight from the task that
//! serves the request.
//!
//! tonic's `Channel` puts a buffer task in front of its connections (and a
//! balancer when there are several): every call is handed to that task and
//! its answer handed back, two cross-task hand-offs and several boxed
//! futures per call (worth 8-11% of a search's CPU in vecmem, see
//! benches/README.md). Here a call goes to one of the peer's `pool_size` HTTP/2
//! connections, taken round robin, each a hyper-util [`Singleton`]: made on
//! first use, shared by every call, and made again on the next call after it
//! fails. What `Channel` did besides is done here too: the peer's scheme and
//! authority on every request, the connect timeout, TCP_NODELAY, HTTP/2
//! keep-alive pings (also while idle), TLS with the system's roots for
//! `https://`. tonic's channel also enforced each call's `grpc-timeout`;
//! here every caller bounds its own calls (`QdrantStore::send_raw` and the
//! peers' health probe), so a peer that accepts and never answers cannot
//! hold a call past its timeout.
//!
//! A failure to connect is UNAVAILABLE with the cause as its source, so the
//! peer list sees it as a transport failure and moves the call on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::pool::singleton::Singleton;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::Status;
use tonic::body::Body;
use tower::{Service, ServiceExt};

use crate::config::QdrantConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// A peer's connections: a `Clone`, tonic-ready service for its clients
/// (`PointsClient::new(connections.clone())`).
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Pool>,
}

struct Pool {
    origin: Uri,
    slots: Vec<Singleton<Connector, Uri>>,
    next: AtomicUsize,
}

impl Connections {
    /// Connections to `url`, none made yet: each is made on its first call.
    pub fn lazy(config: &QdrantConfig, url: &str) -> anyhow::Result<Self> {
        let origin: Uri = url
            .parse()
            .with_context(|| format!("backend.qdrant.url: {url} is not a URL"))?;
        let tls = match origin.scheme_str() {
            Some("http") => None,
            Some("https") => Some(tls_connector()?),
            _ => anyhow::bail!("backend.qdrant.url: {url} must start with http:// or https://"),
        };
        if origin.host().is_none() {
            anyhow::bail!("backend.qdrant.url: {url} has no host");
        }
        let connector = Connector {
            settings: Arc::new(Settings {
                connect_timeout: config.connect_timeout,
                keep_alive_interval: config.keep_alive_interval,
                tls,
            }),
        };
        let slots = (0..config.pool_size.get())
            .map(|_| Singleton::new(connector.clone()))
            .collect();
        Ok(Self {
            inner: Arc::new(Pool {
                origin,
                slots,
                next: AtomicUsize::new(0),
            }),
        })
    }
}

impl Service<Request<Body>> for Connections {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = BoxFuture<Response<Incoming>>;

    /// Always ready: a connection is made, or found broken, by the call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let pool = &self.inner;
        if let Err(err) = set_origin(&mut request, &pool.origin) {
            return Box::pin(std::future::ready(Err(err)));
        }
        let turn = pool.next.fetch_add(1, Ordering::Relaxed);
        let mut slot = pool.slots[turn % pool.slots.len()].clone();
        let target = pool.origin.clone();
        Box::pin(async move {
            let mut connection = slot.ready().await?.call(target).await?;
            // A closed connection fails here, and the slot is emptied so the
            // next call makes a new one.
            connection.ready().await?;
            Ok(connection.call(request).await?)
        })
    }
}

/// Puts the peer's scheme and authority on a request that carries only a
/// path, as tonic's generated clients send it.
fn set_origin(request: &mut Request<Body>, origin: &Uri) -> Result<(), BoxError> {
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = origin.clone().into_parts();
    parts.path_and_query = Some(path);
    *request.uri_mut() = Uri::from_parts(parts)?;
    Ok(())
}

struct Settings {
    connect_timeout: Duration,
    keep_alive_interval: Duration,
    tls: Option<TlsConnector>,
}

/// Makes one HTTP/2 connection to a peer and spawns the task that drives it.
#[derive(Clone)]
struct Connector {
    settings: Arc<Settings>,
}

impl Service<Uri> for Connector {
    type Response = Sender;
    type Error = BoxError;
    type Future = BoxFuture<Sender>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let settings = self.settings.clone();
        Box::pin(async move {
            connect(&settings, &target)
                .await
                .map_err(|err| unavailable(&target, err))
        })
    }
}

async fn connect(settings: &Settings, target: &Uri) -> Result<Sender, BoxError> {
    let host = target.host().ok_or("no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = target
        .port_u16()
        .unwrap_or(if target.scheme() == Some(&Scheme::HTTPS) {
            443
        } else {
            80
        });
    let tcp = tokio::time::timeout(settings.connect_timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| "connect timed out")??;
    tcp.set_nodelay(true)?;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.keep_alive_interval)
        .keep_alive_while_idle(true);
    let sender = match &settings.tls {
        None => handshake(&builder, tcp).await?,
        Some(tls) => {
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())?;
            let stream = tokio::time::timeout(settings.connect_timeout, tls.connect(name, tcp))
                .await
                .map_err(|_| "TLS handshake timed out")??;
            handshake(&builder, stream).await?
        }
    };
    Ok(Sender(sender))
}

async fn handshake<T>(
    builder: &http2::Builder<TokioExecutor>,
    io: T,
) -> Result<http2::SendRequest<Body>, BoxError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = builder.handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "qdrant connection closed");
        }
    });
    Ok(sender)
}

/// A connection failure as tonic reports one: UNAVAILABLE, with its cause.
fn unavailable(target: &Uri, cause: BoxError) -> BoxError {
    let mut status = Status::unavailable(format!("cannot connect to {target}: {cause}"));
    status.set_source(Arc::from(cause));
    Box::new(status)
}

/// The sending half of one HTTP/2 connection, as a tower service.
#[derive(Clone)]
struct Sender(http2::SendRequest<Body>);

impl Service<Request<Body>> for Sender {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// TLS to Qdrant, trusting the system's root certificates, offering HTTP/2.
fn tls_connector() -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate the system has but rustls cannot use is skipped, as
        // tonic's `with_native_roots` does.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        anyhow::bail!(
            "backend.qdrant.url is https:// but no usable system root certificate was found: {:?}",
            found.errors
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use qdrant_client::qdrant::HealthCheckRequest;
    use qdrant_client::qdrant::qdrant_client::QdrantClient;
    use tonic::Code;

    use super::*;
    use crate::backend::qdrant::peers::is_transport_failure;

    fn connections(url: &str) -> Connections {
        let config = crate::config::Config::load(None).expect("defaults");
        Connections::lazy(&config.backend.qdrant, url).expect("url")
    }

    /// A peer nobody listens on: UNAVAILABLE, and a transport failure, so
    /// the call moves on to the next peer.
    #[tokio::test]
    async fn a_refused_connection_is_an_unavailable_transport_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let mut client = QdrantClient::new(connections(&format!("http://127.0.0.1:{port}")));
        let status = client
            .health_check(HealthCheckRequest {})
            .await
            .expect_err("nobody listens");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(is_transport_failure(&status), "{status:?}");
    }

    #[test]
    fn requests_get_the_peers_scheme_and_authority() {
        let origin: Uri = "http://qdrant-0.qdrant:6334".parse().expect("uri");
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = "/qdrant.Points/Get".parse().expect("path");
        set_origin(&mut request, &origin).expect("origin");
        assert_eq!(
            request.uri().to_string(),
            "http://qdrant-0.qdrant:6334/qdrant.Points/Get"
        );
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        let config = crate::config::Config::load(None).expect("defaults");
        for url in ["qdrant:6334", "ftp://qdrant:6334", "http://"] {
            assert!(
                Connections::lazy(&config.backend.qdrant, url).is_err(),
                "{url}"
            );
        }
    }
}
