//! The embedded engine's back-pressure on writes: when its index falls
//! behind, writes slow down instead of piling up unindexed points or
//! failing; when its journal is full, the next write waits for a checkpoint
//! instead of growing it. Either way every write is still acknowledged and
//! every acknowledged write is read back, also after a SIGKILL.
//!
//! Unless a test says otherwise the indexer is parked (its first round finds
//! the namespace empty, the next is a day away), so points written stay
//! unindexed, the backlog only grows and no checkpoint comes by itself; many
//! clients then write at once, sharing ids and tenants.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use vecmem::proto;

use support::TestServer;
use support::data::{count, from_struct, memory, upsert};

const CLIENTS: usize = 24;
const WRITES_PER_CLIENT: usize = 20;
const SHARED_IDS: usize = 120;
const TENANTS: usize = 3;
const SEEDED: usize = 200;
/// Seed memories per write: a journal entry of a few KB.
const SEED_BATCH: usize = 20;

/// The settings a test changes from the defaults.
struct Limits {
    max_unindexed_points: &'static str,
    max_journal_kb: &'static str,
    optimize_interval_ms: &'static str,
}

/// The indexer parked, and no journal bound.
const PARKED: Limits = Limits {
    max_unindexed_points: "0",
    max_journal_kb: "0",
    optimize_interval_ms: "86400000",
};

fn start(dir: &Path, limits: &Limits) -> TestServer {
    let ns = format!("VECMEM__NAMESPACES__{}__", support::NS.to_uppercase());
    let embedded = "VECMEM__BACKEND__EMBEDDED__";
    TestServer::start_with(
        dir,
        &[
            // 1 KB of 4-dim vectors: 64 points stay unindexed on purpose.
            (format!("{ns}INDEXING_THRESHOLD_KB"), "1"),
            (
                format!("{embedded}OPTIMIZE_INTERVAL_MS"),
                limits.optimize_interval_ms,
            ),
            (
                format!("{embedded}MAX_UNINDEXED_POINTS"),
                limits.max_unindexed_points,
            ),
            (format!("{embedded}MAX_JOURNAL_KB"), limits.max_journal_kb),
            ("VECMEM__PIPELINE__CACHE__ENABLED".into(), "false"),
        ],
    )
}

fn tenant_of(id: usize) -> String {
    format!("t{}", id % TENANTS)
}

/// Writes the seed and then, from every client at once, memories over
/// shared ids; returns every payload acknowledged for each (tenant, id).
async fn write_concurrently(server: &TestServer) -> BTreeMap<(String, String), Vec<Value>> {
    let mut acknowledged: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    let seed: Vec<_> = (0..SEEDED)
        .map(|i| {
            let payload = json!({"seed": i, "text": format!("seed memory {i}")});
            memory(&format!("s{i}"), [1.0, i as f32, 0.5, 0.25], payload)
        })
        .collect();
    for m in &seed {
        let payload = from_struct(m.payload.as_ref().expect("payload"));
        acknowledged
            .entry(("t0".into(), m.id.clone()))
            .or_default()
            .push(payload);
    }
    let mut client = server.memory().await;
    for batch in seed.chunks(SEED_BATCH) {
        client
            .upsert(upsert("t0", batch.to_vec()))
            .await
            .expect("seed acknowledged");
    }

    let mut writers = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let mut client = server.memory().await;
        writers.spawn(async move {
            let mut mine = Vec::new();
            for j in 0..WRITES_PER_CLIENT {
                let id = (c * 7 + j) % SHARED_IDS;
                let tenant = tenant_of(id);
                // Half of them with text, so the text vectors count too.
                let payload = if j % 2 == 0 {
                    json!({"client": c, "write": j, "text": format!("client {c} write {j}")})
                } else {
                    json!({"client": c, "write": j})
                };
                let m = memory(&format!("m{id}"), [c as f32, j as f32, 1.0, 0.5], payload);
                let stored = from_struct(m.payload.as_ref().expect("payload"));
                client
                    .upsert(upsert(&tenant, vec![m]))
                    .await
                    .unwrap_or_else(|status| panic!("client {c} write {j}: {status}"));
                mine.push(((tenant, format!("m{id}")), stored));
            }
            mine
        });
    }
    while let Some(mine) = writers.join_next().await {
        for (key, payload) in mine.expect("writer") {
            acknowledged.entry(key).or_default().push(payload);
        }
    }
    acknowledged
}

