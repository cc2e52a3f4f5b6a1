//! The Prometheus metrics of one server, served on `/metrics`, recorded with
//! the `metrics` facade and rendered by `metrics-exporter-prometheus`.
//!
//! Each [`Metrics`] owns its own recorder and records into it through
//! `metrics::with_local_recorder`, instead of installing a process-global
//! one: tests run several servers in one process, and each must count only
//! its own traffic. Every label value comes from a small fixed set (`rpc`,
//! `op`, `code`, `kind`, `reason`), never from a tenant or an id, so the
//! series count is bounded. Durations are histograms with buckets from
//! 100 µs to ~6.5 s; the standard process metrics (CPU time, resident
//! memory, open file descriptors, start time) are read from /proc when
//! scraped.
//!
//! The series every call records into (requests, their durations, the
//! in-flight gauge, the circuit breaker's gauge, backend calls, batch sizes
//! and the cache's counters) are looked up in the recorder once per label
//! set and their handles kept ([`Handles`], or a field for a series without
//! labels): a lookup builds and hashes a `Key` with its labels, where a kept
//! handle is an atomic add or a bucket push. The six lookups of a call cost
//! about 11,000 instructions (callgrind, benches/README.md).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{PoisonError, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::error::Error;

/// Latency buckets, in seconds: 100 µs doubling to ~6.5 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536,
];
/// Batch-size buckets: 1, 2, 4 … 512 requests.
const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    started: Instant,
    inflight: Gauge,
    circuit_open: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_stale_served: Counter,
    requests: Handles<(&'static str, &'static str), Counter>,
    request_durations: Handles<&'static str, Histogram>,
    backend_durations: Handles<&'static str, Histogram>,
    batch_sizes: Handles<&'static str, Histogram>,
}

/// Handles of one metric's series, by label values, registered in the
/// recorder on first use. Label values come from small fixed sets (see the
/// module doc), so the map stays small and is written a few times at most;
/// a series appears in `/metrics` when it is first recorded, as before.
struct Handles<K, H> {
    by_labels: RwLock<HashMap<K, H>>,
}

impl<K: Hash + Eq + Copy, H: Clone> Handles<K, H> {
    fn new() -> Self {
        Self {
            by_labels: RwLock::new(HashMap::new()),
        }
    }

