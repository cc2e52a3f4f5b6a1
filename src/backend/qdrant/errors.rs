//! Qdrant's failures as the service's errors, in one place: which answers
//! mean "try again" (UNAVAILABLE, with a retry delay), which mean the
//! caller's deadline passed, and which are our bug (INTERNAL).

use std::time::Duration;

use tonic::{Code, Status};

use super::peers;
use crate::error::Error;

/// How long clients should wait before retrying while Qdrant is unavailable.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What Qdrant says, as INTERNAL, when a replica or a peer of its cluster is
/// failing rather than the request: a shard without enough active replicas,
/// a read or write that failed on some of them, a peer it cannot reach, a
/// leader it cannot pick. Another attempt in a moment (once the cluster has
/// marked the replica dead, or the peer is back) succeeds, so these are
/// UNAVAILABLE to our callers and retried by the resilience layer.
/// Matched on Qdrant's messages (1.x, `lib/collection/src/shards`), which is
/// all its gRPC API gives; lowercase.
const CLUSTER_FAILURES: &[&str] = &[
    "does not have enough active replicas",
    "has no active replica",
    "read operations failed",
    "shards failed to apply operation",
    "failed to apply operation to at least one `active` replica",
    "deactivation timed out",
    "no leader could be selected",
    "via leader peer",
    "all attempts were rejected",
    "failed to wait for replica set state",
    "please retry",
    "failed to connect",
    "transport error",
    "connection refused",
    "service unavailable",
];

/// Whether a Qdrant INTERNAL answer is about the cluster's health.
fn cluster_failure(message: &str) -> bool {
    let message = message.to_lowercase();
    CLUSTER_FAILURES
        .iter()
        .any(|pattern| message.contains(pattern))
}

/// Maps a failed Qdrant call to the service's error, in one place.
///
/// Everything vecmem sends is validated first, so Qdrant refusing a request
/// (INVALID_ARGUMENT, NOT_FOUND, …) is our bug or a changed collection, not
/// the caller's fault: INTERNAL, with the cause logged. A call that never got
/// an answer (every peer failed at the transport level) and Qdrant's reports
/// of a failing replica or peer are UNAVAILABLE: retryable, with RetryInfo.
pub(crate) fn backend_error(op: &'static str, status: Status) -> Error {
    let unavailable = |message: &str| {
        tracing::warn!(op, code = ?status.code(), message = status.message(), "qdrant call failed");
        Error::Unavailable {
            message: message.into(),
            retry_after: RETRY_AFTER,
        }
    };
    if peers::is_transport_failure(&status) {
        return unavailable("storage backend unreachable");
    }
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::Unknown => {
            unavailable("storage backend unavailable")
        }
        Code::Internal if cluster_failure(status.message()) => {
            tracing::warn!(op, message = status.message(), "qdrant cluster degraded");
            Error::ClusterDegraded {
                retry_after: RETRY_AFTER,
            }
        }
        // Our own bound on a call (`send_raw`) is DEADLINE_EXCEEDED; Qdrant
        // answers CANCELLED or DEADLINE_EXCEEDED when its `grpc-timeout` ran
        // out first. If the caller's deadline is what ran out, that is
        // theirs to know; if our configured timeout cut a slow Qdrant short,
        // the backend is unavailable.
        Code::DeadlineExceeded | Code::Cancelled => {
            if crate::deadline::remaining().is_some_and(|left| left.is_zero()) {
                Error::DeadlineExceeded
            } else {
                tracing::warn!(op, "qdrant call timed out");
                Error::BackendTimedOut {
                    retry_after: RETRY_AFTER,
                }
            }
        }
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss
        | Code::Unauthenticated => Error::Internal(format!(
            "qdrant {op}: {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_timeout_is_the_callers_deadline_only_when_it_has_passed() {
        let timed_out = || Status::cancelled("Timeout expired");
        // Our own per-call timeout cut a slow Qdrant short.
        assert!(matches!(
            backend_error("query", timed_out()),
            Error::BackendTimedOut { .. }
        ));
        let later = tokio::time::Instant::now() + Duration::from_secs(5);
        let error =
            crate::deadline::scope(later, async { backend_error("query", timed_out()) }).await;
        assert!(matches!(error, Error::BackendTimedOut { .. }));
        // The caller's deadline ran out.
        let now = tokio::time::Instant::now();
        let error =
            crate::deadline::scope(now, async { backend_error("query", timed_out()) }).await;
        assert!(matches!(error, Error::DeadlineExceeded));
    }

    #[test]
    fn qdrant_reports_of_a_failing_replica_or_peer_are_unavailable() {
        // Messages as Qdrant 1.18 sends them when one of three nodes is dead.
        for message in [
            "Service internal error: 1 of 2 read operations failed:\n  Service internal error: \
             Failed to connect to http://127.0.0.1:6335/, error: transport error",
            "Service internal error: The replica set for shard 0 on peer 1 does not have enough \
             active replicas",
            "4 out of 6 shards failed to apply operation. First error captured: Service \
             internal error: The replica set for shard 3 on peer 2 has no active replica",
            "Service internal error: Failed to apply update with Medium ordering via leader \
             peer 3: Service internal error: transport error",
        ] {
            let error = backend_error("get", Status::internal(message));
            assert!(
                matches!(&error, Error::ClusterDegraded { retry_after } if !retry_after.is_zero()),
                "{message}: {error:?}"
            );
            assert_eq!(error.code(), Code::Unavailable);
        }
        assert!(matches!(
            backend_error(
                "get",
                Status::internal("Service internal error: corrupted segment")
            ),
            Error::Internal(_)
        ));
    }

    #[test]
    fn refused_connections_are_unavailable_and_refusals_internal() {
        assert!(matches!(
            backend_error("upsert", Status::unavailable("refused")),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            backend_error("upsert", Status::invalid_argument("bad")),
            Error::Internal(_)
        ));
        assert!(matches!(
            backend_error("upsert", Status::not_found("gone")),
            Error::Internal(_)
        ));
    }
}
