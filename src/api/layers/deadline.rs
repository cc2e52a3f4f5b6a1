//! `Deadline<S>`: honours the caller's `grpc-timeout` and answers
//! DEADLINE_EXCEEDED (REST: 504) when it passes.
//!
//! REST callers set their deadline with the same header, as gRPC-to-JSON
//! gateways (grpc-gateway) pass it: `grpc-timeout: 500m` is 500 ms.
//!
//! tonic's own server enforces `grpc-timeout` too, but reports an expired
//! deadline as CANCELLED; that is why vecmem serves its gRPC routes through
//! axum with this layer instead, so clients, metrics and logs see the code
//! the gRPC spec (and our contract) names. Dropping the inner future on expiry
//! cancels the work: a read stops, and a write either finished durably before
//! or is abandoned before it was applied. The deadline is also published to
//! the call's task ([`crate::deadline`]) so backends can pass it on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

use super::Transport;
use crate::error::Error;

/// Header a gRPC client sets to its remaining deadline.
const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    transport: Transport,
}

impl DeadlineLayer {
    pub fn new(transport: Transport) -> Self {
        Self { transport }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            transport: self.transport,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    transport: Transport,
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let deadline = parse_grpc_timeout(request.headers());
        let transport = self.transport;
        let future = self.inner.call(request);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return future.await;
            };
            let deadline = tokio::time::Instant::now() + deadline;
            match tokio::time::timeout_at(deadline, crate::deadline::scope(deadline, future)).await
            {
                Ok(result) => result,
                Err(_) => Ok(transport.answer(Error::DeadlineExceeded)),
            }
        })
    }
}

/// Parses `grpc-timeout` (`<up to 8 digits><H|M|S|m|u|n>`); `None` if absent
/// or malformed, as the gRPC spec says to treat a malformed value.
fn parse_grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    fn slow_service()
    -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
    {
        tower::service_fn(|_request: Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, Infallible>(Response::new(Body::empty()))
        })
    }

    fn request(timeout: Option<&str>) -> Request<Body> {
        let mut request = Request::new(Body::empty());
        if let Some(timeout) = timeout {
            request
                .headers_mut()
                .insert(GRPC_TIMEOUT_HEADER, timeout.parse().expect("header value"));
        }
        request
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_deadline_answers_deadline_exceeded_at_the_deadline() {
        let started = tokio::time::Instant::now();
        let response = DeadlineLayer::new(Transport::Grpc)
            .layer(slow_service())
            .oneshot(request(Some("100m")))
            .await;
        let response = response.expect("infallible");
        assert_eq!(
            response.headers()["grpc-status"],
            "4",
            "DEADLINE_EXCEEDED is code 4"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn over_rest_an_expired_deadline_is_a_504() {
        let response = DeadlineLayer::new(Transport::Rest)
            .layer(slow_service())
            .oneshot(request(Some("100m")))
            .await
            .expect("infallible");
        assert_eq!(response.status(), axum::http::StatusCode::GATEWAY_TIMEOUT);
        assert!(response.headers().get("grpc-status").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_the_call_runs_to_completion() {
        let started = tokio::time::Instant::now();
        let response = DeadlineLayer::new(Transport::Grpc)
            .layer(slow_service())
            .oneshot(request(None))
            .await;
        assert!(
            response
                .expect("infallible")
                .headers()
                .get("grpc-status")
                .is_none()
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    fn parse(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT_HEADER, value.parse().expect("header value"));
        parse_grpc_timeout(&headers)
    }

    #[test]
    fn parses_every_unit_of_the_grpc_spec() {
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn malformed_values_are_ignored() {
        for value in ["", "S", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(parse(value), None, "{value:?}");
        }
    }
}
