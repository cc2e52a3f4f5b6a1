//! Serves the gRPC port as HTTP/2 only, so that a drain never cuts a call a
//! client has already sent.
//!
//! `axum::serve` sniffs each new connection for HTTP/1 or HTTP/2 first. A
//! connection accepted just before the drain starts, whose preface has not
//! been read yet, is then closed outright: the client, which wrote its
//! preface and first call in one flight, sees its call fail with a broken
//! pipe and cannot tell whether it ran. An HTTP/2 connection told to drain
//! while it is still handshaking finishes the handshake first, then sends
//! GOAWAY: calls sent with the preface are answered, later ones are refused
//! in a way clients retry. gRPC is HTTP/2 only (tonic's own server refuses
//! HTTP/1 too), so nothing is lost by not sniffing. The HTTP port, which
//! serves HTTP/1 clients, keeps `axum::serve`.
//!
//! For the same reason, connections the listener has taken but not handed
//! out when the drain starts (TLS handshakes done or under way) are served
//! and drained like the others, not dropped: see [`Drain`].

use axum::Router;
use axum::serve::{Listener, TapIo};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::tls::TlsListener;

/// A listener that may hold connections it has taken but not handed out.
pub trait Drain: Listener {
    /// Stops taking connections, then yields those already taken, one per
    /// call, and `None` once there are no more.
    fn drain(&mut self) -> impl Future<Output = Option<Self::Io>> + Send;
}

/// A TCP listener holds nothing of its own: the connections in the kernel's
/// backlog are reset when it closes, before the server read anything.
impl<F> Drain for TapIo<TcpListener, F>
where
    F: FnMut(&mut TcpStream) + Send + 'static,
{
    async fn drain(&mut self) -> Option<Self::Io> {
        None
    }
}

impl Drain for TlsListener {
    async fn drain(&mut self) -> Option<Self::Io> {
        TlsListener::drain(self).await.map(|(io, _peer)| io)
    }
}

/// Accepts connections until `stop` completes, then drains every accepted
/// connection (GOAWAY, in-flight calls answered) and returns once all are
/// closed. The caller bounds the drain.
pub async fn serve<L: Drain>(mut listener: L, router: Router, stop: impl Future<Output = ()>) {
    let builder = http2::Builder::new(TokioExecutor::new());
    let connections = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let io = tokio::select! {
            (io, _peer) = listener.accept() => io,
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::spawn(run(connections.watch(connection)));
    }
    // The connections served so far get their GOAWAY at once, while those
    // the listener still holds are served and told to drain as they come.
    let taken_late = async {
        let mut late = JoinSet::new();
        while let Some(io) = listener.drain().await {
            let service = TowerToHyperService::new(router.clone());
            let mut connection = Box::pin(builder.serve_connection(TokioIo::new(io), service));
            connection.as_mut().graceful_shutdown();
            late.spawn(run(connection));
        }
        drop(listener);
        late.join_all().await;
    };
    tokio::join!(connections.shutdown(), taken_late);
}

/// Drives one connection to its end; a client going away is not our error.
async fn run(connection: impl Future<Output = Result<(), hyper::Error>>) {
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "gRPC connection ended with an error");
    }
}
