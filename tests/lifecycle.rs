//! A memory's lifecycle, on every backend.
//!
//! Expiry: a memory is read until the instant it expires and never after
//! (through the cache, by many clients at once), deleted from storage by the
//! sweeper, unchanged by a restart, with a namespace's default lifetime, and
//! precise errors for an expiry that makes no sense. No sleep stands in for
//! the expiry: every answer is checked against the clock around it. An
//! answer received before `expires_at` must hold the memory, one requested
//! at or after it must not; one in flight across the instant may go either
//! way.
//!
//! Changes by filter: UpdatePayload by filter updates every matching memory
//! of the tenant exactly once, however many pages they take, while other
//! clients write, and says how many.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;
use vecmem::proto;

use support::data::*;
use support::{Backend, NS, TestServer, eventually, http_get, metric};

on_every_backend!(
    a_memory_is_read_until_it_expires_and_never_after,
    expiry_is_kept_across_a_restart_and_the_expired_stay_unread_until_swept,
    a_namespace_default_ttl_applies_to_memories_without_their_own,
    expiries_that_make_no_sense_are_invalid_and_write_nothing,
    update_payload_by_filter_updates_each_match_of_the_tenant_once,
    update_payload_by_filter_under_concurrent_writes_misses_no_earlier_match,
);

/// Sweeps every 100 ms: the sweeper's work shows within a test.
const FAST_SWEEP: [(&str, &str); 1] = [("VECMEM__EXPIRY__SWEEP_INTERVAL_MS", "100")];
/// No sweeping: the expired stay on disk, and only the reads leave them out.
const NO_SWEEP: [(&str, &str); 1] = [("VECMEM__EXPIRY__SWEEP_INTERVAL_MS", "0")];

fn seconds(secs: i64) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: secs,
        nanos: 0,
    }
}

fn with_ttl(mut memory: proto::Memory, secs: i64) -> proto::Memory {
    memory.ttl = Some(seconds(secs));
    memory
}

fn time_of(t: &pbjson_types::Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32)
}

fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).expect("after 1970");
    pbjson_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// The fields an INVALID_ARGUMENT's field violations name.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Where an answer lies relative to the memory's expiry.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Received before it expired: the memory must be there.
    Before,
    /// Requested at or after it expired: it must not.
    After,
    /// In flight across the instant: either.
    Across,
}

fn phase(sent: SystemTime, received: SystemTime, expires_at: SystemTime) -> Phase {
    if received < expires_at {
        Phase::Before
    } else if sent >= expires_at {
        Phase::After
    } else {
        Phase::Across
    }
}

/// Checks one answer: whether it held the memory, against when it was sent
/// and received. Returns the phase it fell in.
fn check(what: &str, sent: SystemTime, held: bool, expires_at: SystemTime) -> Phase {
    let phase = phase(sent, SystemTime::now(), expires_at);
    match phase {
        Phase::Before => assert!(
            held,
            "{what}: answered before the expiry without the memory"
        ),
        Phase::After => assert!(!held, "{what}: answered after the expiry with the memory"),
        Phase::Across => {}
    }
    phase
}

