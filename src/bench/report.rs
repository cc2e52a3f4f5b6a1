//! The result of a `vecmem bench` run and its three renderings. The JSON
//! shape is a contract (scripts compare runs with it): `count`, `rps`,
//! `errors` by gRPC code name, and `latency_ms` percentiles. Latencies are
//! those of successful calls, so a run that sheds load reports how the
//! admitted calls fared; `ok` says how many that is.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to a minute, 3 digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds hdrhistogram accepts")
}

/// Failed calls by gRPC code, with the first message seen for each, and
/// how long failing took (a shed call or an open circuit should be quick).
#[derive(Debug, Clone)]
pub struct Errors {
    pub counts: BTreeMap<String, u64>,
    pub samples: BTreeMap<String, String>,
    pub latencies: Histogram<u64>,
}

impl Default for Errors {
    fn default() -> Self {
        Self {
            counts: BTreeMap::new(),
            samples: BTreeMap::new(),
            latencies: new_histogram(),
        }
    }
}

impl Errors {
    pub fn record(&mut self, code: &str, status: &tonic::Status, micros: u64) {
        self.latencies.saturating_record(micros.max(1));
        *self.counts.entry(code.to_owned()).or_insert(0) += 1;
        self.samples
            .entry(code.to_owned())
            .or_insert_with(|| status.message().to_owned());
    }

