//! Correctness under concurrency and at the edges of the API, on every
//! backend: what clients saw go wrong against a real Qdrant (issue 11), each
//! pinned by a case that failed before its fix.
//!
//! - Concurrent reads and payload updates of one id, which the batcher
//!   coalesces into one backend call naming the id many times: every caller
//!   must find the memory.
//! - An id repeated within one request: answered once, never "missing".
//! - `min_score` is inclusive for every distance.
//! - A payload merge with a top-level null removes that key (Qdrant's own
//!   semantics); nested nulls and upserted nulls are kept.
//! - Searches by vector, by text and by both, from many clients at once and
//!   so batched together into one backend call: each gets its own answer.

mod support;

use std::collections::BTreeSet;

use futures::future::join_all;
use serde_json::json;
use tempfile::TempDir;
use vecmem::proto::{self, ReadConsistency};

use support::data::*;
use support::{Backend, TestServer};

on_every_backend!(
    concurrent_reads_and_updates_of_one_id_all_find_it,
    a_repeated_id_is_answered_once_and_never_missing,
    min_score_is_inclusive_for_every_distance,
    a_top_level_null_in_a_merge_removes_the_key_and_other_nulls_stay,
    concurrent_searches_of_every_kind_each_get_their_own_answer,
);

const CLIENTS: usize = 8;
const CALLS_PER_CLIENT: usize = 100;

fn start(backend: &Backend, extra: &[(&str, &str)]) -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server_with(dir.path(), extra);
    (dir, server)
}

fn update(tenant: &str, ids: &[&str], payload: serde_json::Value) -> proto::UpdatePayloadRequest {
    proto::UpdatePayloadRequest {
        namespace: support::NS.into(),
        tenant: tenant.into(),
        ids: ids.iter().map(|s| s.to_string()).collect(),
        payload: Some(to_struct(payload)),
        replace: false,
        filter: None,
        expiry: None,
    }
}

async fn concurrent_reads_and_updates_of_one_id_all_find_it(backend: Backend) {
    let (_dir, server) = start(&backend, &[]);
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![
                memory("shared", [1.0, 0.0, 0.0, 0.0], json!({"kind": "pref"})),
                memory("other", [0.0, 1.0, 0.0, 0.0], json!({})),
            ],
        ))
        .await
        .expect("upsert");

    // Each client has its own connection, so the calls really overlap and
    // the batcher coalesces gets that name the same id.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(server.memory().await);
    }
    let readers = clients
        .iter()
        .cloned()
        .enumerate()
        .map(|(c, mut client)| async move {
            let mut wrong = Vec::new();
            for call in 0..CALLS_PER_CLIENT {
                // Mostly FRESH (straight to the backend through the batcher);
                // every fourth may be served by the cache, which must never
                // have stored a wrong answer.
                let mut request = get("t", &["shared"]);
                if call % 4 != 0 {
                    request.consistency = ReadConsistency::Fresh as i32;
                }
                if c % 2 == 1 {
                    request.ids.push("other".into());
                }
                let found = client.get(request).await.expect("get").into_inner();
                let mut expected = vec!["shared"];
                if c % 2 == 1 {
                    expected.push("other");
                }
                if ids_of(&found.memories) != expected || !found.missing_ids.is_empty() {
                    wrong.push(format!(
                        "client {c} call {call}: memories {:?} missing {:?}",
                        ids_of(&found.memories),
                        found.missing_ids
                    ));
                }
            }
            wrong
        });
    let wrong: Vec<String> = join_all(readers).await.concat();
    assert!(
        wrong.is_empty(),
        "{} of {} gets answered wrongly, e.g. {:?}",
        wrong.len(),
        CLIENTS * CALLS_PER_CLIENT,
        &wrong[..wrong.len().min(5)]
    );

    // Concurrent payload updates of the same memory, each client its own key.
    let updaters = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| async move {
            let mut wrong = Vec::new();
            for call in 0..CALLS_PER_CLIENT / 4 {
                let answer = client
                    .update_payload(update("t", &["shared"], json!({format!("c{c}"): call})))
                    .await
                    .expect("update_payload")
                    .into_inner();
                if answer.updated_ids != ["shared"] || !answer.missing_ids.is_empty() {
                    wrong.push(format!("client {c} call {call}: {answer:?}"));
                }
            }
            wrong
        });
    let wrong: Vec<String> = join_all(updaters).await.concat();
    assert!(wrong.is_empty(), "updates answered wrongly: {wrong:?}");

    // Every client's last update was applied.
    let mut request = get("t", &["shared"]);
    request.consistency = ReadConsistency::Fresh as i32;
    let found = client.get(request).await.expect("get").into_inner();
    let payload = from_struct(found.memories[0].payload.as_ref().expect("payload"));
    let mut expected = json!({"kind": "pref"});
    for c in 0..CLIENTS {
        expected[format!("c{c}")] = json!((CALLS_PER_CLIENT / 4 - 1) as f64);
    }
    assert_eq!(payload, expected);
}

