//! The command line as operators and Docker use it: `--version`, config
//! errors that stop start-up with the dotted key, `vecmem health` exit codes,
//! refusing to start on data of another dimension (in plain-text logs), and
//! SIGTERM under load and on HTTP/1 keep-alive connections.

mod support;

use std::process::Output;

use support::{NS, TestServer, run_vecmem as vecmem};
use vecmem::proto::memory_service_client::MemoryServiceClient;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn version_is_printed() {
    let output = vecmem(&["--version"], &[]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("vecmem {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let cases = [
        ("VECMEM__SERVER__GRPC_PORT", "1", "server.grpc_port"),
        ("VECMEM__SERVER__GRPC_ADDR", "localhost", "server.grpc_addr"),
        ("VECMEM__LIMITS__MAX_BATCH", "0", "limits.max_batch"),
        (
            "VECMEM__NAMESPACES__MEMORIES__DISTANCE",
            "hamming",
            "namespaces.memories.distance",
        ),
        (
            "VECMEM__BACKEND__EMBEDDED__OPTIMIZE_INTERVAL_MS",
            "soon",
            "backend.embedded.optimize_interval_ms",
        ),
    ];
    for (key, value, dotted) in cases {
        let output = vecmem(
            &["serve"],
            &[(key, value), ("VECMEM__BACKEND__EMBEDDED__PATH", data)],
        );
        assert_eq!(
            output.status.code(),
            Some(2),
            "{key}={value}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(dotted),
            "{key}={value}: {}",
            stderr(&output)
        );
    }
    // Nothing was created: config is checked before storage is touched.
    assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 0);

    let file = dir.path().join("vecmem.toml");
    std::fs::write(&file, "[limits]\nmax_limitt = 5\n").expect("write");
    let output = vecmem(&["--config", file.to_str().expect("utf-8"), "serve"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("limits.max_limitt"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn health_probe_exits_zero_only_while_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let url = format!("http://{}/health/ready", server.http_addr);
    let ready = vecmem(&["health", "--url", &url], &[]);
    assert!(ready.status.success(), "{}", stderr(&ready));

    let http_addr = server.http_addr;
    assert!(server.terminate().success());
    let down = vecmem(
        &[
            "health",
            "--url",
            &format!("http://{http_addr}/health/ready"),
            "--timeout-ms",
            "500",
        ],
        &[],
    );
    assert_eq!(down.status.code(), Some(1), "{}", stderr(&down));
}

#[test]
fn existing_data_of_another_dimension_is_a_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    assert!(server.terminate().success());

    let data = dir.path().to_str().expect("utf-8 path");
    let dim_key = format!("VECMEM__NAMESPACES__{}__DIM", NS.to_uppercase());
    let output = vecmem(
        &["serve"],
        &[
            ("VECMEM__BACKEND__EMBEDDED__PATH", data),
            (&dim_key, "8"),
            ("VECMEM__SERVER__GRPC_ADDR", "127.0.0.1:0"),
            ("VECMEM__SERVER__HTTP_ADDR", "127.0.0.1:0"),
        ],
    );
    assert!(!output.status.success());
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    for expected in [&format!("namespace {NS}"), "dim 4", "dim 8"] {
        assert!(logs.contains(expected), "missing {expected:?} in:\n{logs}");
    }
    // Text logs read from a pipe, as Docker and Kubernetes read them, are
    // plain text: no colour codes around levels, targets and fields.
    assert!(logs.contains(" ERROR "), "no plain level in:\n{logs}");
    assert!(!logs.contains('\x1b'), "colour codes in:\n{logs:?}");
}

/// A call whose connection was reset under it. After the GOAWAY tonic
/// dials again, and a connection the kernel completed in the closing
/// listener's backlog is reset when the listener closes: the call never
/// reached the server. The test checks that: a reset call's write must be
/// absent after the restart.
fn reset(status: &tonic::Status) -> bool {
    format!("{status:?}").contains("ConnectionReset")
}

/// SIGTERM under load: readiness turns 503 while calls are still served, and
/// no admitted call fails. A call either succeeds, and its write is there
/// after a restart on the same data, or it fails at the transport (refused
/// connection, or a stream the server's GOAWAY did not take) and wrote
/// nothing, so a client may safely retry it elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_under_load_fails_no_admitted_call() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use serde_json::json;
    use support::data::{get, ids_of, memory, upsert};

    let dir = tempfile::tempdir().expect("tempdir");
    let delay = [("VECMEM__SERVER__SHUTDOWN_DELAY_MS", "1000")];
    let server = TestServer::start_with(dir.path(), &delay);
    let client = server.memory().await;
    let ready_url = format!("http://{}/health/ready", server.http_addr);

    // Writers: each keeps writing new ids until its calls are refused.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for worker in 0..8 {
        let (mut client, stop) = (client.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let (mut acknowledged, mut refused, mut resets, mut other) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for i in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("w{worker}-{i}");
                let request = upsert("t", vec![memory(&id, [1.0, 0.0, 0.0, 0.0], json!({}))]);
                match client.upsert(request).await {
                    Ok(_) => acknowledged.push(id),
                    // The client's view of a connection the server closed.
                    Err(status) if support::never_taken(&status) => {
                        refused.push(id);
                        break;
                    }
                    Err(status) if reset(&status) => {
                        resets.push(id);
                        break;
                    }
                    Err(status) => other.push(status),
                }
            }
            (acknowledged, refused, resets, other)
        }));
    }
    // Readiness, polled until the HTTP listener is gone.
    let poller = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2_000 {
            let status =
                vecmem::api::health::probe_ready(&ready_url, Duration::from_millis(500)).await;
            let state = match status {
                Ok(true) => "ready",
                Ok(false) => "not ready",
                Err(_) => "closed",
            };
            if seen.last() != Some(&state) {
                seen.push(state);
            }
            if state == "closed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen
    });

    // Let the load run, then SIGTERM (terminate waits for the exit).
    support::eventually(Duration::from_secs(30), async || {
        client
            .clone()
            .get(get("t", &["w0-20"]))
            .await
            .is_ok_and(|r| !r.into_inner().memories.is_empty())
    })
    .await;
    let exit = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("terminate");
    assert!(exit.success(), "exit status {exit:?}");
    stop.store(true, Ordering::SeqCst);

    let readiness = poller.await.expect("poller");
    assert_eq!(
        readiness,
        ["ready", "not ready", "closed"],
        "readiness must turn false before the listener closes"
    );
    let (mut acknowledged, mut resets) = (Vec::new(), Vec::new());
    for writer in writers {
        let (ids, _refused, reset, other) = writer.await.expect("writer");
        resets.extend(reset);
        assert!(
            other.is_empty(),
            "calls failed other than by refusal: {other:?}"
        );
        acknowledged.extend(ids);
    }
    assert!(
        acknowledged.len() > 8,
        "the load ran: {}",
        acknowledged.len()
    );

    let server = TestServer::start(dir.path());
    let mut client = server.memory().await;
    for chunk in acknowledged.chunks(200) {
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let found = client.get(get("t", &ids)).await.expect("get").into_inner();
        assert!(
            found.missing_ids.is_empty(),
            "lost: {:?}",
            found.missing_ids
        );
    }
    if !resets.is_empty() {
        let ids: Vec<&str> = resets.iter().map(String::as_str).collect();
        let found = client.get(get("t", &ids)).await.expect("get").into_inner();
        assert!(
            found.memories.is_empty(),
            "a call reset at the transport had been applied: {:?}",
            ids_of(&found.memories)
        );
    }
}

