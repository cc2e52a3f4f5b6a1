//! Import and Export, on every backend, over real sockets.
//!
//! A tenant exported and imported into another namespace gives identical
//! Get answers for every id, over gRPC and over NDJSON REST; an Import
//! validates every memory and reports each bad one at its position, or
//! stops at it with everything before written; concurrent Imports of the
//! same ids leave one whole version of each; and an Export under concurrent
//! writes returns every memory that exists throughout exactly once.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;
use vecmem::proto;
use vecmem::proto::memory_service_client::MemoryServiceClient;

use support::data::*;
use support::{Backend, NS};

on_every_backend!(
    an_exported_tenant_imported_elsewhere_answers_every_get_identically,
    an_ndjson_export_piped_into_an_ndjson_import_round_trips,
    import_reports_each_invalid_memory_at_its_position_or_stops_there,
    concurrent_imports_of_the_same_ids_leave_one_whole_version_of_each,
    an_export_under_concurrent_writes_has_every_lasting_memory_exactly_once,
    paging_beside_deletes_never_ends_early,
);

/// A second namespace to import into, as the test namespace is configured.
const COPY: &str = "copy";

fn with_copy_namespace() -> [(&'static str, &'static str); 2] {
    [
        ("VECMEM__NAMESPACES__COPY__DIM", "4"),
        ("VECMEM__NAMESPACES__COPY__TEXT_FIELD", "text"),
    ]
}

fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).expect("after 1970");
    pbjson_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// Memory `i` of a varied set: nested payloads, nulls, numbers of both
/// kinds, text, and every third one expiring in an hour.
fn varied_memory(i: usize) -> proto::Memory {
    let angle = i as f32 * 0.37;
    let mut memory = memory(
        &format!("m-{i:05}"),
        [angle.cos(), angle.sin(), (i % 7) as f32, 1.0],
        json!({
            "text": format!("memory number {i}"),
            "n": i,
            "ratio": i as f64 / 8.0,
            "tags": ["a", i % 3],
            "nested": {"deep": {"flag": i.is_multiple_of(2)}, "none": null},
        }),
    );
    if i.is_multiple_of(3) {
        memory.expires_at = Some(timestamp(
            SystemTime::now() + Duration::from_secs(3600 + i as u64),
        ));
    }
    memory
}

/// Upserts the first `n` varied memories for `tenant`; returns them.
async fn upsert_varied(
    client: &mut MemoryServiceClient<tonic::transport::Channel>,
    tenant: &str,
    n: usize,
) -> Vec<proto::Memory> {
    let memories: Vec<proto::Memory> = (0..n).map(varied_memory).collect();
    for chunk in memories.chunks(250) {
        client
            .upsert(upsert(tenant, chunk.to_vec()))
            .await
            .expect("upsert");
    }
    memories
}

fn import_message(
    namespace: &str,
    tenant: &str,
    memories: Vec<proto::Memory>,
    skip_invalid: bool,
) -> proto::ImportRequest {
    proto::ImportRequest {
        namespace: namespace.into(),
        tenant: tenant.into(),
        memories,
        skip_invalid,
    }
}

