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
use support::{Backend, DIM, NS, TestServer, run_vecmem, run_vecmem_within};

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

/// Every writer's record of its writes: by tenant index, id, in order.
type WriteLogs = Vec<BTreeMap<String, Vec<Write>>>;

/// [`WRITERS`] clients writing to a server until stopped.
struct WriteLoad {
    snapshot_asked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    writers: Vec<tokio::task::JoinHandle<BTreeMap<String, Vec<Write>>>>,
}

impl WriteLoad {
    /// Starts the writers; returns once [`WRITES_BEFORE`] writes were
    /// acknowledged.
    async fn start(server: &TestServer) -> Self {
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
        Self {
            snapshot_asked,
            stop,
            acked,
            writers,
        }
    }

    /// Called just before the backup is asked for: writes acknowledged
    /// from here on may or may not be in it.
    fn snapshot_asked(&self) -> usize {
        self.snapshot_asked.store(true, Ordering::SeqCst);
        self.acked.load(Ordering::SeqCst)
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    async fn stop(self) -> WriteLogs {
        self.stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        for writer in self.writers {
            logs.push(writer.await.expect("writer"));
        }
        logs
    }
}

/// Checks every memory the writers touched on `server`, which runs on the
/// restored backup: each is in the state the last write acknowledged before
/// the backup gave it, or one a later write gave it (a write during the
/// backup may or may not be in it); never an older one, never another
/// writer's.
async fn check_restored(server: &TestServer, logs: &WriteLogs) {
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
                 backup allow only {allowed:?} (whole history: {writes:?})"
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
        "only {checked_before} memories were written before the backup"
    );
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
    let load = WriteLoad::start(&server).await;

    let archive = dir.path().join("backup.tar.gz");
    let addr = server.grpc_addr.to_string();
    let acked_at_snapshot = load.snapshot_asked();
    let started = std::time::Instant::now();
    let snapshot = {
        let archive = archive.clone();
        // It waits for the index build in progress, and a debug build
        // copies and compresses slowly: bounded generously.
        tokio::task::spawn_blocking(move || {
            run_vecmem_within(
                &["snapshot", "--addr", &addr, "--out", path_str(&archive)],
                &[],
                TIME_LIMIT,
            )
        })
        .await
        .expect("snapshot command")
    };
    let took = started.elapsed();
    let acked_during_snapshot = load.acked() - acked_at_snapshot;
    let logs = load.stop().await;
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
    eprintln!("the snapshot took {took:?}; writes acknowledged meanwhile: {acked_during_snapshot}");

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
    check_restored(&server, &logs).await;
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
    // As a browser or `curl --compressed` asks: the archive is gzipped
    // already, so it comes as it is, not gzipped a second time.
    let (status, headers, archive) =
        support::http_bytes("POST", &url, String::new(), &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/gzip");
    assert!(!headers.contains_key("content-encoding"), "{headers:?}");
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
    // The restored data takes new versions of its memories.
    restored_client
        .upsert(upsert(
            "a",
            vec![memory("a-0", [0.0, 0.0, 1.0, 0.0], json!({"k": 999}))],
        ))
        .await
        .expect("a write to the restored data");
    let rewritten = restored_client
        .get(get("a", &["a-0"]))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        from_struct(rewritten.memories[0].payload.as_ref().expect("payload"))["k"].as_f64(),
        Some(999.0)
    );
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

#[cfg(not(qdrant_bin))]
#[test]
#[ignore = "set QDRANT_BIN to a Qdrant server binary to back up and restore a real Qdrant through its snapshots"]
fn qdrant_snapshots() {}

/// The Qdrant backend is backed up with Qdrant's own snapshots, through the
/// calls the README lists: one per namespace's collection, taken while
/// vecmem's clients write, uploaded into a fresh Qdrant.
#[cfg(qdrant_bin)]
mod qdrant_snapshots {
    use axum::body::Bytes;

    use super::support::qdrant_real::{QdrantCluster, QdrantNode, TOPOLOGY, binary};
    use super::support::{eventually, http, http_bytes, start_in_front_of_qdrant};
    use super::*;

    /// A collection per configured namespace: the test's and the defaults.
    const COLLECTIONS: [&str; 3] = [NS, "memories", "documents"];

