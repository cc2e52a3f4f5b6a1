//! `vecmem bench`: a closed-loop gRPC load generator in the manner of ghz,
//! built in so that every measurement in this repository is one command
//! against a running server.
//!
//! `-c` workers share `--connections` HTTP/2 connections, until `-n` calls
//! were made or `-z` has passed. Without `--rps` the load is closed-loop:
//! each worker sends its next call when the previous one is answered, and a
//! call's latency is its service time. With `--rps` it is open-loop, as in
//! wrk2: call `k` is due at `start + k / rps`, a free worker sends it then
//! (or at once if behind), and its latency counts from when it was due, so a
//! server that stalls is charged for every call scheduled during the stall
//! (no coordinated omission). Data can be seeded and the server warmed up
//! first, outside the measured window. `--direct-qdrant URL` sends the same
//! workload straight to Qdrant instead, as the baseline ([`target`]). The report is printed as text, JSON
//! or CSV (see [`report`]); a progress bar shows on a terminal.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::client;
use crate::proto;
use crate::proto::namespace_service_client::NamespaceServiceClient;

mod import;
pub mod report;
mod server_cpu;
pub mod target;
pub mod workload;

use report::{Errors, Report, new_histogram};
use target::Target;
use workload::{Kind, Mix, Op, Shape, Workload};

/// Memories per upsert while seeding.
const SEED_CHUNK: usize = 256;
/// Seeding upserts in flight at once.
const SEED_CONCURRENCY: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
    Csv,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The server's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Concurrent workers, each with one call in flight.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub concurrency: usize,
    /// HTTP/2 connections the workers share.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Total calls to make (default 10000 unless -z is given).
    #[arg(short = 'n', long)]
    pub total: Option<u64>,
    /// How long to run instead, e.g. 10s or 1m.
    #[arg(short = 'z', long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Offered load in calls per second across all workers (open-loop).
    #[arg(long)]
    pub rps: Option<NonZeroU32>,
    /// Run the workload this long before measuring, e.g. 2s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// What to call; `mix` follows --mix.
    #[arg(long, value_enum, default_value = "search")]
    pub op: Op,
    /// Weights of the operations for --op mix.
    #[arg(long, default_value = "search=80,upsert=20")]
    pub mix: String,
    #[arg(long, default_value = "memories")]
    pub namespace: String,
    /// Vector dimension; asked from the server when left out.
    #[arg(long)]
    pub dim: Option<usize>,
    /// Tenants the calls are spread over.
    #[arg(long, default_value_t = 1)]
    pub tenants: usize,
    /// Memories written before the measured run, spread over the tenants.
    #[arg(long, default_value_t = 0)]
    pub seed_memories: usize,
    /// The --seed-memories were written by an earlier run with the same
    /// --seed and --tenants: address them (gets, deletes) without writing
    /// them again.
    #[arg(long)]
    pub already_seeded: bool,
    /// Distinct query vectors searches draw from.
    #[arg(long, default_value_t = 1000)]
    pub distinct_queries: usize,
    /// Zipf exponent of the query draw; 0 draws uniformly.
    #[arg(long, default_value_t = 0.0)]
    pub zipf: f64,
    /// Memories per upsert.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Search `limit`.
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    /// Hybrid searches: each search carries a 2-word text beside its
    /// vector (fused by RRF), and each written memory an 8-word text under
    /// --text-field, which the namespace must declare as its `text_field`.
    #[arg(long)]
    pub text: bool,
    /// The payload key of the generated texts.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Deadline of each call.
    #[arg(long, default_value_t = 20_000)]
    pub timeout_ms: u64,
    /// After a call refused with a RetryInfo (shed, circuit open), wait the
    /// delay it names before that worker's next call, as a well-behaved
    /// client does. Without it, refused workers retry at once.
    #[arg(long)]
    pub respect_retry_info: bool,
    /// Seed of the generated data and draws.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(short = 'O', long = "output", value_enum, default_value = "text")]
    pub output: Output,
    /// Send the same workload straight to Qdrant at this gRPC URL (e.g.
    /// http://localhost:6334) instead of to vecmem, as the baseline vecmem
    /// is compared with; needs --dim.
    #[arg(long, value_name = "URL")]
    pub direct_qdrant: Option<String>,
    /// The server's Prometheus endpoint (e.g. http://localhost:8090/metrics):
    /// its `process_cpu_seconds_total` is read before and after the measured
    /// run, and the server's CPU time per call is reported.
    #[arg(long, value_name = "URL")]
    pub server_metrics: Option<String>,
}