/// A connection the server accepted just before SIGTERM, whose client had
/// not sent its HTTP/2 preface yet, still has the call sent with the
/// preface answered (or refused by GOAWAY), never cut. Each raw connection
/// is opened before a normal call that is answered: the listener accepts in
/// order, so by then the server holds every one of them. They send their
/// preface and first call only once the drain has closed the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_accepted_before_the_drain_has_its_first_call_answered() {
    use serde_json::json;
    use support::data::{get, memory, upsert};
    use tokio::net::TcpStream;

    const CONNECTIONS: usize = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let mut idle = Vec::new();
    for _ in 0..CONNECTIONS {
        idle.push(TcpStream::connect(server.grpc_addr).await.expect("connect"));
    }
    let mut client = server.memory().await;
    client.get(get("t", &["none"])).await.expect("served");

    let exit = server.begin_drain().await;

    let mut answered = Vec::new();
    for (n, stream) in idle.into_iter().enumerate() {
        let id = format!("late-{n}");
        let mut late = MemoryServiceClient::new(support::channel_over(stream));
        let request = upsert("t", vec![memory(&id, [1.0, 0.0, 0.0, 0.0], json!({}))]);
        match late.upsert(request).await {
            Ok(_) => answered.push(id),
            Err(status) => assert!(
                support::never_taken(&status),
                "call {n} was cut: {status:?}"
            ),
        }
    }
    let exit = exit.await.expect("terminate");
    assert!(exit.success(), "exit status {exit:?}");

    println!("{} of {CONNECTIONS} late calls answered", answered.len());
    if answered.is_empty() {
        return;
    }
    let server = TestServer::start(dir.path());
    let ids: Vec<&str> = answered.iter().map(String::as_str).collect();
    let found = server
        .memory()
        .await
        .get(get("t", &ids))
        .await
        .expect("get");
    assert!(
        found.into_inner().missing_ids.is_empty(),
        "an answered write was lost"
    );
}

