//! The contract suite: real gRPC against a real `vecmem serve` process.
//!
//! Each test starts its own server on ephemeral ports with its own data
//! directory, and checks behaviour a client relies on: round trips, filters,
//! limits and thresholds, tenant isolation, durability across restarts and
//! SIGKILL, and precise errors for malformed requests.

mod support;

use std::time::{Duration, SystemTime};

use serde_json::json;
use tempfile::TempDir;
use tonic::Code;
use tonic_types::StatusExt;
use vecmem::proto::{self, condition::Test, delete_request::Selector};

use support::data::*;
use support::{Backend, NS, TestServer};

fn start(backend: &Backend) -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server(dir.path());
    (dir, server)
}

on_every_backend!(
    upsert_then_get_returns_what_was_written,
    search_ranks_by_similarity_and_honours_limit_min_score_and_projection,
    filters_select_by_payload,
    delete_by_ids_filter_and_all,
    scroll_pages_through_every_memory_once,
    update_payload_merges_or_replaces_and_reports_missing_ids,
    search_batch_answers_in_request_order,
    search_like_a_memory_leaves_out_its_examples_and_stays_in_the_tenant,
    search_boosts_add_recency_and_importance_to_similarity,
    search_groups_returns_the_best_groups_each_with_its_best_hits,
    search_by_text_alone_or_fused_with_a_vector,
    a_namespace_created_before_its_text_field_serves_without_text_search,
    tenants_never_see_each_others_memories,
    a_graceful_restart_keeps_every_acknowledged_write,
    sigkill_after_acknowledged_writes_loses_none,
    namespaces_are_listed_and_described,
    malformed_requests_get_precise_errors_and_write_nothing,
);

async fn upsert_then_get_returns_what_was_written(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;

    let ids = client
        .upsert(upsert(
            "alice",
            vec![
                memory(
                    "pref-1",
                    [1.0, 0.0, 0.0, 0.0],
                    json!({"text": "likes tea", "n": 3, "tags": ["a", "b"]}),
                ),
                memory("", [0.0, 1.0, 0.0, 0.0], json!({"text": "server id"})),
            ],
        ))
        .await
        .expect("upsert")
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "pref-1");
    let generated = uuid::Uuid::parse_str(&ids[1]).expect("server-made id is a UUID");
    assert_eq!(generated.get_version_num(), 7);

    let mut request = get("alice", &["pref-1", &ids[1], "absent"]);
    request.with_vector = true;
    let found = client.get(request).await.expect("get").into_inner();
    assert_eq!(ids_of(&found.memories), ["pref-1", ids[1].as_str()]);
    assert_eq!(found.missing_ids, ["absent"]);
    let first = &found.memories[0];
    assert_eq!(first.vector, [1.0, 0.0, 0.0, 0.0]);
    assert_eq!(
        from_struct(first.payload.as_ref().expect("payload")),
        json!({"text": "likes tea", "n": 3.0, "tags": ["a", "b"]})
    );
    assert!(first.updated_at.is_some(), "server sets updated_at");

    // Upsert by the same id replaces vector and payload.
    client
        .upsert(upsert(
            "alice",
            vec![memory(
                "pref-1",
                [0.0, 0.0, 1.0, 0.0],
                json!({"text": "likes coffee"}),
            )],
        ))
        .await
        .expect("replace");
    let mut request = get("alice", &["pref-1"]);
    request.with_vector = true;
    let replaced = client
        .get(request)
        .await
        .expect("get")
        .into_inner()
        .memories;
    assert_eq!(replaced[0].vector, [0.0, 0.0, 1.0, 0.0]);
    assert_eq!(
        from_struct(replaced[0].payload.as_ref().expect("payload")),
        json!({"text": "likes coffee"})
    );
}

async fn search_ranks_by_similarity_and_honours_limit_min_score_and_projection(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![
                memory("exact", [1.0, 0.0, 0.0, 0.0], json!({"k": "a"})),
                memory("close", [0.9, 0.1, 0.0, 0.0], json!({"k": "b"})),
                memory("far", [0.0, 0.0, 0.0, 1.0], json!({"k": "c"})),
                memory("opposite", [-1.0, 0.0, 0.0, 0.0], json!({"k": "d"})),
            ],
        ))
        .await
        .expect("upsert");

    let all = client
        .search(search("t", [1.0, 0.0, 0.0, 0.0], 10))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(hit_ids(&all), ["exact", "close", "far", "opposite"]);
    let scores: Vec<f32> = all.hits.iter().map(|h| h.score).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    assert!((scores[0] - 1.0).abs() < 1e-5);

    let top2 = client
        .search(search("t", [1.0, 0.0, 0.0, 0.0], 2))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(hit_ids(&top2), ["exact", "close"]);

    let mut thresholded = search("t", [1.0, 0.0, 0.0, 0.0], 10);
    thresholded.min_score = Some(0.5);
    let hits = client
        .search(thresholded)
        .await
        .expect("search")
        .into_inner();
    assert_eq!(hit_ids(&hits), ["exact", "close"]);

    // limit 0 means the default (10); projection off returns ids and scores only.
    let mut bare = search("t", [1.0, 0.0, 0.0, 0.0], 0);
    bare.with_payload = false;
    let bare = client.search(bare).await.expect("search").into_inner();
    assert_eq!(bare.hits.len(), 4);
    let memory = bare.hits[0].memory.as_ref().expect("memory");
    assert!(memory.payload.is_none() && memory.vector.is_empty());

    let mut with_vector = search("t", [1.0, 0.0, 0.0, 0.0], 1);
    with_vector.with_vector = true;
    let hit = client
        .search(with_vector)
        .await
        .expect("search")
        .into_inner();
    assert_eq!(
        hit.hits[0].memory.as_ref().expect("memory").vector,
        [1.0, 0.0, 0.0, 0.0]
    );
}

async fn filters_select_by_payload(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![
                memory("a", [1.0, 0.0, 0.0, 0.0], json!({"kind": "note", "n": 1, "pinned": true, "at": "2026-01-10T00:00:00Z", "src": {"app": "x"}})),
                memory("b", [1.0, 0.1, 0.0, 0.0], json!({"kind": "note", "n": 5, "pinned": false, "at": "2026-03-10T00:00:00Z"})),
                memory("c", [1.0, 0.2, 0.0, 0.0], json!({"kind": "chat", "n": 10, "at": "2026-06-10T00:00:00Z", "src": {"app": "y"}})),
                memory("d", [1.0, 0.3, 0.0, 0.0], json!({"kind": "chat", "n": 2.5, "src": null})),
            ],
        ))
        .await
        .expect("upsert");

    let query = |filter: proto::Filter| {
        let mut request = search("t", [1.0, 0.0, 0.0, 0.0], 10);
        request.filter = Some(filter);
        request
    };
    let mut matching = async |filter: proto::Filter| -> Vec<String> {
        let mut ids = hit_ids(
            &client
                .search(query(filter))
                .await
                .expect("search")
                .into_inner(),
        );
        ids.sort();
        ids
    };

    assert_eq!(
        matching(must(vec![keyword("kind", "note")])).await,
        ["a", "b"]
    );
    assert_eq!(matching(must(vec![integer("n", 10)])).await, ["c"]);
    let pinned = cond(
        "pinned",
        Test::Equals(proto::MatchValue {
            value: Some(proto::match_value::Value::Boolean(true)),
        }),
    );
    assert_eq!(matching(must(vec![pinned])).await, ["a"]);
    assert_eq!(matching(must(vec![keyword("src.app", "y")])).await, ["c"]);

    let any_of = cond(
        "n",
        Test::AnyOf(proto::AnyOf {
            keywords: vec![],
            integers: vec![1, 10],
        }),
    );
    assert_eq!(matching(must(vec![any_of])).await, ["a", "c"]);
    let any_kind = cond(
        "kind",
        Test::AnyOf(proto::AnyOf {
            keywords: vec!["chat".into()],
            integers: vec![],
        }),
    );
    assert_eq!(matching(must(vec![any_kind])).await, ["c", "d"]);

    let range = cond(
        "n",
        Test::Range(proto::NumberRange {
            gte: Some(2.0),
            lt: Some(10.0),
            ..Default::default()
        }),
    );
    assert_eq!(matching(must(vec![range])).await, ["b", "d"]);

    let since_february = cond(
        "at",
        Test::DatetimeRange(proto::DatetimeRange {
            gte: Some(pbjson_types::Timestamp {
                seconds: 1_769_904_000,
                nanos: 0,
            }), // 2026-02-01
            ..Default::default()
        }),
    );
    assert_eq!(matching(must(vec![since_february])).await, ["b", "c"]);

    let exists = cond("src", Test::Exists(proto::Exists {}));
    assert_eq!(matching(must(vec![exists])).await, ["a", "c"]);

    let not_notes = proto::Filter {
        must_not: vec![keyword("kind", "note")],
        ..Default::default()
    };
    assert_eq!(matching(not_notes).await, ["c", "d"]);

    let either = proto::Filter {
        should: vec![integer("n", 1), keyword("kind", "chat")],
        ..Default::default()
    };
    assert_eq!(matching(either).await, ["a", "c", "d"]);

    // chat AND (n = 10 OR n absent-as-integer): a nested group.
    let group = proto::Condition {
        key: String::new(),
        test: Some(Test::Group(proto::Filter {
            should: vec![integer("n", 10), integer("n", 1)],
            ..Default::default()
        })),
    };
    assert_eq!(
        matching(must(vec![keyword("kind", "chat"), group])).await,
        ["c"]
    );

    let counted = client
        .count(count("t", Some(must(vec![keyword("kind", "chat")]))))
        .await
        .expect("count");
    assert_eq!(counted.into_inner().count, 2);
}