/// Runs the benchmark and prints its report to stdout.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    let text = match args.output {
        Output::Text => report.text(),
        Output::Json => serde_json::to_string(&report)? + "\n",
        Output::Csv => report.csv(),
    };
    print!("{text}");
    Ok(())
}

/// Seeds if asked, then runs the measured load and reports it.
pub async fn measure(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.concurrency == 0 || args.connections == 0 {
        bail!("-c and --connections must be at least 1");
    }
    if args.total.is_some() && args.duration.is_some() {
        bail!("give either -n or -z, not both");
    }
    if args.op == Op::Import {
        return measure_import(args).await;
    }
    let (targets, dim) = match &args.direct_qdrant {
        Some(url) => {
            let dim = args
                .dim
                .context("--direct-qdrant needs --dim (there is no vecmem to ask)")?;
            let text_field = args.text.then_some(args.text_field.as_str());
            let target = Target::direct(url, &args.namespace, dim, text_field).await?;
            (vec![target], dim)
        }
        None => {
            let (channels, dim) = connect_vecmem(args).await?;
            (channels.into_iter().map(Target::vecmem).collect(), dim)
        }
    };
    let shape = shape(args, dim);
    let mix = match args.op {
        Op::Search => Mix::only(Kind::Search),
        Op::Upsert => Mix::only(Kind::Upsert),
        Op::Get => Mix::only(Kind::Get),
        Op::Delete => Mix::only(Kind::Delete),
        Op::Mix => Mix::parse(&args.mix)?,
        Op::Import => unreachable!("measured by measure_import"),
    };
    if args.seed_memories > 0 && !args.already_seeded {
        seed(&targets[0], &shape, args.seed).await?;
    }

    let timeout = Duration::from_millis(args.timeout_ms);
    let behaviour = Behaviour {
        timeout,
        respect_retry_info: args.respect_retry_info,
    };
    let mut clients = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let client = targets[worker % targets.len()].clone();
        let workload = Workload::new(shape.clone(), mix.clone(), args.seed, worker)?;
        clients.push((client, workload));
    }
    let rate = args.rps.map(|rps| rps.get());
    if let Some(warmup) = args.warmup {
        let schedule = Schedule::new(Stop::After(Instant::now() + warmup), rate);
        (clients, _, _) = run_phase(clients, schedule, behaviour, ProgressBar::hidden()).await?;
    }
    let stop = match (args.total, args.duration) {
        (_, Some(duration)) => Stop::After(Instant::now() + duration),
        (total, None) => Stop::Count(total.unwrap_or(10_000)),
    };
    let cpu_before = server_cpu_now(args).await?;
    let progress = progress_bar(stop);
    let started = Instant::now();
    let (_, latencies, errors) = run_phase(
        clients,
        Schedule::new(stop, rate),
        behaviour,
        progress.clone(),
    )
    .await?;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let server_cpu = cpu_spent(args, cpu_before).await?;
    let op = match args.op {
        Op::Mix => format!("mix({})", args.mix),
        other => format!("{other:?}").to_lowercase(),
    };
    let mut report = Report::new(&latencies, errors, elapsed, args.concurrency, op);
    if args.op == Op::Upsert {
        report.set_memories(report.ok * args.batch as u64);
    }
    report.set_server_cpu(server_cpu);
    Ok(report)
}

/// `--op import`: `-n` memories (default 10000) through `-c` Import streams.
async fn measure_import(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.direct_qdrant.is_some() || args.duration.is_some() || args.rps.is_some() {
        bail!("--op import takes -n memories, against vecmem only");
    }
    let (channels, dim) = connect_vecmem(args).await?;
    let shape = shape(args, dim);
    let cpu_before = server_cpu_now(args).await?;
    let started = Instant::now();
    let total = args.total.unwrap_or(10_000);
    let (latencies, errors, written) =
        import::run(&channels, &shape, total, args.concurrency, args.seed).await?;
    let elapsed = started.elapsed();
    let server_cpu = cpu_spent(args, cpu_before).await?;
    let mut report = Report::new(
        &latencies,
        errors,
        elapsed,
        args.concurrency,
        "import".into(),
    );
    report.set_memories(written);
    report.set_server_cpu(server_cpu);
    Ok(report)
}

type Client = (Target, Workload);