/// Every (tenant, id) holds one of the payloads acknowledged for it, and
/// each tenant counts exactly the ids written to it.
async fn assert_read_back(
    server: &TestServer,
    acknowledged: &BTreeMap<(String, String), Vec<Value>>,
) {
    let mut client = server.memory().await;
    let mut ids_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (tenant, id) in acknowledged.keys() {
        ids_of.entry(tenant.clone()).or_default().insert(id.clone());
    }
    for (tenant, ids) in &ids_of {
        let answer = client
            .get(proto::GetRequest {
                namespace: support::NS.into(),
                tenant: tenant.clone(),
                ids: ids.iter().cloned().collect(),
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner();
        let found: BTreeMap<_, _> = answer
            .memories
            .iter()
            .map(|m| {
                (
                    m.id.clone(),
                    from_struct(m.payload.as_ref().expect("payload")),
                )
            })
            .collect();
        for id in ids {
            let written = &acknowledged[&(tenant.clone(), id.clone())];
            let got = found
                .get(id)
                .unwrap_or_else(|| panic!("{tenant}/{id} acknowledged but not found"));
            assert!(
                written.contains(got),
                "{tenant}/{id} holds {got}, never written to it ({written:?})"
            );
        }
        let counted = client
            .count(count(tenant, None))
            .await
            .expect("count")
            .into_inner()
            .count;
        assert_eq!(counted as usize, ids.len(), "count of tenant {tenant}");
    }
}

/// What a run left: the server's log, and the largest size its journal
/// file was seen at while the clients wrote.
struct Run {
    logs: String,
    largest_journal: u64,
}

/// Runs the writes against a fresh server with `limits`, watching the
/// journal's size; checks every write was kept, then again after a SIGKILL
/// and a restart.
async fn write_and_read_back(limits: &Limits) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), limits);
    let journal = dir.path().join(support::NS).join("vecmem-journal");
    let largest = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (largest, writing) = (largest.clone(), writing.clone());
        tokio::spawn(async move {
            // Bounded: the writes take seconds.
            for _ in 0..120_000 {
                if !writing.load(Ordering::SeqCst) {
                    break;
                }
                let size = std::fs::metadata(&journal).map_or(0, |m| m.len());
                largest.fetch_max(size, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let acknowledged = write_concurrently(&server).await;
    writing.store(false, Ordering::SeqCst);
    watcher.await.expect("journal watcher");
    assert_read_back(&server, &acknowledged).await;
    let logs = server.logs();

    server.kill();
    let server = start(dir.path(), limits);
    assert_read_back(&server, &acknowledged).await;
    Run {
        logs,
        largest_journal: largest.load(Ordering::SeqCst),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_over_the_unindexed_limit_are_paced_and_all_kept() {
    let logs = write_and_read_back(&Limits {
        max_unindexed_points: "50",
        ..PARKED
    })
    .await
    .logs;
    assert!(
        logs.contains("writes paced"),
        "{SEEDED} unindexed points, 64 of them below the indexing threshold, \
         are over the limit of 50, yet no write was paced:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_pacing_off_the_same_writes_are_never_paced() {
    let logs = write_and_read_back(&PARKED).await.logs;
    assert!(!logs.contains("writes paced"));
}

/// Above the largest write's entry (a seed batch: 20 memories of 4 dims,
/// each with a short payload and its text vector, a few KB), far below what
/// the writes add up to (over 100 KB).
const JOURNAL_KB: u64 = 8;

/// The journal never grows past its bound by more than one write, though
/// nothing else checkpoints: the writes that find it full take the
/// checkpoint themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_journal_is_checkpointed_before_the_next_write() {
    let run = write_and_read_back(&Limits {
        max_journal_kb: "8",
        ..PARKED
    })
    .await;
    assert!(
        run.logs.contains("journal full"),
        "the journal never filled:\n{}",
        run.logs
    );
    assert_journal_bounded(&run);
}

/// The same while the indexer builds again and again (every 64 points
/// written make a segment to index): a write that finds the journal full
/// during a build waits for the checkpoint after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_journal_during_index_builds_waits_for_a_checkpoint() {
    let run = write_and_read_back(&Limits {
        max_journal_kb: "8",
        optimize_interval_ms: "20",
        ..PARKED
    })
    .await;
    assert_journal_bounded(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_journal_bound_the_journal_holds_every_write() {
    let run = write_and_read_back(&PARKED).await;
    assert!(
        run.largest_journal > 4 * JOURNAL_KB * 1024,
        "the writes add up to less than the bound tested above: {} bytes",
        run.largest_journal
    );
}

fn assert_journal_bounded(run: &Run) {
    println!(
        "journal at most {} bytes; the journal filled {} times",
        run.largest_journal,
        run.logs.matches("journal full").count()
    );
    let most = 2 * JOURNAL_KB * 1024;
    assert!(
        run.largest_journal <= most,
        "the journal reached {} bytes, past the bound of {JOURNAL_KB} KB and the largest write",
        run.largest_journal
    );
}
