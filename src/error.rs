//! The service's one error type and its two mappings: to `tonic::Status` and
//! to an HTTP response. Both are exhaustive matches with no catch-all arm, so a
//! new failure mode cannot ship without a deliberate status for each transport.
//!
//! Internal errors keep their cause for the logs and tell the client only
//! "internal error": storage paths and engine messages are not an API.

use std::fmt;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One bad field of a request, reported as a `google.rpc.BadRequest` violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `memories[3].vector`.
    pub field: String,
    pub description: String,
}

/// Every way a call can fail, independent of the transport.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {}", Violations(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("namespace {0:?} is not configured")]
    NamespaceNotFound(String),
    /// A request names, as an example to search by, a memory the tenant
    /// does not have (`field` is the request field that names it).
    #[error("{field}: the tenant has no memory {id:?}")]
    MemoryNotFound { field: String, id: String },
    /// A search by text in a namespace whose collection has no text index:
    /// it was created before the namespace declared a `text_field`.
    #[error(
        "namespace {0:?} has no text index: its collection was created before `text_field` \
         was set; search it by vector, or declare a new namespace with `text_field`"
    )]
    TextSearchUnavailable(String),
    /// A snapshot asked of a backend that vecmem does not copy itself.
    #[error(
        "this server stores its data in Qdrant: back it up with Qdrant's own snapshots \
         (the README's \"Backups\" section lists the calls)"
    )]
    SnapshotUnavailable,
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{reason}")]
    ResourceExhausted {
        reason: String,
        retry_after: Duration,
    },
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// Qdrant answered that a replica or peer of its cluster is failing
    /// (some shards cannot be read or written right now). UNAVAILABLE and
    /// retried like an outage, but Qdrant itself is up, so it does not open
    /// the circuit breaker: that would fail every call, not just those that
    /// touch the failing shards.
    #[error("a replica or peer of the storage cluster is failing")]
    ClusterDegraded { retry_after: Duration },
    /// The backend did not answer within its configured timeout. Reported as
    /// UNAVAILABLE like an outage, but never retried: the call may be slow
    /// rather than lost, and retrying would multiply the load on it.
    #[error("storage backend timed out")]
    BackendTimedOut { retry_after: Duration },
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    pub fn internal(cause: impl fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// The gRPC code; also the `code` string of HTTP error bodies.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NamespaceNotFound(_) | Error::MemoryNotFound { .. } => Code::NotFound,
            Error::TextSearchUnavailable(_) | Error::SnapshotUnavailable => {
                Code::FailedPrecondition
            }
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted { .. } => Code::ResourceExhausted,
            Error::Unavailable { .. }
            | Error::ClusterDegraded { .. }
            | Error::BackendTimedOut { .. } => Code::Unavailable,
            Error::DeadlineExceeded => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::InvalidArgument(_)
            | Error::TextSearchUnavailable(_)
            | Error::SnapshotUnavailable => StatusCode::BAD_REQUEST,
            Error::NamespaceNotFound(_) | Error::MemoryNotFound { .. } => StatusCode::NOT_FOUND,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::ResourceExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable { .. }
            | Error::ClusterDegraded { .. }
            | Error::BackendTimedOut { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told; internal causes stay in the logs.
    pub fn client_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::ResourceExhausted { retry_after, .. }
            | Error::Unavailable { retry_after, .. }
            | Error::ClusterDegraded { retry_after }
            | Error::BackendTimedOut { retry_after } => Some(*retry_after),
            Error::InvalidArgument(_)
            | Error::NamespaceNotFound(_)
            | Error::MemoryNotFound { .. }
            | Error::TextSearchUnavailable(_)
            | Error::SnapshotUnavailable
            | Error::Unauthenticated(_)
            | Error::PermissionDenied(_)
            | Error::DeadlineExceeded
            | Error::Internal(_) => None,
        }
    }

    /// Whether the backend is down or not answering (as opposed to an error
    /// about the request): what trips the circuit breaker and what a stale
    /// cache answer may stand in for.
    pub fn is_backend_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::BackendTimedOut { .. }
        )
    }

    fn violations(&self) -> &[FieldViolation] {
        match self {
            Error::InvalidArgument(violations) => violations,
            _ => &[],
        }
    }

    fn log(&self) {
        if let Error::Internal(cause) = self {
            tracing::error!(%cause, "internal error");
        }
    }
}