async fn a_repeated_id_is_answered_once_and_never_missing(backend: Backend) {
    let (_dir, server) = start(&backend, &[]);
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![
                memory("a", [1.0, 0.0, 0.0, 0.0], json!({})),
                memory("c", [0.0, 1.0, 0.0, 0.0], json!({})),
            ],
        ))
        .await
        .expect("upsert");

    for consistency in [ReadConsistency::Fresh, ReadConsistency::Cached] {
        let mut request = get("t", &["a", "a", "b", "c", "b", "a"]);
        request.consistency = consistency as i32;
        let found = client.get(request).await.expect("get").into_inner();
        assert_eq!(ids_of(&found.memories), ["a", "c"], "{consistency:?}");
        assert_eq!(found.missing_ids, ["b"], "{consistency:?}");
    }

    let answer = client
        .update_payload(update("t", &["a", "b", "a"], json!({"seen": true})))
        .await
        .expect("update_payload")
        .into_inner();
    assert_eq!(answer.updated_ids, ["a"]);
    assert_eq!(answer.missing_ids, ["b"]);
}

async fn min_score_is_inclusive_for_every_distance(backend: Backend) {
    let (_dir, server) = start(
        &backend,
        &[
            ("VECMEM__NAMESPACES__DOT__DIM", "4"),
            ("VECMEM__NAMESPACES__DOT__DISTANCE", "dot"),
            ("VECMEM__NAMESPACES__EUCLID__DIM", "4"),
            ("VECMEM__NAMESPACES__EUCLID__DISTANCE", "euclid"),
            ("VECMEM__NAMESPACES__MANHATTAN__DIM", "4"),
            ("VECMEM__NAMESPACES__MANHATTAN__DISTANCE", "manhattan"),
        ],
    );
    let mut client = server.memory().await;
    let memories = || {
        vec![
            memory("one", [1.0, 0.0, 0.0, 0.0], json!({})),
            memory("two", [2.0, 0.0, 0.0, 0.0], json!({})),
            memory("half", [0.5, 0.0, 0.0, 0.0], json!({})),
        ]
    };
    for namespace in [support::NS, "dot", "euclid", "manhattan"] {
        let mut request = upsert("t", memories());
        request.namespace = namespace.into();
        client.upsert(request).await.expect("upsert");
    }

    // (namespace, min_score, hits expected): each bound equals some hit's
    // exact score, and that hit is returned.
    let cases: [(&str, f32, &[&str]); 6] = [
        ("dot", 1.0, &["two", "one"]),
        ("dot", 2.0, &["two"]),
        ("euclid", 0.0, &["one"]),
        ("euclid", 0.5, &["one", "half"]),
        ("manhattan", 1.0, &["one", "half", "two"]),
        (support::NS, 1.0, &["one", "two", "half"]),
    ];
    for (namespace, min_score, expected) in cases {
        let mut request = search("t", [1.0, 0.0, 0.0, 0.0], 10);
        request.namespace = namespace.into();
        request.min_score = Some(min_score);
        request.consistency = ReadConsistency::Fresh as i32;
        let hits = client.search(request).await.expect("search").into_inner();
        let found: BTreeSet<String> = hit_ids(&hits).into_iter().collect();
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(found, expected, "{namespace} min_score {min_score}");
    }
}

async fn a_top_level_null_in_a_merge_removes_the_key_and_other_nulls_stay(backend: Backend) {
    let (_dir, server) = start(&backend, &[]);
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![memory(
                "m",
                [1.0, 0.0, 0.0, 0.0],
                json!({"kind": "pref", "note": null, "keep": 1}),
            )],
        ))
        .await
        .expect("upsert");
    let read = |mut client: proto::memory_service_client::MemoryServiceClient<_>| async move {
        let mut request = get("t", &["m"]);
        request.consistency = ReadConsistency::Fresh as i32;
        let found = client.get(request).await.expect("get").into_inner();
        from_struct(found.memories[0].payload.as_ref().expect("payload"))
    };
    assert_eq!(
        read(client.clone()).await,
        json!({"kind": "pref", "note": null, "keep": 1.0}),
        "an upserted null is stored"
    );

    client
        .update_payload(update(
            "t",
            &["m"],
            json!({"kind": null, "nested": {"inner": null}}),
        ))
        .await
        .expect("merge");
    assert_eq!(
        read(client.clone()).await,
        json!({"note": null, "keep": 1.0, "nested": {"inner": null}}),
        "a top-level null removes the key; a nested null is stored"
    );
}

