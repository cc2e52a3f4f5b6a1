//! Per-request observation, the same on both transports: a request id, one
//! log line, and the request metrics (`vecmem_requests_total{rpc,code}`,
//! `vecmem_request_duration_seconds{rpc}`, `vecmem_inflight_requests`).
//!
//! The request id is the caller's `x-request-id` when it sends a sane one
//! (1-128 visible ASCII characters), else a new UUIDv7. It is returned in the
//! `x-request-id` response header (gRPC response metadata), and it is a field
//! of the `request` span, so every log line written while serving the call
//! carries it. The call's own line is at debug when it succeeded, at error
//! for INTERNAL/UNKNOWN/DATA_LOSS, and at warn for every other failure, with
//! the gRPC code; payloads and vectors are never logged.
//!
//! It wraps each transport outermost, so shed calls and expired deadlines are
//! counted with their codes. gRPC: the code is read from the response
//! headers; vecmem's RPCs are unary, and tonic puts a failed unary call's
//! `grpc-status` in the headers (a trailers-only response), so a response
//! without one succeeded. REST: the code travels with the error response
//! ([`ErrorCode`]). A call abandoned by its client counts as CANCELLED.
//! `rpc` comes from the RPC table ([`rpcs`]), so label values stay bounded
//! whatever paths clients send.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Request, Response};
use tokio::time::Instant;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument;
use uuid::Uuid;

use super::{EdgeFuture, Transport};
use crate::api::rpcs;
use crate::error::{ErrorCode, code_name};
use crate::metrics::Metrics;

const REQUEST_ID: &str = "x-request-id";

#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>, transport: Transport) -> Self {
        Self { metrics, transport }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S> Service<Request<Body>> for Observe<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let transport = self.layer.transport;
        let rpc = rpc_name(&request, transport);
        let request_id = request_id(&request);
        let span = tracing::info_span!("request", request_id = %request_id, rpc);
        self.layer.metrics.request_started();
        // Counted as CANCELLED if the call is dropped before it answers.
        let observed = Observed {
            metrics: self.layer.metrics.clone(),
            rpc,
            span: span.clone(),
            started: Instant::now(),
            done: false,
        };
        let future = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let mut response = future.await?;
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            observed.finish(code_of(&response, transport));
            Ok(response)
        })
    }
}

/// The RPC's name from the table, or `unknown`: label values stay bounded
/// whatever paths clients send.
fn rpc_name(request: &Request<Body>, transport: Transport) -> &'static str {
    let spec = match transport {
        Transport::Grpc => rpcs::by_grpc_path(request.uri().path()),
        Transport::Rest => request
            .extensions()
            .get::<MatchedPath>()
            .and_then(|path| rpcs::by_rest_route(path.as_str())),
    };
    spec.map_or("unknown", |spec| spec.name)
}

/// The call's gRPC code: from a trailers-only response's `grpc-status`
/// header (none means OK), or from the REST error response's extension.
fn code_of(response: &Response<Body>, transport: Transport) -> Code {
    match transport {
        Transport::Grpc => response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<i32>().ok())
            .map_or(Code::Ok, Code::from),
        Transport::Rest => response
            .extensions()
            .get::<ErrorCode>()
            .map_or(Code::Ok, |code| code.0),
    }
}

/// A call being served; dropped before [`Observed::finish`], it was cancelled.
struct Observed {
    metrics: Arc<Metrics>,
    rpc: &'static str,
    span: tracing::Span,
    started: Instant,
    done: bool,
}

impl Observed {
    fn finish(mut self, code: Code) {
        self.done = true;
        self.record(code);
    }

    fn record(&self, code: Code) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.metrics
            .request_finished(self.rpc, code_name(code), seconds);
        let _entered = self.span.enter();
        let (name, duration_ms) = (code_name(code), seconds * 1000.0);
        match code {
            Code::Ok => tracing::debug!(code = name, duration_ms, "request served"),
            Code::Internal | Code::Unknown | Code::DataLoss => {
                tracing::error!(code = name, duration_ms, "request failed")
            }
            _ => tracing::warn!(code = name, duration_ms, "request failed"),
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if !self.done {
            self.record(Code::Cancelled);
        }
    }
}

/// The caller's request id if it is sane, else a new one.
fn request_id(request: &Request<Body>) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}