/// How a worker treats each call.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    timeout: Duration,
    respect_retry_info: bool,
}

/// Runs every worker on `schedule`; the clients back, and what they saw.
async fn run_phase(
    clients: Vec<Client>,
    schedule: Schedule,
    behaviour: Behaviour,
    progress: ProgressBar,
) -> anyhow::Result<(Vec<Client>, Histogram<u64>, Errors)> {
    let schedule = Arc::new(schedule);
    let workers: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(drive(client, schedule.clone(), behaviour, progress.clone())))
        .collect();
    let mut clients = Vec::with_capacity(workers.len());
    let mut latencies = new_histogram();
    let mut errors = Errors::default();
    for worker in workers {
        let (client, worker_latencies, worker_errors) = worker.await.context("bench worker")?;
        clients.push(client);
        latencies
            .add(&worker_latencies)
            .context("merging latencies")?;
        errors.merge(worker_errors);
    }
    Ok((clients, latencies, errors))
}

fn progress_bar(stop: Stop) -> ProgressBar {
    // Drawn on stderr, and only when it is a terminal.
    let (bar, template) = match stop {
        Stop::Count(total) => (
            ProgressBar::new(total),
            "{elapsed:>4} [{wide_bar}] {pos}/{len} calls, {per_sec}",
        ),
        Stop::After(end) => (
            ProgressBar::new(
                end.saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1),
            ),
            "{elapsed:>4} [{wide_bar}] {pos}/{len} s",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Count(u64),
    After(Instant),
}

/// Hands out the calls of a run: how many, and when each is due.
struct Schedule {
    stop: Stop,
    /// Time between due times in open-loop mode.
    interval: Option<Duration>,
    start: Instant,
    issued: AtomicU64,
}

impl Schedule {
    fn new(stop: Stop, rate: Option<u32>) -> Self {
        Self {
            stop,
            interval: rate.map(|rate| Duration::from_secs(1) / rate),
            start: Instant::now(),
            issued: AtomicU64::new(0),
        }
    }

    /// When the next call is due (now, in closed-loop mode); `None` once the
    /// run is over.
    fn next_due(&self) -> Option<Instant> {
        let ticket = self.issued.fetch_add(1, Ordering::Relaxed);
        let due = match self.interval {
            Some(interval) => self.start + interval.saturating_mul(u32::try_from(ticket).ok()?),
            None => Instant::now(),
        };
        match self.stop {
            Stop::Count(total) if ticket >= total => None,
            Stop::After(end) if due >= end => None,
            _ => Some(due),
        }
    }
}

/// The `--connections` channels to vecmem, and the dimension of the
/// namespace (`--dim`, or asked from the server).
async fn connect_vecmem(args: &BenchArgs) -> anyhow::Result<(Vec<Channel>, usize)> {
    let channels = connect(&args.addr, args.connections).await?;
    let dim = match args.dim {
        Some(dim) => dim,
        None => server_dim(&channels[0], &args.namespace).await?,
    };
    Ok((channels, dim))
}

/// The data and traffic the arguments describe.
fn shape(args: &BenchArgs, dim: usize) -> Shape {
    Shape {
        namespace: args.namespace.clone(),
        dim,
        tenants: args.tenants.max(1),
        seed_memories: args.seed_memories,
        distinct_queries: args.distinct_queries,
        zipf: args.zipf,
        batch: args.batch,
        limit: args.limit,
        text_field: args.text.then(|| args.text_field.clone()),
    }
}

/// The server's CPU seconds so far, with `--server-metrics`.
async fn server_cpu_now(args: &BenchArgs) -> anyhow::Result<Option<f64>> {
    match &args.server_metrics {
        Some(url) => Ok(Some(server_cpu::read(url).await?)),
        None => Ok(None),
    }
}

/// The server's CPU seconds since `before` (read by [`server_cpu_now`]).
async fn cpu_spent(args: &BenchArgs, before: Option<f64>) -> anyhow::Result<Option<f64>> {
    let after = server_cpu_now(args).await?;
    Ok(after.zip(before).map(|(after, before)| after - before))
}

async fn connect(addr: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = client::endpoint(addr)?;
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(client::connect(&endpoint).await?);
    }
    Ok(channels)
}

async fn server_dim(channel: &Channel, namespace: &str) -> anyhow::Result<usize> {
    let described = NamespaceServiceClient::new(channel.clone())
        .describe_namespace(proto::DescribeNamespaceRequest {
            namespace: namespace.to_owned(),
        })
        .await
        .with_context(|| format!("describing namespace {namespace:?} (or pass --dim)"))?
        .into_inner();
    Ok(described.dim as usize)
}

