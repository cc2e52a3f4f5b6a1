//! gzip-compressed responses under concurrency: a few hundred thousand calls
//! from clients that accept gzip (as grpcio's default channels do), every
//! answer decoded and compared with what was written. A response compressed
//! twice, or cut, or crossed with another call's, fails to decode or
//! compare here. The same again from grpcio itself (the client the defect
//! was first seen with: its HTTP/2 and decompression are gRPC's C core, not
//! h2), when Python's grpcio is installed (`.ci/run` installs it).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use tonic::codec::CompressionEncoding;
use vecmem::proto::memory_service_client::MemoryServiceClient;
use vecmem::proto::{self, ReadConsistency};

use support::data::*;
use support::{NS, TestServer};

const CONNECTIONS: usize = 8;
const CALLERS_PER_CONNECTION: usize = 4;
const CALLS: usize = 200_000;
const MEMORIES: usize = 16;

/// A payload big enough that gzip is worth it and responses span frames.
fn payload(i: usize) -> serde_json::Value {
    // A float: numbers come back from a Struct as doubles.
    json!({"text": format!("memory {i} ").repeat(40), "i": i as f64})
}

/// A server whose tenant `t` holds `m0`..`m15`, each with `payload(i)`.
async fn seeded_server(dir: &Path) -> TestServer {
    let server = TestServer::start_with(dir, &[("VECMEM__ADMISSION__MAX_CONCURRENCY", "1024")]);
    let memories: Vec<proto::Memory> = (0..MEMORIES)
        .map(|i| memory(&format!("m{i}"), [1.0, i as f32, 0.0, 0.0], payload(i)))
        .collect();
    server
        .memory()
        .await
        .upsert(upsert("t", memories))
        .await
        .expect("upsert");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gzip_answer_of_many_concurrent_calls_decodes_to_what_was_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = seeded_server(&dir.path().join("data")).await;

    let done = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = MemoryServiceClient::new(server.channel().await)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        for _ in 0..CALLERS_PER_CONNECTION {
            let (mut client, done) = (client.clone(), done.clone());
            callers.push(async move {
                let mut wrong = Vec::new();
                loop {
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    if n >= CALLS {
                        return wrong;
                    }
                    let i = n % MEMORIES;
                    let id = format!("m{i}");
                    let mut request = get("t", &[&id, "absent"]);
                    if n % 3 == 0 {
                        request.consistency = ReadConsistency::Fresh as i32;
                    }
                    match client.get(request).await {
                        Ok(answer) => {
                            let answer = answer.into_inner();
                            let right = ids_of(&answer.memories) == [id.as_str()]
                                && answer.missing_ids == ["absent"]
                                && answer.memories[0].payload.as_ref().map(from_struct)
                                    == Some(payload(i));
                            if !right {
                                wrong.push(format!("call {n}: {answer:?}"));
                            }
                        }
                        Err(status) => wrong.push(format!("call {n}: {status:?}")),
                    }
                }
            });
        }
    }
    let wrong: Vec<String> = join_all(callers).await.concat();
    assert!(
        wrong.is_empty(),
        "{} of {CALLS} answers wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

/// grpcio processes, each a client with its own default channel, and the
/// Gets each makes (`tests/python/gzip_gets.py`).
const GRPCIO_CLIENTS: usize = 8;
const GRPCIO_CALLS_PER_CLIENT: usize = 6_250;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gzip_answer_to_grpcio_clients_decodes_to_what_was_written() {
    if !support::tool_available(
        Command::new("python3").args(["-c", "import grpc, grpc_tools"]),
        "pip install grpcio grpcio-tools",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = seeded_server(&dir.path().join("data")).await;
    let stubs = support::python_stubs(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/gzip_gets.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(server.grpc_addr.to_string())
        .args([NS, "t"])
        .arg(GRPCIO_CLIENTS.to_string())
        .arg(GRPCIO_CALLS_PER_CLIENT.to_string())
        .env("PYTHONPATH", &stubs)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(900), output)
        .await
        .expect("the grpcio clients finished within 15 minutes")
        .expect("run gzip_gets.py");
    assert!(
        output.status.success(),
        "gzip_gets.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(
        report["wrong"],
        json!({}),
        "answers wrong, e.g. {}",
        report["examples"]
    );
    assert_eq!(
        report["right"],
        json!(GRPCIO_CLIENTS * GRPCIO_CALLS_PER_CLIENT),
        "{report}"
    );
}