async fn delete_by_ids_filter_and_all(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    let memories = (0..6)
        .map(|i| {
            memory(
                &format!("m{i}"),
                [1.0, i as f32, 0.0, 0.0],
                json!({"even": i % 2 == 0}),
            )
        })
        .collect();
    client.upsert(upsert("t", memories)).await.expect("upsert");

    let delete = |selector| proto::DeleteRequest {
        namespace: NS.into(),
        tenant: "t".into(),
        selector: Some(selector),
    };
    client
        .delete(delete(Selector::Ids(proto::MemoryIds {
            values: vec!["m0".into(), "missing".into()],
        })))
        .await
        .expect("delete ids");
    assert_eq!(
        client
            .count(count("t", None))
            .await
            .expect("count")
            .into_inner()
            .count,
        5
    );

    let evens = cond(
        "even",
        Test::Equals(proto::MatchValue {
            value: Some(proto::match_value::Value::Boolean(true)),
        }),
    );
    client
        .delete(delete(Selector::Filter(must(vec![evens]))))
        .await
        .expect("delete filter");
    let left = client
        .get(get("t", &["m1", "m2", "m3", "m4", "m5"]))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(ids_of(&left.memories), ["m1", "m3", "m5"]);

    client
        .delete(delete(Selector::All(true)))
        .await
        .expect("delete all");
    assert_eq!(
        client
            .count(count("t", None))
            .await
            .expect("count")
            .into_inner()
            .count,
        0
    );
}

async fn scroll_pages_through_every_memory_once(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    let memories: Vec<_> = (0..25)
        .map(|i| {
            memory(
                &format!("m{i:02}"),
                [1.0, i as f32, 0.0, 0.0],
                json!({"i": i, "odd": i % 2 == 1}),
            )
        })
        .collect();
    client.upsert(upsert("t", memories)).await.expect("upsert");

    let mut seen = Vec::new();
    let mut token = String::new();
    for _page in 0..10 {
        let page = client
            .scroll(proto::ScrollRequest {
                page_token: token.clone(),
                ..scroll("t", 10)
            })
            .await
            .expect("scroll")
            .into_inner();
        assert!(page.memories.len() <= 10);
        assert!(
            page.memories.iter().all(|m| m.payload.is_some()),
            "scroll returns payloads"
        );
        seen.extend(ids_of(&page.memories));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(token.is_empty(), "scroll ended");
    seen.sort();
    let expected: Vec<_> = (0..25).map(|i| format!("m{i:02}")).collect();
    assert_eq!(seen, expected);

    let odd = cond(
        "odd",
        Test::Equals(proto::MatchValue {
            value: Some(proto::match_value::Value::Boolean(true)),
        }),
    );
    let filtered = client
        .scroll(proto::ScrollRequest {
            filter: Some(must(vec![odd])),
            ..scroll("t", 100)
        })
        .await
        .expect("scroll")
        .into_inner();
    assert_eq!(filtered.memories.len(), 12);
    assert!(filtered.next_page_token.is_empty());
}

async fn update_payload_merges_or_replaces_and_reports_missing_ids(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![
                memory(
                    "a",
                    [1.0, 0.0, 0.0, 0.0],
                    json!({"keep": 1, "change": "old"}),
                ),
                memory("b", [0.0, 1.0, 0.0, 0.0], json!({"keep": 2})),
            ],
        ))
        .await
        .expect("upsert");
    let before = client
        .get(get("t", &["a"]))
        .await
        .expect("get")
        .into_inner()
        .memories[0]
        .updated_at;

    let update = |ids: &[&str], payload, replace| proto::UpdatePayloadRequest {
        namespace: NS.into(),
        tenant: "t".into(),
        ids: ids.iter().map(|s| s.to_string()).collect(),
        payload: Some(to_struct(payload)),
        replace,
        filter: None,
        expiry: None,
    };
    let merged = client
        .update_payload(update(
            &["a", "nope"],
            json!({"change": "new", "added": true}),
            false,
        ))
        .await
        .expect("merge")
        .into_inner();
    assert_eq!(merged.updated_ids, ["a"]);
    assert_eq!(merged.missing_ids, ["nope"]);

    let mut request = get("t", &["a"]);
    request.with_vector = true;
    let a = client
        .get(request)
        .await
        .expect("get")
        .into_inner()
        .memories
        .remove(0);
    assert_eq!(
        from_struct(a.payload.as_ref().expect("payload")),
        json!({"keep": 1.0, "change": "new", "added": true})
    );
    assert_eq!(a.vector, [1.0, 0.0, 0.0, 0.0], "vector untouched");
    let seconds_nanos = |t: Option<pbjson_types::Timestamp>| t.map(|t| (t.seconds, t.nanos));
    assert!(
        seconds_nanos(a.updated_at) > seconds_nanos(before),
        "updated_at moves forward"
    );

    client
        .update_payload(update(&["b"], json!({"only": "this"}), true))
        .await
        .expect("replace");
    let b = client
        .get(get("t", &["b"]))
        .await
        .expect("get")
        .into_inner()
        .memories
        .remove(0);
    assert_eq!(
        from_struct(b.payload.as_ref().expect("payload")),
        json!({"only": "this"})
    );

    // The merged payload is filterable like any other.
    let hits = client
        .count(count("t", Some(must(vec![keyword("change", "new")]))))
        .await
        .expect("count");
    assert_eq!(hits.into_inner().count, 1);
}

async fn search_batch_answers_in_request_order(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![
                memory("x", [1.0, 0.0, 0.0, 0.0], json!({})),
                memory("y", [0.0, 1.0, 0.0, 0.0], json!({})),
            ],
        ))
        .await
        .expect("upsert");
    client
        .upsert(upsert(
            "u",
            vec![memory("z", [0.0, 1.0, 0.0, 0.0], json!({}))],
        ))
        .await
        .expect("upsert");

    let batch = proto::SearchBatchRequest {
        searches: vec![
            search("t", [0.0, 1.0, 0.0, 0.0], 1),
            search("u", [1.0, 0.0, 0.0, 0.0], 5),
            search("t", [1.0, 0.0, 0.0, 0.0], 1),
        ],
    };
    let results = client
        .search_batch(batch)
        .await
        .expect("batch")
        .into_inner()
        .results;
    let ids: Vec<_> = results.iter().map(hit_ids).collect();
    assert_eq!(ids, [vec!["y"], vec!["z"], vec!["x"]]);
}

