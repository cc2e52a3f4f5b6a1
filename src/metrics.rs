//! The Prometheus metrics of one server, served on `/metrics`.
//!
//! One [`Metrics`] value is made per server and handed to the parts that
//! record into it, instead of a process-global recorder: tests run several
//! servers in one process, and each must count only its own traffic. Every
//! label value comes from a small fixed set (`rpc`, `op`, `code`, `kind`,
//! `reason`), never from a tenant or an id, so the series count is bounded.
//! The standard process metrics (resident memory, open file descriptors,
//! start time) are read from /proc when scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCode {
    rpc: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpKind {
    op: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Latencies from 100 µs to ~6.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Batch sizes 1, 2, 4 … 512.
fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RpcCode, Counter>,
    request_duration: Family<Rpc, Histogram, fn() -> Histogram>,
    inflight: Gauge,
    shed: Family<Reason, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_stale: Counter,
    batch_size: Family<Op, Histogram, fn() -> Histogram>,
    backend_duration: Family<Op, Histogram, fn() -> Histogram>,
    backend_errors: Family<OpKind, Counter>,
    retries: Family<Op, Counter>,
    circuit_open: Gauge,
    process: ProcessMetrics,
}

/// The standard process metrics, read from /proc at each scrape.
struct ProcessMetrics {
    started: std::time::Instant,
    resident_bytes: Gauge,
    open_fds: Gauge,
    start_time_seconds: Gauge<f64, AtomicU64>,
    uptime_seconds: Gauge<f64, AtomicU64>,
}

impl ProcessMetrics {
    fn register(registry: &mut Registry) -> Self {
        let process = Self {
            started: std::time::Instant::now(),
            resident_bytes: Gauge::default(),
            open_fds: Gauge::default(),
            start_time_seconds: Gauge::default(),
            uptime_seconds: Gauge::default(),
        };
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        process.start_time_seconds.set(since_epoch.as_secs_f64());
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size of the process",
            process.resident_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of the process",
            process.open_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process, seconds since the Unix epoch",
            process.start_time_seconds.clone(),
        );
        registry.register(
            "vecmem_uptime_seconds",
            "Seconds since the server started",
            process.uptime_seconds.clone(),
        );
        process
    }

    /// Reads what changes; a value /proc does not give is left as it was.
    fn refresh(&self) {
        self.uptime_seconds
            .set(self.started.elapsed().as_secs_f64());
        // statm: size resident shared ... in pages; pages are 4 KiB on the
        // platforms vecmem ships for.
        if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<i64>().ok())
        {
            self.resident_bytes.set(pages * 4096);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RpcCode, Counter>::default();
        let request_duration =
            Family::<Rpc, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let inflight = Gauge::default();
        let shed = Family::<Reason, Counter>::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let cache_stale = Counter::default();
        let batch_size =
            Family::<Op, Histogram, fn() -> Histogram>::new_with_constructor(size_histogram);
        let backend_duration =
            Family::<Op, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let backend_errors = Family::<OpKind, Counter>::default();
        let retries = Family::<Op, Counter>::default();
        let circuit_open = Gauge::default();
        let process = ProcessMetrics::register(&mut registry);

        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "vecmem_requests",
            "Requests answered, by RPC and gRPC status code",
            requests.clone(),
        );
        registry.register(
            "vecmem_request_duration_seconds",
            "Time to answer a request, by RPC",
            request_duration.clone(),
        );
        registry.register(
            "vecmem_inflight_requests",
            "Requests being served now",
            inflight.clone(),
        );
        registry.register(
            "vecmem_shed",
            "Requests refused by admission control, by reason",
            shed.clone(),
        );
        registry.register(
            "vecmem_cache_hits",
            "Searches and gets answered from the result cache",
            cache_hits.clone(),
        );
        registry.register(
            "vecmem_cache_misses",
            "Cacheable searches and gets that went to the store",
            cache_misses.clone(),
        );
        registry.register(
            "vecmem_cache_stale_served",
            "Reads answered from an expired cache entry while the backend was unavailable",
            cache_stale.clone(),
        );
        registry.register(
            "vecmem_batch_size",
            "Requests coalesced into one backend call, by operation",
            batch_size.clone(),
        );
        registry.register(
            "vecmem_backend_duration_seconds",
            "Time of one backend call, by operation",
            backend_duration.clone(),
        );
        registry.register(
            "vecmem_backend_errors",
            "Failed backend calls, by operation and kind of failure",
            backend_errors.clone(),
        );
        registry.register(
            "vecmem_backend_retries",
            "Backend calls retried after a transient failure, by operation",
            retries.clone(),
        );
        registry.register(
            "vecmem_circuit_open",
            "1 while the circuit breaker in front of the backend is open",
            circuit_open.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            inflight,
            shed,
            cache_hits,
            cache_misses,
            cache_stale,
            batch_size,
            backend_duration,
            backend_errors,
            retries,
            circuit_open,
            process,
        }
    }

    /// The exposition text (OpenMetrics format, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        self.process.refresh();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn request_started(&self) {
        self.inflight.inc();
    }

    pub fn request_finished(&self, rpc: &'static str, code: &'static str, seconds: f64) {
        self.inflight.dec();
        self.requests.get_or_create(&RpcCode { rpc, code }).inc();
        self.request_duration
            .get_or_create(&Rpc { rpc })
            .observe(seconds);
    }

    pub fn shed(&self, reason: &'static str) {
        self.shed.get_or_create(&Reason { reason }).inc();
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn cache_stale_served(&self) {
        self.cache_stale.inc();
    }

    pub fn observe_batch(&self, op: &'static str, size: usize) {
        self.batch_size
            .get_or_create(&Op { op })
            .observe(size as f64);
    }

    pub fn backend_call(&self, op: &'static str, seconds: f64, error: Option<&Error>) {
        self.backend_duration
            .get_or_create(&Op { op })
            .observe(seconds);
        if let Some(error) = error {
            let kind = crate::error::code_name(error.code());
            self.backend_errors
                .get_or_create(&OpKind { op, kind })
                .inc();
        }
    }

    pub fn backend_retry(&self, op: &'static str) {
        self.retries.get_or_create(&Op { op }).inc();
    }

    pub fn set_circuit_open(&self, open: bool) {
        self.circuit_open.set(i64::from(open));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    }

    #[test]
    fn a_scrape_reads_the_process_metrics() {
        let text = Metrics::new().encode();
        assert!(value(&text, "process_resident_memory_bytes") > 0.0);
        assert!(value(&text, "process_open_fds") > 0.0);
        assert!(value(&text, "process_start_time_seconds") > 1.7e9);
    }

    #[test]
    fn counters_are_exposed_with_their_total_suffix_and_labels() {
        let metrics = Metrics::new();
        metrics.request_started();
        metrics.request_finished("Search", "OK", 0.002);
        metrics.shed("concurrency");
        let text = metrics.encode();
        assert_eq!(
            value(&text, r#"vecmem_requests_total{rpc="Search",code="OK"}"#),
            1.0
        );
        assert_eq!(
            value(
                &text,
                r#"vecmem_request_duration_seconds_count{rpc="Search"}"#
            ),
            1.0
        );
        assert_eq!(value(&text, "vecmem_inflight_requests"), 0.0);
        assert_eq!(
            value(&text, r#"vecmem_shed_total{reason="concurrency"}"#),
            1.0
        );
    }
}