    /// `POST /collections/C/snapshots?wait=true`, then `GET` the file it names.
    async fn snapshot_collection(node: &QdrantNode, collection: &str) -> Bytes {
        let base = format!(
            "http://127.0.0.1:{}/collections/{collection}/snapshots",
            node.http_port
        );
        let created = http("POST", &format!("{base}?wait=true"), None, &[]).await;
        assert_eq!(created.status, 200, "{}", created.body);
        let name = created.json()["result"]["name"]
            .as_str()
            .expect("snapshot name")
            .to_owned();
        let (status, _, file) =
            http_bytes("GET", &format!("{base}/{name}"), Bytes::new(), &[]).await;
        assert_eq!(status, 200, "download {name}");
        file
    }

    /// `POST /collections/C/snapshots/upload?priority=snapshot`, the file as
    /// the multipart field `snapshot` (what `curl -F snapshot=@FILE` sends).
    async fn upload(node: &QdrantNode, collection: &str, file: &[u8]) {
        let boundary = "vecmem-backup-test";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; \
             filename=\"{collection}.snapshot\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let url = format!(
            "http://127.0.0.1:{}/collections/{collection}/snapshots/upload?priority=snapshot&wait=true",
            node.http_port
        );
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let (status, _, answer) =
            http_bytes("POST", &url, body, &[("content-type", &content_type)]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }

    #[tokio::test]
    async fn qdrant_snapshots_under_write_load_restore_every_write_acknowledged_before_them() {
        let binary = binary().expect("QDRANT_BIN was set at build time");
        let live = QdrantNode::start(&binary).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let server = start_in_front_of_qdrant(&live.url(), &dir.path().join("live"), &[]);
        let load = WriteLoad::start(&server).await;
        let acked_at_snapshot = load.snapshot_asked();
        let mut files = Vec::new();
        for collection in COLLECTIONS {
            files.push((collection, snapshot_collection(&live, collection).await));
        }
        let acked_during_snapshots = load.acked() - acked_at_snapshot;
        let logs = load.stop().await;
        assert!(server.terminate().success());
        eprintln!("writes acknowledged while the snapshots were taken: {acked_during_snapshots}");

        let fresh = QdrantNode::start(&binary).await;
        for (collection, file) in &files {
            upload(&fresh, collection, file).await;
        }
        let server = start_in_front_of_qdrant(&fresh.url(), &dir.path().join("restored"), &[]);
        check_restored(&server, &logs).await;
        assert!(server.terminate().success());
    }

    /// Whether every replica of every shard of `collection`, as `node` sees
    /// them, is active.
    async fn all_replicas_active(node: &QdrantNode, collection: &str) -> bool {
        let url = format!(
            "http://127.0.0.1:{}/collections/{collection}/cluster",
            node.http_port
        );
        let answer = http("GET", &url, None, &[]).await;
        if answer.status != 200 {
            return false;
        }
        let result = &answer.json()["result"];
        let states: Vec<String> = ["local_shards", "remote_shards"]
            .iter()
            .flat_map(|side| result[side].as_array().cloned().unwrap_or_default())
            .map(|shard| shard["state"].as_str().unwrap_or_default().to_owned())
            .collect();
        states.len() == 6 * 3 && states.iter().all(|state| state == "Active")
    }

    /// On the shipped topology every node holds every shard, so one node's
    /// snapshot is the whole collection; uploaded to one node of a fresh
    /// cluster with `priority=snapshot`, Qdrant copies it to the others.
    #[tokio::test]
    async fn a_cluster_is_backed_up_from_one_node_and_restored_through_one_node() {
        let binary = binary().expect("QDRANT_BIN was set at build time");
        let live = QdrantCluster::start(&binary, 3).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let server = start_in_front_of_qdrant(&live.urls(), &dir.path().join("live"), &TOPOLOGY);
        let load = WriteLoad::start(&server).await;
        load.snapshot_asked();
        assert!(all_replicas_active(&live.nodes[1], NS).await);
        let file = snapshot_collection(&live.nodes[1], NS).await;
        let logs = load.stop().await;
        assert!(server.terminate().success());
        drop(live);

        let fresh = QdrantCluster::start(&binary, 3).await;
        upload(&fresh.nodes[0], NS, &file).await;
        for node in &fresh.nodes {
            assert!(
                eventually(TIME_LIMIT, async || all_replicas_active(node, NS).await).await,
                "the restored collection's replicas become active on every node"
            );
        }
        let server =
            start_in_front_of_qdrant(&fresh.urls(), &dir.path().join("restored"), &TOPOLOGY);
        check_restored(&server, &logs).await;
        assert!(server.terminate().success());
    }
}
