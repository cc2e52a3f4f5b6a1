//! Request metrics of the gRPC services and the REST gateway: `vecmem_requests_total{rpc,code}`,
//! `vecmem_request_duration_seconds{rpc}` and `vecmem_inflight_requests`.
//!
//! It wraps the vecmem services outside the deadline and admission layers,
//! so shed calls and expired deadlines are counted with their codes. The code
//! is read from the response headers: vecmem's RPCs are unary, and tonic
//! puts a failed unary call's `grpc-status` in the headers (a trailers-only
//! response); a call whose headers carry none succeeded. A call abandoned by
//! its client is counted as CANCELLED. `rpc` is the method name, taken from a
//! fixed list, so label values stay bounded whatever paths clients send.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;
use tonic::Code;

use crate::error::{ErrorCode, code_name};
use crate::metrics::Metrics;

/// Every method of MemoryService and NamespaceService.
const RPCS: [&str; 10] = [
    "Upsert",
    "Search",
    "SearchBatch",
    "Get",
    "Delete",
    "Scroll",
    "Count",
    "UpdatePayload",
    "ListNamespaces",
    "DescribeNamespace",
];

/// Counts a call in flight until dropped; a call dropped before it recorded
/// its outcome was cancelled.
struct InFlight {
    metrics: Arc<Metrics>,
    rpc: &'static str,
    started: Instant,
    done: bool,
}

impl InFlight {
    fn finish(mut self, code: &'static str) {
        self.done = true;
        self.metrics
            .request_finished(self.rpc, code, self.started.elapsed().as_secs_f64());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.request_finished(
                self.rpc,
                code_name(Code::Cancelled),
                self.started.elapsed().as_secs_f64(),
            );
        }
    }
}

pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let rpc = rpc_name(request.uri().path());
    metrics.request_started();
    let in_flight = InFlight {
        metrics,
        rpc,
        started: Instant::now(),
        done: false,
    };
    let response = next.run(request).await;
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from);
    in_flight.finish(code_name(code));
    response
}

/// The same for the REST gateway: the RPC from the matched route, the code
/// from the error the response carries ([`ErrorCode`]), else OK.
pub async fn record_rest(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let rpc = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unknown", |path| rest_rpc_name(path.as_str()));
    metrics.request_started();
    let in_flight = InFlight {
        metrics,
        rpc,
        started: Instant::now(),
        done: false,
    };
    let response = next.run(request).await;
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map_or(code_name(Code::Ok), |code| code.0);
    in_flight.finish(code);
    response
}

/// `/v1/namespaces/{namespace}/memories/search` → `Search`, and so on.
fn rest_rpc_name(route: &str) -> &'static str {
    match route.rsplit('/').next().unwrap_or_default() {
        "memories" => "Upsert",
        "search" => "Search",
        "search_batch" => "SearchBatch",
        "get" => "Get",
        "delete" => "Delete",
        "scroll" => "Scroll",
        "count" => "Count",
        "update_payload" => "UpdatePayload",
        "namespaces" => "ListNamespaces",
        "{namespace}" => "DescribeNamespace",
        _ => "unknown",
    }
}

/// `/vecmem.v1.MemoryService/Search` → `Search`; anything else → `unknown`.
fn rpc_name(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap_or_default();
    RPCS.into_iter()
        .find(|rpc| *rpc == method)
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_labels_come_from_the_fixed_list() {
        assert_eq!(
            rpc_name("/vecmem.v1.MemoryService/SearchBatch"),
            "SearchBatch"
        );
        assert_eq!(
            rpc_name("/vecmem.v1.NamespaceService/DescribeNamespace"),
            "DescribeNamespace"
        );
        assert_eq!(
            rpc_name("/vecmem.v1.MemoryService/tenant-42-secret"),
            "unknown"
        );
    }
}