fn scores(response: &proto::SearchResponse) -> Vec<f32> {
    response.hits.iter().map(|hit| hit.score).collect()
}

/// "More like this" is a search by the liked memory's stored vector (or
/// `2 * like - mean(avoid)`, Qdrant's recommend formula), computed here from
/// the vectors `Get` returns: the same hits with the same scores as that
/// vector search, minus the examples, on every backend.
async fn search_like_a_memory_leaves_out_its_examples_and_stays_in_the_tenant(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![
                memory("a", [1.0, 0.0, 0.0, 0.0], json!({})),
                memory("b", [0.9, 0.1, 0.0, 0.0], json!({})),
                memory("c", [0.5, 0.5, 0.0, 0.0], json!({})),
                memory("d", [0.0, 1.0, 0.0, 0.0], json!({})),
                memory("e", [0.0, 0.0, 1.0, 0.0], json!({})),
            ],
        ))
        .await
        .expect("upsert");
    client
        .upsert(upsert(
            "u",
            vec![memory("x", [1.0, 0.0, 0.0, 0.0], json!({}))],
        ))
        .await
        .expect("upsert");
    let mut request = get("t", &["a", "b"]);
    request.with_vector = true;
    let stored = client
        .get(request)
        .await
        .expect("get")
        .into_inner()
        .memories;
    let (a, b) = (&stored[0].vector, &stored[1].vector);

    // Like "a": a's own vector search, without "a".
    let liked = client
        .search(like("t", "a", &[], 2))
        .await
        .expect("like a")
        .into_inner();
    let mut by_vector = client
        .search(search("t", [1.0, 0.0, 0.0, 0.0], 3))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(hit_ids(&liked), ["b", "c"]);
    by_vector.hits.remove(0);
    assert_eq!(hit_ids(&liked), hit_ids(&by_vector));
    assert_eq!(scores(&liked), scores(&by_vector));

    // Like "a", avoiding "b": the vector 2a - b, without "a" and "b".
    let query: Vec<f32> = a.iter().zip(b).map(|(a, b)| a + a - b).collect();
    let mut by_vector = client
        .search(proto::SearchRequest {
            vector: query,
            ..search("t", [0.0; 4], 10)
        })
        .await
        .expect("search 2a - b")
        .into_inner();
    by_vector.hits.retain(|hit| {
        let id = &hit.memory.as_ref().expect("memory").id;
        id != "a" && id != "b"
    });
    let avoided = client
        .search(like("t", "a", &["b"], 10))
        .await
        .expect("like a, avoid b")
        .into_inner();
    assert_eq!(hit_ids(&avoided), ["c", "e", "d"]);
    assert_eq!(hit_ids(&avoided), hit_ids(&by_vector));
    assert_eq!(scores(&avoided), scores(&by_vector));

    // Another tenant's memory is as absent as one that never existed.
    for (request, field) in [
        (like("t", "x", &[], 5), "like_id"),
        (like("t", "never", &[], 5), "like_id"),
        (like("t", "a", &["x"], 5), "avoid_ids[0]"),
    ] {
        let status = client.search(request).await.expect_err("not found");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
    let alone = client
        .search(like("u", "x", &[], 5))
        .await
        .expect("like x")
        .into_inner();
    assert!(alone.hits.is_empty(), "u has no memory but x: {alone:?}");

    // In a batch, beside vector searches; a missing example names its search.
    let batch = |third| proto::SearchBatchRequest {
        searches: vec![
            like("t", "a", &[], 1),
            search("u", [1.0, 0.0, 0.0, 0.0], 1),
            third,
        ],
    };
    let results = client
        .search_batch(batch(like("t", "c", &["a"], 1)))
        .await
        .expect("batch")
        .into_inner()
        .results;
    let ids: Vec<_> = results.iter().map(hit_ids).collect();
    assert_eq!(ids, [vec!["b"], vec!["x"], vec!["d"]]);
    let status = client
        .search_batch(batch(like("t", "x", &[], 1)))
        .await
        .expect_err("missing example");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().starts_with("searches[2].like_id"),
        "{status:?}"
    );

    // A changed example changes the answer at once (the cache is keyed by
    // the ids, and every write of the tenant moves past it).
    client
        .upsert(upsert(
            "t",
            vec![memory("a", [0.0, 0.0, 1.0, 0.0], json!({}))],
        ))
        .await
        .expect("move a");
    let moved = client
        .search(like("t", "a", &[], 1))
        .await
        .expect("like a again")
        .into_inner();
    assert_eq!(hit_ids(&moved), ["e"]);
}

fn boosted(vector: [f32; 4], boost: proto::Boost) -> proto::SearchRequest {
    proto::SearchRequest {
        boost: Some(boost),
        ..search("t", vector, 10)
    }
}

fn recency(key: &str, half_life: Duration, weight: f32) -> proto::Boost {
    proto::Boost {
        recency: Some(proto::RecencyBoost {
            weight,
            half_life: Some(half_life.into()),
            decay: proto::Decay::Exponential.into(),
            key: key.into(),
        }),
        importance: None,
    }
}

fn importance(key: &str, weight: f32) -> proto::Boost {
    proto::Boost {
        recency: None,
        importance: Some(proto::ImportanceBoost {
            key: key.into(),
            weight,
        }),
    }
}

fn score_of(response: &proto::SearchResponse, id: &str) -> f32 {
    response
        .hits
        .iter()
        .find(|hit| hit.memory.as_ref().is_some_and(|m| m.id == id))
        .unwrap_or_else(|| panic!("{id} is a hit: {response:?}"))
        .score
}