/// The searches of the concurrent mix: by vector, by text, both fused each
/// way, "more like this" with text, and a text no memory has; two tenants
/// who own the same ids. The limit exceeds a tenant's memories, so no
/// answer is cut inside a group of equal scores.
fn search_kinds() -> Vec<proto::SearchRequest> {
    let text = |tenant: &str, text: &str| proto::SearchRequest {
        namespace: support::NS.into(),
        tenant: tenant.into(),
        text: text.into(),
        limit: 20,
        with_payload: true,
        ..Default::default()
    };
    let mut kinds = Vec::new();
    for tenant in ["t", "u"] {
        kinds.push(search(tenant, [1.0, 0.2, 0.0, 0.0], 20));
        kinds.push(text(tenant, "tea biscuits"));
        kinds.push(proto::SearchRequest {
            vector: vec![0.0, 1.0, 0.3, 0.0],
            ..text(tenant, "coffee")
        });
        kinds.push(proto::SearchRequest {
            vector: vec![0.3, 0.0, 1.0, 0.0],
            fusion: proto::Fusion::Dbsf as i32,
            ..text(tenant, "tea")
        });
        kinds.push(proto::SearchRequest {
            like_id: "m3".into(),
            ..text(tenant, "coffee tea")
        });
        kinds.push(text(tenant, "nothing matches this"));
    }
    kinds
}

async fn concurrent_searches_of_every_kind_each_get_their_own_answer(backend: Backend) {
    let (_dir, server) = start(&backend, &[]);
    let mut client = server.memory().await;
    let words = ["tea", "coffee", "biscuits", "cake", "water"];
    for (t, tenant) in ["t", "u"].into_iter().enumerate() {
        let memories = (0..12)
            .map(|i| {
                let angle = (i * 7 + t * 3) as f32 * 0.37;
                let text = format!("{} and {}", words[i % 5], words[(i + t + 1) % 5]);
                memory(
                    &format!("m{i}"),
                    [angle.cos(), angle.sin(), (i % 3) as f32 * 0.4, 0.1],
                    json!({ "text": text }),
                )
            })
            .collect();
        client
            .upsert(upsert(tenant, memories))
            .await
            .expect("upsert");
    }
    // Each search alone first: the answer every concurrent one must match.
    let kinds = search_kinds();
    let mut expected = Vec::new();
    for kind in &kinds {
        let mut alone = kind.clone();
        alone.consistency = ReadConsistency::Fresh as i32;
        let answer = client
            .search(alone)
            .await
            .expect("search alone")
            .into_inner();
        expected.push(answer);
    }
    assert!(expected.iter().any(|answer| answer.hits.is_empty()));
    assert!(
        expected
            .iter()
            .filter(|answer| !answer.hits.is_empty())
            .count()
            >= 8
    );

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(server.memory().await);
    }
    let kinds = &kinds;
    let expected = &expected;
    let searchers = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| async move {
            let mut wrong = Vec::new();
            for call in 0..CALLS_PER_CLIENT {
                let k = (c * 5 + call * 7) % kinds.len();
                let mut request = kinds[k].clone();
                if call % 3 != 0 {
                    request.consistency = ReadConsistency::Fresh as i32;
                }
                let answer = client.search(request).await.expect("search").into_inner();
                if !same_ranking(&ranked(&answer), &ranked(&expected[k])) {
                    wrong.push(format!(
                        "client {c} call {call} kind {k}: {:?}, alone {:?}",
                        ranked(&answer),
                        ranked(&expected[k])
                    ));
                }
            }
            wrong
        });
    let wrong: Vec<String> = join_all(searchers).await.concat();
    assert!(
        wrong.is_empty(),
        "{} of {} searches answered unlike alone, e.g. {:?}",
        wrong.len(),
        CLIENTS * CALLS_PER_CLIENT,
        &wrong[..wrong.len().min(5)]
    );
}

/// An answer as its groups of equal scores, best first, each with its ids
/// in no particular order: the engine orders ties as its segments happen
/// to be laid out, which may change between two identical searches (RRF
/// ties often: ranks 0 and 4 score what rank 1 and 2 do).
fn ranked(answer: &proto::SearchResponse) -> Vec<(f32, BTreeSet<String>)> {
    let mut groups: Vec<(f32, BTreeSet<String>)> = Vec::new();
    for hit in &answer.hits {
        let id = hit
            .memory
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        match groups.last_mut() {
            Some((score, ids)) if (*score - hit.score).abs() < 1e-6 => {
                ids.insert(id);
            }
            _ => groups.push((hit.score, BTreeSet::from([id]))),
        }
    }
    groups
}

fn same_ranking(a: &[(f32, BTreeSet<String>)], b: &[(f32, BTreeSet<String>)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((x, xs), (y, ys))| (x - y).abs() < 1e-6 && xs == ys)
}
