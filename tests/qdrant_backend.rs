//! What only the Qdrant backend has: Qdrant going away and coming back, a
//! replica starting before Qdrant, and an existing collection of another
//! shape. Runs against the in-repo Qdrant-protocol double.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use vecmem::api::health::probe_ready;

use support::data::*;
use support::qdrant_double::QdrantDouble;
use support::{Backend, NS, TestServer, eventually, run_vecmem};

/// Per-call timeout the servers here get for Qdrant calls.
const QDRANT_TIMEOUT_MS: u64 = 500;
/// How long recovery may take: a readiness check runs every second.
const RECOVERY: Duration = Duration::from_secs(15);

/// The call failed with UNAVAILABLE, and well within the Qdrant timeout:
/// it did not hang.
fn assert_unavailable_within_timeout(status: &tonic::Status, started: Instant) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(QDRANT_TIMEOUT_MS * 4),
        "took {took:?}"
    );
}

async fn ready(server: &TestServer) -> bool {
    let url = format!("http://{}/health/ready", server.http_addr);
    probe_ready(&url, Duration::from_secs(2))
        .await
        .unwrap_or(false)
}

async fn grpc_health(server: &TestServer) -> ServingStatus {
    let mut client = HealthClient::new(server.channel().await);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check");
    response.into_inner().status()
}

#[tokio::test]
async fn qdrant_outage_fails_fast_reports_not_ready_and_recovers_without_losing_writes() {
    let backend = Backend::double();
    let dir = tempfile::tempdir().expect("tempdir");
    let timeout = QDRANT_TIMEOUT_MS.to_string();
    let server = backend.start_server_with(
        dir.path(),
        &[("VECMEM__BACKEND__QDRANT__TIMEOUT_MS", &timeout)],
    );
    let Backend::Double(mut double) = backend else {
        unreachable!()
    };
    let mut client = server.memory().await;
    let memories: Vec<_> = (0..10)
        .map(|i| memory(&format!("m{i}"), [1.0, i as f32, 0.0, 0.0], json!({"i": i})))
        .collect();
    client
        .upsert(upsert("t", memories))
        .await
        .expect("acknowledged before the outage");
    assert!(ready(&server).await);

    // Refused connections: UNAVAILABLE at once, with a retry hint.
    double.drop_connections();
    let started = Instant::now();
    let status = client
        .search(search("t", [1.0, 0.0, 0.0, 0.0], 5))
        .await
        .expect_err("qdrant is down");
    assert_unavailable_within_timeout(&status, started);
    assert!(
        tonic_types::StatusExt::get_error_details(&status)
            .retry_info()
            .is_some()
    );
    assert!(
        eventually(RECOVERY, async || !ready(&server).await).await,
        "/health/ready stayed 200"
    );
    assert_eq!(grpc_health(&server).await, ServingStatus::NotServing);

    double.restore();
    assert!(
        eventually(RECOVERY, async || ready(&server).await).await,
        "did not become ready again"
    );
    assert_eq!(grpc_health(&server).await, ServingStatus::Serving);
    let found = client
        .get(get("t", &["m0", "m5", "m9"]))
        .await
        .expect("get after recovery")
        .into_inner();
    assert_eq!(ids_of(&found.memories), ["m0", "m5", "m9"]);
    assert_eq!(
        client
            .count(count("t", None))
            .await
            .expect("count")
            .into_inner()
            .count,
        10
    );

    // A hung Qdrant: the call ends at the configured timeout, UNAVAILABLE.
    double.set_delay(Duration::from_secs(10));
    let started = Instant::now();
    let status = client
        .count(count("t", None))
        .await
        .expect_err("qdrant hangs");
    assert_unavailable_within_timeout(&status, started);

    // Injected UNAVAILABLE is passed on as UNAVAILABLE.
    double.set_delay(Duration::ZERO);
    double.set_unavailable(true);
    let status = client
        .get(get("t", &["m0"]))
        .await
        .expect_err("unavailable");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The failures above opened the circuit breaker; it lets a probe
    // through within `resilience.circuit_open_ms` and closes on success.
    double.set_unavailable(false);
    let mut counted = None;
    let recovered = eventually(RECOVERY, async || {
        counted = client.count(count("t", None)).await.ok();
        counted.is_some()
    })
    .await;
    assert!(recovered, "calls did not succeed again after the outage");
    assert_eq!(counted.map(|c| c.into_inner().count), Some(10));
}

