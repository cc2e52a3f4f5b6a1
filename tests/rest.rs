//! The REST/JSON gateway: every route answers like its gRPC RPC, bodies in
//! the proto3 JSON mapping (camelCase or proto field names), errors as JSON
//! with the contract's code names and HTTP statuses.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use support::data::search;
use support::qdrant_double::QdrantDouble;
use support::{Backend, TestServer, eventually, http, metric};

struct Rest {
    base: String,
}

impl Rest {
    fn new(server: &TestServer) -> Self {
        Self {
            base: format!("http://{}", server.http_addr),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = http("POST", &format!("{}{path}", self.base), Some(body), &[]).await;
        (answer.status, answer.json())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let answer = http("GET", &format!("{}{path}", self.base), None, &[]).await;
        (answer.status, answer.json())
    }
}

const MEMORIES: &str = "/v1/namespaces/test/memories";

#[tokio::test]
async fn every_route_works_like_its_rpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Backend::embedded().start_server(dir.path());
    let rest = Rest::new(&server);

    let (status, body) = rest
        .post(
            MEMORIES,
            json!({"tenant": "t", "memories": [
                {"id": "a", "vector": [1.0, 0.0, 0.0, 0.0], "payload": {"kind": "note", "n": 1}},
                {"id": "b", "vector": [0.0, 1.0, 0.0, 0.0], "payload": {"kind": "todo", "n": 2}},
            ]}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({"ids": ["a", "b"]})));