    /// The series for `labels`, registered with `register` the first time.
    fn get(&self, labels: K, register: impl FnOnce() -> H) -> H {
        let known = self
            .by_labels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
            .cloned();
        known.unwrap_or_else(|| {
            self.by_labels
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(labels)
                .or_insert_with(register)
                .clone()
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        // Both bucket lists are non-empty constants, the only way these fail.
        let builder = match builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("vecmem_batch_size".into()), &SIZE_BUCKETS)
            }) {
            Ok(builder) => builder,
            Err(err) => {
                tracing::error!(error = %err, "metric buckets refused; durations become summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let (inflight, circuit_open, cache_hits, cache_misses, cache_stale_served) =
            metrics::with_local_recorder(&recorder, || {
                describe_all();
                let inflight = gauge!("vecmem_inflight_requests");
                inflight.set(0.0);
                (
                    inflight,
                    gauge!("vecmem_circuit_open"),
                    counter!("vecmem_cache_hits_total"),
                    counter!("vecmem_cache_misses_total"),
                    counter!("vecmem_cache_stale_served_total"),
                )
            });
        Self {
            handle: recorder.handle(),
            recorder,
            started: Instant::now(),
            inflight,
            circuit_open,
            cache_hits,
            cache_misses,
            cache_stale_served,
            requests: Handles::new(),
            request_durations: Handles::new(),
            backend_durations: Handles::new(),
            batch_sizes: Handles::new(),
        }
    }

    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// The exposition text (Prometheus text format).
    pub fn encode(&self) -> String {
        self.record(|| refresh_process(self.started));
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        // A float counter, which the `metrics` facade cannot record: written
        // as the Prometheus client libraries write it.
        if let Some(seconds) = process_cpu_seconds() {
            text.push_str(
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
                 # TYPE process_cpu_seconds_total counter\n",
            );
            text.push_str(&format!("process_cpu_seconds_total {seconds}\n"));
        }
        text
    }

    pub fn request_started(&self) {
        self.inflight.increment(1.0);
    }

    pub fn request_finished(&self, rpc: &'static str, code: &'static str, seconds: f64) {
        self.inflight.decrement(1.0);
        self.requests
            .get((rpc, code), || {
                self.record(|| counter!("vecmem_requests_total", "rpc" => rpc, "code" => code))
            })
            .increment(1);
        self.request_durations
            .get(rpc, || {
                self.record(|| histogram!("vecmem_request_duration_seconds", "rpc" => rpc))
            })
            .record(seconds);
    }

    pub fn shed(&self, reason: &'static str) {
        self.record(|| counter!("vecmem_shed_total", "reason" => reason).increment(1));
    }

    pub fn cache_hit(&self) {
        self.cache_hits.increment(1);
    }

    pub fn cache_miss(&self) {
        self.cache_misses.increment(1);
    }

    pub fn cache_stale_served(&self) {
        self.cache_stale_served.increment(1);
    }

    pub fn observe_batch(&self, op: &'static str, size: usize) {
        self.batch_sizes
            .get(op, || {
                self.record(|| histogram!("vecmem_batch_size", "op" => op))
            })
            .record(size as f64);
    }

    pub fn backend_call(&self, op: &'static str, seconds: f64, error: Option<&Error>) {
        self.backend_durations
            .get(op, || {
                self.record(|| histogram!("vecmem_backend_duration_seconds", "op" => op))
            })
            .record(seconds);
        if let Some(error) = error {
            let kind = crate::error::code_name(error.code());
            self.record(|| {
                counter!("vecmem_backend_errors_total", "op" => op, "kind" => kind).increment(1)
            });
        }
    }

    pub fn backend_retry(&self, op: &'static str) {
        self.record(|| counter!("vecmem_backend_retries_total", "op" => op).increment(1));
    }

    pub fn set_circuit_open(&self, open: bool) {
        self.circuit_open.set(f64::from(u8::from(open)));
    }

    /// One sweep of expired memories: how many it deleted, how long it took.
    pub fn sweep_finished(&self, deleted: usize, seconds: f64) {
        self.record(|| {
            counter!("vecmem_expired_deleted_total").increment(deleted as u64);
            histogram!("vecmem_sweep_duration_seconds").record(seconds);
        });
    }

    /// A sweep that failed; the next one tries again.
    pub fn sweep_failed(&self) {
        self.record(|| counter!("vecmem_sweep_errors_total").increment(1));
    }

    /// What `/health/ready` says, for alerting on replicas that stay unready.
    pub fn set_ready(&self, ready: bool) {
        self.record(|| gauge!("vecmem_ready").set(f64::from(u8::from(ready))));
    }
}

/// Help texts, and zeros for the unlabelled series so that they are
/// scraped (and alerts on them evaluate) before anything happens.
fn describe_all() {
    describe_counter!(
        "vecmem_requests_total",
        "Requests answered, by RPC and gRPC status code"
    );
    describe_histogram!(
        "vecmem_request_duration_seconds",
        "Time to answer a request, by RPC"
    );
    describe_gauge!("vecmem_inflight_requests", "Requests being served now");
    describe_counter!(
        "vecmem_shed_total",
        "Requests refused by admission control, by reason"
    );
    describe_counter!(
        "vecmem_cache_hits_total",
        "Searches and gets answered from the result cache"
    );
    describe_counter!(
        "vecmem_cache_misses_total",
        "Cacheable searches and gets that went to the store"
    );
    describe_counter!(
        "vecmem_cache_stale_served_total",
        "Reads answered from an expired cache entry while the backend was unavailable"
    );
    describe_histogram!(
        "vecmem_batch_size",
        "Requests coalesced into one backend call, by operation"
    );
    describe_histogram!(
        "vecmem_backend_duration_seconds",
        "Time of one backend call, by operation"
    );
    describe_counter!(
        "vecmem_backend_errors_total",
        "Failed backend calls, by operation and kind of failure"
    );
    describe_counter!(
        "vecmem_backend_retries_total",
        "Backend calls retried after a transient failure, by operation"
    );
    describe_gauge!(
        "vecmem_circuit_open",
        "1 while the circuit breaker in front of the backend is open"
    );
    describe_counter!(
        "vecmem_expired_deleted_total",
        "Expired memories deleted from storage by the sweeper"
    );
    describe_histogram!(
        "vecmem_sweep_duration_seconds",
        "Time of one sweep of expired memories over every namespace"
    );
    describe_counter!(
        "vecmem_sweep_errors_total",
        "Sweeps of expired memories that failed (the next one retries)"
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        "Resident set size of the process"
    );
    describe_gauge!("process_open_fds", "Open file descriptors of the process");
    describe_gauge!(
        "process_start_time_seconds",
        "Start time of the process, seconds since the Unix epoch"
    );
    describe_gauge!("vecmem_uptime_seconds", "Seconds since the server started");
    describe_gauge!(
        "vecmem_ready",
        "1 while /health/ready answers 200 (backend ready, not shutting down)"
    );

    gauge!("vecmem_circuit_open").set(0.0);
    gauge!("vecmem_ready").set(0.0);
    for name in [
        "vecmem_cache_hits_total",
        "vecmem_cache_misses_total",
        "vecmem_cache_stale_served_total",
        "vecmem_expired_deleted_total",
        "vecmem_sweep_errors_total",
    ] {
        counter!(name).absolute(0);
    }
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    gauge!("process_start_time_seconds").set(since_epoch.as_secs_f64());
}

/// Reads what changes; a value /proc does not give is left as it was.
fn refresh_process(started: Instant) {
    gauge!("vecmem_uptime_seconds").set(started.elapsed().as_secs_f64());
    // statm: size resident shared … in pages; pages are 4 KiB on the
    // platforms vecmem ships for.
    if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<f64>().ok())
    {
        gauge!("process_resident_memory_bytes").set(pages * 4096.0);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        gauge!("process_open_fds").set(entries.count() as f64);
    }
}

/// Clock ticks per second of the times in /proc/PID/stat: USER_HZ, which
/// Linux fixes at 100 for user space (Prometheus' procfs assumes the same).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of this process, from /proc/self/stat.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name (which may hold spaces):
    // state is field 3, utime 14 and stime 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
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
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        let before = value(&text, "process_cpu_seconds_total");
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = value(&Metrics::new().encode(), "process_cpu_seconds_total");
        assert!(after > before, "{before} -> {after}");
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

