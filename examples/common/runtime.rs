//! The runtime both measuring devices (`proxy_floor`, `tcp_relay`) run on,
//! so a comparison between them and vecmem is not a comparison of thread
//! counts: a multi-thread tokio runtime with one worker per core unless the
//! optional WORKERS argument says otherwise, as vecmem's own default.

use tokio::runtime::Runtime;

/// A multi-thread runtime with `workers` threads (a number, as given on the
/// command line), or one per core when it is `None`.
pub fn runtime(workers: Option<String>) -> anyhow::Result<Runtime> {
    let workers = match workers {
        Some(workers) => workers.parse()?,
        None => std::thread::available_parallelism()?.get(),
    };
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?)
}
