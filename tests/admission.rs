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