/// Imports `messages` as one stream.
async fn import(
    client: &mut MemoryServiceClient<tonic::transport::Channel>,
    messages: Vec<proto::ImportRequest>,
) -> Result<proto::ImportResponse, tonic::Status> {
    client
        .import(futures::stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// Every memory an Export of `tenant` in `namespace` streams, in order.
async fn export(
    client: &mut MemoryServiceClient<tonic::transport::Channel>,
    namespace: &str,
    tenant: &str,
    page_size: u32,
) -> Vec<proto::Memory> {
    let mut pages = client
        .export(proto::ExportRequest {
            namespace: namespace.into(),
            tenant: tenant.into(),
            filter: None,
            page_size,
        })
        .await
        .expect("export starts")
        .into_inner();
    let mut memories = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.expect("export page");
        assert!(!page.memories.is_empty(), "an export page is never empty");
        assert!(page.memories.len() <= page_size as usize, "page too large");
        memories.extend(page.memories);
    }
    memories
}

/// Get answers for `ids`, with vectors, keyed by id.
async fn get_all(
    client: &mut MemoryServiceClient<tonic::transport::Channel>,
    namespace: &str,
    tenant: &str,
    ids: &[String],
) -> BTreeMap<String, proto::Memory> {
    let mut found = BTreeMap::new();
    for chunk in ids.chunks(256) {
        let answer = client
            .get(proto::GetRequest {
                namespace: namespace.into(),
                tenant: tenant.into(),
                ids: chunk.to_vec(),
                with_vector: true,
                consistency: proto::ReadConsistency::Fresh as i32,
            })
            .await
            .expect("get")
            .into_inner();
        assert!(answer.missing_ids.is_empty(), "{:?}", answer.missing_ids);
        for memory in answer.memories {
            found.insert(memory.id.clone(), memory);
        }
    }
    found
}

async fn count_in(
    client: &mut MemoryServiceClient<tonic::transport::Channel>,
    namespace: &str,
    tenant: &str,
) -> u64 {
    client
        .count(proto::CountRequest {
            namespace: namespace.into(),
            tenant: tenant.into(),
            filter: None,
        })
        .await
        .expect("count")
        .into_inner()
        .count
}

async fn an_exported_tenant_imported_elsewhere_answers_every_get_identically(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server_with(dir.path(), &with_copy_namespace());
    let mut client = server.memory().await;
    const N: usize = 1000;
    let originals = upsert_varied(&mut client, "alice", N).await;
    // Another tenant's memories, with the same ids, never leak into the export.
    client
        .upsert(upsert("mallory", originals[..50].to_vec()))
        .await
        .expect("upsert mallory");

    let exported = export(&mut client, NS, "alice", 37).await;
    let ids: Vec<String> = originals.iter().map(|m| m.id.clone()).collect();
    let mut exported_ids: Vec<String> = exported.iter().map(|m| m.id.clone()).collect();
    exported_ids.sort();
    assert_eq!(exported_ids, ids, "every memory exactly once");
    assert!(
        exported
            .iter()
            .all(|m| m.vector.len() == 4 && m.updated_at.is_some())
    );

    // Into another namespace and tenant, in messages of uneven sizes.
    let mut messages = Vec::new();
    let mut rest = exported.as_slice();
    let mut size = 1;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        let first = messages.is_empty();
        messages.push(import_message(
            if first { COPY } else { "" },
            if first { "bob" } else { "" },
            head.to_vec(),
            false,
        ));
        rest = tail;
        size = size * 3 % 301 + 1;
    }
    let answer = import(&mut client, messages).await.expect("import");
    assert_eq!(
        (
            answer.imported_count,
            answer.rejected_count,
            answer.expired_count
        ),
        (N as u64, 0, 0)
    );

    let before = get_all(&mut client, NS, "alice", &ids).await;
    let after = get_all(&mut client, COPY, "bob", &ids).await;
    assert_eq!(before.len(), N);
    for id in &ids {
        assert_eq!(after[id], before[id], "Get of {id} differs after the move");
    }
    assert_eq!(count_in(&mut client, COPY, "bob").await, N as u64);
    assert_eq!(count_in(&mut client, COPY, "alice").await, 0);
}

