//! The floor under any proxy's CPU per call: a TCP relay that reads nothing.
//!
//! Each connection it accepts is joined to a new connection to Qdrant, and
//! bytes are copied both ways (`tokio::io::copy_bidirectional`) without
//! being parsed: no HTTP/2, no gRPC, no protobuf. What it costs per call is
//! the least a hop through one more tokio process costs on the machine at
//! hand (the socket reads and writes, and the wake-ups between them), below
//! `proxy_floor`, which at least speaks gRPC. `benches/proxy_cost.py
//! --relay` sends the direct workload (`vecmem bench --direct-qdrant`)
//! through it, so the table shows what a proxy that does no work at all
//! takes from Qdrant on a shared machine.
//!
//!     cargo build --profile profiling --example tcp_relay
//!     target/profiling/examples/tcp_relay LISTEN QDRANT_ADDR [WORKERS]
//!
//! QDRANT_ADDR is host:port (Qdrant's gRPC port). A measuring device, not a
//! server to deploy: it has no timeouts and logs only to stderr.

#[path = "common/runtime.rs"]
mod runtime;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

fn main() -> anyhow::Result<()> {
    let usage = "usage: tcp_relay LISTEN QDRANT_ADDR [WORKERS]";
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(qdrant)) = (args.next(), args.next()) else {
        anyhow::bail!(usage);
    };
    runtime::runtime(args.next())?.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            let qdrant = qdrant.clone();
            tokio::spawn(async move {
                if let Err(err) = relay(&mut client, &qdrant).await {
                    eprintln!("tcp_relay: {err}");
                }
            });
        }
    })
}

async fn relay(client: &mut TcpStream, qdrant: &str) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(qdrant).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    copy_bidirectional(client, &mut upstream).await?;
    Ok(())
}
