//! The deployment, checked the way an operator uses it: the Compose, nginx,
//! Prometheus and Grafana files validate without a Docker engine
//! (`deploy/check.sh`), and `deploy/local/run.sh` runs three replicas behind
//! nginx against the Qdrant-protocol double, keeps serving while one replica
//! is stopped (SIGTERM) or crashes (SIGKILL) under load, and loses no
//! acknowledged write.
//!
//! Both need Debian's nginx (and check.sh docker-compose and promtool);
//! `.ci/run` installs them, and elsewhere the tests say how and skip.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use support::qdrant_double::QdrantDouble;
use support::{NS, eventually, send_signal, terminate_within, tool_available};
use tonic::transport::Channel;
use vecmem::error::code_name;
use vecmem::proto::memory_service_client::MemoryServiceClient;
use vecmem::proto::{CountRequest, GetRequest, Memory, ReadConsistency, UpsertRequest};

const REPLICAS: u16 = 3;
const INSTALL: &str = "apt-get install nginx docker-compose prometheus";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn deployment_files_validate_without_a_docker_engine() {
    for probe in [
        Command::new("docker-compose").arg("version"),
        Command::new("nginx").arg("-v"),
        Command::new("promtool").arg("--version"),
    ] {
        if !tool_available(probe, INSTALL) {
            return;
        }
    }
    let output = Command::new("bash")
        .arg(repo().join("deploy/check.sh"))
        .arg(env!("CARGO_BIN_EXE_vecmem"))
        .output()
        .expect("run deploy/check.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "deploy/check.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// `deploy/local/run.sh`, stopped (with everything it started) on drop.
struct LocalDeployment {
    script: Child,
    dir: tempfile::TempDir,
    grpc_port: u16,
    http_port: u16,
}

impl LocalDeployment {
    fn start(qdrant_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (grpc_port, http_port) = free_port_pair();
        let mut script = Command::new("bash")
            .arg(repo().join("deploy/local/run.sh"))
            .args(["--replicas", &REPLICAS.to_string()])
            .args(["--port", &grpc_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .args(["--qdrant-url", qdrant_url])
            .arg("--dir")
            .arg(dir.path())
            .args(["--vecmem", env!("CARGO_BIN_EXE_vecmem")])
            .env(
                format!("VECMEM__NAMESPACES__{}__DIM", NS.to_uppercase()),
                "4",
            )
            .env("TOKIO_WORKER_THREADS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run deploy/local/run.sh");
        let stdout = script.stdout.take().expect("stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ready:") {
                    let _ = ready_tx.send(line);
                }
            }
        });
        let deployment = Self {
            script,
            dir,
            grpc_port,
            http_port,
        };
        if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let mut deployment = deployment;
            let _ = deployment.script.kill();
            let mut stderr = String::new();
            if let Some(mut pipe) = deployment.script.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("deploy/local/run.sh never said ready:\n{stderr}");
        }
        deployment
    }

    fn lb_grpc(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    fn replica_http(&self, replica: u16) -> String {
        format!("http://127.0.0.1:{}", self.http_port + replica)
    }

    async fn client(&self) -> MemoryServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.lb_grpc()))
            .expect("uri")
            .connect()
            .await
            .expect("connect to nginx");
        MemoryServiceClient::new(channel)
    }

    /// Sends `signal` (`TERM`, `KILL`) to replica `n` (1-based).
    fn signal_replica(&self, n: u16, signal: &str) {
        let pid_file = self.dir.path().join(format!("replica-{n}.pid"));
        let pid = std::fs::read_to_string(&pid_file).expect("replica pid file");
        send_signal(pid.trim().parse().expect("pid"), signal);
    }

    /// `Count` calls each replica has served, read from its own /metrics.
    async fn counts_served(&self) -> Vec<f64> {
        let mut served = Vec::new();
        for replica in 1..=REPLICAS {
            let (status, text) =
                support::http_get(&format!("{}/metrics", self.replica_http(replica))).await;
            assert_eq!(status, 200);
            let count: f64 = text
                .lines()
                .filter(|l| l.starts_with("vecmem_requests_total{rpc=\"Count\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            served.push(count);
        }
        served
    }
}

impl Drop for LocalDeployment {
    fn drop(&mut self) {
        // run.sh stops its replicas and nginx on SIGTERM; wait for that.
        if terminate_within(&mut self.script, Duration::from_secs(30)).is_none() {
            let _ = self.script.kill();
            let _ = self.script.wait();
        }
    }
}

/// The double and three replicas behind nginx in front of it; `None` (the
/// test skips) where nginx is not installed and this is not CI.
fn local_deployment() -> Option<(QdrantDouble, LocalDeployment)> {
    if !tool_available(Command::new("nginx").arg("-v"), INSTALL) {
        return None;
    }
    let double = QdrantDouble::start();
    let deployment = LocalDeployment::start(&double.url());
    Some((double, deployment))
}

/// Two ports for the load balancer, each followed by `REPLICAS` free ports
/// for the replicas, below the ephemeral range so no other test's
/// connections take them meanwhile. Blocks are handed out in turn from a
/// random start, so the tests of this file, which run at once, never pick
/// overlapping blocks before their servers bind them.
fn free_port_pair() -> (u16, u16) {
    const BLOCK: u16 = 2 * (REPLICAS + 1);
    static NEXT: AtomicU16 = AtomicU16::new(0);
    static START: OnceLock<u16> = OnceLock::new();
    let start = *START.get_or_init(|| rand::random_range(20_000..25_000u16));
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..200 {
        let grpc = start + NEXT.fetch_add(BLOCK, Ordering::SeqCst);
        let http = grpc + REPLICAS + 1;
        if (grpc..grpc + BLOCK).all(free) {
            return (grpc, http);
        }
    }
    panic!("no block of free ports found");
}

fn memory(id: String) -> Memory {
    Memory {
        id,
        vector: vec![0.5, 0.25, 0.125, 1.0],
        ..Memory::default()
    }
}

/// A replica stopped gracefully (SIGTERM, as an orchestrator scaling down or
/// rolling out does) drains: every failed call, if any, is UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_nginx_lose_no_acknowledged_write_when_one_is_stopped() {
    if let Some((_double, deployment)) = local_deployment() {
        lose_a_replica_under_load(&deployment, "TERM", |code, _| code == "UNAVAILABLE").await;
    }
}

