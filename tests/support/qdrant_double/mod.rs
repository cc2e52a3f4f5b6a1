//! A Qdrant-protocol double: the Collections, Points and health services of
//! Qdrant's gRPC API (the server traits `qdrant-client` generates from
//! Qdrant's protos) backed by qdrant-edge, the engine Qdrant itself runs.
//!
//! It implements only what `QdrantStore` calls and answers UNIMPLEMENTED for
//! the rest, with Qdrant's status codes where Qdrant has one (NOT_FOUND for a
//! missing collection, INVALID_ARGUMENT for one that already exists). Faults
//! can be injected: a delay before every answer (or delays taken in turn),
//! UNAVAILABLE for every call,
//! the next calls answered with a given status (Qdrant's INTERNAL reports of
//! a failing replica, say), or a listener and all its connections dropped
//! and later restored on the same port.
//!
//! It can listen as several peers over one store ([`QdrantDouble::start_peers`]),
//! the way every node of a fully replicated cluster answers for all the data,
//! so failover between peers can be tested without a cluster. Each listener
//! runs on its own runtime thread, so it keeps serving while a test blocks
//! and stopping one drops its connections like a killed process.

#![allow(dead_code)]

mod convert;
mod services;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qdrant_edge::EdgeShard;
use tokio::sync::oneshot;
use tonic::Status;

/// Faults the double injects into every call.
#[derive(Default)]
pub struct Faults {
    unavailable: AtomicBool,
    delay_ms: AtomicU64,
    calls: AtomicU64,
    /// A one-off stall for the next counted call, in milliseconds.
    stall_once_ms: AtomicU64,
    /// Answers for the next counted calls, instead of serving them.
    answers: Mutex<VecDeque<Status>>,
    /// Extra delays the counted calls take in turn, round and round.
    delay_cycle: Mutex<VecDeque<Duration>>,
}

impl Faults {
    /// Counts a call and injects the faults.
    async fn apply(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let stall = self.stall_once_ms.swap(0, Ordering::SeqCst);
        if stall > 0 {
            tokio::time::sleep(Duration::from_millis(stall)).await;
        }
        let answer = self.answers.lock().expect("lock").pop_front();
        if let Some(status) = answer {
            return Err(status);
        }
        let delay = {
            let mut cycle = self.delay_cycle.lock().expect("lock");
            let delay = cycle.pop_front();
            cycle.extend(delay);
            delay
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.apply_uncounted().await
    }

    /// Injects the faults into a health check, which is not counted: the
    /// server under test probes on its own schedule.
    async fn apply_uncounted(&self) -> Result<(), Status> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable("injected by the Qdrant double"));
        }
        Ok(())
    }
}

/// A collection: an engine shard plus what Qdrant reports about it.
pub struct Collection {
    pub shard: EdgeShard,
    pub dim: u64,
    pub distance: i32,
    /// The sparse vectors it was created with, as Qdrant reports them.
    pub sparse: Option<qdrant_client::qdrant::SparseVectorConfig>,
    /// The payload indexes created, by field, as Qdrant reports their type.
    pub indexes: Mutex<HashMap<String, qdrant_client::qdrant::PayloadSchemaType>>,
    /// Held while a write is applied and flushed.
    pub writes: Mutex<()>,
    /// Written since the background indexer last found nothing to do.
    pub index_pending: AtomicBool,
}

/// Everything the double stores; survives listener restarts.
/// Fields drop in order: the collections (which flush on drop) before
/// the directory they live in.
pub struct State {
    pub collections: Mutex<HashMap<String, Arc<Collection>>>,
    pub faults: Faults,
    /// Whether indexes are built in the background; while one is pending a
    /// collection reports Yellow, as Qdrant does while it optimizes.
    pub background_indexing: AtomicBool,
    pub dir: tempfile::TempDir,
}

pub struct QdrantDouble {
    /// The first peer's address.
    pub addr: SocketAddr,
    state: Arc<State>,
    peers: Vec<Peer>,
}

/// One listener over the shared store.
struct Peer {
    addr: SocketAddr,
    server: Option<ServerThread>,
    /// Requests this listener received, health checks included.
    requests: Arc<AtomicU64>,
}

/// A thread owning the runtime that serves the double; stopping it drops
/// the listener and every connection at once.
struct ServerThread {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerThread {
    fn spawn(state: Arc<State>, addr: SocketAddr, requests: Arc<AtomicU64>) -> (Self, SocketAddr) {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("bind the double");
                bound_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("report address");
                // TCP_NODELAY, as vecmem's own listener has: without it a
                // response written in two parts waits for the client's
                // delayed ACK, ~40 ms a call, and the double looks slow.
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                tokio::select! {
                    _ = services::serve(state, requests, incoming) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here cancels every connection task.
            runtime.shutdown_timeout(Duration::from_secs(5));
        });
        let addr = bound_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the double did not bind");
        (Self { stop, thread }, addr)
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

impl QdrantDouble {
    /// Starts on an ephemeral loopback port.
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts on `addr`.
    pub fn start_on(addr: SocketAddr) -> Self {
        Self::start_peers_on(&[addr])
    }

