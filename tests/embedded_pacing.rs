//! When the embedded engine's index falls behind, writes slow down instead of
//! piling up unindexed points or failing: every write is still acknowledged
//! and every acknowledged write is read back, and reads are not held behind
//! a paused write.
//!
//! The indexer is parked (its first round finds the namespace empty, the next
//! is a day away), so points written stay unindexed and the backlog only
//! grows; many clients then write at once, sharing ids and tenants.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Value, json};
use vecmem::proto;

use support::TestServer;
use support::data::{count, from_struct, memory, upsert};

const CLIENTS: usize = 24;
const WRITES_PER_CLIENT: usize = 20;
const SHARED_IDS: usize = 120;
const TENANTS: usize = 3;
const SEEDED: usize = 200;

fn start(dir: &Path, max_unindexed_points: &str) -> TestServer {
    let ns = format!("VECMEM__NAMESPACES__{}__", support::NS.to_uppercase());
    TestServer::start_with(
        dir,
        &[
            // 1 KB of 4-dim vectors: 64 points stay unindexed on purpose.
            (format!("{ns}INDEXING_THRESHOLD_KB"), "1"),
            (
                "VECMEM__BACKEND__EMBEDDED__OPTIMIZE_INTERVAL_MS".into(),
                "86400000",
            ),
            (
                "VECMEM__BACKEND__EMBEDDED__MAX_UNINDEXED_POINTS".into(),
                max_unindexed_points,
            ),
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
    client
        .upsert(upsert("t0", seed))
        .await
        .expect("seed acknowledged");

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

/// Runs the writes against a fresh server with `max_unindexed_points`,
/// checks every one was kept, and returns the server's log.
async fn write_and_read_back(max_unindexed_points: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), max_unindexed_points);
    let acknowledged = write_concurrently(&server).await;
    assert_read_back(&server, &acknowledged).await;
    server.logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_over_the_unindexed_limit_are_paced_and_all_kept() {
    let logs = write_and_read_back("50").await;
    assert!(
        logs.contains("writes paced"),
        "{SEEDED} unindexed points, 64 of them below the indexing threshold, \
         are over the limit of 50, yet no write was paced:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_pacing_off_the_same_writes_are_never_paced() {
    let logs = write_and_read_back("0").await;
    assert!(!logs.contains("writes paced"));
}

/// A scroll page waits for the write being applied, never for a paced
/// write's pause: the pause holds the namespace's next write back, not its
/// reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scroll_page_is_not_held_behind_a_paced_write() {
    use std::time::Duration;

    use support::data::{get, scroll};

    let dir = tempfile::tempdir().expect("tempdir");
    // The seed leaves 136 points beyond the 64 unindexed on purpose: over
    // twice the limit of 50, so each point written pauses 10 ms.
    let server = start(dir.path(), "50");
    let mut client = server.memory().await;
    let seed: Vec<_> = (0..SEEDED)
        .map(|i| memory(&format!("s{i}"), [1.0, i as f32, 0.5, 0.25], json!({})))
        .collect();
    client.upsert(upsert("t0", seed)).await.expect("seed");

    // 100 points: a pause of a full second (the most one write waits),
    // taken once the write is durable.
    let batch: Vec<_> = (0..100)
        .map(|i| memory(&format!("p{i}"), [0.5, i as f32, 1.0, 0.0], json!({})))
        .collect();
    let mut writer = server.memory().await;
    let mut paced = tokio::spawn(async move { writer.upsert(upsert("t1", batch)).await });
    // Applied once a get finds it (reads never wait); polled at once, so
    // the scroll below starts early in the pause.
    let mut applied = false;
    for _ in 0..10_000 {
        let found = client.get(get("t1", &["p99"])).await.expect("get");
        if !found.into_inner().memories.is_empty() {
            applied = true;
            break;
        }
    }
    assert!(applied, "the paced write never reached the engine");

    let page = client
        .scroll(scroll("t1", 10))
        .await
        .expect("scroll")
        .into_inner();
    assert_eq!(page.memories.len(), 10);
    // Held behind the pause, the page would come with the write's answer;
    // answered beside it, the write still has most of its second to wait.
    let still_paused = tokio::time::timeout(Duration::from_millis(300), &mut paced)
        .await
        .is_err();
    assert!(
        still_paused,
        "the scroll page was answered only as the paced write's pause ended"
    );
    paced.await.expect("writer").expect("the paced write");
    assert!(server.logs().contains("writes paced"));
}