/// Boosts add `weight * decay(age)` and `weight * number` to the
/// similarity, through Qdrant's formula queries, the same on every backend.
/// Ages are hours apart (payload date-times) or measured against a short
/// half-life (`updated_at`), so no ranking here depends on how fast the
/// test runs.
async fn search_boosts_add_recency_and_importance_to_similarity(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    let now = SystemTime::now();
    let hours_ago =
        |hours: u64| humantime::format_rfc3339(now - Duration::from_secs(hours * 3600)).to_string();
    client
        .upsert(upsert(
            "t",
            vec![
                memory(
                    "month-old",
                    [1.0, 0.0, 0.0, 0.0],
                    json!({"at": hours_ago(30 * 24), "importance": 0}),
                ),
                memory(
                    "hour-old",
                    [0.9, 0.1, 0.0, 0.0],
                    json!({"at": hours_ago(1), "importance": 0.0}),
                ),
                // Neither a date-time nor a number: no boost, and no error.
                memory(
                    "undated",
                    [0.95, 0.05, 0.0, 0.0],
                    json!({"at": "last week", "importance": "high"}),
                ),
                memory(
                    "unrelated",
                    [0.0, 1.0, 0.0, 0.0],
                    json!({"at": hours_ago(0), "importance": 2}),
                ),
            ],
        ))
        .await
        .expect("upsert");
    let query = [1.0, 0.0, 0.0, 0.0];
    let plain = client
        .search(search("t", query, 10))
        .await
        .expect("plain")
        .into_inner();
    assert_eq!(
        hit_ids(&plain),
        ["month-old", "undated", "hour-old", "unrelated"]
    );

    // Recency by a payload date-time, halving every 12 hours: the hour-old
    // memory overtakes the month-old, slightly closer one.
    let half_day = Duration::from_secs(12 * 3600);
    let by_date = client
        .search(boosted(query, recency("at", half_day, 0.5)))
        .await
        .expect("recency")
        .into_inner();
    assert_eq!(
        hit_ids(&by_date),
        ["hour-old", "month-old", "undated", "unrelated"]
    );
    let age = now.elapsed().expect("clock") + Duration::from_secs(3600);
    let boost = 0.5 * 0.5f32.powf(age.as_secs_f32() / half_day.as_secs_f32());
    let expected = score_of(&plain, "hour-old") + boost;
    assert!(
        (score_of(&by_date, "hour-old") - expected).abs() < 1e-3,
        "{by_date:?}, expected {expected}"
    );
    assert_eq!(score_of(&by_date, "undated"), score_of(&plain, "undated"));

    // Importance: the number at the key, times the weight.
    let by_importance = client
        .search(boosted(query, importance("importance", 1.0)))
        .await
        .expect("importance")
        .into_inner();
    assert_eq!(
        hit_ids(&by_importance),
        ["unrelated", "month-old", "undated", "hour-old"]
    );
    let expected = score_of(&plain, "unrelated") + 2.0;
    assert!((score_of(&by_importance, "unrelated") - expected).abs() < 1e-5);

    // min_score bounds the boosted score.
    let bounded = client
        .search(proto::SearchRequest {
            min_score: Some(1.5),
            ..boosted(query, importance("importance", 1.0))
        })
        .await
        .expect("bounded")
        .into_inner();
    assert_eq!(hit_ids(&bounded), ["unrelated"]);

    // Recency by updated_at: of two equally similar memories, the one
    // written later ranks first (their ages differ by at least a round trip,
    // a measurable part of a one-minute half-life).
    for id in ["written-first", "written-second"] {
        client
            .upsert(upsert(
                "t",
                vec![memory(id, [0.0, 0.0, 1.0, 0.0], json!({}))],
            ))
            .await
            .expect("upsert");
    }
    let recent = boosted(
        [0.0, 0.0, 1.0, 0.0],
        recency("", Duration::from_secs(60), 1.0),
    );
    let by_write = client
        .search(proto::SearchRequest {
            limit: 2,
            ..recent.clone()
        })
        .await
        .expect("recency by updated_at")
        .into_inner();
    assert_eq!(hit_ids(&by_write), ["written-second", "written-first"]);
    assert!(score_of(&by_write, "written-second") > score_of(&by_write, "written-first"));

    // Boosted and plain searches share a batch, each answered as alone.
    let results = client
        .search_batch(proto::SearchBatchRequest {
            searches: vec![
                boosted(query, importance("importance", 1.0)),
                search("t", query, 10),
                boosted(query, recency("at", half_day, 0.5)),
            ],
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    // (The memories just written score 0 here, as does "unrelated" unboosted:
    // they come last, in no set order among themselves.)
    let ids: Vec<_> = results.iter().map(hit_ids).collect();
    assert_eq!(ids[0][..4], hit_ids(&by_importance)[..]);
    assert_eq!(ids[1][..3], hit_ids(&plain)[..3]);
    assert_eq!(ids[2][..4], hit_ids(&by_date)[..]);

    // A changed payload changes the next (cacheable) answer.
    client
        .upsert(upsert(
            "t",
            vec![memory(
                "unrelated",
                [0.0, 1.0, 0.0, 0.0],
                json!({"importance": 0}),
            )],
        ))
        .await
        .expect("demote");
    let demoted = client
        .search(boosted(query, importance("importance", 1.0)))
        .await
        .expect("importance again")
        .into_inner();
    assert_eq!(hit_ids(&demoted)[0], "month-old");
}

fn grouped(search: proto::SearchRequest, by: &str, size: u32) -> proto::SearchGroupsRequest {
    proto::SearchGroupsRequest {
        search: Some(search),
        group_by: by.into(),
        group_size: size,
    }
}

/// Each group as its key (JSON) and its hits' ids.
fn groups_of(response: &proto::SearchGroupsResponse) -> Vec<(serde_json::Value, Vec<String>)> {
    response
        .groups
        .iter()
        .map(|group| {
            let key = support::data::from_value(group.key.as_ref().expect("key"));
            let ids = group
                .hits
                .iter()
                .map(|hit| hit.memory.as_ref().expect("memory").id.clone())
                .collect();
            (key, ids)
        })
        .collect()
}

fn at_angle(theta: f32) -> [f32; 4] {
    [theta.cos(), theta.sin(), 0.0, 0.0]
}

/// Groups are ranked by their best hit and hold their best hits; hits
/// whose key is not a string or whole number belong to no group. The
/// second part needs several store searches (the best groups are found
/// first, then filled), the way Qdrant's own grouping works.
async fn search_groups_returns_the_best_groups_each_with_its_best_hits(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    let chunk = |id: &str, theta: f32, doc: serde_json::Value| {
        memory(id, at_angle(theta), json!({"doc": doc, "text": id}))
    };
    client
        .upsert(upsert(
            "t",
            vec![
                chunk("a1", 0.0, json!("A")),
                chunk("b1", 0.14, json!("B")),
                chunk("a2", 0.2, json!("A")),
                chunk("f1", 0.28, json!(1.5)),
                memory("n1", at_angle(0.31), json!({"text": "no doc"})),
                chunk("c1", 0.45, json!(7)),
                chunk("b2", 0.64, json!("B")),
                chunk("a3", 0.78, json!("A")),
            ],
        ))
        .await
        .expect("upsert");
    client
        .upsert(upsert("u", vec![chunk("other", 0.0, json!("A"))]))
        .await
        .expect("upsert another tenant");
    let query = at_angle(0.0);

    let one_each = client
        .search_groups(grouped(search("t", query, 2), "doc", 1))
        .await
        .expect("groups")
        .into_inner();
    assert_eq!(
        groups_of(&one_each),
        [
            (json!("A"), vec!["a1".into()]),
            (json!("B"), vec!["b1".into()])
        ]
    );
    let hit = &one_each.groups[0].hits[0];
    assert_eq!(hit.score, 1.0);
    assert!(hit.memory.as_ref().is_some_and(|m| m.payload.is_some()));

    let two_each = client
        .search_groups(grouped(search("t", query, 10), "doc", 2))
        .await
        .expect("groups")
        .into_inner();
    let ids = |list: &[&str]| list.iter().map(|id| id.to_string()).collect::<Vec<_>>();
    assert_eq!(
        groups_of(&two_each),
        [
            (json!("A"), ids(&["a1", "a2"])),
            (json!("B"), ids(&["b1", "b2"])),
            (json!(7.0), ids(&["c1"])),
        ]
    );

    // Every option of Search applies: min_score, projection.
    let bounded = client
        .search_groups(grouped(
            proto::SearchRequest {
                min_score: Some(0.85),
                with_payload: false,
                ..search("t", query, 10)
            },
            "doc",
            3,
        ))
        .await
        .expect("groups")
        .into_inner();
    assert_eq!(
        groups_of(&bounded),
        [
            (json!("A"), ids(&["a1", "a2"])),
            (json!("B"), ids(&["b1"])),
            (json!(7.0), ids(&["c1"])),
        ]
    );
    assert!(
        bounded.groups[0].hits[0]
            .memory
            .as_ref()
            .is_some_and(|m| m.payload.is_none()),
        "no payload unless asked"
    );

    // Forty documents of three chunks, every first chunk better than any
    // second: the two best documents are found first, then filled.
    let mut chunks = Vec::new();
    for d in 0..40 {
        for k in 0..3 {
            let theta = 0.01 * d as f32 + 0.5 * k as f32;
            let id = format!("d{d}c{k}");
            chunks.push(memory(
                &id,
                at_angle(theta),
                json!({"doc": format!("d{d}")}),
            ));
        }
    }
    client.upsert(upsert("v", chunks)).await.expect("upsert");
    let filled = client
        .search_groups(grouped(search("v", query, 2), "doc", 3))
        .await
        .expect("groups")
        .into_inner();
    assert_eq!(
        groups_of(&filled),
        [
            (json!("d0"), ids(&["d0c0", "d0c1", "d0c2"])),
            (json!("d1"), ids(&["d1c0", "d1c1", "d1c2"])),
        ]
    );
    let all = client
        .search_groups(grouped(search("v", query, 40), "doc", 2))
        .await
        .expect("groups")
        .into_inner();
    let expected: Vec<_> = (0..40)
        .map(|d| {
            (
                json!(format!("d{d}")),
                ids(&[&format!("d{d}c0"), &format!("d{d}c1")]),
            )
        })
        .collect();
    assert_eq!(groups_of(&all), expected);
}

fn by_text(tenant: &str, text: &str, limit: u32) -> proto::SearchRequest {
    proto::SearchRequest {
        namespace: NS.into(),
        tenant: tenant.into(),
        text: text.into(),
        limit,
        with_payload: true,
        ..Default::default()
    }
}

fn hybrid(vector: [f32; 4], text: &str, fusion: proto::Fusion) -> proto::SearchRequest {
    proto::SearchRequest {
        vector: vector.to_vec(),
        fusion: fusion as i32,
        ..by_text("t", text, 10)
    }
}

/// Search by text ranks by BM25 (Qdrant's tokeniser and IDF, term
/// frequency first here: every document is far below BM25's average
/// length), and a hybrid search fuses the dense and text rankings by RRF's
/// `1 / (rank + 2)`; the scores below follow from the ranks alone, so every
/// backend must give these ids in this order with these scores.
async fn search_by_text_alone_or_fused_with_a_vector(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![
                memory(
                    "tea-lover",
                    [1.0, 0.0, 0.0, 0.0],
                    json!({"text": "Tea, more tea, always TEA", "kind": "drink"}),
                ),
                memory(
                    "tea-once",
                    [0.1, 0.0, 1.0, 0.0],
                    json!({"text": "a cup of tea with biscuits", "kind": "snack"}),
                ),
                memory(
                    "coffee",
                    [0.9, 0.1, 0.0, 0.0],
                    json!({"text": "black coffee every morning", "kind": "drink"}),
                ),
                memory(
                    "coffee-twice",
                    [0.0, 1.0, 0.0, 0.05],
                    json!({"text": "coffee and more coffee", "importance": 5}),
                ),
                memory("silent", [0.95, 0.05, 0.0, 0.0], json!({"kind": "drink"})),
            ],
        ))
        .await
        .expect("upsert");
    // Another tenant's text never matches.
    client
        .upsert(upsert(
            "u",
            vec![memory(
                "tea-elsewhere",
                [1.0, 0.0, 0.0, 0.0],
                json!({"text": "tea tea tea tea"}),
            )],
        ))
        .await
        .expect("upsert u");

    // Text alone: the memories sharing a term, more occurrences first;
    // "teas" stems to "tea".
    let tea = client
        .search(by_text("t", "teas", 10))
        .await
        .expect("text")
        .into_inner();
    assert_eq!(hit_ids(&tea), ["tea-lover", "tea-once"]);
    let bm25 = scores(&tea);
    assert!(bm25[0] > bm25[1] && bm25[1] > 0.0, "{bm25:?}");
    // min_score bounds the BM25 score, inclusively.
    let bounded = client
        .search(proto::SearchRequest {
            min_score: Some(bm25[1]),
            ..by_text("t", "teas", 10)
        })
        .await
        .expect("bounded")
        .into_inner();
    assert_eq!(hit_ids(&bounded), ["tea-lover", "tea-once"]);
    let filtered = client
        .search(proto::SearchRequest {
            filter: Some(must(vec![keyword("kind", "snack")])),
            ..by_text("t", "tea", 10)
        })
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(hit_ids(&filtered), ["tea-once"]);
    let stopwords = client
        .search(by_text("t", "the of and", 10))
        .await
        .expect("stopwords only")
        .into_inner();
    assert!(stopwords.hits.is_empty(), "{stopwords:?}");

    // Both: dense ranks tea-lover, silent, coffee, tea-once, coffee-twice;
    // text ranks tea-lover, tea-once. RRF lifts tea-once to second.
    let query = [1.0, 0.0, 0.0, 0.0];
    let fused = client
        .search(hybrid(query, "tea", proto::Fusion::Rrf))
        .await
        .expect("hybrid")
        .into_inner();
    assert_eq!(
        hit_ids(&fused),
        ["tea-lover", "tea-once", "silent", "coffee", "coffee-twice"]
    );
    let expected = [
        1.0 / 2.0 + 1.0 / 2.0,
        1.0 / 5.0 + 1.0 / 3.0,
        1.0 / 3.0,
        1.0 / 4.0,
        1.0 / 6.0,
    ];
    for (score, expected) in scores(&fused).iter().zip(expected) {
        assert!((score - expected).abs() < 1e-6, "{fused:?}");
    }
    let dbsf = client
        .search(hybrid(query, "tea", proto::Fusion::Dbsf))
        .await
        .expect("dbsf")
        .into_inner();
    // Normalised scores keep the dense gaps: coffee stays just below silent.
    assert_eq!(
        hit_ids(&dbsf),
        ["tea-lover", "tea-once", "silent", "coffee", "coffee-twice"]
    );
    assert!(
        scores(&dbsf).windows(2).all(|pair| pair[0] > pair[1]),
        "{dbsf:?}"
    );
    // A boost applies to the fused score.
    let boosted = client
        .search(proto::SearchRequest {
            boost: Some(importance("importance", 1.0)),
            ..hybrid(query, "tea", proto::Fusion::Rrf)
        })
        .await
        .expect("boosted hybrid")
        .into_inner();
    assert_eq!(hit_ids(&boosted)[0], "coffee-twice");
    assert!((score_of(&boosted, "coffee-twice") - (5.0 + 1.0 / 6.0)).abs() < 1e-5);
    // "More like this" fuses with text too.
    let like_text = client
        .search(proto::SearchRequest {
            text: "tea".into(),
            ..like("t", "coffee", &[], 10)
        })
        .await
        .expect("like and text")
        .into_inner();
    // Dense from coffee's vector: silent, tea-lover, coffee-twice, tea-once.
    assert_eq!(
        hit_ids(&like_text),
        ["tea-lover", "tea-once", "silent", "coffee-twice"]
    );

    // Every kind in one batch, each answered as alone.
    let results = client
        .search_batch(proto::SearchBatchRequest {
            searches: vec![
                by_text("t", "teas", 10),
                hybrid(query, "tea", proto::Fusion::Rrf),
                search("t", query, 10),
            ],
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert_eq!(hit_ids(&results[0]), hit_ids(&tea));
    assert_eq!(hit_ids(&results[1]), hit_ids(&fused));
    assert_eq!(
        hit_ids(&results[2]),
        ["tea-lover", "silent", "coffee", "tea-once", "coffee-twice"]
    );

    // A payload change re-indexes the text: set, removed, replaced.
    let changes = [
        (
            "tea-lover",
            json!({"text": "coffee now, nothing else"}),
            false,
        ),
        ("tea-once", json!({"text": null}), false),
        ("coffee", json!({"kind": "drink"}), true),
        ("coffee-twice", json!({"importance": 1}), false),
    ];
    for (id, payload, replace) in changes {
        client
            .update_payload(update_payload("t", &[id], payload, replace))
            .await
            .unwrap_or_else(|status| panic!("update {id}: {status:?}"));
    }
    let tea_after = client
        .search(by_text("t", "tea", 10))
        .await
        .expect("tea after")
        .into_inner();
    assert!(tea_after.hits.is_empty(), "{tea_after:?}");
    let coffee_after = client
        .search(by_text("t", "coffee", 10))
        .await
        .expect("coffee after")
        .into_inner();
    assert_eq!(hit_ids(&coffee_after), ["coffee-twice", "tea-lover"]);
}

/// A namespace whose collection was created before it declared a text
/// field keeps serving vectors, says so, and refuses text precisely.
async fn a_namespace_created_before_its_text_field_serves_without_text_search(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let late = [("VECMEM__NAMESPACES__LATE__DIM", "4")];
    let server = backend.start_server_with(dir.path(), &late);
    let mut client = server.memory().await;
    let mut before = upsert(
        "t",
        vec![memory("a", [1.0, 0.0, 0.0, 0.0], json!({"text": "tea"}))],
    );
    before.namespace = "late".into();
    client.upsert(before).await.expect("upsert before");
    assert!(server.terminate().success());

    let with_text = [
        ("VECMEM__NAMESPACES__LATE__DIM", "4"),
        ("VECMEM__NAMESPACES__LATE__TEXT_FIELD", "text"),
    ];
    let server = backend.start_server_with(dir.path(), &with_text);
    let info = server
        .namespaces()
        .await
        .describe_namespace(proto::DescribeNamespaceRequest {
            namespace: "late".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        (info.text_field.as_str(), info.text_search),
        ("text", false)
    );
    let mut client = server.memory().await;
    let mut after = upsert(
        "t",
        vec![memory("b", [0.0, 1.0, 0.0, 0.0], json!({"text": "tea"}))],
    );
    after.namespace = "late".into();
    client.upsert(after).await.expect("upsert after");
    let mut by_vector = search("t", [1.0, 0.0, 0.0, 0.0], 10);
    by_vector.namespace = "late".into();
    let found = client
        .search(by_vector)
        .await
        .expect("vector search")
        .into_inner();
    assert_eq!(hit_ids(&found), ["a", "b"]);
    let mut text = by_text("t", "tea", 10);
    text.namespace = "late".into();
    let refused = client.search(text).await.expect_err("no text index");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("no text index"), "{refused:?}");
}

async fn tenants_never_see_each_others_memories(backend: Backend) {
    let (_dir, server) = start(&backend);
    let mut client = server.memory().await;
    for (tenant, text) in [("alice", "alice's"), ("bob", "bob's")] {
        client
            .upsert(upsert(
                tenant,
                vec![
                    memory(
                        "pref-1",
                        [1.0, 0.0, 0.0, 0.0],
                        json!({"text": text, "kind": "pref"}),
                    ),
                    memory(
                        &format!("{tenant}-only"),
                        [0.9, 0.1, 0.0, 0.0],
                        json!({"text": text, "kind": "pref"}),
                    ),
                ],
            ))
            .await
            .expect("upsert");
    }

    let alice = client
        .search(search("alice", [1.0, 0.0, 0.0, 0.0], 10))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(hit_ids(&alice), ["pref-1", "alice-only"]);
    for hit in &alice.hits {
        let payload = from_struct(
            hit.memory
                .as_ref()
                .and_then(|m| m.payload.as_ref())
                .expect("payload"),
        );
        assert_eq!(payload["text"], "alice's");
    }

    let bob_get = client
        .get(get("bob", &["pref-1", "alice-only"]))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        from_struct(bob_get.memories[0].payload.as_ref().expect("payload"))["text"],
        "bob's"
    );
    assert_eq!(bob_get.missing_ids, ["alice-only"]);

    // A filter cannot widen the tenant: matching alice's text from bob finds nothing.
    let spoof = client
        .count(count("bob", Some(must(vec![keyword("text", "alice's")]))))
        .await
        .expect("count");
    assert_eq!(spoof.into_inner().count, 0);

    let scrolled = client
        .scroll(scroll("bob", 100))
        .await
        .expect("scroll")
        .into_inner();
    let mut ids = ids_of(&scrolled.memories);
    ids.sort();
    assert_eq!(ids, ["bob-only", "pref-1"]);

    // Deleting everything of kind "pref" for bob leaves alice untouched.
    client
        .delete(proto::DeleteRequest {
            namespace: NS.into(),
            tenant: "bob".into(),
            selector: Some(Selector::Filter(must(vec![keyword("kind", "pref")]))),
        })
        .await
        .expect("delete");
    client
        .delete(proto::DeleteRequest {
            namespace: NS.into(),
            tenant: "bob".into(),
            selector: Some(Selector::All(true)),
        })
        .await
        .expect("delete all");
    let update = proto::UpdatePayloadRequest {
        namespace: NS.into(),
        tenant: "bob".into(),
        ids: vec!["pref-1".into()],
        payload: Some(to_struct(json!({"text": "overwritten"}))),
        replace: true,
        filter: None,
        expiry: None,
    };
    assert_eq!(
        client
            .update_payload(update)
            .await
            .expect("update")
            .into_inner()
            .missing_ids,
        ["pref-1"]
    );
    assert_eq!(
        client
            .count(count("bob", None))
            .await
            .expect("count")
            .into_inner()
            .count,
        0
    );
    assert_eq!(
        client
            .count(count("alice", None))
            .await
            .expect("count")
            .into_inner()
            .count,
        2
    );
    let alice = client
        .get(get("alice", &["pref-1"]))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        from_struct(alice.memories[0].payload.as_ref().expect("payload"))["text"],
        "alice's"
    );
}

