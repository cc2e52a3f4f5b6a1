//! Backups of the embedded engine, as a user takes and restores them: a
//! snapshot taken with `vecmem snapshot` while many clients write, restored
//! with `vecmem restore` into a fresh data directory, holds every write
//! acknowledged before the snapshot began (and each memory in a state some
//! write gave it); a snapshot over REST restores the same way, and a
//! restore never overwrites data; the Qdrant backend refuses with a pointer
//! to Qdrant's own snapshots.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tonic::Code;
use vecmem::proto::{self, delete_request::Selector};

use support::data::*;
use support::{Backend, DIM, NS, TestServer, run_vecmem};

const WRITERS: usize = 8;
const IDS_PER_WRITER: usize = 24;
/// Acknowledged writes before the snapshot is asked for.
const WRITES_BEFORE: usize = 400;
/// Writes each writer makes at most: bounds the test if the snapshot hangs.
const MAX_WRITES_PER_WRITER: usize = 20_000;
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// The settings `vecmem restore` needs to see the test server's namespace.
fn restore_env(data: &Path) -> Vec<(String, String)> {
    let ns = format!("VECMEM__NAMESPACES__{}__", NS.to_uppercase());
    vec![
        (
            "VECMEM__BACKEND__EMBEDDED__PATH".into(),
            path_str(data).into(),
        ),
        (format!("{ns}DIM"), DIM.to_string()),
        (format!("{ns}TEXT_FIELD"), "text".into()),
    ]
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn restore(archive: &Path, data: &Path) -> std::process::Output {
    let env = restore_env(data);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_vecmem(&["restore", "--from", path_str(archive)], &env)
}

/// One write of a memory, as its writer saw it.
#[derive(Debug, Clone)]
struct Write {
    /// The `seq` the memory has after it, or `None` if it deleted it.
    state: Option<u64>,
    /// Acknowledged before the snapshot was asked for.
    acked_before: bool,
}

fn vector_of(seq: u64) -> [f32; 4] {
    [1.0, (seq % 97) as f32, (seq % 89) as f32 + 1.0, 0.5]
}

/// Whether `stored` is `written` as a cosine namespace keeps it: scaled to
/// unit length.
fn same_direction(stored: &[f32], written: &[f32; 4]) -> bool {
    let norm = written.iter().map(|x| x * x).sum::<f32>().sqrt();
    stored.len() == written.len()
        && stored
            .iter()
            .zip(written)
            .all(|(s, w)| (s - w / norm).abs() < 1e-5)
}

/// Upserts and deletes a writer's own ids in its own tenant (every writer
/// uses the same ids), recording each write, until `stop`.
async fn write_until_stopped(
    server_memory: proto::memory_service_client::MemoryServiceClient<tonic::transport::Channel>,
    writer: usize,
    snapshot_asked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    warmed_up: Arc<Notify>,
) -> BTreeMap<String, Vec<Write>> {
    let mut client = server_memory;
    let tenant = format!("t{writer}");
    let mut log: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    for step in 0..MAX_WRITES_PER_WRITER {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let seq = (writer * MAX_WRITES_PER_WRITER + step) as u64;
        // Two ids a write: each step moves on by one, so every id is
        // written over and over, and one write in five is a delete.
        let ids = [step % IDS_PER_WRITER, (step + 7) % IDS_PER_WRITER].map(|k| format!("m{k}"));
        let (outcome, state) = if step % 5 == 4 {
            let request = proto::DeleteRequest {
                namespace: NS.into(),
                tenant: tenant.clone(),
                selector: Some(Selector::Ids(proto::MemoryIds {
                    values: ids.to_vec(),
                })),
            };
            (client.delete(request).await.map(drop), None)
        } else {
            let memories = ids
                .iter()
                .map(|id| memory(id, vector_of(seq), json!({"seq": seq, "writer": writer})))
                .collect();
            (
                client.upsert(upsert(&tenant, memories)).await.map(drop),
                Some(seq),
            )
        };
        outcome.unwrap_or_else(|status| panic!("writer {writer} step {step}: {status:?}"));
        // Read after the answer: false means the write was acknowledged
        // before the snapshot was asked for.
        let acked_before = !snapshot_asked.load(Ordering::SeqCst);
        for id in &ids {
            log.entry(id.clone()).or_default().push(Write {
                state,
                acked_before,
            });
        }
        if acked.fetch_add(1, Ordering::SeqCst) + 1 == WRITES_BEFORE {
            warmed_up.notify_one();
        }
    }
    log
}

#[tokio::test]
async fn a_snapshot_under_write_load_restores_every_write_acknowledged_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = format!("VECMEM__NAMESPACES__{}__", NS.to_uppercase());
    let server = TestServer::start_with(
        &dir.path().join("live"),
        &[
            // Index builds come and go while the writers write, so the
            // snapshot also meets one in progress.
            (format!("{ns}INDEXING_THRESHOLD_KB"), "1".to_owned()),
            (
                "VECMEM__BACKEND__EMBEDDED__OPTIMIZE_INTERVAL_MS".into(),
                "20".into(),
            ),
            ("VECMEM__ADMISSION__MAX_CONCURRENCY".into(), "1024".into()),
        ],
    );
    let snapshot_asked = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let warmed_up = Arc::new(Notify::new());
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        writers.push(tokio::spawn(write_until_stopped(
            server.memory().await,
            writer,
            snapshot_asked.clone(),
            stop.clone(),
            acked.clone(),
            warmed_up.clone(),
        )));
    }
    tokio::time::timeout(TIME_LIMIT, warmed_up.notified())
        .await
        .expect("the writers warm up in time");

    let archive = dir.path().join("backup.tar.gz");
    let addr = server.grpc_addr.to_string();
    snapshot_asked.store(true, Ordering::SeqCst);
    let acked_at_snapshot = acked.load(Ordering::SeqCst);
    let snapshot = {
        let archive = archive.clone();
        tokio::task::spawn_blocking(move || {
            run_vecmem(
                &["snapshot", "--addr", &addr, "--out", path_str(&archive)],
                &[],
            )
        })
        .await
        .expect("snapshot command")
    };
    let acked_during_snapshot = acked.load(Ordering::SeqCst) - acked_at_snapshot;
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for writer in writers {
        logs.push(writer.await.expect("writer"));
    }
    assert!(
        snapshot.status.success(),
        "vecmem snapshot failed: {}\n{}",
        String::from_utf8_lossy(&snapshot.stderr),
        server.logs()
    );
    let printed = String::from_utf8_lossy(&snapshot.stdout);
    assert!(printed.starts_with("wrote "), "{printed}");
    assert!(
        server.terminate().success(),
        "the live server stops cleanly"
    );
    eprintln!("writes acknowledged while the snapshot ran: {acked_during_snapshot}");

    let restored_dir = dir.path().join("restored");
    let restored = restore(&archive, &restored_dir);
    assert!(
        restored.status.success(),
        "vecmem restore failed: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(
        String::from_utf8_lossy(&restored.stdout)
            .contains(&format!("restored namespace {NS} into")),
        "{}",
        String::from_utf8_lossy(&restored.stdout)
    );

    let server = TestServer::start(&restored_dir);
    let mut client = server.memory().await;
    let mut checked_before = 0;
    for (writer, log) in logs.iter().enumerate() {
        let tenant = format!("t{writer}");
        let ids: Vec<&str> = log.keys().map(String::as_str).collect();
        let mut request = get(&tenant, &ids);
        request.with_vector = true;
        let answer = client.get(request).await.expect("get").into_inner();
        let found: BTreeMap<String, proto::Memory> = answer
            .memories
            .into_iter()
            .map(|memory| (memory.id.clone(), memory))
            .collect();
        for (id, writes) in log {
            // The state after the last write acknowledged before the
            // snapshot, or after any later one (a write during the
            // snapshot may or may not be in it); never an older one.
            let from = writes.iter().rposition(|write| write.acked_before);
            checked_before += usize::from(from.is_some());
            let mut allowed: Vec<Option<u64>> = writes[from.unwrap_or(0)..]
                .iter()
                .map(|write| write.state)
                .collect();
            if from.is_none() {
                allowed.push(None);
            }
            let restored = found.get(id).map(|memory| {
                let payload = from_struct(memory.payload.as_ref().expect("payload"));
                // Payload numbers travel as doubles; these are exact.
                let seq = payload["seq"].as_f64().expect("seq") as u64;
                assert_eq!(
                    payload["writer"].as_f64(),
                    Some(writer as f64),
                    "{tenant}/{id}"
                );
                assert!(
                    same_direction(&memory.vector, &vector_of(seq)),
                    "{tenant}/{id} seq {seq}: vector {:?}",
                    memory.vector
                );
                seq
            });
            assert!(
                allowed.contains(&restored),
                "{tenant}/{id} restored as {restored:?}; the writes acknowledged before the \
                 snapshot allow only {allowed:?} (whole history: {writes:?})"
            );
        }
        let counted = client
            .count(count(&tenant, None))
            .await
            .expect("count")
            .into_inner()
            .count;
        assert_eq!(counted, found.len() as u64, "{tenant} holds only its ids");
    }
    assert!(
        checked_before >= IDS_PER_WRITER * WRITERS / 2,
        "only {checked_before} memories were written before the snapshot"
    );
    assert!(server.terminate().success());
}

