//! Test support: starts the real `vecmem` binary on ephemeral loopback ports
//! with its data in a directory the test owns, and hands out gRPC clients.
//!
//! Processes, not in-process servers, so that tests can SIGKILL a server
//! mid-flight and restart it on the same data. Every server is killed when its
//! handle drops; start-up is bounded in time.

#![allow(dead_code)]

pub mod data;
pub mod load;
pub mod qdrant_double;
pub mod qdrant_real;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vecmem::proto::memory_service_client::MemoryServiceClient;
use vecmem::proto::namespace_service_client::NamespaceServiceClient;

/// Namespace the tests write to; small so vectors are easy to write by hand.
pub const NS: &str = "test";
pub const DIM: usize = 4;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestServer {
    child: Option<Child>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts a server storing its data in `data_dir`.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with::<&str, &str>(data_dir, &[])
    }

    /// Starts a server with extra `VECMEM__…` settings.
    pub fn start_with<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        data_dir: &Path,
        env: &[(K, V)],
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vecmem"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VECMEM__SERVER__GRPC_ADDR", "127.0.0.1:0")
            .env("VECMEM__SERVER__HTTP_ADDR", "127.0.0.1:0")
            .env("VECMEM__BACKEND__EMBEDDED__PATH", data_dir)
            .env("VECMEM__LOG__FORMAT", "json")
            .env(
                format!("VECMEM__NAMESPACES__{}__DIM", NS.to_uppercase()),
                DIM.to_string(),
            )
            // Every write to the test namespace indexes its text too.
            .env(
                format!("VECMEM__NAMESPACES__{}__TEXT_FIELD", NS.to_uppercase()),
                "text",
            )
            // Keep the default 1024-dim namespaces small on disk and fast to open.
            .env("TOKIO_WORKER_THREADS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn vecmem");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let logs = logs.clone();
            let ready_tx = ready_tx.clone();
            // Drains the pipe for the whole life of the process, so the
            // server never blocks on a full pipe.
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addrs) = listening_addrs(&line) {
                        let _ = ready_tx.send(addrs);
                    }
                    logs.lock().expect("logs").push(line);
                }
            }));
        }
        drop(ready_tx);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok((grpc_addr, http_addr)) => {
                    return Self {
                        child: Some(child),
                        grpc_addr,
                        http_addr,
                        logs,
                    };
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // The pipes close with the process; collect all it said.
                        readers.into_iter().for_each(|r| drop(r.join()));
                        panic!(
                            "vecmem exited with {status} before listening:\n{}",
                            join_logs(&logs)
                        );
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!(
                            "vecmem did not listen within {START_TIMEOUT:?}:\n{}",
                            join_logs(&logs)
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait");
                    readers.into_iter().for_each(|r| drop(r.join()));
                    panic!("vecmem exited with {status}:\n{}", join_logs(&logs));
                }
            }
        }
    }

    pub async fn memory(&self) -> MemoryServiceClient<Channel> {
        MemoryServiceClient::new(self.channel().await)
    }

    pub async fn namespaces(&self) -> NamespaceServiceClient<Channel> {
        NamespaceServiceClient::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to vecmem")
    }

    pub fn logs(&self) -> String {
        join_logs(&self.logs)
    }

    /// SIGKILL: no shutdown code runs at all.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("wait");
        }
    }

    /// SIGTERM, and returns once the drain has begun: the gRPC listener
    /// refuses new connections (asserted, bounded in time). The handle
    /// yields the exit status once the process has exited by itself.
    pub async fn begin_drain(self) -> tokio::task::JoinHandle<ExitStatus> {
        let grpc_addr = self.grpc_addr;
        let exit = tokio::task::spawn_blocking(move || self.terminate());
        let listener_closed = eventually(Duration::from_secs(10), async || {
            tokio::net::TcpStream::connect(grpc_addr).await.is_err()
        })
        .await;
        assert!(listener_closed, "SIGTERM did not close the gRPC listener");
        exit
    }

    /// SIGTERM, then waits (bounded) for the process to exit by itself.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        terminate_within(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "vecmem did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                join_logs(&self.logs)
            )
        })
    }
}

