//! The embedded engine keeps taking writes while it builds an index, and a
//! SIGKILL in the middle of a build loses none of them.
//!
//! Before the journal, every write waited for the whole index build in
//! progress (qdrant-edge can only make data durable between builds); now a
//! write is journaled and acknowledged at once, and the journal is replayed
//! at the next start. This test makes acknowledged writes of every kind
//! (upserts over indexed points, merges, deletes by id and by filter) while
//! a build is seen running, kills the server during that build, and checks
//! every point after the restart.
//!
//! The engine's own WAL, which qdrant-edge never truncates, is cut down to
//! the segment that numbers the next write at each start, and the writes
//! after that restart (and after a crash that follows) still replace the
//! memories they name.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vecmem::proto::{self, delete_request::Selector};

use support::TestServer;
use support::data::{from_struct, integer, must, to_struct};

const NS: &str = "crash";
const DIM: usize = 64;
const TENANT: &str = "t";
const CLIENTS: usize = 16;
const SEEDED_PER_CLIENT: usize = 400;
/// Rounds of writes acknowledged while one build is seen running before the kill.
const ROUNDS_DURING_A_BUILD: usize = 3;
const MAX_ROUNDS: usize = 300;
const TIME_LIMIT: Duration = Duration::from_secs(120);

type Client = proto::memory_service_client::MemoryServiceClient<tonic::transport::Channel>;

/// What each point must be after the restart: its payload and vector, or
/// gone.
type Expected = BTreeMap<String, Option<(Value, Vec<f32>)>>;

fn start(dir: &Path) -> TestServer {
    let ns = format!("VECMEM__NAMESPACES__{}__", NS.to_uppercase());
    TestServer::start_with(
        dir,
        &[
            (format!("{ns}DIM"), DIM.to_string()),
            // Index from ~4,000 vectors on, with a slow-to-build graph, so
            // builds are long and keep coming while the test writes.
            (format!("{ns}INDEXING_THRESHOLD_KB"), "1000".into()),
            (format!("{ns}HNSW_EF_CONSTRUCT"), "400".into()),
            (format!("{ns}HNSW_M"), "32".into()),
            (
                "VECMEM__BACKEND__EMBEDDED__OPTIMIZE_INTERVAL_MS".into(),
                "50".into(),
            ),
            // Every read below is of the store, never of the cache.
            ("VECMEM__PIPELINE__CACHE__ENABLED".into(), "false".into()),
        ],
    )
}

