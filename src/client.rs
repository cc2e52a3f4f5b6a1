//! How vecmem's own commands (`vecmem bench`, `vecmem snapshot`) reach a
//! vecmem server: one reading of `--addr` (`HOST:PORT`, or a URL with its
//! scheme) and one connect timeout, so the commands agree on both.

use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

/// How long a command waits for the server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint `--addr` names: `HOST:PORT` means `http://HOST:PORT`.
pub fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)
        .with_context(|| format!("--addr {addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT))
}

/// A connection to `endpoint`, or an error that names it.
pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Channel> {
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", endpoint.uri()))
}
