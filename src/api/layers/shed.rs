//! Load shedding: a limit on calls in flight for the whole replica, and
//! RESOURCE_EXHAUSTED with a `RetryInfo` (REST: 429 with `Retry-After`) at
//! once for calls beyond it, never a queue.
//!
//! A slot is reserved in `poll_ready` and held until the call's response
//! body hands over its last frame (or is dropped): for a unary call that is
//! its trailers, for a streamed Export the trailers after its last page, so
//! a stream holds its slot for as long as it runs. The slot is freed as the
//! last frame leaves, not when the transport later drops the body: a client
//! that sends its next call the moment an answer arrives, as each of 64
//! callers against a limit of 64 does, must find its slot free, and one
//! freed only at the drop was shed 3 times in 240,000 such calls while
//! writes were paced. A call that finds no slot is answered without reaching the
//! service, but only after its request body has been read to the end: over
//! HTTP/2, answering a stream whose body is still arriving makes the server
//! reset it, and h2 closes the whole connection (GOAWAY, "too many internal
//! resets") after 1,024 such resets. Under sustained overload that would
//! break the admitted calls sharing the connection, exactly when shedding is
//! meant to protect them. Draining is bounded in bytes and time.
//!
//! It sits before decoding, so an overloaded replica spends almost nothing
//! on a shed call. Health, metrics and reflection are outside it, so probes
//! still answer under overload.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::{EdgeFuture, Transport};
use crate::error::Error;
use crate::metrics::Metrics;

/// At most this much of a shed call's body is read before answering.
const DRAIN_BYTES: usize = 4 << 20;
/// And for at most this long.
const DRAIN_TIME: Duration = Duration::from_millis(250);

/// Reads what is left of a request body and discards it, within bounds.
pub async fn drain(mut body: Body) {
    let read = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |data| data.len());
            if seen > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

#[derive(Clone)]
pub struct ShedLayer {
    slots: Arc<Semaphore>,
    retry_after: Duration,
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl ShedLayer {
    /// Calls take one of `slots` (shared with the other transport's layer)
    /// for as long as they run.
    pub fn new(
        slots: Arc<Semaphore>,
        retry_after: Duration,
        metrics: Arc<Metrics>,
        transport: Transport,
    ) -> Self {
        Self {
            slots,
            retry_after,
            metrics,
            transport,
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            layer: self.clone(),
            slot: None,
        }
    }
}

pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
    /// Reserved by `poll_ready` for the next call, if one was free.
    slot: Option<OwnedSemaphorePermit>,
}

impl<S: Clone> Clone for Shed<S> {
    fn clone(&self) -> Self {
        // A reservation belongs to the service that made it.
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
            slot: None,
        }
    }
}

impl<S> Service<Request<Body>> for Shed<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.slot.is_none() {
            self.slot = self.layer.slots.clone().try_acquire_owned().ok();
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> EdgeFuture {
        match self.slot.take() {
            Some(slot) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    Ok(response?.map(|body| {
                        Body::new(HoldingSlot {
                            body,
                            slot: Some(slot),
                        })
                    }))
                })
            }
            None => {
                self.layer.metrics.shed("concurrency");
                let error = Error::ResourceExhausted {
                    reason: "server overloaded; retry later".into(),
                    retry_after: self.layer.retry_after,
                };
                let transport = self.layer.transport;
                Box::pin(async move {
                    drain(request.into_body()).await;
                    Ok(transport.answer(error))
                })
            }
        }
    }
}

/// A response body that holds its call's slot until its last frame is
/// handed over, or it is dropped.
struct HoldingSlot {
    body: Body,
    slot: Option<OwnedSemaphorePermit>,
}

impl HttpBody for HoldingSlot {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let last = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || self.body.is_end_stream(),
            Poll::Ready(_) => true,
            Poll::Pending => false,
        };
        if last {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn calls_beyond_the_limit_are_shed_at_once_with_retry_info() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let metrics = Arc::new(Metrics::new());
        let mock = tower::util::MapErr::new(mock, |_: tower::BoxError| -> Infallible {
            unreachable!("the mock answers every call it gets")
        });
        let service = ShedLayer::new(
            Arc::new(Semaphore::new(1)),
            Duration::from_millis(250),
            metrics.clone(),
            Transport::Grpc,
        )
        .layer(mock);

        // The first call takes the only slot and stays in flight.
        let first = tokio::spawn(service.clone().oneshot(Request::new(Body::empty())));
        let (_request, in_flight) = handle
            .next_request()
            .await
            .expect("first call reached the service");

        // The second is answered at once, without reaching the service.
        let shed = service
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .expect("infallible");
        let status = tonic::Status::from_header_map(shed.headers()).expect("grpc status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(Duration::from_millis(250)));
        assert!(
            metrics
                .encode()
                .contains(r#"vecmem_shed_total{reason="concurrency"} 1"#),
            "{}",
            metrics.encode()
        );

        // When the first finishes, its slot is free again.
        in_flight.send_response(Response::new(Body::empty()));
        let done = first.await.expect("join").expect("infallible");
        assert!(tonic::Status::from_header_map(done.headers()).is_none());
        // Its slot is held by its body until the body is sent.
        drop(done);
        let mut service = service;
        let third = tokio::spawn(async move {
            service
                .ready()
                .await
                .expect("ready")
                .call(Request::new(Body::empty()))
                .await
        });
        let (_request, respond) = handle.next_request().await.expect("third call admitted");
        respond.send_response(Response::new(Body::empty()));
        third.await.expect("join").expect("infallible");
    }

    /// The slot is free once the last frame (a gRPC call's trailers) has
    /// been handed over, before the transport drops the body.
    #[tokio::test]
    async fn the_slot_is_freed_with_the_last_frame() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let mock = tower::util::MapErr::new(mock, |_: tower::BoxError| -> Infallible {
            unreachable!("the mock answers every call it gets")
        });
        let slots = Arc::new(Semaphore::new(1));
        let service = ShedLayer::new(
            slots.clone(),
            Duration::from_millis(250),
            Arc::new(Metrics::new()),
            Transport::Grpc,
        )
        .layer(mock);

        let call = tokio::spawn(service.oneshot(Request::new(Body::empty())));
        let (_request, respond) = handle.next_request().await.expect("call admitted");
        let mut trailers = axum::http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("header value"));
        let frames = futures::stream::iter([
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"message"))),
            Ok(Frame::trailers(trailers)),
        ]);
        respond.send_response(Response::new(Body::new(http_body_util::StreamBody::new(
            frames,
        ))));
        let mut body = call.await.expect("join").expect("infallible").into_body();

        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.is_data());
        assert_eq!(
            slots.available_permits(),
            0,
            "held while the answer is sent"
        );
        let last = body.frame().await.expect("a frame").expect("trailers");
        assert!(last.is_trailers());
        assert_eq!(
            slots.available_permits(),
            1,
            "free with the trailers, the body not yet dropped"
        );
        drop(body);
        assert_eq!(slots.available_permits(), 1);
    }
}