/// The trailer gRPC clients read a server's retry delay from (gRFC A6).
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        err.log();
        let mut details = ErrorDetails::new();
        let violations = err.violations();
        if !violations.is_empty() {
            let violations: Vec<_> = violations
                .iter()
                .map(|v| tonic_types::FieldViolation::new(&v.field, &v.description))
                .collect();
            details.set_bad_request(violations);
        }
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(delay) = err.retry_after() {
            details.set_retry_info(Some(delay));
            // gRFC A6: a client whose service config retries this code waits
            // this long instead of its own backoff (RetryInfo is for the rest).
            if let Ok(value) = delay.as_millis().to_string().parse() {
                metadata.insert(RETRY_PUSHBACK, value);
            }
        }
        tonic::Status::with_error_details_and_metadata(
            err.code(),
            err.client_message(),
            details,
            metadata,
        )
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log();
        let violations: Vec<_> = self
            .violations()
            .iter()
            .map(|v| serde_json::json!({"field": v.field, "description": v.description}))
            .collect();
        let mut body = serde_json::json!({
            "code": code_name(self.code()),
            "message": self.client_message(),
        });
        if !violations.is_empty() {
            body["field_violations"] = serde_json::Value::Array(violations);
        }
        let mut response = (self.http_status(), axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code()));
        if let Some(delay) = self.retry_after() {
            // Retry-After is whole seconds; round up so clients never retry early.
            let secs = delay.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The gRPC code name of an error answered over HTTP, for the request
/// metrics (an HTTP status alone does not say which code it was).
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub Code);

/// The canonical upper-case gRPC code name (`INVALID_ARGUMENT`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Formats violations as `field: description; field: description`.
struct Violations<'a>(&'a [FieldViolation]);

impl fmt::Display for Violations<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_bad_request_details() {
        let status = tonic::Status::from(Error::invalid("memories[3].vector", "expected 4 values"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("bad request details");
        assert_eq!(bad_request.field_violations[0].field, "memories[3].vector");
        assert!(
            status
                .message()
                .contains("memories[3].vector: expected 4 values")
        );
    }

    #[test]
    fn shed_and_unavailable_carry_retry_info() {
        for err in [
            Error::ResourceExhausted {
                reason: "overloaded".into(),
                retry_after: Duration::from_millis(1500),
            },
            Error::Unavailable {
                message: "backend down".into(),
                retry_after: Duration::from_millis(1500),
            },
        ] {
            let http = err.http_status();
            let status = tonic::Status::from(err);
            let retry = status.get_error_details().retry_info().cloned();
            assert_eq!(
                retry.and_then(|r| r.retry_delay),
                Some(Duration::from_millis(1500))
            );
            let pushback = status.metadata().get(RETRY_PUSHBACK);
            assert_eq!(pushback.and_then(|v| v.to_str().ok()), Some("1500"));
            assert!(
                http == StatusCode::TOO_MANY_REQUESTS || http == StatusCode::SERVICE_UNAVAILABLE
            );
        }
    }

    #[test]
    fn internal_causes_are_not_sent_to_clients() {
        let status = tonic::Status::from(Error::internal("segment /data/x is corrupt"));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert!(status.metadata().get(RETRY_PUSHBACK).is_none());
    }

    #[test]
    fn http_mapping_follows_the_contract_table() {
        let cases = [
            (Error::invalid("tenant", "required"), 400),
            (Error::NamespaceNotFound("x".into()), 404),
            (
                Error::MemoryNotFound {
                    field: "like_id".into(),
                    id: "m".into(),
                },
                404,
            ),
            (Error::Unauthenticated("no key".into()), 401),
            (Error::PermissionDenied("tenant".into()), 403),
            (Error::DeadlineExceeded, 504),
        ];
        for (err, code) in cases {
            assert_eq!(err.into_response().status().as_u16(), code);
        }
    }
}