    /// Kept handles count into their own server's recorder, each label set
    /// into its own series, with no call lost when many threads record the
    /// same and new label sets at once.
    #[test]
    fn kept_handles_count_every_call_into_their_own_series() {
        const THREADS: usize = 8;
        const CALLS: usize = 500;
        let metrics = Metrics::new();
        let other = Metrics::new();
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let metrics = &metrics;
                scope.spawn(move || {
                    for call in 0..CALLS {
                        let rpc = ["Get", "Search"][(thread + call) % 2];
                        let code = ["OK", "NOT_FOUND"][call % 2];
                        metrics.request_started();
                        metrics.request_finished(rpc, code, 0.001);
                        metrics.backend_call(rpc, 0.001, None);
                    }
                });
            }
        });
        other.request_finished("Get", "OK", 0.001);

        let text = metrics.encode();
        let each = (THREADS * CALLS / 4) as f64;
        for rpc in ["Get", "Search"] {
            for code in ["OK", "NOT_FOUND"] {
                let series = format!(r#"vecmem_requests_total{{rpc="{rpc}",code="{code}"}}"#);
                assert_eq!(value(&text, &series), each, "{series}");
            }
            let series = format!(r#"vecmem_request_duration_seconds_count{{rpc="{rpc}"}}"#);
            assert_eq!(value(&text, &series), 2.0 * each, "{series}");
            let series = format!(r#"vecmem_backend_duration_seconds_count{{op="{rpc}"}}"#);
            assert_eq!(value(&text, &series), 2.0 * each, "{series}");
        }
        assert_eq!(value(&text, "vecmem_inflight_requests"), 0.0);
        let text = other.encode();
        assert_eq!(
            value(&text, r#"vecmem_requests_total{rpc="Get",code="OK"}"#),
            1.0
        );
        assert!(!text.contains(r#"rpc="Search""#), "{text}");
    }
}
