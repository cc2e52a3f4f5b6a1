//! A Qdrant-protocol double: the Collections, Points and health services of
//! Qdrant's gRPC API (the server traits `qdrant-client` generates from
//! Qdrant's protos) backed by qdrant-edge, the engine Qdrant itself runs.
//!
//! It implements only what `QdrantStore` calls and answers UNIMPLEMENTED for
//! the rest, with Qdrant's status codes where Qdrant has one (NOT_FOUND for a
//! missing collection, INVALID_ARGUMENT for one that already exists). Faults
//! can be injected: a delay before every answer, UNAVAILABLE for every call,
//! or the listener and all its connections dropped and later restored on the
//! same port. It runs on its own runtime thread, so it keeps serving while a
//! test blocks.

#![allow(dead_code)]

mod convert;
mod services;

use std::collections::HashMap;
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
}

impl Faults {
    /// Counts a call and injects the faults.
    async fn apply(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let stall = self.stall_once_ms.swap(0, Ordering::SeqCst);
        if stall > 0 {
            tokio::time::sleep(Duration::from_millis(stall)).await;
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
    pub tenant_index: AtomicBool,
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
    pub addr: SocketAddr,
    state: Arc<State>,
    server: Option<ServerThread>,
}

/// A thread owning the runtime that serves the double; stopping it drops
/// the listener and every connection at once.
struct ServerThread {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerThread {
    fn spawn(state: Arc<State>, addr: SocketAddr) -> (Self, SocketAddr) {
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
                let router = services::router(state);
                tokio::select! {
                    _ = router.serve_with_incoming(incoming) => {}
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
        let state = Arc::new(State {
            dir: tempfile::tempdir().expect("tempdir"),
            collections: Mutex::new(HashMap::new()),
            faults: Faults::default(),
            background_indexing: AtomicBool::new(false),
        });
        let (server, addr) = ServerThread::spawn(state.clone(), addr);
        Self {
            addr,
            state,
            server: Some(server),
        }
    }

    /// Calls received so far (health checks aside), failed ones included.
    pub fn calls(&self) -> u64 {
        self.state.faults.calls.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

    /// Drops the listener and every open connection, keeping the data.
    pub fn drop_connections(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }

    /// Serves again on the same port after [`Self::drop_connections`].
    pub fn restore(&mut self) {
        let (server, _) = ServerThread::spawn(self.state.clone(), self.addr);
        self.server = Some(server);
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