/// Writes `n` memories one call each and deletes every third: the state a
/// restart must reproduce exactly.
async fn write_acknowledged_history(server: &TestServer, n: usize) -> Vec<String> {
    let mut client = server.memory().await;
    let mut kept = Vec::new();
    for i in 0..n {
        let id = format!("m{i}");
        client
            .upsert(upsert(
                "durable",
                vec![memory(
                    &id,
                    [1.0, i as f32, 0.5, 0.0],
                    json!({"i": i, "text": format!("durable memory {id}")}),
                )],
            ))
            .await
            .expect("acknowledged upsert");
        kept.push(id);
    }
    for i in (0..n).step_by(3) {
        client
            .delete(proto::DeleteRequest {
                namespace: NS.into(),
                tenant: "durable".into(),
                selector: Some(Selector::Ids(proto::MemoryIds {
                    values: vec![format!("m{i}")],
                })),
            })
            .await
            .expect("acknowledged delete");
        kept.retain(|id| id != &format!("m{i}"));
    }
    let merge = proto::UpdatePayloadRequest {
        namespace: NS.into(),
        tenant: "durable".into(),
        ids: vec!["m1".into()],
        payload: Some(to_struct(json!({"edited": true, "text": "edited words"}))),
        replace: false,
        filter: None,
        expiry: None,
    };
    client
        .update_payload(merge)
        .await
        .expect("acknowledged payload update");
    kept
}

