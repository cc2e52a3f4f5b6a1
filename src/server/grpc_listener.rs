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

use axum::Router;
use axum::serve::Listener;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// Accepts connections until `stop` completes, then drains every accepted
/// connection (GOAWAY, in-flight calls answered) and returns once all are
/// closed. The caller bounds the drain.
pub async fn serve<L>(mut listener: L, router: Router, stop: impl Future<Output = ()>)
where
    L: Listener,
{
    let builder = http2::Builder::new(TokioExecutor::new());
    let connections = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let io = tokio::select! {
            (io, _peer) = listener.accept() => io,
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = connections.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "gRPC connection ended with an error");
            }
        });
    }
    // Closing the listener first: connections still in its backlog are
    // reset, which clients see as never taken.
    drop(listener);
    connections.shutdown().await;
}