#[tokio::test]
async fn a_replica_started_before_qdrant_becomes_ready_when_qdrant_answers() {
    let mut double = QdrantDouble::start();
    double.drop_connections();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = double.url();
    let server = TestServer::start_with(
        dir.path(),
        &[
            ("VECMEM__BACKEND__KIND", "qdrant"),
            ("VECMEM__BACKEND__QDRANT__URL", url.as_str()),
            ("VECMEM__BACKEND__QDRANT__REQUIRE_AT_START", "false"),
        ],
    );
    assert!(!ready(&server).await);
    let mut client = server.memory().await;
    let status = client
        .count(count("t", None))
        .await
        .expect_err("not bootstrapped");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    double.restore();
    assert!(
        eventually(RECOVERY, async || ready(&server).await).await,
        "did not become ready"
    );
    client
        .upsert(upsert(
            "t",
            vec![memory("a", [1.0, 0.0, 0.0, 0.0], json!({}))],
        ))
        .await
        .expect("upsert");
    assert_eq!(
        double.points(NS),
        1,
        "the collection was created once Qdrant answered"
    );
}

#[test]
fn require_at_start_refuses_to_start_without_qdrant() {
    let mut double = QdrantDouble::start();
    double.drop_connections();
    let url = double.url();
    let output = run_vecmem(
        &["serve"],
        &[
            ("VECMEM__BACKEND__KIND", "qdrant"),
            ("VECMEM__BACKEND__QDRANT__URL", &url),
            ("VECMEM__BACKEND__QDRANT__REQUIRE_AT_START", "true"),
            ("VECMEM__LOG__FORMAT", "json"),
            ("VECMEM__SERVER__GRPC_ADDR", "127.0.0.1:0"),
            ("VECMEM__SERVER__HTTP_ADDR", "127.0.0.1:0"),
        ],
    );
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stdout);
    assert!(logs.contains("require_at_start"), "{logs}");
}

#[test]
fn an_existing_collection_of_another_shape_stops_start_up() {
    let backend = Backend::double();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server(dir.path());
    assert!(server.terminate().success());

    let Backend::Double(double) = &backend else {
        unreachable!()
    };
    let url = double.url();
    let dim = format!("VECMEM__NAMESPACES__{}__DIM", NS.to_uppercase());
    let distance = format!("VECMEM__NAMESPACES__{}__DISTANCE", NS.to_uppercase());
    let cases = [
        (
            "8",
            "cosine",
            [
                "has dim 4 and distance Cosine",
                "says dim 8 and distance Cosine",
            ],
        ),
        (
            "4",
            "dot",
            [
                "has dim 4 and distance Cosine",
                "says dim 4 and distance Dot",
            ],
        ),
    ];
    for (dim_value, distance_value, expected) in cases {
        let output = run_vecmem(
            &["serve"],
            &[
                ("VECMEM__BACKEND__KIND", "qdrant"),
                ("VECMEM__BACKEND__QDRANT__URL", &url),
                (&dim, dim_value),
                (&distance, distance_value),
                ("VECMEM__SERVER__GRPC_ADDR", "127.0.0.1:0"),
                ("VECMEM__SERVER__HTTP_ADDR", "127.0.0.1:0"),
                ("VECMEM__LOG__FORMAT", "json"),
            ],
        );
        assert!(
            !output.status.success(),
            "dim {dim_value}, {distance_value}: started"
        );
        let logs = String::from_utf8_lossy(&output.stdout);
        for expected in [format!("namespace {NS}").as_str(), expected[0], expected[1]] {
            assert!(logs.contains(expected), "missing {expected:?} in:\n{logs}");
        }
    }
}

