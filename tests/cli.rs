//! The command line as operators and Docker use it: `--version`, config
//! errors that stop start-up with the dotted key, `vecmem health` exit codes,
//! and refusing to start on data of another dimension.

mod support;

use std::process::Output;

use support::{NS, TestServer, run_vecmem as vecmem};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn version_is_printed() {
    let output = vecmem(&["--version"], &[]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("vecmem {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let cases = [
        ("VECMEM__SERVER__GRPC_PORT", "1", "server.grpc_port"),
        ("VECMEM__SERVER__GRPC_ADDR", "localhost", "server.grpc_addr"),
        ("VECMEM__LIMITS__MAX_BATCH", "0", "limits.max_batch"),
        (
            "VECMEM__NAMESPACES__MEMORIES__DISTANCE",
            "hamming",
            "namespaces.memories.distance",
        ),
        (
            "VECMEM__BACKEND__EMBEDDED__OPTIMIZE_INTERVAL_MS",
            "soon",
            "backend.embedded.optimize_interval_ms",
        ),
    ];
    for (key, value, dotted) in cases {
        let output = vecmem(
            &["serve"],
            &[(key, value), ("VECMEM__BACKEND__EMBEDDED__PATH", data)],
        );
        assert_eq!(
            output.status.code(),
            Some(2),
            "{key}={value}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(dotted),
            "{key}={value}: {}",
            stderr(&output)
        );
    }
    // Nothing was created: config is checked before storage is touched.
    assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 0);

    let file = dir.path().join("vecmem.toml");
    std::fs::write(&file, "[limits]\nmax_limitt = 5\n").expect("write");
    let output = vecmem(&["--config", file.to_str().expect("utf-8"), "serve"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("limits.max_limitt"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn health_probe_exits_zero_only_while_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let url = format!("http://{}/health/ready", server.http_addr);
    let ready = vecmem(&["health", "--url", &url], &[]);
    assert!(ready.status.success(), "{}", stderr(&ready));

    let http_addr = server.http_addr;
    assert!(server.terminate().success());
    let down = vecmem(
        &[
            "health",
            "--url",
            &format!("http://{http_addr}/health/ready"),
            "--timeout-ms",
            "500",
        ],
        &[],
    );
    assert_eq!(down.status.code(), Some(1), "{}", stderr(&down));
}

#[test]
fn existing_data_of_another_dimension_is_a_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    assert!(server.terminate().success());

    let data = dir.path().to_str().expect("utf-8 path");
    let dim_key = format!("VECMEM__NAMESPACES__{}__DIM", NS.to_uppercase());
    let output = vecmem(
        &["serve"],
        &[
            ("VECMEM__BACKEND__EMBEDDED__PATH", data),
            (&dim_key, "8"),
            ("VECMEM__SERVER__GRPC_ADDR", "127.0.0.1:0"),
            ("VECMEM__SERVER__HTTP_ADDR", "127.0.0.1:0"),
        ],
    );
    assert!(!output.status.success());
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    for expected in [&format!("namespace {NS}"), "dim 4", "dim 8"] {
        assert!(logs.contains(expected), "missing {expected:?} in:\n{logs}");
    }
}
