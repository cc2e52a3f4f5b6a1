//! Per-tenant rate limits through real gRPC: a tenant over its write budget
//! is told RESOURCE_EXHAUSTED with a retry delay, and nobody else is.

mod support;

use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use support::Backend;
use support::data::*;

#[tokio::test]
async fn a_tenant_over_its_write_budget_is_shed_and_others_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Backend::embedded().start_server_with(
        dir.path(),
        &[
            ("VECMEM__ADMISSION__TENANT_WRITE_RPS", "1"),
            ("VECMEM__ADMISSION__TENANT_BURST", "3"),
        ],
    );
    let mut client = server.memory().await;

    // A burst of 3 then 1/s: ten back-to-back writes cannot all pass.
    let mut shed = Vec::new();
    for i in 0..10 {
        let request = upsert(
            "noisy",
            vec![memory(&format!("m{i}"), [1.0, 0.0, 0.0, 0.0], json!({}))],
        );
        if let Err(status) = client.upsert(request).await {
            shed.push(status);
        }
    }
    assert!(
        !shed.is_empty(),
        "ten writes in a row all passed a 3-burst budget"
    );
    assert!(
        shed.len() <= 7,
        "at least the burst passes, got {} shed",
        shed.len()
    );
    for status in &shed {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let delay = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay);
        assert!(delay.is_some_and(|d| !d.is_zero()), "{status:?}");
    }

    // Shed writes wrote nothing; reads have their own budget; others are untouched.
    let written = client
        .count(count("noisy", None))
        .await
        .expect("reads are not shed")
        .into_inner()
        .count;
    assert_eq!(written as usize, 10 - shed.len());
    client
        .upsert(upsert(
            "quiet",
            vec![memory("a", [1.0, 0.0, 0.0, 0.0], json!({}))],
        ))
        .await
        .expect("another tenant is not limited");
}

/// Shed calls must not cost admitted ones their connection: over HTTP/2,
/// answering before the request body is read makes the server reset the
/// stream, and h2 closes the connection after 1,024 such resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_shedding_answers_every_call_and_keeps_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Backend::embedded()
        .start_server_with(dir.path(), &[("VECMEM__ADMISSION__MAX_CONCURRENCY", "1")]);
    let client = server.memory().await;
    client
        .clone()
        .upsert(upsert(
            "t",
            vec![memory("a", [1.0, 0.0, 0.0, 0.0], json!({"n": 1}))],
        ))
        .await
        .expect("upsert");

    const WORKERS: usize = 16;
    const CALLS_EACH: usize = 100;
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::new();
            // Bodies of several HTTP/2 frames: still arriving when a call
            // is shed.
            let text = "x".repeat(48 * 1024);
            for i in 0..CALLS_EACH {
                let request = upsert(
                    "t",
                    vec![memory(
                        &format!("m{i}"),
                        [1.0, 0.0, 0.0, 0.0],
                        json!({"text": text}),
                    )],
                );
                let code = match client.upsert(request).await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                };
                *codes.entry(format!("{code:?}")).or_insert(0usize) += 1;
            }
            codes
        }));
    }
    let mut codes = std::collections::BTreeMap::new();
    for task in tasks {
        for (code, n) in task.await.expect("worker") {
            *codes.entry(code).or_insert(0) += n;
        }
    }
    let shed = codes.get("ResourceExhausted").copied().unwrap_or(0);
    let ok = codes.get("Ok").copied().unwrap_or(0);
    assert_eq!(
        ok + shed,
        WORKERS * CALLS_EACH,
        "only OK or shed: {codes:?}"
    );
    assert!(ok > 0 && shed > 0, "{codes:?}");
}
