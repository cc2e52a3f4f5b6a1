//! HTTP/1 keep-alive clients leave a draining replica after their next
//! answer, rather than losing a request to the drain.
//!
//! An HTTP/1 client reuses its connection for request after request, so it
//! does not follow the load balancer when the replica turns not ready: it
//! keeps sending down the connection it holds until the drain closes it,
//! and a request sent as that connection closes is lost without an answer
//! (the client cannot tell whether it ran). While the replica shuts down
//! (readiness off, still serving for `server.shutdown_delay_ms`), every
//! HTTP/1 answer therefore carries `Connection: close`: hyper closes the
//! connection once the answer is written, and the client's next request
//! opens a new one, which the load balancer sends to a replica that stays.
//! HTTP/2 clients need none of this: the drain's GOAWAY tells them which
//! requests were taken, and HTTP/2 forbids the header.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::CONNECTION;
use http::{HeaderValue, Version};

use crate::api::health::Health;

/// `axum::middleware::from_fn_with_state(health, close_http1_while_draining)`
/// on the HTTP port's router.
pub(super) async fn close_http1_while_draining(
    State(health): State<Arc<Health>>,
    request: Request,
    next: Next,
) -> Response {
    let http1 = request.version() <= Version::HTTP_11;
    let mut response = next.run(request).await;
    // Read once the answer is ready: a request that began before the drain
    // and ends during it closes its connection too.
    if http1 && health.is_shutting_down() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