#[tokio::test]
async fn a_snapshot_over_rest_restores_and_a_restore_never_overwrites_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("live"));
    let mut client = server.memory().await;
    for tenant in ["a", "b"] {
        let memories = (0..50)
            .map(|k| {
                let id = format!("{tenant}-{k}");
                memory(&id, [k as f32, 1.0, 0.0, 0.0], json!({"k": k}))
            })
            .collect();
        client
            .upsert(upsert(tenant, memories))
            .await
            .expect("upsert");
    }
    let url = format!("http://{}/v1/snapshot", server.http_addr);
    let (status, headers, archive) = support::http_bytes("POST", &url, String::new(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/gzip");
    assert_eq!(&archive[..2], &[0x1f, 0x8b], "a gzip stream");
    let archive_path = dir.path().join("rest.tar.gz");
    std::fs::write(&archive_path, &archive).expect("write archive");

    let restored_dir = dir.path().join("restored");
    let first = restore(&archive_path, &restored_dir);
    assert!(first.status.success(), "{first:?}");

    // A second restore into the same place refuses, naming what is there.
    let again = restore(&archive_path, &restored_dir);
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains(path_str(&restored_dir)), "{said}");
    assert!(said.contains("already holds data"), "{said}");
    // Neither does a file that is not a snapshot, into an empty directory.
    let not_a_snapshot = dir.path().join("notes.txt");
    std::fs::write(&not_a_snapshot, "hello").expect("write");
    let wrong = restore(&not_a_snapshot, &dir.path().join("other"));
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("is not a readable snapshot"),
        "{wrong:?}"
    );

    // What the refused restore found in place is the first restore, whole.
    let restored = TestServer::start(&restored_dir);
    let mut restored_client = restored.memory().await;
    for tenant in ["a", "b"] {
        let ids: Vec<String> = (0..50).map(|k| format!("{tenant}-{k}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut request = get(tenant, &ids);
        request.with_vector = true;
        let live = client.get(request.clone()).await.expect("get").into_inner();
        let back = restored_client
            .get(request)
            .await
            .expect("get")
            .into_inner();
        assert_eq!(back, live, "tenant {tenant}");
        assert_eq!(back.memories.len(), 50);
    }
    // The live server is still whole and writable after its snapshot.
    client
        .upsert(upsert(
            "a",
            vec![memory("late", [0.0, 1.0, 0.0, 0.0], json!({}))],
        ))
        .await
        .expect("a write after the snapshot");
    assert!(restored.terminate().success());
    assert!(server.terminate().success());
    assert!(
        !dir.path().join("live").join(".snapshots").exists()
            || std::fs::read_dir(dir.path().join("live").join(".snapshots"))
                .expect("read")
                .next()
                .is_none(),
        "the snapshot's staging copy is removed"
    );
}

#[tokio::test]
async fn on_the_qdrant_backend_a_snapshot_points_to_qdrant_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Backend::double();
    let server = backend.start_server(dir.path());
    let mut namespaces = server.namespaces().await;
    let status = match namespaces.snapshot(proto::SnapshotRequest {}).await {
        Ok(response) => {
            let mut stream = response.into_inner();
            stream.message().await.expect_err("no archive from Qdrant")
        }
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("Qdrant's own snapshots"),
        "{status:?}"
    );

    let url = format!("http://{}/v1/snapshot", server.http_addr);
    let answer = support::http("POST", &url, None, &[]).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer.json()["code"],
        "FAILED_PRECONDITION",
        "{}",
        answer.body
    );
    assert!(server.terminate().success());
}
