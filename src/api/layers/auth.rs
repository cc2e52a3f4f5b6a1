//! Authentication at the transport edge: the presented API key becomes a
//! [`Caller`](crate::auth::Caller) in the request's extensions before
//! admission, decoding or the core see the call. A call without a valid key
//! is answered here with UNAUTHENTICATED (REST: 401) and goes no further;
//! what a valid key may do is decided per tenant by the core.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::Transport;
use crate::auth::Authenticator;

/// Middleware for vecmem's RPCs on either transport, and for other HTTP
/// routes that need a key (`/metrics` when protected): the handler finds
/// the [`Caller`](crate::auth::Caller) in the request's extensions.
pub async fn authenticate(
    State((auth, transport)): State<(Arc<Authenticator>, Transport)>,
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
            super::shed::drain(request.into_body()).await;
            transport.answer(error)
        }
    }
}