async fn assert_history_survived(server: &TestServer, kept: &[String], n: usize) {
    let mut client = server.memory().await;
    let all: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let found = client
        .get(get("durable", &all))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        ids_of(&found.memories),
        kept,
        "exactly the acknowledged memories survive"
    );
    let edited = found.memories.iter().find(|m| m.id == "m1").expect("m1");
    assert_eq!(
        from_struct(edited.payload.as_ref().expect("payload"))["edited"],
        true
    );
    let counted = client
        .count(count("durable", None))
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(counted as usize, kept.len());
    // The text vectors survived with their memories, the edited one as
    // edited.
    let by_text = |text: &str| proto::SearchRequest {
        namespace: NS.into(),
        tenant: "durable".into(),
        text: text.into(),
        limit: n as u32,
        ..Default::default()
    };
    let durable = client
        .search(by_text("durable"))
        .await
        .expect("text search")
        .into_inner();
    let mut expected: Vec<_> = kept.iter().filter(|id| *id != "m1").cloned().collect();
    let mut found = hit_ids(&durable);
    expected.sort();
    found.sort();
    assert_eq!(found, expected);
    let edited = client
        .search(by_text("edited"))
        .await
        .expect("text search")
        .into_inner();
    assert_eq!(hit_ids(&edited), ["m1"]);
}

async fn a_graceful_restart_keeps_every_acknowledged_write(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server(dir.path());
    let kept = write_acknowledged_history(&server, 30).await;
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let server = backend.start_server(dir.path());
    assert_history_survived(&server, &kept, 30).await;
}

async fn sigkill_after_acknowledged_writes_loses_none(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server(dir.path());
    let kept = write_acknowledged_history(&server, 30).await;
    server.kill();

    let server = backend.start_server(dir.path());
    assert_history_survived(&server, &kept, 30).await;
}

