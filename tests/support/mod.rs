//! Test support: starts the real `vecmem` binary on ephemeral loopback ports
//! with its data in a directory the test owns, and hands out gRPC clients.
//!
//! Processes, not in-process servers, so that tests can SIGKILL a server
//! mid-flight and restart it on the same data. Every server is killed when its
//! handle drops; start-up is bounded in time.

#![allow(dead_code)]

pub mod data;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
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
        Self::start_with(data_dir, &[])
    }

    /// Starts a server with extra `VECMEM__…` settings.
    pub fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Self {
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

    /// SIGTERM, then waits (bounded) for the process to exit by itself.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "vecmem did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                    join_logs(&self.logs)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
