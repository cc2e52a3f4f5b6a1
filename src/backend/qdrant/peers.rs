//! The Qdrant peers vecmem sends calls to, and which of them are live.
//!
//! `backend.qdrant.url` may name several peers of one cluster. Any peer
//! serves any call (Qdrant forwards it to the replicas of the shards it
//! touches), so calls are spread over the live peers, round robin. A call
//! that fails at the transport level (connection refused, reset, unreachable,
//! a GOAWAY) marks its peer down and is sent again, at once, to the next live
//! peer: every call vecmem makes is idempotent, so a write that may have
//! reached the dead peer is safe to repeat. A down peer gets no calls; a
//! background probe health-checks it every [`PROBE_EVERY`] and brings it
//! back when it answers. Only when every peer is down are the down ones
//! tried anyway, so a whole-cluster restart needs no probe to finish first.
//!
//! A peer that answers with an error, even UNAVAILABLE, is live: that is
//! Qdrant's word about the cluster, and another peer would say the same.

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use qdrant_client::qdrant::HealthCheckRequest;
use qdrant_client::qdrant::qdrant_client::QdrantClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::{Code, Status};

use super::connection::Connections;

/// How often a down peer is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Bound on one probe, so a peer that hangs counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One Qdrant peer: its URL, its connection pool, and whether it is live.
pub struct Peer {
    pub url: String,
    pub connections: Connections,
    live: AtomicBool,
}

pub struct Peers {
    peers: Vec<Arc<Peer>>,
    next: AtomicUsize,
    api_key: Option<AsciiMetadataValue>,
}

impl Peers {
    /// Every peer starts live; the first failed call says otherwise.
    pub fn new(peers: Vec<(String, Connections)>, api_key: Option<AsciiMetadataValue>) -> Self {
        Self {
            peers: peers
                .into_iter()
                .map(|(url, connections)| {
                    Arc::new(Peer {
                        url,
                        connections,
                        live: AtomicBool::new(true),
                    })
                })
                .collect(),
            next: AtomicUsize::new(0),
            api_key,
        }
    }

    /// The peers in the order a call should try them: the live ones, each
    /// call starting at the next, then the down ones as a last resort.
    pub fn in_order(&self) -> Vec<Arc<Peer>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.peers.len();
        let rotated = (0..count).map(|i| &self.peers[(start + i) % count]);
        let (live, down): (Vec<_>, Vec<_>) = rotated
            .cloned()
            .partition(|peer| peer.live.load(Ordering::SeqCst));
        live.into_iter().chain(down).collect()
    }

    /// Takes `peer` out of rotation and probes it until it answers again.
    pub fn mark_down(&self, peer: &Arc<Peer>, status: &Status) {
        if !peer.live.swap(false, Ordering::SeqCst) {
            return;
        }
        let live = self.live_count();
        tracing::warn!(peer = %peer.url, error = %status.message(), live, "qdrant peer down; calls move to the other peers");
        let (peer, api_key) = (peer.clone(), self.api_key.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if answers_health_check(&peer.connections, api_key.as_ref()).await {
                    peer.live.store(true, Ordering::SeqCst);
                    tracing::info!(peer = %peer.url, "qdrant peer answers again; back in rotation");
                    return;
                }
            }
        });
    }

    pub fn live_count(&self) -> usize {
        self.peers
            .iter()
            .filter(|peer| peer.live.load(Ordering::SeqCst))
            .count()
    }

    /// Whether any peer answers a health check now.
    pub async fn any_answers(&self) -> bool {
        for peer in self.in_order() {
            if answers_health_check(&peer.connections, self.api_key.as_ref()).await {
                return true;
            }
        }
        false
    }
}

/// Whether the peer answers a health check within [`PROBE_TIMEOUT`], which
/// is sent as `grpc-timeout` and enforced here (the connections do not).
async fn answers_health_check(
    connections: &Connections,
    api_key: Option<&AsciiMetadataValue>,
) -> bool {
    let mut request = tonic::Request::new(HealthCheckRequest {});
    request.set_timeout(PROBE_TIMEOUT);
    if let Some(key) = api_key {
        request.metadata_mut().insert("api-key", key.clone());
    }
    let mut client = QdrantClient::new(connections.clone());
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, client.health_check(request)).await,
        Ok(Ok(_))
    )
}

/// Whether a failed call never got an answer from Qdrant: the connection
/// failed (refused, reset, unreachable, GOAWAY). tonic keeps the transport
/// error as the status's source; a status Qdrant sent has none. Our own
/// timeouts (CANCELLED, DEADLINE_EXCEEDED) are not: a slow peer is not a
/// dead one, and moving its calls elsewhere would only spread the load.
pub fn is_transport_failure(status: &Status) -> bool {
    status.source().is_some() && !matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(count: usize) -> Peers {
        let config = crate::config::Config::load(None).expect("defaults");
        let peers = (0..count)
            .map(|i| {
                let url = format!("http://127.0.0.1:{}", 1 + i);
                let connections = Connections::lazy(&config.backend.qdrant, &url).expect("url");
                (url, connections)
            })
            .collect();
        Peers::new(peers, None)
    }

    /// A peer that accepts connections and never answers (a stopped
    /// process, a black-holed route) fails its probe within
    /// [`PROBE_TIMEOUT`], so neither the probe loop nor readiness hangs on it.
    #[tokio::test]
    async fn a_peer_that_never_answers_fails_its_health_check_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let config = crate::config::Config::load(None).expect("defaults");
        let connections =
            Connections::lazy(&config.backend.qdrant, &format!("http://{addr}")).expect("url");
        let answered =
            tokio::time::timeout(PROBE_TIMEOUT * 5, answers_health_check(&connections, None))
                .await
                .expect("the probe ends by itself");
        assert!(!answered);
        silent.abort();
    }

    fn urls(order: &[Arc<Peer>]) -> Vec<&str> {
        order.iter().map(|peer| peer.url.as_str()).collect()
    }

    #[tokio::test]
    async fn calls_rotate_over_live_peers_and_try_down_ones_last() {
        let peers = peers(3);
        assert_eq!(
            urls(&peers.in_order()),
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3"
            ]
        );
        assert_eq!(urls(&peers.in_order())[0], "http://127.0.0.1:2");

        let first = peers.in_order().remove(0);
        assert_eq!(first.url, "http://127.0.0.1:3");
        peers.mark_down(&first, &Status::unavailable("refused"));
        assert_eq!(peers.live_count(), 2);
        for _ in 0..4 {
            let order = peers.in_order();
            assert_eq!(urls(&order)[2], "http://127.0.0.1:3", "down peer last");
        }
    }

    #[test]
    fn only_errors_without_an_answer_from_qdrant_are_transport_failures() {
        let from_qdrant = Status::unavailable("The replica set has no active replica");
        assert!(!is_transport_failure(&from_qdrant));

        let mut refused = Status::unavailable("tcp connect error");
        refused.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(is_transport_failure(&refused));

        let mut timed_out = Status::cancelled("Timeout expired");
        timed_out.set_source(Arc::new(std::io::Error::from(std::io::ErrorKind::TimedOut)));
        assert!(!is_transport_failure(&timed_out));
    }
}