async fn namespaces_are_listed_and_described(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server_with(dir.path(), &PLAIN);
    let mut memories = server.memory().await;
    memories
        .upsert(upsert(
            "t",
            vec![
                memory("a", [1.0, 0.0, 0.0, 0.0], json!({})),
                memory("b", [0.0, 1.0, 0.0, 0.0], json!({})),
            ],
        ))
        .await
        .expect("upsert");
    let mut client = server.namespaces().await;
    let listed = client
        .list_namespaces(proto::ListNamespacesRequest {})
        .await
        .expect("list")
        .into_inner();
    let names: Vec<_> = listed.namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["documents", "memories", "plain", NS]);

    let info = client
        .describe_namespace(proto::DescribeNamespaceRequest {
            namespace: NS.into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(info.dim, 4);
    assert_eq!(info.distance(), proto::Distance::Cosine);
    assert_eq!(info.points_count, 2);
    assert_eq!((info.text_field.as_str(), info.text_search), ("text", true));
    let plain = client
        .describe_namespace(proto::DescribeNamespaceRequest {
            namespace: "plain".into(),
        })
        .await
        .expect("describe plain")
        .into_inner();
    assert_eq!((plain.text_field.as_str(), plain.text_search), ("", false));

    let missing = client
        .describe_namespace(proto::DescribeNamespaceRequest {
            namespace: "nope".into(),
        })
        .await
        .expect_err("unknown namespace");
    assert_eq!(missing.code(), Code::NotFound);
}

/// A malformed request, the code it must get, and the field it must name.
struct Malformed {
    name: &'static str,
    code: Code,
    field: Option<&'static str>,
    call: Call,
}

enum Call {
    Upsert(proto::UpsertRequest),
    /// An Upsert as a client of another language may send it, with what
    /// vecmem's Rust types cannot hold.
    UpsertWire(WireUpsert),
    Search(proto::SearchRequest),
    Batch(proto::SearchBatchRequest),
    Groups(proto::SearchGroupsRequest),
    Get(proto::GetRequest),
    Delete(proto::DeleteRequest),
    Scroll(proto::ScrollRequest),
    Count(proto::CountRequest),
    Update(proto::UpdatePayloadRequest),
}

fn malformed_requests() -> Vec<Malformed> {
    let ok_vector = [1.0, 0.0, 0.0, 0.0];
    let bad = |name, field, call| Malformed {
        name,
        code: Code::InvalidArgument,
        field: Some(field),
        call,
    };
    let with_filter = |filter: proto::Filter| {
        let mut request = search("t", ok_vector, 5);
        request.filter = Some(filter);
        Call::Search(request)
    };
    vec![
        bad(
            "wrong dimension",
            "memories[0].vector",
            Call::Upsert(upsert(
                "t",
                vec![proto::Memory {
                    id: "a".into(),
                    vector: vec![1.0; 3],
                    ..Default::default()
                }],
            )),
        ),
        bad(
            "empty vector",
            "memories[0].vector",
            Call::Upsert(upsert(
                "t",
                vec![proto::Memory {
                    id: "a".into(),
                    ..Default::default()
                }],
            )),
        ),
        bad(
            "NaN component",
            "memories[1].vector",
            Call::Upsert(upsert(
                "t",
                vec![
                    memory("a", ok_vector, json!({})),
                    memory("b", [1.0, f32::NAN, 0.0, 0.0], json!({})),
                ],
            )),
        ),
        bad(
            "infinite component",
            "vector",
            Call::Search(search("t", [f32::INFINITY, 0.0, 0.0, 0.0], 5)),
        ),
        bad(
            "empty tenant",
            "tenant",
            Call::Upsert(upsert("", vec![memory("a", ok_vector, json!({}))])),
        ),
        bad(
            "oversized tenant",
            "tenant",
            Call::Get(get(&"t".repeat(129), &["a"])),
        ),
        bad(
            "oversized id",
            "memories[0].id",
            Call::Upsert(upsert(
                "t",
                vec![memory(&"i".repeat(129), ok_vector, json!({}))],
            )),
        ),
        bad(
            "duplicate ids",
            "memories[1].id",
            Call::Upsert(upsert(
                "t",
                vec![
                    memory("a", ok_vector, json!({})),
                    memory("a", ok_vector, json!({})),
                ],
            )),
        ),
        bad("no memories", "memories", Call::Upsert(upsert("t", vec![]))),
        bad(
            "oversized batch",
            "memories",
            Call::Upsert(upsert(
                "t",
                (0..257)
                    .map(|i| memory(&i.to_string(), ok_vector, json!({})))
                    .collect(),
            )),
        ),
        bad(
            "oversized payload",
            "memories[0].payload",
            Call::Upsert(upsert(
                "t",
                vec![memory("a", ok_vector, json!({"text": "x".repeat(70_000)}))],
            )),
        ),
        bad(
            "NaN in payload",
            "memories[0].payload.score",
            Call::UpsertWire(nan_payload_upsert(ok_vector)),
        ),
        bad(
            "limit above cap",
            "limit",
            Call::Search(search("t", ok_vector, 101)),
        ),
        bad(
            "text in a namespace without a text field",
            "text",
            Call::Search(proto::SearchRequest {
                namespace: "plain".into(),
                ..by_text("t", "tea", 5)
            }),
        ),
        bad(
            "oversized text",
            "text",
            Call::Search(by_text("t", &"tea ".repeat(5000), 5)),
        ),
        bad(
            "DBSF without a vector",
            "fusion",
            Call::Search(proto::SearchRequest {
                fusion: proto::Fusion::Dbsf as i32,
                ..by_text("t", "tea", 5)
            }),
        ),
        bad(
            "unknown fusion",
            "searches[0].fusion",
            Call::Batch(proto::SearchBatchRequest {
                searches: vec![proto::SearchRequest {
                    fusion: 7,
                    ..hybrid(ok_vector, "tea", proto::Fusion::Rrf)
                }],
            }),
        ),
        bad(
            "text field that is not a string",
            "memories[0].payload.text",
            Call::Upsert(upsert(
                "t",
                vec![memory("a", ok_vector, json!({"text": ["tea"]}))],
            )),
        ),
        bad(
            "text field update that is not a string",
            "payload.text",
            Call::Update(proto::UpdatePayloadRequest {
                namespace: NS.into(),
                tenant: "t".into(),
                ids: vec!["a".into()],
                payload: Some(to_struct(json!({"text": 3}))),
                replace: false,
                filter: None,
                expiry: None,
            }),
        ),
        bad(
            "infinite min_score",
            "min_score",
            Call::Search({
                let mut r = search("t", ok_vector, 5);
                r.min_score = Some(f32::NEG_INFINITY);
                r
            }),
        ),
        bad(
            "condition without test",
            "filter.must[0]",
            with_filter(must(vec![proto::Condition {
                key: "k".into(),
                test: None,
            }])),
        ),
        bad(
            "empty filter key",
            "filter.must[0].key",
            with_filter(must(vec![keyword("", "x")])),
        ),
        bad(
            "malformed filter key",
            "filter.must[0].key",
            with_filter(must(vec![keyword("a..b", "x")])),
        ),
        bad(
            "equals without value",
            "filter.must[0].equals",
            with_filter(must(vec![cond(
                "k",
                Test::Equals(proto::MatchValue { value: None }),
            )])),
        ),
        bad(
            "any_of of both kinds",
            "filter.must[0].any_of",
            with_filter(must(vec![cond(
                "k",
                Test::AnyOf(proto::AnyOf {
                    keywords: vec!["a".into()],
                    integers: vec![1],
                }),
            )])),
        ),
        bad(
            "range without bounds",
            "filter.must[0].range",
            with_filter(must(vec![cond(
                "k",
                Test::Range(proto::NumberRange::default()),
            )])),
        ),
        bad(
            "filter nested too deep",
            "filter.must[0].group.must[0].group.must[0].group.must[0].group",
            with_filter(nested_groups(5)),
        ),
        bad(
            "too many conditions",
            "filter",
            with_filter(must((0..65).map(|i| integer("k", i)).collect())),
        ),
        bad(
            "group with a key",
            "filter.must[0].key",
            with_filter(must(vec![proto::Condition {
                key: "k".into(),
                test: Some(Test::Group(proto::Filter::default())),
            }])),
        ),
        bad(
            "unknown consistency",
            "consistency",
            Call::Search({
                let mut r = search("t", ok_vector, 5);
                r.consistency = 7;
                r
            }),
        ),
        bad("get without ids", "ids", Call::Get(get("t", &[]))),
        bad(
            "delete without selector",
            "selector",
            Call::Delete(proto::DeleteRequest {
                namespace: NS.into(),
                tenant: "t".into(),
                selector: None,
            }),
        ),
        bad(
            "delete by empty filter",
            "filter",
            Call::Delete(proto::DeleteRequest {
                namespace: NS.into(),
                tenant: "t".into(),
                selector: Some(Selector::Filter(proto::Filter::default())),
            }),
        ),
        bad(
            "delete all=false",
            "all",
            Call::Delete(proto::DeleteRequest {
                namespace: NS.into(),
                tenant: "t".into(),
                selector: Some(Selector::All(false)),
            }),
        ),
        bad(
            "bad page token",
            "page_token",
            Call::Scroll(proto::ScrollRequest {
                namespace: NS.into(),
                tenant: "t".into(),
                page_token: "not-a-token".into(),
                ..Default::default()
            }),
        ),
        bad(
            "empty namespace",
            "namespace",
            Call::Count(proto::CountRequest {
                namespace: String::new(),
                tenant: "t".into(),
                filter: None,
            }),
        ),
        bad(
            "update without ids",
            "ids",
            Call::Update(proto::UpdatePayloadRequest {
                namespace: NS.into(),
                tenant: "t".into(),
                ..Default::default()
            }),
        ),
        bad(
            "batch item with a bad vector",
            "searches[1].vector",
            Call::Batch(proto::SearchBatchRequest {
                searches: vec![
                    search("t", ok_vector, 1),
                    search("t", [0.0; 4].map(|_| f32::NAN), 1),
                ],
            }),
        ),
        bad(
            "boost without a half-life",
            "boost.recency.half_life",
            Call::Search(proto::SearchRequest {
                boost: Some(proto::Boost {
                    recency: Some(proto::RecencyBoost::default()),
                    importance: None,
                }),
                ..search("t", ok_vector, 5)
            }),
        ),
        bad(
            "empty boost",
            "boost",
            Call::Search(proto::SearchRequest {
                boost: Some(proto::Boost::default()),
                ..search("t", ok_vector, 5)
            }),
        ),
        bad(
            "importance without a key",
            "searches[0].boost.importance.key",
            Call::Batch(proto::SearchBatchRequest {
                searches: vec![proto::SearchRequest {
                    boost: Some(importance("", 1.0)),
                    ..search("t", ok_vector, 5)
                }],
            }),
        ),
        bad(
            "groups without a key",
            "group_by",
            Call::Groups(grouped(search("t", ok_vector, 5), "", 1)),
        ),
        bad(
            "groups of a bad search",
            "search.vector",
            Call::Groups(grouped(search("t", [f32::NAN; 4], 5), "doc", 1)),
        ),
        bad(
            "groups too large",
            "group_size",
            Call::Groups(grouped(search("t", ok_vector, 5), "doc", 1000)),
        ),
        bad(
            "vector and like_id",
            "like_id",
            Call::Search(proto::SearchRequest {
                like_id: "a".into(),
                ..search("t", ok_vector, 5)
            }),
        ),
        bad(
            "avoid_ids without like_id",
            "avoid_ids",
            Call::Search(proto::SearchRequest {
                avoid_ids: vec!["a".into()],
                ..search("t", ok_vector, 5)
            }),
        ),
        bad(
            "like and avoid one memory",
            "avoid_ids[1]",
            Call::Search(like("t", "a", &["b", "a"], 5)),
        ),
        bad(
            "empty avoided id",
            "searches[0].avoid_ids[0]",
            Call::Batch(proto::SearchBatchRequest {
                searches: vec![like("t", "a", &[""], 5)],
            }),
        ),
        bad(
            "empty batch",
            "searches",
            Call::Batch(proto::SearchBatchRequest { searches: vec![] }),
        ),
        Malformed {
            name: "unknown namespace",
            code: Code::NotFound,
            field: None,
            call: Call::Search(proto::SearchRequest {
                namespace: "nope".into(),
                ..search("t", ok_vector, 5)
            }),
        },
    ]
}

/// `UpsertRequest` as it is on the wire, with pbjson-types' `Struct` as the
/// payload: it holds a NaN, which a JSON object (`proto::Struct`) cannot.
#[derive(Clone, PartialEq, prost::Message)]
struct WireUpsert {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(string, tag = "2")]
    tenant: String,
    #[prost(message, repeated, tag = "3")]
    memories: Vec<WireMemory>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireMemory {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(float, repeated, tag = "2")]
    vector: Vec<f32>,
    #[prost(message, optional, tag = "3")]
    payload: Option<pbjson_types::Struct>,
}