/// Runs `vecmem bench --direct-qdrant URL` on namespace "test" (dim 4) with
/// `args`, expects it to succeed and returns its JSON report.
async fn bench_direct(url: String, args: Vec<&'static str>) -> serde_json::Value {
    let output = tokio::task::spawn_blocking(move || {
        let mut all = vec!["bench", "--direct-qdrant", url.as_str()];
        all.extend(["--namespace", "test", "--dim", "4", "-O", "json"]);
        all.extend(args);
        run_vecmem(&all, &[])
    })
    .await
    .expect("bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json report")
}

/// `vecmem bench --direct-qdrant`: the same workload straight to Qdrant,
/// laid out as vecmem lays it out, one Qdrant call per bench call.
#[tokio::test]
async fn bench_can_drive_qdrant_directly_as_the_baseline() {
    let double = QdrantDouble::start();
    let report = bench_direct(double.url(), vec!["--op", "upsert", "-c", "4", "-n", "40"]).await;
    assert_eq!(report["count"], 40);
    assert_eq!(report["errors"], json!({}));
    assert_eq!(double.points("test"), 40, "each upsert reached Qdrant");

    let report = bench_direct(double.url(), vec!["--op", "search", "-c", "2", "-n", "20"]).await;
    assert_eq!(
        (report["count"].clone(), report["ok"].clone()),
        (json!(20), json!(20))
    );
}

/// Open loop, no coordinated omission: when Qdrant stalls once for 200 ms,
/// every call that was due during the stall is charged for the wait, not
/// just the one call that hit it. The same stall in a closed loop shows up
/// in one call only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_includes_a_stall_for_every_call_due_during_it() {
    const STALL: Duration = Duration::from_millis(200);
    let double = std::sync::Arc::new(QdrantDouble::start());

    let run = |extra: Vec<&'static str>| {
        let double = double.clone();
        async move {
            let before = double.calls();
            let mut args = vec!["--op", "get", "-c", "1", "-n", "200"];
            args.extend(extra);
            let bench = tokio::spawn(bench_direct(double.url(), args));
            // Stall once, a quarter of the way in.
            let reached = eventually(Duration::from_secs(30), async || {
                double.calls() >= before + 50
            })
            .await;
            assert!(reached, "the bench did not get going");
            double.stall_next_call(STALL);
            let report = bench.await.expect("bench");
            assert_eq!(report["ok"], 200, "{report}");
            report["latency_ms"].clone()
        }
    };

    // 100 calls a second: about 20 are due during the 200 ms stall, and the
    // one due k x 10 ms into it waits about 200 - k x 10 ms. So the top 1%
    // (2 calls) waited most of the stall, and the top 5% at least a quarter.
    let open = run(vec!["--rps", "100"]).await;
    assert!(
        open["p99"].as_f64().is_some_and(|p99| p99 >= 150.0),
        "open loop hid the stall: {open}"
    );
    assert!(
        open["p95"].as_f64().is_some_and(|p95| p95 >= 50.0),
        "open loop hid the stall: {open}"
    );
    // Closed loop: only the stalled call waits out the stall, so the second
    // slowest (p99 of 200) did not, by the same 150 ms measure the open loop
    // meets. A slow or busy machine makes every call slower, but not by most
    // of a stall: the bound is relative to the stall, not to the machine.
    let closed = run(vec![]).await;
    assert!(
        closed["max"].as_f64().is_some_and(|max| max >= 190.0),
        "{closed}"
    );
    assert!(
        closed["p99"].as_f64().is_some_and(|p99| p99 < 150.0),
        "closed loop: {closed}"
    );
}
