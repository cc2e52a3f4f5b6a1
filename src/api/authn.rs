//! Authentication at the transport edge: the presented API key becomes a
//! [`Caller`] in the request's extensions before admission, decoding or the
//! core see the call. A call without a valid key is answered here with
//! UNAUTHENTICATED and goes no further; what a valid key may do is decided
//! per tenant by the core.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Authenticator;

/// Middleware for the gRPC services.
pub async fn grpc(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth.authenticate(request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => {
            // Read the body first, or h2 resets the stream (see `shed`).
            crate::pipeline::shed::drain(request.into_body()).await;
            tonic::Status::from(error).into_http()
        }
    }
}

/// Middleware for HTTP routes that need a key (`/metrics` when protected);
/// the REST gateway authenticates in its handlers.
pub async fn http(
    State(auth): State<Arc<Authenticator>>,
    request: Request,
    next: Next,
) -> Response {
    match auth.authenticate(request.headers()) {
        Ok(_) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}
