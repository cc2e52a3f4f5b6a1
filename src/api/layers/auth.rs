//! Authentication at the transport edge: the presented API key becomes a
//! [`Caller`](crate::auth::Caller) in the request's extensions before
//! admission, decoding or the core see the call. A call without a valid key
//! is answered here with UNAUTHENTICATED (REST: 401) and goes no further;
//! what a valid key may do is decided per tenant by the core.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use super::{EdgeFuture, Transport};
use crate::auth::Authenticator;

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    transport: Transport,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>, transport: Transport) -> Self {
        Self { auth, transport }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// Puts the caller's [`Caller`](crate::auth::Caller) in the request's
/// extensions, or answers UNAUTHENTICATED. For vecmem's RPCs on either
/// transport, and for other HTTP routes that need a key (`/metrics` when
/// protected).
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = EdgeFuture;

    /// Always ready: the inner service (and so the shed layer's slot) is
    /// only made ready for a call whose key is valid.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        match self.layer.auth.authenticate(request.headers()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.clone().oneshot(request))
            }
            Err(error) => {
                let transport = self.layer.transport;
                Box::pin(async move {
                    // Read the body first, or h2 resets the stream (see `shed`).
                    super::shed::drain(request.into_body()).await;
                    Ok(transport.answer(error))
                })
            }
        }
    }
}