async fn an_ndjson_export_piped_into_an_ndjson_import_round_trips(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server_with(dir.path(), &with_copy_namespace());
    let mut client = server.memory().await;
    let originals = upsert_varied(&mut client, "alice", 300).await;
    let base = format!("http://{}/v1/namespaces", server.http_addr);
    let exported = support::http(
        "POST",
        &format!("{base}/{NS}/memories/export"),
        Some(json!({"tenant": "alice", "pageSize": 64})),
        &[],
    )
    .await;
    assert_eq!(exported.status, 200, "{}", exported.body);
    assert_eq!(exported.headers["content-type"], "application/x-ndjson");
    assert_eq!(exported.body.lines().count(), 300);

    let imported = support::http_body(
        "POST",
        &format!("{base}/{COPY}/memories/import?tenant=bob"),
        exported.body.clone(),
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    assert_eq!(imported.json()["importedCount"], "300");

    let ids: Vec<String> = originals.iter().map(|m| m.id.clone()).collect();
    let before = get_all(&mut client, NS, "alice", &ids).await;
    let after = get_all(&mut client, COPY, "bob", &ids).await;
    assert_eq!(after, before);
    // And the copy exports as the same lines, in its own order.
    let again = support::http(
        "POST",
        &format!("{base}/{COPY}/memories/export"),
        Some(json!({"tenant": "bob"})),
        &[],
    )
    .await;
    let by_id = |body: &str| -> BTreeMap<String, serde_json::Value> {
        body.lines()
            .map(|line| {
                let memory: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                (memory["id"].as_str().expect("id").to_owned(), memory)
            })
            .collect()
    };
    let lines = by_id(&exported.body);
    assert_eq!(lines.len(), 300);
    assert!(
        by_id(&again.body) == lines,
        "the copy exports other memories"
    );
}

async fn import_reports_each_invalid_memory_at_its_position_or_stops_there(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server(dir.path());
    let mut client = server.memory().await;
    // 600 memories over messages of 100; positions 5, 250 and 599 are
    // invalid in different ways, 7 already expired, 10 repeats 3's id.
    let stream = |tenant: &str, skip_invalid: bool| {
        let mut memories: Vec<proto::Memory> = (0..600).map(varied_memory).collect();
        memories[5].vector = vec![1.0, 2.0];
        memories[250].vector[1] = f32::NAN;
        memories[250].id = "x".repeat(200);
        memories[599].ttl = Some(pbjson_types::Duration {
            seconds: 60,
            nanos: 0,
        });
        memories[599].expires_at = Some(timestamp(SystemTime::now() + Duration::from_secs(60)));
        memories[7].expires_at = Some(timestamp(SystemTime::now() - Duration::from_secs(1)));
        memories[10].id = memories[3].id.clone();
        // In another batch than the memory it repeats.
        memories[300].id = memories[20].id.clone();
        memories
            .chunks(100)
            .enumerate()
            .map(|(i, chunk)| {
                let tenant = if i == 0 { tenant } else { "" };
                import_message(NS, tenant, chunk.to_vec(), skip_invalid)
            })
            .collect::<Vec<_>>()
    };

    let answer = import(&mut client, stream("skips", true))
        .await
        .expect("import with skip_invalid");
    assert_eq!(answer.rejected_count, 3);
    assert_eq!(answer.expired_count, 1);
    assert_eq!(answer.imported_count, 600 - 3 - 1);
    let rejected: Vec<(u64, Vec<String>)> = answer
        .rejections
        .iter()
        .map(|r| {
            let fields = r.violations.iter().map(|v| v.field.clone()).collect();
            (r.position, fields)
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (5, vec!["memories[5].vector".to_owned()]),
            (
                250,
                vec![
                    "memories[250].id".to_owned(),
                    "memories[250].vector".to_owned()
                ]
            ),
            (599, vec!["memories[599].ttl".to_owned()]),
        ]
    );
    assert_eq!(answer.rejections[0].id, "m-00005");
    // A repeated id holds the later memory: 596 written, 594 distinct.
    assert_eq!(count_in(&mut client, NS, "skips").await, 596 - 2);
    let repeated = ["m-00003".to_owned(), "m-00020".to_owned()];
    let later = get_all(&mut client, NS, "skips", &repeated).await;
    for (id, n) in [("m-00003", 10.0), ("m-00020", 300.0)] {
        let payload = from_struct(later[id].payload.as_ref().expect("payload"));
        assert_eq!(
            payload["n"].as_f64(),
            Some(n),
            "{id} holds the later memory"
        );
    }

    // Without skip_invalid: everything before position 5 is written, nothing after.
    let status = import(&mut client, stream("stops", false))
        .await
        .expect_err("an invalid memory fails the stream");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["memories[5].vector"]);
    let ids: Vec<String> = (0..5).map(|i| format!("m-{i:05}")).collect();
    assert_eq!(get_all(&mut client, NS, "stops", &ids).await.len(), 5);
    assert_eq!(count_in(&mut client, NS, "stops").await, 5);

    // A later message may not name another tenant or namespace.
    let mut messages = stream("switch", false);
    messages[0].memories.truncate(2);
    messages[1].tenant = "someone-else".into();
    let status = import(&mut client, messages[..2].to_vec())
        .await
        .expect_err("a second tenant");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("tenant"), "{}", status.message());
    assert_eq!(count_in(&mut client, NS, "someone-else").await, 0);

    // An empty stream, and an unknown namespace.
    let status = import(&mut client, vec![]).await.expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = import(
        &mut client,
        vec![import_message("nope", "t", vec![], false)],
    )
    .await
    .expect_err("unknown namespace");
    assert_eq!(status.code(), Code::NotFound);

    // REST: a line that is not a memory is an invalid memory at its position.
    let body = [
        serde_json::to_string(&varied_memory(1)).expect("json"),
        String::new(),
        "{not json".to_owned(),
        serde_json::to_string(&varied_memory(2)).expect("json"),
    ]
    .join("\n");
    let answer = support::http_body(
        "POST",
        &format!(
            "http://{}/v1/namespaces/{NS}/memories/import?tenant=lines&skip_invalid=true",
            server.http_addr
        ),
        body,
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = answer.json();
    assert_eq!(answer["importedCount"], "2");
    assert_eq!(answer["rejections"][0]["position"], "1");
    assert_eq!(
        answer["rejections"][0]["violations"][0]["field"],
        "memories[1]"
    );
}