/// Reads of every kind, each checked against the clock: Get and Search
/// (cached, so the cache is tested too), Scroll and Count, of tenant `t`
/// holding `brief`, `keep` and `others` more memories that do not expire.
/// Returns the phases the answers fell in.
async fn read_all_ways(server: &TestServer, expires_at: SystemTime, others: u64) -> Vec<Phase> {
    let mut client = server.memory().await;
    let mut phases = Vec::new();

    let sent = SystemTime::now();
    let found = client
        .get(get("t", &["brief", "keep"]))
        .await
        .expect("get")
        .into_inner();
    let held = found.memories.iter().any(|m| m.id == "brief");
    assert_eq!(held, !found.missing_ids.contains(&"brief".to_owned()));
    assert!(found.memories.iter().any(|m| m.id == "keep"), "{found:?}");
    phases.push(check("get", sent, held, expires_at));

    let sent = SystemTime::now();
    let hits = client
        .search(search("t", [1.0, 0.0, 0.0, 0.0], 10))
        .await
        .expect("search")
        .into_inner();
    let ids = hit_ids(&hits);
    assert!(ids.contains(&"keep".to_owned()), "{ids:?}");
    phases.push(check(
        "search",
        sent,
        ids.contains(&"brief".to_owned()),
        expires_at,
    ));

    let sent = SystemTime::now();
    let page = client
        .scroll(scroll("t", 10))
        .await
        .expect("scroll")
        .into_inner();
    let ids = ids_of(&page.memories);
    phases.push(check(
        "scroll",
        sent,
        ids.contains(&"brief".to_owned()),
        expires_at,
    ));

    let sent = SystemTime::now();
    let counted = client
        .count(count("t", None))
        .await
        .expect("count")
        .into_inner()
        .count;
    let lasting = 1 + others;
    assert!(
        (lasting..=lasting + 1).contains(&counted),
        "count {counted}"
    );
    phases.push(check("count", sent, counted > lasting, expires_at));
    phases
}

async fn points_count(server: &TestServer) -> u64 {
    server
        .namespaces()
        .await
        .describe_namespace(proto::DescribeNamespaceRequest {
            namespace: NS.into(),
        })
        .await
        .expect("describe")
        .into_inner()
        .points_count
}

/// Writes `keep` (never expires) and `brief` (a 1 s TTL) for tenant `t`;
/// returns when `brief` expires, as the server says.
async fn write_keep_and_brief(server: &TestServer) -> SystemTime {
    let mut client = server.memory().await;
    let sent = SystemTime::now();
    client
        .upsert(upsert(
            "t",
            vec![
                memory("keep", [1.0, 0.1, 0.0, 0.0], json!({"kind": "keep"})),
                with_ttl(
                    memory("brief", [1.0, 0.0, 0.0, 0.0], json!({"kind": "brief"})),
                    1,
                ),
            ],
        ))
        .await
        .expect("upsert");
    let received = SystemTime::now();
    let found = client
        .get(get("t", &["brief", "keep"]))
        .await
        .expect("get")
        .into_inner();
    let brief = found
        .memories
        .iter()
        .find(|m| m.id == "brief")
        .expect("brief was just written with a 1 s TTL");
    let keep = found
        .memories
        .iter()
        .find(|m| m.id == "keep")
        .expect("keep");
    assert_eq!(keep.expires_at, None, "keep never expires");
    let expires_at = time_of(brief.expires_at.as_ref().expect("brief's expires_at"));
    // The TTL counts from when the server received the upsert.
    assert!(
        expires_at >= sent + Duration::from_secs(1) - Duration::from_millis(1)
            && expires_at <= received + Duration::from_secs(1),
        "1 s TTL gave expires_at {expires_at:?}, upsert sent {sent:?}, answered {received:?}"
    );
    expires_at
}

async fn a_memory_is_read_until_it_expires_and_never_after(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server_with(dir.path(), &NO_SWEEP);
    let expires_at = write_keep_and_brief(&server).await;

    // Eight clients read every way at once, sharing the tenant and the ids,
    // from before the expiry to well after it.
    let until = expires_at + Duration::from_millis(500);
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let server = &server;
            async move {
                let mut phases = Vec::new();
                let started = Instant::now();
                while SystemTime::now() < until && started.elapsed() < Duration::from_secs(30) {
                    phases.extend(read_all_ways(server, expires_at, 0).await);
                }
                phases
            }
        })
        .collect();
    let phases: Vec<Phase> = futures::future::join_all(readers)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        phases.contains(&Phase::Before),
        "no read landed before the expiry"
    );
    assert!(phases.contains(&Phase::After), "no read landed after it");

    // Read once more, after it: gone from every read...
    let after = read_all_ways(&server, expires_at, 0).await;
    assert!(
        after.iter().all(|&phase| phase == Phase::After),
        "{after:?}"
    );
    // ...and from every write that changes existing memories...
    let mut client = server.memory().await;
    let by_id = client
        .update_payload(update_payload(
            "t",
            &["brief", "keep"],
            json!({"seen": true}),
            false,
        ))
        .await
        .expect("update by ids")
        .into_inner();
    assert_eq!(
        (by_id.updated_ids, by_id.missing_ids),
        (vec!["keep".to_owned()], vec!["brief".to_owned()])
    );
    let by_filter = client
        .update_payload(update_where(
            "t",
            any_kind(&["brief", "keep"]),
            json!({"seen": 2}),
        ))
        .await
        .expect("update by filter")
        .into_inner();
    assert_eq!(by_filter.updated_count, 1);
    // ...but, with no sweeper, still on disk.
    assert_eq!(points_count(&server).await, 2);
}