/// True while the engine is building a segment (it builds in `temp_segments`).
fn index_build_running(dir: &Path) -> bool {
    std::fs::read_dir(dir.join(NS).join("temp_segments"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

fn vector(seed: usize) -> Vec<f32> {
    vector_of(DIM, seed)
}

/// A vector of `dim` dimensions that `seed` tells apart from others.
fn vector_of(dim: usize, seed: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| ((seed * 31 + i * 7) % 97) as f32 / 97.0 + 0.01)
        .collect()
}

fn memory(id: &str, seed: usize, payload: Value) -> proto::Memory {
    proto::Memory {
        id: id.into(),
        vector: vector(seed),
        payload: Some(to_struct(payload)),
        updated_at: None,
        expires_at: None,
        ttl: None,
    }
}

async fn upsert(client: &mut Client, memories: Vec<proto::Memory>, expected: &mut Expected) {
    for memory in &memories {
        let payload = from_struct(memory.payload.as_ref().expect("payload"));
        expected.insert(memory.id.clone(), Some((payload, memory.vector.clone())));
    }
    client
        .upsert(proto::UpsertRequest {
            namespace: NS.into(),
            tenant: TENANT.into(),
            memories,
        })
        .await
        .expect("acknowledged upsert");
}

async fn merge(client: &mut Client, id: &str, patch: Value, expected: &mut Expected) {
    client
        .update_payload(proto::UpdatePayloadRequest {
            namespace: NS.into(),
            tenant: TENANT.into(),
            ids: vec![id.into()],
            payload: Some(to_struct(patch.clone())),
            replace: false,
            filter: None,
            expiry: None,
        })
        .await
        .expect("acknowledged merge");
    let Some(Some((payload, _))) = expected.get_mut(id) else {
        panic!("{id} is merged only while it exists");
    };
    for (key, value) in as_stored(patch).as_object().expect("object") {
        // A top-level null removes the key: Qdrant's merge semantics.
        match value {
            Value::Null => payload.as_object_mut().expect("object").remove(key),
            value => payload
                .as_object_mut()
                .expect("object")
                .insert(key.clone(), value.clone()),
        };
    }
}

async fn delete(client: &mut Client, selector: Selector) {
    client
        .delete(proto::DeleteRequest {
            namespace: NS.into(),
            tenant: TENANT.into(),
            selector: Some(selector),
        })
        .await
        .expect("acknowledged delete");
}

/// `payload` as a Get answers it (numbers come back as floats).
fn as_stored(payload: Value) -> Value {
    from_struct(&to_struct(payload))
}

fn seeded_id(client: usize, round: usize) -> (String, usize) {
    let n = client * SEEDED_PER_CLIENT + round % SEEDED_PER_CLIENT;
    (format!("s{n}"), n)
}

/// One round of one client: two writes to one seeded point (each round a
/// different one, owned by this client alone) and a new point.
async fn client_round(mut client: Client, c: usize, round: usize) -> (Client, Expected) {
    let mut expected = Expected::new();
    let (id, n) = seeded_id(c, round);
    let seeded = as_stored(json!({"n": n, "group": n % 10}));
    expected.insert(id.clone(), Some((seeded, vector(n))));
    match round % 4 {
        0 => {
            let replaced = memory(&id, n + 1, json!({"n": n, "round": round}));
            upsert(&mut client, vec![replaced], &mut expected).await;
            merge(&mut client, &id, json!({"edited": round}), &mut expected).await;
        }
        1 => {
            merge(&mut client, &id, json!({"edited": round}), &mut expected).await;
            merge(&mut client, &id, json!({"group": null}), &mut expected).await;
        }
        2 => {
            merge(&mut client, &id, json!({"edited": round}), &mut expected).await;
            delete(
                &mut client,
                Selector::Ids(proto::MemoryIds {
                    values: vec![id.clone()],
                }),
            )
            .await;
            expected.insert(id, None);
        }
        _ => {
            let replaced = memory(&id, n + 2, json!({"n": n, "round": round}));
            upsert(&mut client, vec![replaced], &mut expected).await;
            delete(
                &mut client,
                Selector::Filter(must(vec![integer("n", n as i64)])),
            )
            .await;
            expected.insert(id, None);
        }
    }
    let fresh = format!("c{c}-r{round}");
    let new = memory(&fresh, 10_000 + round, json!({"client": c, "round": round}));
    upsert(&mut client, vec![new], &mut expected).await;
    (client, expected)
}

fn normalized(vector: &[f32]) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    vector.iter().map(|x| x / norm).collect()
}

async fn assert_every_point(server: &TestServer, expected: &Expected) {
    let mut client = server.memory().await;
    let ids: Vec<String> = expected.keys().cloned().collect();
    let mut found = BTreeMap::new();
    for chunk in ids.chunks(256) {
        let answer = client
            .get(proto::GetRequest {
                namespace: NS.into(),
                tenant: TENANT.into(),
                ids: chunk.to_vec(),
                with_vector: true,
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner();
        for memory in answer.memories {
            found.insert(memory.id.clone(), memory);
        }
    }
    let mut wrong = Vec::new();
    for (id, want) in expected {
        match (want, found.get(id)) {
            (None, None) => {}
            (Some((payload, vector)), Some(memory)) => {
                let got = from_struct(memory.payload.as_ref().expect("payload"));
                let vector_matches = normalized(vector)
                    .iter()
                    .zip(&memory.vector)
                    .all(|(want, got)| (want - got).abs() < 1e-5);
                if &got != payload || !vector_matches || memory.vector.len() != DIM {
                    wrong.push(format!("{id}: want {payload}, got {got}"));
                }
            }
            (want, got) => wrong.push(format!(
                "{id}: want {}, got {}",
                if want.is_some() { "present" } else { "gone" },
                if got.is_some() { "present" } else { "gone" }
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} points wrong after the restart, e.g. {:?}",
        wrong.len(),
        expected.len(),
        &wrong[..wrong.len().min(10)]
    );
    let counted = client
        .count(proto::CountRequest {
            namespace: NS.into(),
            tenant: TENANT.into(),
            filter: None,
        })
        .await
        .expect("count")
        .into_inner()
        .count;
    let present = expected.values().filter(|want| want.is_some()).count();
    assert_eq!(counted as usize, present, "count after the restart");
}

/// Seeds a namespace, then writes from every client, round after round,
/// until [`ROUNDS_DURING_A_BUILD`] rounds in a row were acknowledged while an
/// index build was running; returns with that build still running.
async fn write_during_an_index_build(server: &TestServer, dir: &Path) -> Expected {
    let mut expected = Expected::new();
    let mut seeder = server.memory().await;
    let seeded: Vec<_> = (0..CLIENTS * SEEDED_PER_CLIENT)
        .map(|n| memory(&format!("s{n}"), n, json!({"n": n, "group": n % 10})))
        .collect();
    for batch in seeded.chunks(256) {
        upsert(&mut seeder, batch.to_vec(), &mut expected).await;
    }

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(server.memory().await);
    }
    let started = Instant::now();
    let mut rounds_in_this_build = 0;
    let mut round = 0;
    while rounds_in_this_build < ROUNDS_DURING_A_BUILD {
        assert!(
            round < MAX_ROUNDS && started.elapsed() < TIME_LIMIT,
            "no {ROUNDS_DURING_A_BUILD} rounds of writes were acknowledged while an index \
             build ran, in {round} rounds and {:?}; writes are waiting for index builds",
            started.elapsed()
        );
        let building_before = index_build_running(dir);
        let rounds = clients
            .drain(..)
            .enumerate()
            .map(|(c, client)| tokio::spawn(client_round(client, c, round)));
        for finished in futures::future::join_all(rounds).await {
            let (client, changes) = finished.expect("client task");
            clients.push(client);
            expected.extend(changes);
        }
        let building_after = index_build_running(dir);
        rounds_in_this_build = if building_before && building_after {
            rounds_in_this_build + 1
        } else {
            0
        };
        round += 1;
    }
    eprintln!(
        "an index build ran through the last {ROUNDS_DURING_A_BUILD} of {round} rounds \
         ({} points written)",
        expected.len()
    );
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_during_an_index_build_loses_no_write_acknowledged_during_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let expected = write_during_an_index_build(&server, dir.path()).await;
    server.kill();

    let server = start(dir.path());
    assert!(
        server.logs().contains("journal replayed"),
        "the restart replayed the writes made during the build"
    );
    assert_every_point(&server, &expected).await;
}

/// A graceful stop does not wait for the build to end (its journal is left
/// to the next start), and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigterm_during_an_index_build_exits_cleanly_and_keeps_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let expected = write_during_an_index_build(&server, dir.path()).await;
    let status = server.terminate();
    assert!(status.success(), "graceful stop exits 0, got {status}");

    let server = start(dir.path());
    assert_every_point(&server, &expected).await;
}

const WIDE_NS: &str = "wide";
const WIDE_DIM: usize = 1024;
/// Batches of 256 memories of 1024 dimensions, each about 1.3 MB in the
/// engine's WAL: enough for three of its 32 MiB segments to close.
const WIDE_BATCHES: usize = 80;

fn start_wide(dir: &Path) -> TestServer {
    TestServer::start_with(
        dir,
        &[
            ("VECMEM__NAMESPACES__WIDE__DIM", WIDE_DIM.to_string()),
            // Vectors come back as written (cosine would normalise them).
            ("VECMEM__NAMESPACES__WIDE__DISTANCE", "dot".into()),
            ("VECMEM__PIPELINE__CACHE__ENABLED", "false".into()),
        ],
    )
}

fn wide_memory(id: &str, seed: usize) -> proto::Memory {
    proto::Memory {
        id: id.into(),
        vector: vector_of(WIDE_DIM, seed),
        payload: Some(to_struct(json!({"seed": seed}))),
        ..proto::Memory::default()
    }
}

/// The engine's closed WAL segments, in the order they were written.
fn closed_wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut closed: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.join(WIDE_NS).join("wal"))
        .expect("the engine's WAL directory")
        .filter_map(|entry| {
            let path = entry.expect("entry").path();
            let name = path.file_name()?.to_str()?;
            let start = name.strip_prefix("closed-")?.parse().ok()?;
            Some((start, path))
        })
        .collect();
    closed.sort();
    closed.into_iter().map(|(_, path)| path).collect()
}

async fn write_wide(server: &TestServer, memories: Vec<proto::Memory>) {
    server
        .memory()
        .await
        .upsert(proto::UpsertRequest {
            namespace: WIDE_NS.into(),
            tenant: TENANT.into(),
            memories,
        })
        .await
        .expect("acknowledged upsert");
}

/// The seed memory `id` holds now, by its payload, checked against its vector.
async fn wide_seed(server: &TestServer, id: &str) -> usize {
    let found = server
        .memory()
        .await
        .get(proto::GetRequest {
            namespace: WIDE_NS.into(),
            tenant: TENANT.into(),
            ids: vec![id.into()],
            with_vector: true,
            consistency: proto::ReadConsistency::Fresh as i32,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(found.memories.len(), 1, "{id} missing");
    let memory = &found.memories[0];
    let payload = from_struct(memory.payload.as_ref().expect("payload"));
    let seed = payload["seed"].as_f64().expect("seed") as usize;
    assert!(
        memory.vector == wide_memory(id, seed).vector,
        "{id}: the vector is not the one written with seed {seed}"
    );
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_wal_is_truncated_at_start_and_later_writes_still_replace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_wide(dir.path());
    for batch in 0..WIDE_BATCHES {
        let memories = (0..256)
            .map(|k| wide_memory(&format!("m{}", batch * 256 + k), batch))
            .collect();
        write_wide(&server, memories).await;
    }
    assert!(server.terminate().success());
    let closed_before = closed_wal_segments(dir.path());
    assert!(
        closed_before.len() >= 2,
        "the WAL closed {closed_before:?}; the test needs at least 2"
    );

    // The start deletes all closed segments but the last (the journal's
    // replay, when the stop met an index build, writes new ones), and the
    // writes after it still replace what the earlier ones wrote.
    let server = start_wide(dir.path());
    let (last, superseded) = closed_before.split_last().expect("closed segments");
    assert!(
        last.exists(),
        "{last:?}, which numbers the next write, was deleted"
    );
    assert!(
        superseded.iter().all(|segment| !segment.exists()),
        "of {closed_before:?} only the last should be left"
    );
    assert_eq!(wide_seed(&server, "m0").await, 0);
    write_wide(&server, vec![wide_memory("m0", 1_000)]).await;
    assert_eq!(wide_seed(&server, "m0").await, 1_000);

    // So do the ones replayed from the journal after a crash.
    write_wide(&server, vec![wide_memory("m1", 2_000)]).await;
    server.kill();
    let server = start_wide(dir.path());
    assert_eq!(wide_seed(&server, "m0").await, 1_000);
    assert_eq!(wide_seed(&server, "m1").await, 2_000);
    write_wide(&server, vec![wide_memory("m1", 3_000)]).await;
    assert_eq!(wide_seed(&server, "m1").await, 3_000);
    let last = format!("m{}", WIDE_BATCHES * 256 - 1);
    assert_eq!(wide_seed(&server, &last).await, WIDE_BATCHES - 1);
}
