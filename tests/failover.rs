//! vecmem in front of several Qdrant peers, and Qdrant's reports of a failing
//! cluster, against the in-repo double (CI has no Qdrant): a dead peer is
//! left at once under load with nothing acknowledged lost, it is taken back
//! once it answers, and Qdrant's INTERNAL "replica failing" answers reach
//! callers as UNAVAILABLE with RetryInfo, after vecmem's own retries.
//! `tests/qdrant_cluster.rs` does the same against a real 3-node cluster.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use support::data::*;
use support::load::Load;
use support::qdrant_double::QdrantDouble;
use support::{TestServer, eventually, start_in_front_of_qdrant};

const CLIENTS: usize = 16;
const CALLS_PER_CLIENT: usize = 1500;

/// A vecmem with every peer of `double` as its Qdrant, plus `extra` settings.
fn start_in_front_of(
    double: &QdrantDouble,
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> TestServer {
    start_in_front_of_qdrant(&double.urls(), dir, extra)
}

#[tokio::test]
async fn a_killed_peer_is_left_at_once_and_taken_back_when_it_answers() {
    let mut double = QdrantDouble::start_peers(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_in_front_of(&double, dir.path(), &[]);

    let load = Load::start(&server, CLIENTS, CALLS_PER_CLIENT).await;
    assert!(
        load.wait_for_acknowledged(200, Duration::from_secs(60))
            .await,
        "no writes acknowledged before the kill"
    );
    // Peer 0 is the one vecmem dialled first.
    double.stop_peer(0);
    let killed_at = load.acknowledged();
    let moved_on = Instant::now();
    assert!(
        load.wait_for_acknowledged(killed_at + 50, Duration::from_secs(10))
            .await,
        "writes did not go on after a peer died"
    );
    let moved_on = moved_on.elapsed();
    assert!(
        load.wait_for_acknowledged(killed_at + 300, Duration::from_secs(60))
            .await,
        "writes stalled with a peer down"
    );
    let report = load.finish().await;
    eprintln!(
        "{} calls, {} failed, {} writes acknowledged; 50 more within {moved_on:?} of the kill",
        report.calls,
        report.failures.len(),
        report.acknowledged.len()
    );
    report.assert_few_failures_all_unavailable(1.0);
    assert!(moved_on < Duration::from_secs(2), "took {moved_on:?}");
    report
        .assert_every_acknowledged_write_readable(&server)
        .await;

    // Back once it answers: the probe finds it, calls reach it again.
    let before = double.requests_to(0);
    double.restore_peer(0);
    let mut client = server.memory().await;
    let back = eventually(Duration::from_secs(10), async || {
        for _ in 0..6 {
            client.count(count("t0", None)).await.expect("count");
        }
        double.requests_to(0) > before + 3
    })
    .await;
    assert!(back, "the restored peer got no calls");
}

#[tokio::test]
async fn qdrant_reports_of_a_failing_replica_are_retried_then_unavailable_with_retry_info() {
    let double = QdrantDouble::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_in_front_of(
        &double,
        dir.path(),
        &[
            ("VECMEM__RESILIENCE__MAX_RETRIES", "2"),
            ("VECMEM__RESILIENCE__CIRCUIT_FAILURE_THRESHOLD", "0"),
        ],
    );
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![memory("a", [1.0, 0.0, 0.0, 0.0], json!({}))],
        ))
        .await
        .expect("upsert");
    // As Qdrant 1.18 answers while one of three nodes is down.
    let replica_failing = || {
        Status::internal(
            "Service internal error: The replica set for shard 0 on peer 1 does not have \
             enough active replicas",
        )
    };
    let partly_applied = || {
        Status::internal(
            "4 out of 6 shards failed to apply operation. First error captured: Service \
             internal error: 1 of 2 read operations failed",
        )
    };

    // Once: retried by vecmem, the caller never sees it.
    double.answer_next(1, replica_failing());
    let found = client.get(get("t", &["a"])).await.expect("retried");
    assert_eq!(ids_of(&found.into_inner().memories), ["a"]);

    // Every attempt (the first and both retries): UNAVAILABLE with RetryInfo.
    for (call, answer) in [("get", replica_failing()), ("upsert", partly_applied())] {
        double.answer_next(3, answer);
        let status = match call {
            "get" => {
                let mut request = get("t", &["a"]);
                request.consistency = vecmem::proto::ReadConsistency::Fresh as i32;
                client.get(request).await.map(drop)
            }
            _ => client
                .upsert(upsert(
                    "t",
                    vec![memory("b", [0.0, 1.0, 0.0, 0.0], json!({}))],
                ))
                .await
                .map(drop),
        }
        .expect_err("every attempt failed");
        assert_eq!(status.code(), Code::Unavailable, "{call}: {status:?}");
        let retry = status.get_details_retry_info().expect("RetryInfo");
        assert!(retry.retry_delay.is_some_and(|d| !d.is_zero()), "{call}");
    }
    // And then it serves again; the retried upsert is safe to repeat.
    client
        .upsert(upsert(
            "t",
            vec![memory("b", [0.0, 1.0, 0.0, 0.0], json!({}))],
        ))
        .await
        .expect("serves again");
}