async fn expiry_is_kept_across_a_restart_and_the_expired_stay_unread_until_swept(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server_with(dir.path(), &NO_SWEEP);
    let expires_at = write_keep_and_brief(&server).await;
    let mut client = server.memory().await;
    client
        .upsert(upsert(
            "t",
            vec![with_ttl(
                memory("later", [0.0, 1.0, 0.0, 0.0], json!({})),
                3600,
            )],
        ))
        .await
        .expect("upsert later");
    let later = client
        .get(get("t", &["later"]))
        .await
        .expect("get later")
        .into_inner()
        .memories;
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    // After a restart: the same expiry, read the same way, whichever side
    // of it the restart ended on.
    let server = backend.start_server_with(dir.path(), &NO_SWEEP);
    let mut client = server.memory().await;
    let again = client
        .get(get("t", &["later"]))
        .await
        .expect("get later")
        .into_inner()
        .memories;
    assert_eq!(again, later, "a restart keeps expires_at");
    read_all_ways(&server, expires_at, 1).await;
    let waited = eventually(Duration::from_secs(30), async || {
        SystemTime::now() > expires_at
    })
    .await;
    assert!(waited, "the clock passed the expiry");
    let after = read_all_ways(&server, expires_at, 1).await;
    assert!(
        after.iter().all(|&phase| phase == Phase::After),
        "{after:?}"
    );
    assert_eq!(points_count(&server).await, 3, "not swept: still on disk");
    server.terminate();

    // A replica that sweeps deletes it from storage, and only it.
    let server = backend.start_server_with(dir.path(), &FAST_SWEEP);
    let metrics_url = format!("http://{}/metrics", server.http_addr);
    let swept = eventually(Duration::from_secs(30), async || {
        let (_, exposition) = http_get(&metrics_url).await;
        metric(&exposition, "vecmem_expired_deleted_total") >= 1.0
    })
    .await;
    assert!(swept, "the sweeper deleted the expired memory");
    assert_eq!(points_count(&server).await, 2, "gone from storage");
    // Later sweeps find nothing more to delete.
    let (_, before) = http_get(&metrics_url).await;
    let more_sweeps = eventually(Duration::from_secs(30), async || {
        let (_, exposition) = http_get(&metrics_url).await;
        metric(&exposition, "vecmem_sweep_duration_seconds_count")
            > metric(&before, "vecmem_sweep_duration_seconds_count")
    })
    .await;
    assert!(more_sweeps, "the sweeper keeps sweeping");
    let (_, exposition) = http_get(&metrics_url).await;
    assert_eq!(metric(&exposition, "vecmem_expired_deleted_total"), 1.0);
    assert_eq!(metric(&exposition, "vecmem_sweep_errors_total"), 0.0);
    let found = server
        .memory()
        .await
        .get(get("t", &["brief", "keep", "later"]))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(ids_of(&found.memories), ["keep", "later"]);
    assert_eq!(found.missing_ids, ["brief"]);
}

