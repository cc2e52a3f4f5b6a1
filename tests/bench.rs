//! `vecmem bench` against a running server: what a user reads on a
//! terminal, what a script reads from `-O json`, and whether its latencies
//! can be trusted, checked against the server's own request histogram.

mod support;

use std::process::Command;
use std::time::Duration;

use support::qdrant_double::QdrantDouble;
use support::{NS, TestServer, http_get};

/// Runs `vecmem bench` at `server` on the test namespace with `args`,
/// expects success, and returns its stdout.
fn bench(server: &TestServer, args: &[&str]) -> String {
    let addr = server.grpc_addr.to_string();
    let mut all = vec!["bench", "--addr", &addr, "--namespace", NS];
    all.extend(args);
    let output = support::run_vecmem(&all, &[]);
    assert!(
        output.status.success(),
        "vecmem {all:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 report")
}

/// Upper bounds (`le`, in seconds) and cumulative counts of the server's
/// request histogram for `rpc`, in ascending order, `+Inf` last.
fn server_histogram(exposition: &str, rpc: &str) -> Vec<(f64, u64)> {
    let prefix = format!("vecmem_request_duration_seconds_bucket{{rpc=\"{rpc}\",le=\"");
    let mut buckets: Vec<(f64, u64)> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|rest| {
            let (le, count) = rest.split_once("\"} ").expect("bucket line");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le")
            };
            (le, count.trim().parse().expect("count"))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The bucket `(lower, upper]` (seconds) holding the server's `q` quantile,
/// and the upper bound of the bucket after it.
fn quantile_bucket(buckets: &[(f64, u64)], q: f64) -> (f64, f64, f64) {
    let total = buckets.last().expect("+Inf bucket").1;
    let rank = (q * total as f64).ceil() as u64;
    let at = buckets
        .iter()
        .position(|(_, cumulative)| *cumulative >= rank)
        .expect("a bucket reaches every rank");
    let lower = if at == 0 { 0.0 } else { buckets[at - 1].0 };
    let next = buckets.get(at + 1).map_or(f64::INFINITY, |b| b.0);
    (lower, buckets[at].0, next)
}

/// The bench's percentiles fall in the server's histogram bucket for the same
/// quantile, or the bucket above it: every call takes at least as long at
/// the client as at the server, and the client's own share (encoding,
/// decoding, the loopback hop) must stay under one doubling bucket.
///
/// That share is a millisecond or more in a debug build on a busy CI
/// machine (once 3.2 ms at p50 against the server's (0.8, 1.6] ms), as long
/// as a whole search on the embedded engine. So the
/// server's time is made to dominate: vecmem runs in front of the Qdrant
/// double, which delays its answers by a known spread (60% 7 ms, 35% 30 ms,
/// 5% 120 ms), putting p50, p90 and p99 in three different buckets.
#[tokio::test]
async fn bench_percentiles_agree_with_the_servers_histogram() {
    let double = QdrantDouble::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // No cache: every search reaches Qdrant and takes its delay.
    let server = support::start_in_front_of_qdrant(
        &double.url(),
        dir.path(),
        &[("VECMEM__PIPELINE__CACHE__ENABLED", "false")],
    );
    let ms = Duration::from_millis;
    let mut delays = [ms(7); 20];
    delays[12..19].fill(ms(30));
    delays[19] = ms(120);
    double.cycle_delays(&delays);
    let report = bench(
        &server,
        &["--op", "search", "-c", "1", "-n", "300", "-O", "json"],
    );
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(
        (&report["count"], &report["ok"], &report["errors"]),
        (&300.into(), &300.into(), &serde_json::json!({})),
        "{report}"
    );

    let (status, exposition) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(status, 200);
    let buckets = server_histogram(&exposition, "Search");
    assert_eq!(
        buckets.last().map(|b| b.1),
        Some(300),
        "the server saw each search once:\n{buckets:?}"
    );
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let (lower, upper, next) = quantile_bucket(&buckets, q);
        let bench_ms = report["latency_ms"][name].as_f64().expect("percentile");
        assert!(
            lower * 1e3 <= bench_ms && bench_ms <= next * 1e3,
            "bench {name} {bench_ms} ms; the server's is in ({} ms, {} ms]:\n{buckets:?}",
            lower * 1e3,
            upper * 1e3,
        );
    }
}

/// On a terminal the bench draws a progress bar, then prints a summary laid
/// out like ghz's.
#[test]
fn on_a_terminal_bench_shows_progress_then_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let command = format!(
        "'{}' bench --addr {} --namespace {NS} --op upsert -c 2 -n 400",
        env!("CARGO_BIN_EXE_vecmem"),
        server.grpc_addr
    );
    // `script` runs the command on a pseudo-terminal, as a user's shell does.
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (bsdutils) runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "bench did not finish in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("/400 calls") && shown.contains("[="),
        "no progress bar:\n{shown}"
    );
    for line in [
        "Summary:",
        "Count:\t400",
        "Requests/sec:",
        "Response time histogram:",
        "Latency distribution:",
        "99 % in",
        "Status code distribution:",
        "[OK]\t400 responses",
    ] {
        assert!(shown.contains(line), "summary lacks {line:?}:\n{shown}");
    }
}