/// Writes the seeded memories, a few chunks at a time.
async fn seed(target: &Target, shape: &Shape, seed: u64) -> anyhow::Result<()> {
    use rand::SeedableRng;

    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed.wrapping_add(1));
    let mut by_tenant: BTreeMap<String, Vec<proto::Memory>> = BTreeMap::new();
    for index in 0..shape.seed_memories {
        let (tenant, id) = shape.seeded(index);
        let vector = workload::random_vector(&mut rng, shape.dim);
        by_tenant.entry(tenant).or_default().push(workload::memory(
            shape,
            id,
            vector,
            index as u64,
        ));
    }
    let mut requests = Vec::new();
    for (tenant, memories) in by_tenant {
        for chunk in memories.chunks(SEED_CHUNK) {
            requests.push(proto::UpsertRequest {
                namespace: shape.namespace.clone(),
                tenant: tenant.clone(),
                memories: chunk.to_vec(),
            });
        }
    }
    let mut pending = requests.into_iter();
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.len() < SEED_CONCURRENCY {
            let Some(request) = pending.next() else { break };
            let mut target = target.clone();
            in_flight.spawn(async move { target.upsert(request).await });
        }
        match in_flight.join_next().await {
            Some(done) => {
                done.context("seeding task")?.context("seeding upsert")?;
            }
            None => break,
        }
    }
    eprintln!("seeded {} memories", shape.seed_memories);
    Ok(())
}

/// One worker: sends each call when it is due, until the schedule ends;
/// its client back, its latencies (from due time to answer) and error counts.
async fn drive(
    (mut client, mut workload): Client,
    schedule: Arc<Schedule>,
    behaviour: Behaviour,
    progress: ProgressBar,
) -> (Client, Histogram<u64>, Errors) {
    let mut latencies = new_histogram();
    let mut errors = Errors::default();
    while let Some(due) = schedule.next_due() {
        // Only sleep for a call that is not yet due: tokio's timer rounds
        // up to the next millisecond tick, so sleeping until "now" would
        // charge each closed-loop call up to a millisecond it never waited.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let call = workload.next_call();
        let outcome = client.send(call, behaviour.timeout).await;
        match outcome {
            Ok(()) => {
                let micros = due.elapsed().as_micros().max(1);
                latencies.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
            }
            Err(status) => {
                let micros = due.elapsed().as_micros();
                errors.record(
                    crate::error::code_name(status.code()),
                    &status,
                    u64::try_from(micros).unwrap_or(u64::MAX),
                );
                if behaviour.respect_retry_info
                    && let Some(delay) = tonic_types::StatusExt::get_error_details(&status)
                        .retry_info()
                        .and_then(|info| info.retry_delay)
                {
                    tokio::time::sleep(delay).await;
                }
            }
        }
        match schedule.stop {
            Stop::Count(_) => progress.inc(1),
            Stop::After(end) => {
                let left = end.saturating_duration_since(Instant::now()).as_secs();
                progress.set_position(progress.length().unwrap_or(0).saturating_sub(left));
            }
        }
    }
    ((client, workload), latencies, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn open_loop_calls_are_due_at_fixed_intervals_whatever_the_answers_take() {
        let schedule = Schedule::new(Stop::Count(3), Some(10));
        let start = schedule.start;
        // Time passing (a slow answer) does not move later due times.
        tokio::time::advance(Duration::from_secs(1)).await;
        let due: Vec<_> = std::iter::from_fn(|| schedule.next_due()).collect();
        let offsets: Vec<_> = due.iter().map(|at| *at - start).collect();
        assert_eq!(
            offsets,
            [0, 100, 200].map(Duration::from_millis),
            "calls stay due when they were scheduled"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_run_ends_with_the_last_call_due_before_the_end() {
        let end = Instant::now() + Duration::from_millis(250);
        let schedule = Schedule::new(Stop::After(end), Some(10));
        assert_eq!(std::iter::from_fn(|| schedule.next_due()).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_calls_are_due_when_asked() {
        let schedule = Schedule::new(Stop::Count(2), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(schedule.next_due(), Some(Instant::now()));
        assert!(schedule.next_due().is_some());
        assert_eq!(schedule.next_due(), None);
    }
}
