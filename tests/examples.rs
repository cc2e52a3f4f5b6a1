//! The client examples, run against a real server, print what the README
//! says they print: the Rust one (`cargo test` builds every example before
//! running tests; `cargo test --test examples` alone does not, so build it
//! with `cargo build --example client` first) and the Python one (stubs generated from `proto/` with
//! grpcio-tools). The Python run needs `grpcio grpcio-tools grpcio-status`
//! (`.ci/run` installs them); under `CI=true` their absence fails the test,
//! elsewhere the Python half is skipped with a printed reason.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{Backend, NS};

/// What both examples print against a namespace of dimension 4.
const EXPECTED: &str = "upserted pref-1, todo-1\n\
found todo-1 (score 0.000)\n\
rejected memories[0].vector: has 3 dimensions; the namespace expects 4\n";

fn rust_example() -> PathBuf {
    // target/<profile>/deps/examples-… → target/<profile>/examples/client
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples")
        .join("client")
}

fn python_available() -> bool {
    support::tool_available(
        Command::new("python3").args(["-c", "import grpc, grpc_tools, grpc_status"]),
        "pip install grpcio grpcio-tools grpcio-status",
    )
}

fn stdout_of(command: &mut Command) -> String {
    let output = command.output().expect("run the example");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_rust_and_python_clients_print_what_the_readme_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Backend::embedded().start_server(&dir.path().join("data"));
    let addr = server.grpc_addr.to_string();

    let rust = stdout_of(
        Command::new(rust_example())
            .env("VECMEM_ADDR", format!("http://{addr}"))
            .env("VECMEM_NAMESPACE", NS),
    );
    assert_eq!(rust, EXPECTED);

    if python_available() {
        let root = env!("CARGO_MANIFEST_DIR");
        let stubs = support::python_stubs(dir.path());
        let python = stdout_of(
            Command::new("python3")
                .arg(format!("{root}/examples/python/client.py"))
                .env("PYTHONPATH", &stubs)
                .env("VECMEM_ADDR", &addr)
                .env("VECMEM_NAMESPACE", NS),
        );
        assert_eq!(python, EXPECTED);
    }
}