async fn a_namespace_default_ttl_applies_to_memories_without_their_own(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let default_ttl = format!(
        "VECMEM__NAMESPACES__{}__DEFAULT_TTL_SECS",
        NS.to_uppercase()
    );
    let server = backend.start_server_with(
        dir.path(),
        &[
            (default_ttl.as_str(), "3600"),
            ("VECMEM__NAMESPACES__PLAIN__DIM", "4"),
        ],
    );
    let info = server
        .namespaces()
        .await
        .describe_namespace(proto::DescribeNamespaceRequest {
            namespace: NS.into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(info.default_ttl, Some(seconds(3600)));

    let mut client = server.memory().await;
    let at = SystemTime::now() + Duration::from_secs(7200);
    let mut pinned = memory("pinned", [0.0, 0.0, 1.0, 0.0], json!({}));
    pinned.expires_at = Some(timestamp(at));
    client
        .upsert(upsert(
            "t",
            vec![
                memory("default", [1.0, 0.0, 0.0, 0.0], json!({"n": 1})),
                with_ttl(memory("own", [0.0, 1.0, 0.0, 0.0], json!({})), 60),
                pinned,
            ],
        ))
        .await
        .expect("upsert");
    let found = client
        .get(get("t", &["default", "own", "pinned"]))
        .await
        .expect("get")
        .into_inner()
        .memories;
    let expiry = |m: &proto::Memory| time_of(m.expires_at.as_ref().expect("expires_at"));
    let updated = |m: &proto::Memory| time_of(m.updated_at.as_ref().expect("updated_at"));
    assert_eq!(
        expiry(&found[0]),
        updated(&found[0]) + Duration::from_secs(3600),
        "the default TTL counts from the write"
    );
    let own = expiry(&found[1]).duration_since(updated(&found[1])).ok();
    assert!(
        own.is_some_and(|d| d <= Duration::from_secs(60)),
        "the memory's own TTL wins: {own:?}"
    );
    // Kept to the microsecond, the storage's precision.
    let micros = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_micros()).ok();
    assert_eq!(micros(expiry(&found[2])), micros(at));

    // A payload update keeps the expiry; an upsert replaces it.
    client
        .update_payload(update_payload("t", &["default"], json!({"n": 2}), false))
        .await
        .expect("update");
    let updated_memory = client
        .get(get("t", &["default"]))
        .await
        .expect("get")
        .into_inner()
        .memories;
    assert_eq!(updated_memory[0].expires_at, found[0].expires_at);
    assert_eq!(
        from_struct(updated_memory[0].payload.as_ref().expect("payload")),
        json!({"n": 2.0})
    );
    client
        .upsert(upsert(
            "t",
            vec![with_ttl(
                memory("pinned", [0.0, 0.0, 1.0, 0.0], json!({})),
                5,
            )],
        ))
        .await
        .expect("upsert again");
    let replaced = client
        .get(get("t", &["pinned"]))
        .await
        .expect("get")
        .into_inner()
        .memories;
    assert!(expiry(&replaced[0]) < at - Duration::from_secs(3600));

    // UpdatePayload moves the expiry, alone or with a payload change: a ttl
    // from now, a time, or never.
    use proto::update_payload_request::Expiry;
    let mut touch = update_payload("t", &["default"], json!({}), false);
    touch.expiry = Some(Expiry::Ttl(seconds(7200)));
    let sent = SystemTime::now();
    client.update_payload(touch).await.expect("touch");
    let touched = client
        .get(get("t", &["default"]))
        .await
        .expect("get")
        .into_inner()
        .memories;
    let new_expiry = expiry(&touched[0]);
    assert!(
        new_expiry >= sent + Duration::from_secs(7200) - Duration::from_millis(1)
            && new_expiry <= SystemTime::now() + Duration::from_secs(7200),
        "a ttl counts from the update"
    );
    assert_eq!(
        from_struct(touched[0].payload.as_ref().expect("payload")),
        json!({"n": 2.0}),
        "an empty merge leaves the payload as it was"
    );
    let mut pin = update_payload("t", &["default"], json!({"n": 3}), false);
    let pinned_at = SystemTime::now() + Duration::from_secs(5000);
    pin.expiry = Some(Expiry::ExpiresAt(timestamp(pinned_at)));
    client.update_payload(pin).await.expect("pin");
    let mut forever = update_payload("t", &["own"], json!({}), false);
    forever.expiry = Some(Expiry::NeverExpire(true));
    client.update_payload(forever).await.expect("never");
    let found = client
        .get(get("t", &["default", "own"]))
        .await
        .expect("get")
        .into_inner()
        .memories;
    assert_eq!(micros(expiry(&found[0])), micros(pinned_at));
    assert_eq!(found[1].expires_at, None, "own never expires now");
    for (expiry, field) in [
        (Expiry::Ttl(seconds(0)), "ttl"),
        (Expiry::NeverExpire(false), "never_expire"),
        (
            Expiry::ExpiresAt(timestamp(SystemTime::now() - Duration::from_secs(1))),
            "expires_at",
        ),
    ] {
        let mut request = update_payload("t", &["default"], json!({}), false);
        request.expiry = Some(expiry);
        let status = client
            .update_payload(request)
            .await
            .expect_err("invalid expiry");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let fields = violated_fields(&status);
        assert_eq!(fields, [field], "{status:?}");
    }

    // Another namespace without a default keeps memories forever.
    let mut forever = upsert("t", vec![memory("m", [1.0; 4], json!({}))]);
    forever.namespace = "plain".into();
    client.upsert(forever).await.expect("upsert plain");
    let mut request = get("t", &["m"]);
    request.namespace = "plain".into();
    let found = client
        .get(request)
        .await
        .expect("get")
        .into_inner()
        .memories;
    assert_eq!(found[0].expires_at, None);
}

async fn expiries_that_make_no_sense_are_invalid_and_write_nothing(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server(dir.path());
    let mut client = server.memory().await;
    let ok = memory("ok", [1.0, 0.0, 0.0, 0.0], json!({}));
    let mut past = memory("past", [1.0, 0.0, 0.0, 0.0], json!({}));
    past.expires_at = Some(timestamp(SystemTime::now() - Duration::from_secs(1)));
    let mut both = with_ttl(memory("both", [1.0, 0.0, 0.0, 0.0], json!({})), 60);
    both.expires_at = Some(timestamp(SystemTime::now() + Duration::from_secs(60)));
    let zero = with_ttl(memory("zero", [1.0, 0.0, 0.0, 0.0], json!({})), 0);
    let negative = with_ttl(memory("negative", [1.0, 0.0, 0.0, 0.0], json!({})), -5);
    let cases = [
        (past, "memories[1].expires_at"),
        (both, "memories[1].ttl"),
        (zero, "memories[1].ttl"),
        (negative, "memories[1].ttl"),
    ];
    for (bad, field) in cases {
        let id = bad.id.clone();
        let status = client
            .upsert(upsert("t", vec![ok.clone(), bad]))
            .await
            .expect_err(&id);
        assert_eq!(status.code(), Code::InvalidArgument, "{id}: {status:?}");
        let fields = violated_fields(&status);
        assert_eq!(fields, [field], "{id}: {status:?}");
    }
    let found = client
        .get(get("t", &["ok"]))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(found.missing_ids, ["ok"], "a rejected upsert wrote nothing");
}

/// An UpdatePayload (a merge) of every memory of `tenant` matching `filter`.
fn update_where(
    tenant: &str,
    filter: proto::Filter,
    payload: serde_json::Value,
) -> proto::UpdatePayloadRequest {
    let mut request = update_payload(tenant, &[], payload, false);
    request.filter = Some(filter);
    request
}

/// Memories whose payload `kind` is one of `kinds`.
fn any_kind(kinds: &[&str]) -> proto::Filter {
    must(vec![cond(
        "kind",
        proto::condition::Test::AnyOf(proto::AnyOf {
            keywords: kinds.iter().map(|k| k.to_string()).collect(),
            integers: Vec::new(),
        }),
    )])
}

fn count_where(tenant: &str, condition: proto::Condition) -> proto::CountRequest {
    count(tenant, Some(must(vec![condition])))
}

fn vector_of(i: usize) -> [f32; 4] {
    [1.0, (i % 7) as f32, (i % 11) as f32, 1.0 + (i % 3) as f32]
}

/// A batch limit of 64: an update by filter of a few hundred memories
/// takes several pages.
const SMALL_PAGES: [(&str, &str); 1] = [("VECMEM__LIMITS__MAX_BATCH", "64")];

async fn update_payload_by_filter_updates_each_match_of_the_tenant_once(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server_with(dir.path(), &SMALL_PAGES);
    let mut client = server.memory().await;
    // 300 memories of `t`: a third of kind "a". Tenant `u` owns the same
    // ids, all of kind "a".
    for tenant in ["t", "u"] {
        for chunk in (0..300).collect::<Vec<usize>>().chunks(50) {
            let memories = chunk
                .iter()
                .map(|&i| {
                    let kind = if tenant == "u" || i % 3 == 0 {
                        "a"
                    } else {
                        "b"
                    };
                    memory(
                        &format!("m{i}"),
                        vector_of(i),
                        json!({"kind": kind, "i": i}),
                    )
                })
                .collect();
            client
                .upsert(upsert(tenant, memories))
                .await
                .expect("upsert");
        }
    }

    let mut with_vector = get("t", &["m1"]);
    with_vector.with_vector = true;
    let stored_vector = client
        .get(with_vector.clone())
        .await
        .expect("get")
        .into_inner()
        .memories[0]
        .vector
        .clone();

    let flagged = client
        .update_payload(update_where("t", any_kind(&["a"]), json!({"flag": true})))
        .await
        .expect("update by filter")
        .into_inner();
    assert_eq!(flagged.updated_count, 100);
    assert!(flagged.updated_ids.is_empty() && flagged.missing_ids.is_empty());
    let counter = client.clone();
    let count_of = |tenant: &'static str, condition: proto::Condition| {
        let mut client = counter.clone();
        async move {
            client
                .count(count_where(tenant, condition))
                .await
                .expect("count")
                .into_inner()
                .count
        }
    };
    let flag = || {
        cond(
            "flag",
            proto::condition::Test::Equals(proto::MatchValue {
                value: Some(proto::match_value::Value::Boolean(true)),
            }),
        )
    };
    assert_eq!(count_of("t", flag()).await, 100);
    assert_eq!(
        count_of("u", flag()).await,
        0,
        "the other tenant is untouched"
    );

    // An update that makes its own matches stop matching still reaches each
    // of them once, across its four pages.
    let moved = client
        .update_payload(update_where("t", any_kind(&["b"]), json!({"kind": "a"})))
        .await
        .expect("update by filter")
        .into_inner();
    assert_eq!(moved.updated_count, 200);
    assert_eq!(count_of("t", keyword("kind", "a")).await, 300);
    // A merge kept the other keys; the vector is untouched.
    let mut request = get("t", &["m1", "m3"]);
    request.with_vector = true;
    let found = client
        .get(request)
        .await
        .expect("get")
        .into_inner()
        .memories;
    assert_eq!(
        from_struct(found[0].payload.as_ref().expect("payload")),
        json!({"kind": "a", "i": 1.0})
    );
    assert_eq!(
        from_struct(found[1].payload.as_ref().expect("payload")),
        json!({"kind": "a", "i": 3.0, "flag": true})
    );
    assert_eq!(found[0].vector, stored_vector);

    // Replace by filter, and the text it sets is searchable.
    let replaced = client
        .update_payload(proto::UpdatePayloadRequest {
            replace: true,
            ..update_where(
                "t",
                must(vec![integer("i", 7)]),
                json!({"text": "purple elephants dance"}),
            )
        })
        .await
        .expect("replace by filter")
        .into_inner();
    assert_eq!(replaced.updated_count, 1);
    let hits = client
        .search(proto::SearchRequest {
            text: "elephant".into(),
            vector: Vec::new(),
            ..search("t", [0.0; 4], 5)
        })
        .await
        .expect("search by text")
        .into_inner();
    assert_eq!(hit_ids(&hits), ["m7"]);

    // Nothing matches: nothing updated, no error.
    let none = client
        .update_payload(update_where("t", any_kind(&["zzz"]), json!({"x": 1})))
        .await
        .expect("update of nothing")
        .into_inner();
    assert_eq!(none.updated_count, 0);

    // Ids and a filter, neither, or an empty filter: INVALID_ARGUMENT.
    let mut both = update_where("t", any_kind(&["a"]), json!({"x": 1}));
    both.ids = vec!["m1".into()];
    let mut empty = update_where("t", proto::Filter::default(), json!({"x": 1}));
    empty.ids.clear();
    let neither = update_payload("t", &[], json!({"x": 1}), false);
    for (request, field) in [(both, "filter"), (empty, "filter"), (neither, "ids")] {
        let status = client
            .update_payload(request)
            .await
            .expect_err("invalid update");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let fields = violated_fields(&status);
        assert_eq!(fields, [field], "{status:?}");
    }
    assert_eq!(
        count_of(
            "t",
            cond("x", proto::condition::Test::Exists(proto::Exists {}))
        )
        .await,
        0
    );
}

