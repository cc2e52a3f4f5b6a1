//! The `vecmem` command line: parse, load the config, build the runtime, and
//! hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vecmem::config::Config;

/// jemalloc instead of the system allocator: a call allocates and frees many
/// small buffers on several threads (protobuf messages, payload maps, h2
/// frames), where glibc's malloc spent a sixth of the server's CPU in
/// profiles (`malloc_consolidate`, `unlink_chunk`). Qdrant ships with it too.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "vecmem",
    version,
    about = "gRPC vector-memory service in front of Qdrant"
)]
struct Cli {
    /// Config file layered over the compiled-in defaults.
    #[arg(long, global = true, env = "VECMEM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service until SIGINT or SIGTERM.
    Serve,
    /// Load-test a running server over gRPC and report throughput and latency.
    Bench(Box<vecmem::bench::BenchArgs>),
    /// Download a backup of a running server (embedded backend) to a file.
    Snapshot {
        /// The server's gRPC address.
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: String,
        /// An API key allowed every tenant, if the server checks keys.
        #[arg(long, env = "VECMEM_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Where to write the archive (a gzipped tar).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Put a backup back into this config's data directory (server stopped).
    Restore {
        /// The archive `vecmem snapshot` wrote.
        #[arg(long)]
        from: PathBuf,
    },
    /// Exit 0 if the server answers /health/ready with 200, else 1.
    Health {
        /// Readiness URL; defaults to this config's server.http_addr.
        #[arg(long)]
        url: Option<String>,
        /// How long to wait for an answer, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The load generator needs no server config.
    if let Command::Bench(args) = cli.command {
        return bench(*args);
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("vecmem: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve => serve(config),
        Command::Bench(_) => unreachable!("handled before the config is loaded"),
        Command::Health { url, timeout_ms } => {
            health(&config, url, Duration::from_millis(timeout_ms))
        }
        Command::Snapshot { addr, api_key, out } => snapshot(&addr, api_key.as_deref(), &out),
        Command::Restore { from } => restore(&config, &from),
    }
}

fn snapshot(addr: &str, api_key: Option<&str>, out: &std::path::Path) -> ExitCode {
    let outcome = current_thread()
        .and_then(|runtime| runtime.block_on(vecmem::backup::download(addr, api_key, out)));
    match outcome {
        Ok(downloaded) => {
            println!(
                "wrote {} bytes to {}",
                downloaded.bytes,
                downloaded.path.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("vecmem snapshot: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn restore(config: &Config, from: &std::path::Path) -> ExitCode {
    let outcome = current_thread()
        .and_then(|runtime| runtime.block_on(vecmem::backup::restore_deployment(config, from)));
    match outcome {
        Ok(namespaces) => {
            let path = config.backend.embedded.path.display();
            for namespace in &namespaces {
                if config.namespaces.contains_key(namespace) {
                    println!("restored namespace {namespace} into {path}");
                } else {
                    println!(
                        "restored namespace {namespace} into {path}; it is not in the config, \
                         so the server will not serve it"
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("vecmem restore: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn serve(config: Config) -> ExitCode {
    if let Err(err) = vecmem::telemetry::init(&config.log) {
        eprintln!("vecmem: {err:#}");
        return ExitCode::FAILURE;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("vecmem-worker");
    // Config wins over TOKIO_WORKER_THREADS, which tokio reads by itself.
    let source = if config.runtime.worker_threads > 0 {
        builder.worker_threads(config.runtime.worker_threads);
        "runtime.worker_threads"
    } else if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        "TOKIO_WORKER_THREADS"
    } else {
        "one per core"
    };
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        workers = runtime.metrics().num_workers(),
        source,
        "tokio runtime built"
    );
    match runtime.block_on(vecmem::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "vecmem failed");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: vecmem::bench::BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("vecmem bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vecmem::bench::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vecmem bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn health(config: &Config, url: Option<String>, timeout: Duration) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let addr = config.server.http_addr;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let scheme = if config.server.tls.cert_path.as_os_str().is_empty() {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}:{}/health/ready", addr.port())
    });
    let pinned = Some(config.server.tls.cert_path.as_path()).filter(|p| !p.as_os_str().is_empty());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("vecmem health: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vecmem::api::health::probe_ready_with(&url, timeout, pinned)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("vecmem health: {url} is not ready");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("vecmem health: {url}: {err}");
            ExitCode::FAILURE
        }
    }
}
