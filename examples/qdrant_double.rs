//! The in-repo Qdrant-protocol double (`tests/support/qdrant_double`) as a
//! server of its own, for benchmarks and the local multi-replica run on a
//! machine without Qdrant: Qdrant's gRPC Collections and Points services,
//! backed by qdrant-edge, the engine Qdrant itself runs, with indexes built in
//! the background as Qdrant's optimizers build them.
//!
//! It is a stand-in, not a Qdrant: one node, data in a temporary directory
//! removed on exit, only the calls vecmem makes.
//!
//!     cargo run --release --example qdrant_double [-- ADDR]   # default 127.0.0.1:6334

#[path = "../tests/support/qdrant_double/mod.rs"]
mod qdrant_double;

use std::net::SocketAddr;
use std::time::Duration;

/// How often the background indexer looks for work.
const INDEX_EVERY: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6334".into())
        .parse()?;
    let double = qdrant_double::QdrantDouble::start_on(addr);
    double.index_in_background(INDEX_EVERY);
    println!("Qdrant double serving gRPC on {}", double.url());
    // Serve until stopped (SIGINT or SIGTERM end the process).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(double);
    Ok(())
}