    // Proto field names and their lowerCamelCase forms are both accepted.
    for projection in [json!({"with_payload": true}), json!({"withPayload": true})] {
        let mut request = json!({"tenant": "t", "vector": [1.0, 0.0, 0.0, 0.0], "limit": 1});
        request
            .as_object_mut()
            .expect("object")
            .extend(projection.as_object().expect("object").clone());
        let (status, body) = rest.post(&format!("{MEMORIES}/search"), request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["hits"][0]["memory"]["id"], "a");
        assert_eq!(body["hits"][0]["memory"]["payload"]["kind"], "note");
    }

    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/search"),
            json!({"tenant": "t", "vector": [1.0, 0.0, 0.0, 0.0],
                   "filter": {"must": [{"key": "kind", "equals": {"keyword": "todo"}}]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|h| h["memory"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["b"]);

    // SearchGroups: the namespace of its nested search comes from the path.
    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/search_groups"),
            json!({"search": {"tenant": "t", "vector": [1.0, 0.0, 0.0, 0.0]},
                   "groupBy": "kind", "groupSize": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["groups"],
        json!([
            {"key": "note", "hits": [body["groups"][0]["hits"][0].clone()]},
            {"key": "todo", "hits": [body["groups"][1]["hits"][0].clone()]},
        ]),
        "{body}"
    );
    assert_eq!(body["groups"][0]["hits"][0]["memory"]["id"], "a");
    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/search_groups"),
            json!({"search": {"namespace": "other", "tenant": "t", "vector": [1.0, 0.0, 0.0, 0.0]},
                   "groupBy": "kind"}),
        )
        .await;
    assert_eq!(status, 400, "the body contradicts the path: {body}");

    // "More like this", by the JSON names; a missing example is a 404.
    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/search"),
            json!({"tenant": "t", "likeId": "a", "avoidIds": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"][0]["memory"]["id"], "b", "{body}");
    assert_eq!(body["hits"].as_array().map(Vec::len), Some(1), "{body}");
    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/search"),
            json!({"tenant": "t", "like_id": "a", "avoid_ids": ["zz"]}),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (404, json!("NOT_FOUND")));
    assert_eq!(
        body["message"], "avoid_ids[0]: the tenant has no memory \"zz\"",
        "{body}"
    );

    // Search by text, and fused with a vector, by the enum's JSON name;
    // an unknown fusion is a 400 naming the body.
    let (status, body) = rest
        .post(
            MEMORIES,
            json!({"tenant": "x", "memories": [
                {"id": "c", "vector": [0.0, 0.0, 1.0, 0.0], "payload": {"text": "green tea"}},
                {"id": "d", "vector": [1.0, 0.0, 0.0, 0.0], "payload": {"text": "black coffee"}},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/search"),
            json!({"tenant": "x", "text": "teas", "vector": [1.0, 0.0, 0.0, 0.0], "fusion": "DBSF"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<_> = body["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|hit| hit["memory"]["id"].clone())
        .collect();
    assert_eq!(ids, [json!("c"), json!("d")], "{body}");
    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/search"),
            json!({"tenant": "x", "text": "tea"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["hits"][0]["memory"]["id"], "c", "{body}");
    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/search"),
            json!({"tenant": "x", "text": "tea", "fusion": "MAX"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("INVALID_ARGUMENT"))
    );

    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/get"),
            json!({"tenant": "t", "ids": ["b", "zz"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["memories"][0]["id"], "b");
    assert_eq!(body["missingIds"], json!(["zz"]));

    let (status, body) = rest
        .post(&format!("{MEMORIES}/count"), json!({"tenant": "t"}))
        .await;
    assert_eq!(
        (status, body["count"].clone()),
        (200, json!("2")),
        "uint64 is a JSON string"
    );

    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/update_payload"),
            json!({"tenant": "t", "ids": ["a", "nope"], "payload": {"pinned": true}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["updatedIds"], json!(["a"]));

    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/scroll"),
            json!({"tenant": "t", "limit": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["memories"].as_array().map(Vec::len), Some(1));
    assert!(
        body["nextPageToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    let (status, body) = rest
        .post(
            "/v1/search_batch",
            json!({"searches": [
                {"namespace": "test", "tenant": "t", "vector": [1.0, 0.0, 0.0, 0.0], "limit": 1},
                {"namespace": "test", "tenant": "other", "vector": [1.0, 0.0, 0.0, 0.0]},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["hits"][0]["memory"]["id"], "a");
    assert_eq!(
        body["results"][1],
        json!({"hits": []}),
        "no hits for another tenant"
    );

    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/delete"),
            json!({"tenant": "t", "ids": {"values": ["a"]}}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({})),
        "DeleteResponse has no fields"
    );
    let (_, body) = rest
        .post(&format!("{MEMORIES}/count"), json!({"tenant": "t"}))
        .await;
    assert_eq!(body["count"], "1");

    let (status, body) = rest.get("/v1/namespaces").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["namespaces"].as_array().map(Vec::len), Some(3));
    let (status, body) = rest.get("/v1/namespaces/test").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dim"], 4);

    // Each call was counted under its RPC.
    let (_, exposition) = support::http_get(&format!("{}/metrics", rest.base)).await;
    assert_eq!(
        metric(
            &exposition,
            r#"vecmem_requests_total{rpc="Count",code="OK"}"#
        ),
        2.0,
        "{exposition}"
    );
    assert_eq!(
        metric(
            &exposition,
            r#"vecmem_request_duration_seconds_count{rpc="Count"}"#
        ),
        2.0
    );
    // Labels come from fixed sets: no tenant, id or path in any series.
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("tenant") && !line.contains("\"t\"") && !line.contains("/v1/"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn errors_are_json_with_the_contract_codes_and_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Backend::embedded().start_server(dir.path());
    let rest = Rest::new(&server);

    let (status, body) = rest
        .post(
            MEMORIES,
            json!({"tenant": "t", "memories": [{"id": "a", "vector": [1.0, 0.0]}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "INVALID_ARGUMENT");
    assert_eq!(body["field_violations"][0]["field"], "memories[0].vector");

    let (status, body) = rest
        .post("/v1/namespaces/nope/memories/count", json!({"tenant": "t"}))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("NOT_FOUND")),
        "{body}"
    );

    let (status, body) = rest
        .post(&format!("{MEMORIES}/search"), json!({"tenant": 5}))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("INVALID_ARGUMENT")),
        "{body}"
    );
    assert_eq!(body["field_violations"][0]["field"], "body");

    let (status, body) = rest
        .post(
            &format!("{MEMORIES}/count"),
            json!({"namespace": "memories", "tenant": "t"}),
        )
        .await;
    assert_eq!(status, 400, "the body contradicts the path: {body}");

    // Nothing of the rejected upsert was written.
    let (_, body) = rest
        .post(&format!("{MEMORIES}/count"), json!({"tenant": "t"}))
        .await;
    assert_eq!(body["count"], "0");
}

#[tokio::test]
async fn request_ids_are_echoed_and_logged_on_both_transports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Backend::embedded().start_server(dir.path());

    // REST: the caller's id comes back, and the failed call's log line has it.
    let url = format!("http://{}{MEMORIES}", server.http_addr);
    let bad = json!({"tenant": "t", "memories": [{"id": "a", "vector": [1.0]}]});
    let answer = http("POST", &url, Some(bad), &[("x-request-id", "rest-call-7")]).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.headers["x-request-id"], "rest-call-7");

    // gRPC: the same in response metadata; without one, a fresh id.
    let mut client = server.memory().await;
    let mut wrong = support::data::memory("a", [1.0, 0.0, 0.0, 0.0], json!({}));
    wrong.vector.pop();
    let mut request = tonic::Request::new(support::data::upsert("t", vec![wrong]));
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-call-9".parse().expect("ascii"));
    let status = client.upsert(request).await.expect_err("3 of 4 dimensions");
    assert_eq!(
        status
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().ok()),
        Some(Some("grpc-call-9"))
    );
    let response = client
        .count(support::data::count("t", None))
        .await
        .expect("count");
    let generated = response.metadata().get("x-request-id").expect("an id");
    assert_eq!(generated.len(), 36, "a UUID: {generated:?}");

    let found = support::eventually(std::time::Duration::from_secs(5), async || {
        let logs = server.logs();
        logs.contains("rest-call-7") && logs.contains("grpc-call-9")
    })
    .await;
    assert!(
        found,
        "request ids missing from the logs:\n{}",
        server.logs()
    );
    assert!(!server.logs().contains("\"vector\""), "no vectors in logs");
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_describes_the_routes_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Backend::embedded().start_server(dir.path());
    let rest = Rest::new(&server);
    let (status, document) = rest.get("/v1/openapi.json").await;
    assert_eq!(status, 200);

    // Every documented route is served (an empty body gets a JSON answer,
    // never the router's 404 or 405).
    let paths = document["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), vecmem::api::rpcs::RPCS.len(), "{paths:?}");
    for (path, operations) in paths {
        let concrete = path.replace("{namespace}", support::NS);
        for method in operations.as_object().expect("operations").keys() {
            let url = format!("{}{concrete}", rest.base);
            let body = (method == "post").then(|| json!({}));
            let answer = http(&method.to_uppercase(), &url, body, &[]).await;
            assert!(
                ![404, 405].contains(&answer.status) || answer.json()["code"].is_string(),
                "{method} {path}: {} {}",
                answer.status,
                answer.body
            );
        }
    }

    // And it is a valid OpenAPI document.
    if !support::tool_available(
        std::process::Command::new("python3").args(["-c", "import openapi_spec_validator"]),
        "pip install openapi-spec-validator",
    ) {
        return;
    }
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).expect("write");
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run the validator");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// REST calls cross the same edge as gRPC calls: the caller's
/// `grpc-timeout` (504 when it passes, and the call's slot is freed), one
/// concurrency limit shared by both ports (429 with `Retry-After` beyond
/// it, RESOURCE_EXHAUSTED with `RetryInfo` over gRPC), and the tenants'
/// rates. Qdrant (the double) holds each search for seconds, so the calls
/// in flight are known, not guessed from timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_calls_are_admitted_and_bounded_like_grpc_calls() {
    const HELD: Duration = Duration::from_secs(3);
    let double = QdrantDouble::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = support::start_in_front_of_qdrant(
        &double.url(),
        dir.path(),
        &[
            ("VECMEM__ADMISSION__MAX_CONCURRENCY", "2"),
            ("VECMEM__ADMISSION__RETRY_AFTER_MS", "1500"),
            ("VECMEM__ADMISSION__TENANT_WRITE_RPS", "1"),
            ("VECMEM__ADMISSION__TENANT_BURST", "3"),
            // Every search is its own Qdrant call, held by the double.
            ("VECMEM__PIPELINE__CACHE__ENABLED", "false"),
            ("VECMEM__PIPELINE__BATCH__ENABLED", "false"),
        ],
    );
    let url = format!("http://{}{MEMORIES}/search", server.http_addr);
    let query = json!({"tenant": "t", "vector": [1.0, 0.0, 0.0, 0.0], "limit": 3});
    double.cycle_delays(&[HELD]);

    // The deadline: answered at 200 ms, long before Qdrant would answer.
    let started = Instant::now();
    let late = http(
        "POST",
        &url,
        Some(query.clone()),
        &[("grpc-timeout", "200m")],
    )
    .await;
    assert_eq!(late.status, 504, "{}", late.body);
    assert_eq!(late.json()["code"], "DEADLINE_EXCEEDED");
    assert!(
        started.elapsed() < HELD,
        "answered after {:?}",
        started.elapsed()
    );

    // Two searches take both slots (the expired call left its slot)...
    let before = double.calls();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (url, query) = (url.clone(), query.clone());
            tokio::spawn(async move { http("POST", &url, Some(query), &[]).await })
        })
        .collect();
    let reached = eventually(Duration::from_secs(10), async || {
        double.calls() >= before + 2
    })
    .await;
    assert!(reached, "the two searches did not reach Qdrant");

    // ...so a third is shed on either port, at once.
    let shed = http("POST", &url, Some(query.clone()), &[]).await;
    assert_eq!(shed.status, 429, "{}", shed.body);
    assert_eq!(shed.json()["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(shed.headers["retry-after"], "2", "1.5 s rounded up");
    let status = server
        .memory()
        .await
        .search(search("t", [1.0, 0.0, 0.0, 0.0], 3))
        .await
        .expect_err("no slot is free for gRPC either");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay);
    assert_eq!(retry, Some(Duration::from_millis(1500)));
    assert_eq!(double.calls(), before + 2, "shed calls never reach Qdrant");

    // The held calls are answered in full, and free their slots.
    for call in held {
        let answer = call.await.expect("join");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    double.cycle_delays(&[]);
    let after = http("POST", &url, Some(query), &[]).await;
    assert_eq!(after.status, 200, "{}", after.body);

    // A tenant's write rate holds over REST too: a burst of 3, then 1/s.
    let upserts = format!("http://{}{MEMORIES}", server.http_addr);
    let mut statuses = Vec::new();
    for i in 0..10 {
        let body = json!({"tenant": "noisy", "memories": [
            {"id": format!("m{i}"), "vector": [1.0, 0.0, 0.0, 0.0]}
        ]});
        let answer = http("POST", &upserts, Some(body), &[]).await;
        if answer.status == 429 {
            assert_eq!(answer.json()["code"], "RESOURCE_EXHAUSTED");
            assert!(
                answer.headers.contains_key("retry-after"),
                "{:?}",
                answer.headers
            );
        } else {
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
        statuses.push(answer.status);
    }
    let limited = statuses.iter().filter(|status| **status == 429).count();
    assert!((1..=7).contains(&limited), "{statuses:?}");
}
