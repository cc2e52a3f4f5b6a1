//! Real Qdrant servers for the tests that need the real thing: started from
//! the binary `QDRANT_BIN` names, on loopback ports, with storage in a
//! directory the test owns. One node, or a cluster whose first peer
//! bootstraps it and the others join. Every node is killed when dropped.
//!
//! Qdrant is configured through its `QDRANT__…` environment variables (its
//! compiled-in defaults otherwise), with telemetry off.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The Qdrant server binary to test against, when `QDRANT_BIN` names one.
pub fn binary() -> Option<PathBuf> {
    std::env::var_os("QDRANT_BIN").map(PathBuf::from)
}

/// vecmem's settings for the cluster topology the README and Compose ship:
/// 6 shards of the test namespace, a replica of each on every one of three
/// nodes, writes acknowledged by two, reads from one, medium write ordering.
pub const TOPOLOGY: [(&str, &str); 5] = [
    ("VECMEM__NAMESPACES__TEST__SHARD_NUMBER", "6"),
    ("VECMEM__NAMESPACES__TEST__REPLICATION_FACTOR", "3"),
    ("VECMEM__NAMESPACES__TEST__WRITE_CONSISTENCY_FACTOR", "2"),
    ("VECMEM__BACKEND__QDRANT__READ_CONSISTENCY", "1"),
    ("VECMEM__BACKEND__QDRANT__WRITE_ORDERING", "medium"),
];

pub struct QdrantNode {
    child: Option<Child>,
    pub grpc_port: u16,
    pub http_port: u16,
    pub p2p_port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl QdrantNode {
    /// Starts a node; `cluster` is `None` for a single node, else `Some`
    /// with the bootstrap peer's p2p port (`None` for the first peer).
    fn spawn(binary: &PathBuf, cluster: Option<Option<u16>>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let [grpc_port, http_port, p2p_port] = free_ports();
        let mut command = Command::new(binary);
        command
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__GRPC_PORT", grpc_port.to_string())
            .env("QDRANT__SERVICE__HTTP_PORT", http_port.to_string())
            .env("QDRANT__CLUSTER__P2P__PORT", p2p_port.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", dir.path().join("storage"))
            .env(
                "QDRANT__STORAGE__SNAPSHOTS_PATH",
                dir.path().join("snapshots"),
            )
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__LOG_LEVEL", "WARN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(bootstrap) = cluster {
            command
                .env("QDRANT__CLUSTER__ENABLED", "true")
                .arg("--uri")
                .arg(format!("http://127.0.0.1:{p2p_port}"));
            if let Some(bootstrap) = bootstrap {
                command
                    .arg("--bootstrap")
                    .arg(format!("http://127.0.0.1:{bootstrap}"));
            }
        }
        let mut child = command.spawn().expect("spawn qdrant (QDRANT_BIN)");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        Self {
            child: Some(child),
            grpc_port,
            http_port,
            p2p_port,
            logs,
            _dir: dir,
        }
    }

    /// A single node, ready to serve.
    pub async fn start(binary: &PathBuf) -> Self {
        let mut node = Self::spawn(binary, None);
        node.wait_until(
            async |body| body.contains("all shards are ready"),
            "/readyz",
        )
        .await;
        node
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Polls `path` on the node's HTTP port until `done` holds for the body.
    async fn wait_until(&mut self, mut done: impl AsyncFnMut(&str) -> bool, path: &str) {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("qdrant exited with {status}:\n{}", self.logs());
            }
            if let Some(body) = try_get(&url).await
                && done(&body).await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "qdrant did not answer {path} as expected within {START_TIMEOUT:?}:\n{}",
            self.logs()
        );
    }

    /// SIGKILL: the node dies with no chance to tell its peers.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 qdrant");
            child.wait().expect("wait");
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for QdrantNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of Qdrant peers on loopback.
pub struct QdrantCluster {
    pub nodes: Vec<QdrantNode>,
}

impl QdrantCluster {
    /// Starts `size` peers and waits until each sees all of them.
    pub async fn start(binary: &PathBuf, size: usize) -> Self {
        let mut first = QdrantNode::spawn(binary, Some(None));
        first
            .wait_until(
                async |body| body.contains("all shards are ready"),
                "/readyz",
            )
            .await;
        let bootstrap = first.p2p_port;
        let mut nodes = vec![first];
        for _ in 1..size {
            // One at a time: Qdrant adds one peer per consensus round.
            let mut node = QdrantNode::spawn(binary, Some(Some(bootstrap)));
            node.wait_until(
                async |body| body.contains("all shards are ready"),
                "/readyz",
            )
            .await;
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_until(
                async |body| {
                    serde_json::from_str::<serde_json::Value>(body)
                        .ok()
                        .and_then(|v| v["result"]["peers"].as_object().map(|p| p.len()))
                        == Some(size)
                },
                "/cluster",
            )
            .await;
        }
        Self { nodes }
    }

    /// Every node's gRPC URL, comma-separated, as `backend.qdrant.url` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(QdrantNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The body of a 200 answer to GET `url`; `None` for anything else,
/// including a refused connection (the node is still starting).
async fn try_get(url: &str) -> Option<String> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<axum::body::Bytes>>();
    let uri: axum::http::Uri = url.parse().ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .ok()?
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Three ports free on loopback now. Another process could take one before
/// Qdrant binds it; that shows as a failed start, not a wrong result.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<_> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("addr").port();
    [port(0), port(1), port(2)]
}