/// While a replica shuts down, HTTP/1 keep-alive clients are sent away:
/// each answer carries `Connection: close` and its connection is closed
/// after it, on a connection opened before the shutdown and on one opened
/// during its delay. Before it, connections are kept alive.
#[tokio::test]
async fn http1_connections_close_after_each_answer_once_shutdown_begins() {
    use std::time::Duration;
    use tokio::net::TcpStream;

    let dir = tempfile::tempdir().expect("tempdir");
    // The calls after SIGTERM come during this delay, before the listeners
    // close: it is long enough for them.
    let delay = [("VECMEM__SERVER__SHUTDOWN_DELAY_MS", "5000")];
    let server = TestServer::start_with(dir.path(), &delay);
    let http_addr = server.http_addr;
    let ready_url = format!("http://{http_addr}/health/ready");

    let mut kept = TcpStream::connect(http_addr).await.expect("connect");
    for _ in 0..2 {
        let head = http1_get(&mut kept, "/health/live").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
    }

    let exit = tokio::task::spawn_blocking(move || server.terminate());
    let not_ready = support::eventually(Duration::from_secs(10), async || {
        matches!(
            vecmem::api::health::probe_ready(&ready_url, Duration::from_secs(1)).await,
            Ok(false)
        )
    })
    .await;
    assert!(not_ready, "SIGTERM did not turn readiness off");

    let head = http1_get(&mut kept, "/health/live").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        closed_by_server(&mut kept).await,
        "kept open after its answer"
    );

    let mut late = TcpStream::connect(http_addr)
        .await
        .expect("still listening");
    let head = http1_get(&mut late, "/health/live").await;
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        closed_by_server(&mut late).await,
        "kept open after its answer"
    );

    let exit = exit.await.expect("terminate");
    assert!(exit.success(), "exit status {exit:?}");
}

/// One HTTP/1.1 GET on `stream`, its answer read whole; the answer's head,
/// lower-cased.
async fn http1_get(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let request = format!("GET {path} HTTP/1.1\r\nhost: vecmem\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read_more = async |answer: &mut Vec<u8>| {
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("an answer within 10 s")
                .expect("read");
        assert!(read > 0, "closed before a whole answer");
        answer.extend_from_slice(&chunk[..read]);
    };
    let head_len = loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        read_more(&mut answer).await;
    };
    let head = String::from_utf8_lossy(&answer[..head_len]).to_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map(|value| value.trim().parse().expect("a length"))
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    while answer.len() < head_len + body_len {
        read_more(&mut answer).await;
    }
    head
}

/// Whether the server closes `stream` (end of file, or a reset) within 10 s,
/// with nothing more sent on it.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;

    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}