/// Sends `signal` (`TERM`, `KILL`, …) to process `pid`, as kill(1) does.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// SIGTERM to `child`, then its exit status once it has exited, or `None`
/// if it is still running after `limit`.
pub fn terminate_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    send_signal(child.id(), "TERM");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts vecmem in front of the Qdrant peers at `urls` (comma-separated),
/// with admission wide open for the many-client tests, plus `extra`.
pub fn start_in_front_of_qdrant(urls: &str, dir: &Path, extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![
        ("VECMEM__BACKEND__KIND", "qdrant"),
        ("VECMEM__BACKEND__QDRANT__URL", urls),
        ("VECMEM__BACKEND__QDRANT__REQUIRE_AT_START", "true"),
        ("VECMEM__ADMISSION__MAX_CONCURRENCY", "1024"),
    ];
    env.extend_from_slice(extra);
    TestServer::start_with(dir, &env)
}

const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `vecmem ARGS` to its exit with a clean environment plus `env`,
/// bounded in time.
pub fn run_vecmem(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    run_vecmem_within(args, env, EXIT_TIMEOUT)
}

/// [`run_vecmem`], killed and failed after `limit`.
pub fn run_vecmem_within(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vecmem"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vecmem");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vecmem {args:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Polls `condition` every 100 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs each case (an `async fn(Backend)`) against every backend:
/// `embedded::case`, `qdrant_double::case`, and `qdrant_real::case` when
/// `QDRANT_URL` or `QDRANT_BIN` was set at build time (otherwise one ignored
/// test says so). The test names in cargo's output are the list of backends
/// that ran.
#[macro_export]
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::embedded()).await })*
        }
        mod qdrant_double {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::double()).await })*
        }
        #[cfg(qdrant_real)]
        mod qdrant_real {
            $(#[tokio::test] async fn $case() {
                let backend = super::Backend::real()
                    .await
                    .expect("QDRANT_URL or QDRANT_BIN was set at build time");
                super::$case(backend).await
            })*
        }
        #[cfg(not(qdrant_real))]
        #[test]
        #[ignore = "set QDRANT_BIN (a Qdrant server binary) or QDRANT_URL (e.g. http://127.0.0.1:6334) to run these cases against a real Qdrant"]
        fn qdrant_real() {}
    };
}

/// The storage a test server runs on. The contract suite runs every case on
/// each: the embedded engine, `QdrantStore` over the in-repo double, and
/// `QdrantStore` over a real Qdrant when `QDRANT_URL` is set.
pub enum Backend {
    Embedded,
    Double(qdrant_double::QdrantDouble),
    /// A real Qdrant; each test gets its own collection prefix, and its own
    /// node when started from `QDRANT_BIN`.
    Real {
        url: String,
        prefix: String,
        node: Option<qdrant_real::QdrantNode>,
    },
}

impl Backend {
    pub fn embedded() -> Self {
        Backend::Embedded
    }

    pub fn double() -> Self {
        Backend::Double(qdrant_double::QdrantDouble::start())
    }

    /// The Qdrant at `QDRANT_URL`, else a single node started from
    /// `QDRANT_BIN`; `None` when neither is set.
    pub async fn real() -> Option<Self> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("vecmem_test_{}_", &unique[..12]);
        if let Ok(url) = std::env::var("QDRANT_URL") {
            return Some(Backend::Real {
                url,
                prefix,
                node: None,
            });
        }
        let node = qdrant_real::QdrantNode::start(&qdrant_real::binary()?).await;
        Some(Backend::Real {
            url: node.url(),
            prefix,
            node: Some(node),
        })
    }

    /// Settings that point a server at this backend.
    pub fn env(&self) -> Vec<(String, String)> {
        let qdrant = |url: &str, prefix: &str| {
            vec![
                ("VECMEM__BACKEND__KIND".to_owned(), "qdrant".to_owned()),
                ("VECMEM__BACKEND__QDRANT__URL".to_owned(), url.to_owned()),
                (
                    "VECMEM__BACKEND__QDRANT__COLLECTION_PREFIX".to_owned(),
                    prefix.to_owned(),
                ),
                (
                    "VECMEM__BACKEND__QDRANT__REQUIRE_AT_START".to_owned(),
                    "true".to_owned(),
                ),
            ]
        };
        match self {
            Backend::Embedded => vec![],
            Backend::Double(double) => qdrant(&double.url(), ""),
            Backend::Real { url, prefix, .. } => qdrant(url, prefix),
        }
    }

    pub fn start_server(&self, data_dir: &Path) -> TestServer {
        TestServer::start_with(data_dir, &self.env())
    }

    pub fn start_server_with(&self, data_dir: &Path, extra: &[(&str, &str)]) -> TestServer {
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TestServer::start_with(data_dir, &env)
    }
}