    /// Starts `count` peers on ephemeral loopback ports, all serving one store.
    pub fn start_peers(count: usize) -> Self {
        let addrs = vec![SocketAddr::from(([127, 0, 0, 1], 0)); count];
        Self::start_peers_on(&addrs)
    }

    fn start_peers_on(addrs: &[SocketAddr]) -> Self {
        let state = Arc::new(State {
            dir: tempfile::tempdir().expect("tempdir"),
            collections: Mutex::new(HashMap::new()),
            faults: Faults::default(),
            background_indexing: AtomicBool::new(false),
        });
        let peers: Vec<Peer> = addrs
            .iter()
            .map(|&addr| {
                let requests = Arc::new(AtomicU64::new(0));
                let (server, addr) = ServerThread::spawn(state.clone(), addr, requests.clone());
                Peer {
                    addr,
                    server: Some(server),
                    requests,
                }
            })
            .collect();
        Self {
            addr: peers[0].addr,
            state,
            peers,
        }
    }

    /// Calls received so far (health checks aside), failed ones included.
    pub fn calls(&self) -> u64 {
        self.state.faults.calls.load(Ordering::SeqCst)
    }

    /// The first peer's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every peer's URL, comma-separated, as `backend.qdrant.url` takes them.
    pub fn urls(&self) -> String {
        self.peers
            .iter()
            .map(|peer| format!("http://{}", peer.addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Requests peer `index` received so far, health checks included.
    pub fn requests_to(&self, index: usize) -> u64 {
        self.peers[index].requests.load(Ordering::SeqCst)
    }

    /// Stops peer `index` as a SIGKILL would: its listener and every open
    /// connection go at once; the store and the other peers stay.
    pub fn stop_peer(&mut self, index: usize) {
        if let Some(server) = self.peers[index].server.take() {
            server.stop();
        }
    }

    /// Serves peer `index` again on its port after [`Self::stop_peer`].
    pub fn restore_peer(&mut self, index: usize) {
        let peer = &mut self.peers[index];
        let (server, _) = ServerThread::spawn(self.state.clone(), peer.addr, peer.requests.clone());
        peer.server = Some(server);
    }

    /// The next `count` calls (health checks aside), on whichever peer,
    /// are answered with `status` instead of being served.
    pub fn answer_next(&self, count: usize, status: Status) {
        self.state
            .faults
            .answers
            .lock()
            .expect("lock")
            .extend(std::iter::repeat_n(status, count));
    }

    /// Makes every call fail with UNAVAILABLE (or stop failing).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state
            .faults
            .unavailable
            .store(unavailable, Ordering::SeqCst);
    }

    /// The next call (only that one) takes `stall` longer.
    pub fn stall_next_call(&self, stall: Duration) {
        self.state
            .faults
            .stall_once_ms
            .store(stall.as_millis() as u64, Ordering::SeqCst);
    }

    /// Delays every answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .faults
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Delays the counted calls (health checks aside) by each of `delays`
    /// in turn, starting over after the last: a latency distribution known
    /// in advance.
    pub fn cycle_delays(&self, delays: &[Duration]) {
        *self.state.faults.delay_cycle.lock().expect("lock") = delays.iter().copied().collect();
    }

    /// Drops every listener and every open connection, keeping the data.
    pub fn drop_connections(&mut self) {
        for index in 0..self.peers.len() {
            self.stop_peer(index);
        }
    }

    /// Serves again on the same ports after [`Self::drop_connections`].
    pub fn restore(&mut self) {
        for index in 0..self.peers.len() {
            self.restore_peer(index);
        }
    }

    /// Builds indexes in the background every `every`, as Qdrant's
    /// optimizers do, so searches stop being full scans once a collection
    /// outgrows the indexing threshold. Writes wait for a build (the
    /// engine keeps deletes in rebuilt segments only in memory meanwhile).
    /// Tests leave it off; `examples/qdrant_double.rs` turns it on.
    pub fn index_in_background(&self, every: Duration) {
        self.state.background_indexing.store(true, Ordering::SeqCst);
        let state = Arc::downgrade(&self.state);
        std::thread::spawn(move || {
            while let Some(state) = state.upgrade() {
                let collections: Vec<_> = state
                    .collections
                    .lock()
                    .expect("lock")
                    .values()
                    .cloned()
                    .collect();
                drop(state);
                for collection in collections {
                    let _writes = collection.writes.lock().expect("lock");
                    match collection.shard.optimize() {
                        Ok(true) => collection.shard.flush(),
                        Ok(false) => collection.index_pending.store(false, Ordering::SeqCst),
                        Err(_) => {}
                    }
                }
                std::thread::sleep(every);
            }
        });
    }

    /// Point count of a collection, read from the engine directly.
    pub fn points(&self, collection: &str) -> usize {
        let collections = self.state.collections.lock().expect("lock");
        collections
            .get(collection)
            .map_or(0, |c| c.shard.info().points_count)
    }
}

impl Drop for QdrantDouble {
    fn drop(&mut self) {
        self.drop_connections();
    }
}
