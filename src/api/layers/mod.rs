//! The edge: what every vecmem call crosses before its handler runs, the
//! same on both transports. Each concern is one tower layer; [`Edge::wrap`]
//! composes them, once, and the server applies it to the gRPC services and
//! to the REST gateway alike, so a limit or a deadline cannot hold on one
//! port and not on the other.
//!
//! Outermost first: observe (every call is logged and counted, shed and
//! expired ones included) → deadline (it bounds everything a call does,
//! admission included) → auth (a call without a valid key takes no slot)
//! → shed (the replica's concurrency limit, one pool of slots shared by
//! both transports) → the handler. A layer that answers a call itself does
//! so as the call's transport answers errors ([`Transport::answer`]): a gRPC
//! status with its details, or JSON with the HTTP status of the contract.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Response;
use axum::response::IntoResponse;
use tokio::sync::Semaphore;

use crate::auth::Authenticator;
use crate::error::Error;
use crate::metrics::Metrics;

pub mod auth;
pub mod deadline;
pub mod observe;
pub mod shed;

use auth::AuthLayer;
use deadline::DeadlineLayer;
use observe::ObserveLayer;
use shed::ShedLayer;

/// What the edge layers' services return: a boxed response future that
/// never fails (every error is an answer of the call's transport).
pub type EdgeFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Which protocol a call came in on, and so how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Rest,
}

impl Transport {
    /// `error` as this transport answers it: a trailers-only gRPC status
    /// (with `RetryInfo` and field violations), or the JSON error body with
    /// the HTTP status (and `Retry-After`) of the contract table.
    pub fn answer(self, error: Error) -> Response<Body> {
        match self {
            Transport::Grpc => tonic::Status::from(error).into_http(),
            Transport::Rest => error.into_response(),
        }
    }
}

/// The edge layers' shared state: built once per server.
#[derive(Clone)]
pub struct Edge {
    slots: Arc<Semaphore>,
    retry_after: Duration,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

impl Edge {
    /// At most `max_concurrency` calls in flight over both transports;
    /// calls beyond it are told to retry after `retry_after`.
    pub fn new(
        max_concurrency: usize,
        retry_after: Duration,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrency)),
            retry_after,
            auth,
            metrics,
        }
    }

    /// Puts `routes`, vecmem's RPCs as `transport` serves them, behind the
    /// edge. `Router::layer` wraps each route on its own, after routing, so
    /// every layer sees which route (and so which RPC) a call is for.
    pub fn wrap(&self, routes: Router, transport: Transport) -> Router {
        let shed = ShedLayer::new(
            self.slots.clone(),
            self.retry_after,
            self.metrics.clone(),
            transport,
        );
        routes
            // Innermost: a slot is held only by a call that will be served.
            .layer(shed)
            // Before admission: a call without a valid key takes no slot.
            .layer(AuthLayer::new(self.auth.clone(), transport))
            // The deadline covers everything a call does, shedding included;
            // when it passes, the call (and its slot) is dropped.
            .layer(DeadlineLayer::new(transport))
            // Outermost: shed calls and expired deadlines are logged and
            // counted too.
            .layer(ObserveLayer::new(self.metrics.clone(), transport))
    }
}