async fn concurrent_imports_of_the_same_ids_leave_one_whole_version_of_each(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server(dir.path());
    const WRITERS: usize = 6;
    const IDS: usize = 700;
    // Writer w writes every id with its own vector and payload, in its own
    // order, and some writers also to a second tenant.
    let version = |w: usize, i: usize| {
        let mut memory = memory(
            &format!("id-{i}"),
            [1.0 + w as f32, i as f32, 0.5, 0.25],
            json!({"writer": w, "i": i}),
        );
        memory.updated_at = Some(timestamp(UNIX_EPOCH + Duration::from_secs(w as u64)));
        memory
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = server.memory().await;
        let tenant = if w % 3 == 2 { "other" } else { "shared" };
        writers.push(tokio::spawn(async move {
            let mut order: Vec<usize> = (0..IDS).collect();
            order.rotate_left(w * 97);
            if w % 2 == 1 {
                order.reverse();
            }
            let messages = order
                .chunks(50 + w * 13)
                .map(|chunk| {
                    let memories = chunk.iter().map(|&i| version(w, i)).collect();
                    import_message(NS, tenant, memories, false)
                })
                .collect();
            import(&mut client, messages).await
        }));
    }
    for writer in writers {
        let answer = writer.await.expect("join").expect("import");
        assert_eq!(answer.imported_count, IDS as u64);
    }
    let mut client = server.memory().await;
    let ids: Vec<String> = (0..IDS).map(|i| format!("id-{i}")).collect();
    for (tenant, writers) in [("shared", vec![0, 1, 3, 4]), ("other", vec![2, 5])] {
        let found = get_all(&mut client, NS, tenant, &ids).await;
        for (i, id) in ids.iter().enumerate() {
            let got = &found[id];
            let w = from_struct(got.payload.as_ref().expect("payload"))["writer"]
                .as_f64()
                .expect("writer") as usize;
            assert!(writers.contains(&w), "{tenant}/{id} from writer {w}");
            let whole = version(w, i);
            assert_eq!(got.updated_at, whole.updated_at, "{tenant}/{id}");
            let norm = whole.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            for (a, b) in got.vector.iter().zip(&whole.vector) {
                assert!((a - b / norm).abs() < 1e-5, "{tenant}/{id}: mixed versions");
            }
        }
        assert_eq!(count_in(&mut client, NS, tenant).await, IDS as u64);
    }
}