/// A replica that crashes (SIGKILL: no shutdown code runs) loses the calls
/// it was serving. Those are UNAVAILABLE, except one whose response the
/// replica had begun to send: nginx has passed its headers on already and
/// can only reset the stream, which gRPC clients report as INTERNAL ("error
/// reading a body"). That is true of any HTTP/2 proxy; README, "The load
/// balancer", says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_nginx_lose_no_acknowledged_write_when_one_crashes() {
    if let Some((_double, deployment)) = local_deployment() {
        lose_a_replica_under_load(&deployment, "KILL", |code, message| {
            code == "UNAVAILABLE"
                || (code == "INTERNAL" && message.contains("error reading a body from connection"))
        })
        .await;
    }
}

/// `vecmem bench`'s concurrent callers, and the test's own writers.
const BENCH_CALLERS: usize = 8;
const WRITERS: usize = 4;

/// Drives the deployment with `vecmem bench` and writers of its own, sends
/// `signal` to replica 2 once the writers are under way, and checks: at
/// most 1% of calls failed, or one per concurrent caller (the call each had
/// in flight at the replica) where that is more, each as `allowed(code
/// name, message)` says (so never a hang, which would be
/// DEADLINE_EXCEEDED), the deployment kept serving writes, and every
/// acknowledged write is there afterwards.
async fn lose_a_replica_under_load(
    deployment: &LocalDeployment,
    signal: &str,
    allowed: impl Fn(&str, &str) -> bool,
) {
    // Load: `vecmem bench` through nginx, 80/20 searches and upserts.
    let bench = Command::new(env!("CARGO_BIN_EXE_vecmem"))
        .args(["bench", "--addr", &deployment.lb_grpc(), "--namespace", NS])
        .args(["--dim", "4", "--tenants", "8", "--op", "mix"])
        .args([
            "--mix",
            "search=80,upsert=20",
            "-c",
            &BENCH_CALLERS.to_string(),
            "--connections",
            "2",
        ])
        .args(["-z", "12s", "--timeout-ms", "5000", "-O", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vecmem bench");
    let bench_done = Arc::new(AtomicBool::new(false));
    let bench_output = {
        let done = bench_done.clone();
        tokio::task::spawn_blocking(move || {
            let output = bench.wait_with_output().expect("bench output");
            done.store(true, Ordering::SeqCst);
            output
        })
    };

    // Writers whose every acknowledged id is checked afterwards. They go on
    // after the bench until `enough_after_kill` writes are acknowledged in
    // all, so how many writes fit in the bench's 12 s (which depends on how
    // loaded the machine is) does not decide the test; 60 s bounds them.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<(&'static str, String)>>> = Arc::default();
    let enough_after_kill = Arc::new(AtomicUsize::new(usize::MAX));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let mut client = deployment.client().await;
        let (acked, failures, done) = (acked.clone(), failures.clone(), bench_done.clone());
        let enough = enough_after_kill.clone();
        writers.push(tokio::spawn(async move {
            let tenant = format!("writer-{writer}");
            let started = Instant::now();
            for n in 0..100_000 {
                let enough_acked =
                    acked.lock().expect("acked").len() >= enough.load(Ordering::SeqCst);
                if (done.load(Ordering::SeqCst) && enough_acked)
                    || started.elapsed() > Duration::from_secs(60)
                {
                    break;
                }
                let id = format!("w{writer}-{n}");
                let mut request = tonic::Request::new(UpsertRequest {
                    namespace: NS.into(),
                    tenant: tenant.clone(),
                    memories: vec![memory(id.clone())],
                });
                request.set_timeout(Duration::from_secs(5));
                match client.upsert(request).await {
                    Ok(_) => acked.lock().expect("acked").push((tenant.clone(), id)),
                    Err(status) => failures
                        .lock()
                        .expect("failures")
                        .push((code_name(status.code()), status.message().to_owned())),
                }
            }
        }));
    }

    // Stop replica 2 once the writers are well under way.
    let under_way = eventually(Duration::from_secs(60), async || {
        acked.lock().expect("acked").len() >= 100
    })
    .await;
    assert!(
        under_way,
        "writers got no 100 acknowledgements through nginx"
    );
    let killed_at = acked.lock().expect("acked").len();
    enough_after_kill.store(killed_at + 100, Ordering::SeqCst);
    deployment.signal_replica(2, signal);

    let output = bench_output.await.expect("bench task");
    for writer in writers {
        writer.await.expect("writer");
    }
    assert!(
        output.status.success(),
        "vecmem bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("bench JSON");
    let bench_calls = report["count"].as_u64().expect("count");
    let bench_errors: BTreeMap<String, u64> =
        serde_json::from_value(report["errors"].clone()).expect("errors by code");

    // Every failure is one `allowed` admits, and few failed.
    let failures = failures.lock().expect("failures").clone();
    let acked = acked.lock().expect("acked").clone();
    // The bench keeps the first message of each code.
    let bench_messages = &report["error_messages"];
    assert!(
        bench_errors
            .keys()
            .all(|code| { allowed(code, bench_messages[code].as_str().unwrap_or_default()) }),
        "SIG{signal}: bench saw other errors: {bench_errors:?}, {bench_messages}"
    );
    assert!(
        failures
            .iter()
            .all(|(code, message)| allowed(code, message)),
        "SIG{signal}: writers saw other errors: {failures:?}"
    );
    let calls = bench_calls + (acked.len() + failures.len()) as u64;
    let failed = bench_errors.values().sum::<u64>() + failures.len() as u64;
    eprintln!(
        "SIG{signal}: {calls} calls ({bench_calls} bench, {} writer), {failed} failed: bench {bench_errors:?}, writers {failures:?}",
        acked.len() + failures.len(),
    );
    // A loaded machine serves fewer calls in the bench's 12 s, while the
    // calls a crash cuts off stay the ones in flight at the replica.
    let allowed_failures = (calls / 100).max((BENCH_CALLERS + WRITERS) as u64);
    assert!(
        failed <= allowed_failures,
        "{failed} of {calls} calls failed; at most {allowed_failures} may"
    );
    assert!(
        acked.len() >= killed_at + 100,
        "the deployment served too few writes after the kill: {} acknowledged, {killed_at} before it",
        acked.len()
    );

    // Zero acknowledged writes missing, read back through nginx.
    let mut client = deployment.client().await;
    let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
    for (tenant, id) in acked {
        by_tenant.entry(tenant).or_default().push(id);
    }
    for (tenant, ids) in by_tenant {
        for chunk in ids.chunks(256) {
            let got = client
                .get(GetRequest {
                    namespace: NS.into(),
                    tenant: tenant.clone(),
                    ids: chunk.to_vec(),
                    with_vector: false,
                    // From Qdrant, not whichever replica's cache.
                    consistency: ReadConsistency::Fresh as i32,
                })
                .await
                .expect("get acknowledged writes")
                .into_inner();
            assert!(
                got.missing_ids.is_empty(),
                "acknowledged writes missing for {tenant}: {:?}",
                got.missing_ids
            );
            assert_eq!(got.memories.len(), chunk.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_spreads_calls_and_pins_a_tenant_that_asks_for_affinity() {
    let Some((_double, deployment)) = local_deployment() else {
        return;
    };
    let mut client = deployment.client().await;
    let count = |tenant: Option<&str>| {
        let mut request = tonic::Request::new(CountRequest {
            namespace: NS.into(),
            tenant: "t-affinity".into(),
            filter: None,
        });
        if let Some(tenant) = tenant {
            request
                .metadata_mut()
                .insert("x-vecmem-tenant", tenant.parse().expect("metadata"));
        }
        request
    };

    // Without the header: least-request, so one caller's calls spread out.
    let before = deployment.counts_served().await;
    for _ in 0..30 {
        client.count(count(None)).await.expect("count");
    }
    let after = deployment.counts_served().await;
    let spread: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(spread.iter().sum::<f64>(), 30.0, "{spread:?}");
    assert!(
        spread.iter().filter(|n| **n > 0.0).count() >= 2,
        "least-request sent every call to one replica: {spread:?}"
    );

    // With `x-vecmem-tenant`: every call of that tenant on one replica.
    let before = after;
    for _ in 0..30 {
        client
            .count(count(Some("t-affinity")))
            .await
            .expect("count");
    }
    let after = deployment.counts_served().await;
    let pinned: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        pinned.iter().filter(|n| **n == 30.0).count(),
        1,
        "tenant affinity did not pin the tenant to one replica: {pinned:?}"
    );
}

/// A gRPC client that loads deploy/grpc-service-config.json (grpcio parses it
/// and refuses the channel if it is invalid) reaches vecmem through nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_config_loads_in_a_grpc_client_through_nginx() {
    if !tool_available(
        Command::new("python3").args(["-c", "import grpc"]),
        "pip install grpcio",
    ) {
        return;
    }
    let Some((_double, deployment)) = local_deployment() else {
        return;
    };
    let script = r#"
import sys, grpc
config = open(sys.argv[2]).read()
channel = grpc.insecure_channel(sys.argv[1], options=[
    ("grpc.service_config", config), ("grpc.enable_retries", 1)])
list_namespaces = channel.unary_unary("/vecmem.v1.NamespaceService/ListNamespaces")
answer = list_namespaces(b"", timeout=10)
print(len(answer))
"#;
    let lb = deployment.lb_grpc();
    let config = repo().join("deploy/grpc-service-config.json");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", script, &lb])
            .arg(config)
            .output()
    })
    .await
    .expect("python task")
    .expect("run python3");
    assert!(
        output.status.success(),
        "the service config did not load or the call failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("answer size");
    assert!(bytes > 0, "ListNamespaces answered nothing");
}