async fn update_payload_by_filter_under_concurrent_writes_misses_no_earlier_match(
    backend: Backend,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = backend.start_server_with(dir.path(), &SMALL_PAGES);
    let mut client = server.memory().await;
    const BEFORE: usize = 600;
    for chunk in (0..BEFORE).collect::<Vec<usize>>().chunks(50) {
        let memories = chunk
            .iter()
            .map(|&i| memory(&format!("old{i}"), vector_of(i), json!({"kind": "a"})))
            .collect();
        client.upsert(upsert("t", memories)).await.expect("upsert");
    }

    // While one client updates every "a", four others write new "a"s and
    // rewrite old ones (same ids, same kind, a fresh payload otherwise).
    let update = {
        let mut client = client.clone();
        async move {
            client
                .update_payload(update_where("t", any_kind(&["a"]), json!({"flag": 1})))
                .await
                .expect("update by filter")
                .into_inner()
                .updated_count
        }
    };
    let writers = (0..4).map(|w| {
        let mut client = client.clone();
        async move {
            let mut written = Vec::new();
            for round in 0..10 {
                let new = format!("new{w}-{round}");
                let old = format!("old{}", w * 100 + round);
                client
                    .upsert(upsert(
                        "t",
                        vec![
                            memory(&new, vector_of(round), json!({"kind": "a"})),
                            memory(&old, vector_of(round), json!({"kind": "a", "w": w})),
                        ],
                    ))
                    .await
                    .expect("concurrent upsert");
                written.push(old);
            }
            written
        }
    });
    let (updated, rewritten) =
        futures::future::join(update, futures::future::join_all(writers)).await;
    let rewritten: std::collections::HashSet<String> = rewritten.into_iter().flatten().collect();

    // Every memory that existed before and was not rewritten meanwhile was
    // updated; each at most once: the count is between the earlier matches
    // that stayed untouched and every match there ever was.
    let mut page_token = String::new();
    let mut flagged_old = 0;
    loop {
        let page = client
            .scroll(proto::ScrollRequest {
                page_token: page_token.clone(),
                ..scroll("t", 100)
            })
            .await
            .expect("scroll")
            .into_inner();
        for m in &page.memories {
            let payload = from_struct(m.payload.as_ref().expect("payload"));
            let flagged = payload.get("flag") == Some(&json!(1.0));
            if m.id.starts_with("old") && !rewritten.contains(&m.id) {
                assert!(flagged, "{} existed before the update and was missed", m.id);
            }
            flagged_old += usize::from(flagged && m.id.starts_with("old"));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let untouched = BEFORE - rewritten.len();
    assert!(flagged_old >= untouched);
    let updated = updated as usize;
    assert!(
        (untouched..=BEFORE + 40).contains(&updated),
        "updated {updated}, {untouched} old memories untouched by other writers"
    );
}