async fn an_export_under_concurrent_writes_has_every_lasting_memory_exactly_once(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server(dir.path());
    let mut client = server.memory().await;
    const LASTING: usize = 1500;
    let lasting = upsert_varied(&mut client, "alice", LASTING).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Writers churn: new memories come and go, lasting ones are rewritten.
    let mut writers = Vec::new();
    for w in 0..3 {
        let mut client = server.memory().await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut round = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && round < 2000 {
                let churn: Vec<proto::Memory> = (0..20)
                    .map(|k| {
                        let mut m = varied_memory(k);
                        m.id = format!("churn-{w}-{}", (round * 20 + k) % 400);
                        m
                    })
                    .collect();
                let ids: Vec<String> = churn.iter().map(|m| m.id.clone()).collect();
                client.upsert(upsert("alice", churn)).await.expect("churn");
                let rewrite = (0..10).map(|k| varied_memory((round * 10 + k * 7 + w) % LASTING));
                client
                    .upsert(upsert("alice", rewrite.collect()))
                    .await
                    .expect("rewrite");
                if round % 2 == 1 {
                    client
                        .delete(proto::DeleteRequest {
                            namespace: NS.into(),
                            tenant: "alice".into(),
                            selector: Some(proto::delete_request::Selector::Ids(
                                proto::MemoryIds { values: ids },
                            )),
                        })
                        .await
                        .expect("delete");
                }
                round += 1;
            }
            round
        }));
    }
    // Three exports at once, with different page sizes.
    let mut exports = Vec::new();
    for page_size in [13, 50, 100] {
        let mut client = server.memory().await;
        exports.push(tokio::spawn(async move {
            export(&mut client, NS, "alice", page_size).await
        }));
    }
    let mut exported = Vec::new();
    for e in exports {
        exported.push(e.await.expect("join export"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut rounds = 0;
    for writer in writers {
        rounds += writer.await.expect("join writer");
    }
    assert!(rounds > 0, "writers ran during the exports");
    for memories in exported {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for memory in &memories {
            *seen.entry(memory.id.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "ids exported twice: {twice:?}");
        for memory in &lasting {
            assert_eq!(
                seen.get(memory.id.as_str()),
                Some(&1),
                "{} missing",
                memory.id
            );
        }
        assert!(
            seen.keys()
                .all(|id| id.starts_with("m-") || id.starts_with("churn-")),
            "only alice's memories"
        );
    }
}

/// Paging while other memories of the tenant come and go: a memory deleted
/// while a page is read (between the engine reading the page's ids and
/// reading their records) must not end the paging early. Many exports with
/// small pages run beside writers that add memories and delete them again;
/// every export must hold every memory that stayed.
async fn paging_beside_deletes_never_ends_early(backend: Backend) {
    const LASTING: usize = 300;
    const EXPORTS: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server(dir.path());
    let mut client = server.memory().await;
    let lasting = upsert_varied(&mut client, "bob", LASTING).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let mut client = server.memory().await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut rounds = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && rounds < 20_000 {
                let churn: Vec<proto::Memory> = (0..20)
                    .map(|k| {
                        let mut m = varied_memory(k);
                        m.id = format!("churn-{w}-{rounds}-{k}");
                        m
                    })
                    .collect();
                let ids = churn.iter().map(|m| m.id.clone()).collect();
                client.upsert(upsert("bob", churn)).await.expect("churn");
                client
                    .delete(proto::DeleteRequest {
                        namespace: NS.into(),
                        tenant: "bob".into(),
                        selector: Some(proto::delete_request::Selector::Ids(proto::MemoryIds {
                            values: ids,
                        })),
                    })
                    .await
                    .expect("delete");
                rounds += 1;
            }
            rounds
        }));
    }
    for pass in 0..EXPORTS {
        let exported = export(&mut client, NS, "bob", 7).await;
        let seen: std::collections::HashSet<&str> =
            exported.iter().map(|m| m.id.as_str()).collect();
        let missing = lasting
            .iter()
            .filter(|m| !seen.contains(m.id.as_str()))
            .count();
        assert_eq!(missing, 0, "export {pass} missed {missing} of {LASTING}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut rounds = 0;
    for writer in writers {
        rounds += writer.await.expect("join writer");
    }
    assert!(rounds > 0, "writers ran during the exports");
}