    pub fn merge(&mut self, other: Errors) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latencies.add(&other.latencies);
        for (code, n) in other.counts {
            *self.counts.entry(code).or_insert(0) += n;
        }
        for (code, message) in other.samples {
            self.samples.entry(code).or_insert(message);
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Calls completed, failed ones included.
    pub count: u64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Completed calls per second of the measured run.
    pub rps: f64,
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each error code.
    pub error_messages: BTreeMap<String, String>,
    pub latency_ms: Latency,
    /// Successful calls by latency: ten equal-width bars from the fastest
    /// to the slowest, each counting the calls up to its `le_ms`.
    pub histogram: Vec<Bar>,
    /// How long the failed calls took; absent when none failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_latency_ms: Option<Latency>,
    pub elapsed_s: f64,
    pub concurrency: usize,
    pub op: String,
    /// The server's CPU time per completed call, in microseconds, when
    /// `--server-metrics` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_call: Option<f64>,
    /// Memories written per second, for runs that write them (upserts,
    /// imports): what compares an import with batches of upserts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memories_per_s: Option<f64>,
    /// The server's CPU time per memory written, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_memory: Option<f64>,
    #[serde(skip)]
    memories: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bar {
    pub le_ms: f64,
    pub count: u64,
}

/// Bars in the response time histogram, as ghz draws it.
const BARS: usize = 10;
/// Width of the longest bar, in characters.
const BAR_WIDTH: u64 = 40;

fn bars(latencies: &Histogram<u64>) -> Vec<Bar> {
    if latencies.is_empty() {
        return Vec::new();
    }
    let (min, max) = (latencies.min(), latencies.max());
    let width = (max - min).div_ceil(BARS as u64).max(1);
    let mut bars: Vec<Bar> = (1..=BARS as u64)
        .map(|i| Bar {
            le_ms: (min + width * i) as f64 / 1000.0,
            count: 0,
        })
        .collect();
    for value in latencies.iter_recorded() {
        let micros = latencies
            .highest_equivalent(value.value_iterated_to())
            .min(max);
        let at = ((micros.saturating_sub(min)) / width).min(BARS as u64 - 1) as usize;
        bars[at].count += value.count_at_value();
    }
    bars
}

impl Latency {
    fn of(latencies: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let at = |q: f64| ms(latencies.value_at_quantile(q));
        Self {
            min: ms(latencies.min()),
            mean: latencies.mean() / 1000.0,
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: ms(latencies.max()),
        }
    }
}

impl Report {
    pub fn new(
        latencies: &Histogram<u64>,
        errors: Errors,
        elapsed: Duration,
        concurrency: usize,
        op: String,
    ) -> Self {
        let ok = latencies.len();
        let count = ok + errors.counts.values().sum::<u64>();
        Self {
            count,
            ok,
            rps: count as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
            latency_ms: Latency::of(latencies),
            histogram: bars(latencies),
            error_latency_ms: (!errors.latencies.is_empty())
                .then(|| Latency::of(&errors.latencies)),
            errors: errors.counts,
            error_messages: errors.samples,
            elapsed_s: elapsed.as_secs_f64(),
            concurrency,
            op,
            server_cpu_us_per_call: None,
            memories_per_s: None,
            server_cpu_us_per_memory: None,
            memories: None,
        }
    }

    /// Records how many memories the run wrote.
    pub fn set_memories(&mut self, memories: u64) {
        self.memories = Some(memories);
        self.memories_per_s = Some(memories as f64 / self.elapsed_s.max(f64::EPSILON));
    }

    /// Records the server's CPU seconds spent over the measured run.
    pub fn set_server_cpu(&mut self, seconds: Option<f64>) {
        self.server_cpu_us_per_call =
            seconds.map(|seconds| seconds * 1e6 / self.count.max(1) as f64);
        if let (Some(seconds), Some(memories)) = (seconds, self.memories) {
            self.server_cpu_us_per_memory = Some(seconds * 1e6 / memories.max(1) as f64);
        }
    }

    /// The summary laid out as ghz prints it.
    pub fn text(&self) -> String {
        use std::fmt::Write;

        let l = &self.latency_ms;
        let mut out = format!(
            "\nSummary:\n  \
             Operation:\t{}\n  \
             Concurrency:\t{}\n  \
             Count:\t{}\n  \
             Total:\t{:.2} s\n  \
             Slowest:\t{:.2} ms\n  \
             Fastest:\t{:.2} ms\n  \
             Average:\t{:.2} ms\n  \
             Requests/sec:\t{:.2}\n",
            self.op, self.concurrency, self.count, self.elapsed_s, l.max, l.min, l.mean, self.rps,
        );
        if let Some(cpu) = self.server_cpu_us_per_call {
            let _ = writeln!(out, "  Server CPU:\t{cpu:.1} µs per call");
        }
        if let Some(rate) = self.memories_per_s {
            let _ = writeln!(out, "  Memories/sec:\t{rate:.0}");
        }
        if let Some(cpu) = self.server_cpu_us_per_memory {
            let _ = writeln!(out, "  Server CPU:\t{cpu:.2} µs per memory");
        }
        if !self.histogram.is_empty() {
            out.push_str("\nResponse time histogram:\n");
            let tallest = self.histogram.iter().map(|b| b.count).max().unwrap_or(1);
            for bar in &self.histogram {
                let length = (bar.count * BAR_WIDTH).div_ceil(tallest.max(1)) as usize;
                let _ = writeln!(
                    out,
                    "  {:>9.3} [{}]\t|{}",
                    bar.le_ms,
                    bar.count,
                    "∎".repeat(length)
                );
            }
            out.push_str("\nLatency distribution:\n");
            for (label, value) in [
                ("50", l.p50),
                ("90", l.p90),
                ("95", l.p95),
                ("99", l.p99),
                ("99.9", l.p999),
            ] {
                let _ = writeln!(out, "  {label} % in {value:.2} ms");
            }
        }
        out.push_str("\nStatus code distribution:\n");
        if self.ok > 0 {
            let _ = writeln!(out, "  [OK]\t{} responses", self.ok);
        }
        for (code, n) in &self.errors {
            let _ = writeln!(out, "  [{code}]\t{n} responses");
        }
        if !self.errors.is_empty() {
            out.push_str("\nError distribution:\n");
            for (code, n) in &self.errors {
                let message = self.error_messages.get(code).map_or("", String::as_str);
                let _ = writeln!(out, "  [{n}]\t{code}: {message}");
            }
            if let Some(l) = &self.error_latency_ms {
                let _ = writeln!(
                    out,
                    "  failing took p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    l.p50, l.p99, l.max
                );
            }
        }
        out
    }

    pub fn csv(&self) -> String {
        let l = &self.latency_ms;
        let errors: u64 = self.errors.values().sum();
        format!(
            "op,concurrency,count,ok,errors,rps,min_ms,p50_ms,p90_ms,p95_ms,p99_ms,p999_ms,max_ms,server_cpu_us_per_call\n\
             {},{},{},{},{},{:.1},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{}\n",
            self.op,
            self.concurrency,
            self.count,
            self.ok,
            errors,
            self.rps,
            l.min,
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            l.p999,
            l.max,
            self.server_cpu_us_per_call
                .map_or(String::new(), |cpu| format!("{cpu:.1}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_with_calls_and_latency_of_successes_only() {
        let mut latencies = new_histogram();
        for micros in [1000, 2000, 3000, 4000] {
            latencies.record(micros).expect("in range");
        }
        let mut errors = Errors::default();
        for _ in 0..4 {
            errors.record(
                "RESOURCE_EXHAUSTED",
                &tonic::Status::resource_exhausted("overloaded"),
                200,
            );
        }
        let report = Report::new(
            &latencies,
            errors,
            Duration::from_secs(2),
            8,
            "search".into(),
        );
        assert_eq!(report.count, 8);
        assert_eq!(report.ok, 4);
        assert_eq!(report.rps, 4.0);
        assert_eq!(report.latency_ms.min, 1.0);
        assert!((report.latency_ms.max - 4.0).abs() < 0.01);
        let json = serde_json::to_value(&report).expect("json");
        for field in ["count", "rps", "errors", "latency_ms"] {
            assert!(json.get(field).is_some(), "{field}");
        }
        for field in ["min", "p50", "p90", "p95", "p99", "p999", "max"] {
            assert!(json["latency_ms"].get(field).is_some(), "{field}");
        }
        assert_eq!(json["errors"]["RESOURCE_EXHAUSTED"], 4);
        assert_eq!(json["error_messages"]["RESOURCE_EXHAUSTED"], "overloaded");
        assert_eq!(
            report.histogram.iter().map(|b| b.count).sum::<u64>(),
            4,
            "every success is in one bar: {:?}",
            report.histogram
        );
        let text = report.text();
        for shown in [
            "Count:\t8",
            "Response time histogram:",
            "Latency distribution:",
            "[OK]\t4 responses",
            "[RESOURCE_EXHAUSTED]\t4 responses",
            "[4]\tRESOURCE_EXHAUSTED: overloaded",
        ] {
            assert!(text.contains(shown), "{shown:?} not in\n{text}");
        }
        assert_eq!(report.error_latency_ms.map(|l| l.max), Some(0.2));
    }

    #[test]
    fn histogram_bars_split_the_range_evenly_and_hold_every_call() {
        let mut latencies = new_histogram();
        for micros in 1..=1000 {
            latencies.record(micros * 10).expect("in range");
        }
        let bars = bars(&latencies);
        assert_eq!(bars.len(), BARS);
        assert_eq!(bars.iter().map(|b| b.count).sum::<u64>(), 1000);
        assert!(
            bars.iter().all(|b| (90..=110).contains(&b.count)),
            "a uniform spread fills the bars evenly: {bars:?}"
        );
        assert!((bars[BARS - 1].le_ms - 10.0).abs() < 0.01, "{bars:?}");
    }
}