fn nan_payload_upsert(vector: [f32; 4]) -> WireUpsert {
    WireUpsert {
        namespace: NS.into(),
        tenant: "t".into(),
        memories: vec![WireMemory {
            id: "a".into(),
            vector: vector.to_vec(),
            payload: Some(pbjson_types::Struct {
                fields: [(
                    "score".to_string(),
                    pbjson_types::Value {
                        kind: Some(pbjson_types::value::Kind::NumberValue(f64::NAN)),
                    },
                )]
                .into(),
            }),
        }],
    }
}

async fn upsert_wire(
    channel: tonic::transport::Channel,
    request: WireUpsert,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/vecmem.v1.MemoryService/Upsert");
    let codec = vecmem::codec::SliceCodec::<WireUpsert, proto::UpsertResponse>::default();
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(drop)
}

fn nested_groups(depth: usize) -> proto::Filter {
    let mut filter = must(vec![integer("k", 1)]);
    for _ in 0..depth {
        filter = must(vec![proto::Condition {
            key: String::new(),
            test: Some(Test::Group(filter)),
        }]);
    }
    filter
}

/// A namespace without a text field, beside the test one.
const PLAIN: [(&str, &str); 1] = [("VECMEM__NAMESPACES__PLAIN__DIM", "4")];

async fn malformed_requests_get_precise_errors_and_write_nothing(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server_with(dir.path(), &PLAIN);
    let mut client = server.memory().await;
    let cases = malformed_requests();
    assert!(cases.len() >= 20);
    for case in cases {
        let result = match case.call {
            Call::Upsert(r) => client.upsert(r).await.map(drop),
            Call::UpsertWire(r) => upsert_wire(server.channel().await, r).await,
            Call::Search(r) => client.search(r).await.map(drop),
            Call::Batch(r) => client.search_batch(r).await.map(drop),
            Call::Groups(r) => client.search_groups(r).await.map(drop),
            Call::Get(r) => client.get(r).await.map(drop),
            Call::Delete(r) => client.delete(r).await.map(drop),
            Call::Scroll(r) => client.scroll(r).await.map(drop),
            Call::Count(r) => client.count(r).await.map(drop),
            Call::Update(r) => client.update_payload(r).await.map(drop),
        };
        let status = result.expect_err(case.name);
        assert_eq!(status.code(), case.code, "{}: {status:?}", case.name);
        if let Some(field) = case.field {
            let details = status.get_error_details();
            let violations = &details
                .bad_request()
                .unwrap_or_else(|| panic!("{}: no BadRequest", case.name))
                .field_violations;
            assert!(
                violations.iter().any(|v| v.field == field),
                "{}: expected field {field}, got {violations:?}",
                case.name
            );
        }
    }

    // Nothing was written, and the server still serves.
    assert_eq!(
        client
            .count(count("t", None))
            .await
            .expect("count")
            .into_inner()
            .count,
        0
    );
    client
        .upsert(upsert(
            "t",
            vec![memory("ok", [1.0, 0.0, 0.0, 0.0], json!({}))],
        ))
        .await
        .expect("still serving");
    assert_eq!(
        client
            .count(count("t", None))
            .await
            .expect("count")
            .into_inner()
            .count,
        1
    );
}