/// The addresses from the server's `vecmem listening` JSON log line.
fn listening_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event.get("message")?.as_str()? != "vecmem listening" {
        return None;
    }
    let grpc = event.get("grpc_addr")?.as_str()?.parse().ok()?;
    let http = event.get("http_addr")?.as_str()?.parse().ok()?;
    Some((grpc, http))
}

fn join_logs(logs: &Mutex<Vec<String>>) -> String {
    logs.lock().map(|l| l.join("\n")).unwrap_or_default()
}

/// An HTTP/1.1 answer: status, headers, body as text.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.body))
    }
}

/// Sends `method url` with an optional JSON body and extra headers.
pub async fn http(
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut with_type = vec![("content-type", "application/json")];
    with_type.extend_from_slice(headers);
    http_body(method, url, body, &with_type).await
}

/// Sends `method url` with `body` as it is, and `headers`.
pub async fn http_body(
    method: &str,
    url: &str,
    body: String,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let (status, headers, bytes) = http_bytes(method, url, body, headers).await;
    HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Sends `method url` with `body` and `headers`: the status, headers and
/// the body's bytes.
pub async fn http_bytes(
    method: &str,
    url: &str,
    body: impl Into<axum::body::Bytes>,
    headers: &[(&str, &str)],
) -> (u16, axum::http::HeaderMap, axum::body::Bytes) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<axum::body::Bytes>>();
    let mut request = axum::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("HTTP answer in time")
        .expect("HTTP request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("HTTP body")
        .to_bytes();
    (status, headers, bytes)
}

/// GETs `url` over HTTP/1.1: the status and the body as text.
pub async fn http_get(url: &str) -> (u16, String) {
    let answer = http("GET", url, None, &[]).await;
    (answer.status, answer.body)
}

/// Whether the external tool that `probe` runs is installed. Under CI it must
/// be (`.ci/run` installs it), so a missing one fails the test; elsewhere the
/// test is skipped with a printed reason and how to install the tool.
pub fn tool_available(probe: &mut std::process::Command, install: &str) -> bool {
    let found = probe.output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{probe:?} failed; CI must install it: {install}"
        );
        eprintln!("skipped: {probe:?} failed; to run this test: {install}");
    }
    found
}

/// The sum of every sample of metric `name` (all label sets) in an
/// exposition text; 0 when it has none.
pub fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Python stubs of `proto/vecmem/v1` generated into `dir` with grpcio-tools,
/// for `PYTHONPATH`.
pub fn python_stubs(dir: &Path) -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let stubs = dir.join("stubs");
    std::fs::create_dir_all(&stubs).expect("stub dir");
    let output = Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{root}/proto"))
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .args(
            ["filter", "memory", "namespace"]
                .map(|name| format!("{root}/proto/vecmem/v1/{name}.proto")),
        )
        .output()
        .expect("run grpc_tools.protoc");
    assert!(
        output.status.success(),
        "grpc_tools.protoc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stubs
}

/// A call the server never took: refused with UNAVAILABLE or CANCELLED, or
/// sent on a stream above the last one a GOAWAY let through, which h2
/// guarantees the server did not process (tonic reports that as INTERNAL,
/// "h2 protocol error", its source the GOAWAY itself).
pub fn never_taken(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Cancelled
    ) || format!("{status:?}").contains("GoAway(")
}

/// A tonic channel over a connection already open (TCP, or TLS with `h2`
/// negotiated): it sends its preface and first call only when a call is
/// made.
pub fn channel_over<Io>(io: Io) -> Channel
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let io = Mutex::new(Some(io));
    tonic::transport::Endpoint::from_static("http://vecmem.test").connect_with_connector_lazy(
        tower::service_fn(move |_: http::Uri| {
            let io = io.lock().expect("not poisoned").take();
            async move {
                io.map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the connection was used already"))
            }
        }),
    )
}
