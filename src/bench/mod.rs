//! `vecmem bench`: a closed-loop gRPC load generator in the manner of ghz,
//! built in so that every measurement in this repository is one command
//! against a running server.
//!
//! `-c` workers share `--connections` HTTP/2 connections; each sends its
//! next call as soon as the previous one is answered (optionally held to a
//! global `--rps`), until `-n` calls were made or `-z` has passed. Data can be
//! seeded first (`--seed-memories`), outside the measured window. The report
//! is printed as text, JSON or CSV (see [`report`]).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::proto;
use crate::proto::memory_service_client::MemoryServiceClient;
use crate::proto::namespace_service_client::NamespaceServiceClient;

pub mod report;
pub mod workload;

use report::{Report, new_histogram};
use workload::{Call, Kind, Mix, Op, Shape, Workload};

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
    /// Cap on calls per second across all workers.
    #[arg(long)]
    pub rps: Option<NonZeroU32>,
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
    /// Deadline of each call.
    #[arg(long, default_value_t = 20_000)]
    pub timeout_ms: u64,
    /// Seed of the generated data and draws.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(short = 'O', long = "output", value_enum, default_value = "text")]
    pub output: Output,
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
    let channels = connect(&args.addr, args.connections).await?;
    let dim = match args.dim {
        Some(dim) => dim,
        None => server_dim(&channels[0], &args.namespace).await?,
    };
    let shape = Shape {
        namespace: args.namespace.clone(),
        dim,
        tenants: args.tenants.max(1),
        seed_memories: args.seed_memories,
        distinct_queries: args.distinct_queries,
        zipf: args.zipf,
        batch: args.batch,
        limit: args.limit,
    };
    let mix = match args.op {
        Op::Search => Mix::only(Kind::Search),
        Op::Upsert => Mix::only(Kind::Upsert),
        Op::Get => Mix::only(Kind::Get),
        Op::Delete => Mix::only(Kind::Delete),
        Op::Mix => Mix::parse(&args.mix)?,
    };
    if args.seed_memories > 0 {
        seed(&channels[0], &shape, args.seed).await?;
    }

    let stop = match (args.total, args.duration) {
        (_, Some(duration)) => Stop::After(Instant::now() + duration),
        (total, None) => Stop::Count(total.unwrap_or(10_000)),
    };
    let issued = Arc::new(AtomicU64::new(0));
    let limiter = args
        .rps
        .map(|rps| Arc::new(RateLimiter::direct(Quota::per_second(rps))));
    let timeout = Duration::from_millis(args.timeout_ms);
    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let client = MemoryServiceClient::new(channels[worker % channels.len()].clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let workload = Workload::new(shape.clone(), mix.clone(), args.seed, worker)?;
        workers.push(tokio::spawn(drive(
            client,
            workload,
            stop,
            issued.clone(),
            limiter.clone(),
            timeout,
        )));
    }
    let mut latencies = new_histogram();
    let mut errors = BTreeMap::new();
    for worker in workers {
        let (worker_latencies, worker_errors) = worker.await.context("bench worker")?;
        latencies
            .add(&worker_latencies)
            .context("merging latencies")?;
        for (code, n) in worker_errors {
            *errors.entry(code).or_insert(0) += n;
        }
    }
    let op = match args.op {
        Op::Mix => format!("mix({})", args.mix),
        other => format!("{other:?}").to_lowercase(),
    };
    Ok(Report::new(
        &latencies,
        errors,
        started.elapsed(),
        args.concurrency,
        op,
    ))
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Count(u64),
    After(Instant),
}

async fn connect(addr: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("--addr {addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {uri}"))?,
        );
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
async fn seed(channel: &Channel, shape: &Shape, seed: u64) -> anyhow::Result<()> {
    use rand::SeedableRng;

    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed.wrapping_add(1));
    let mut by_tenant: BTreeMap<String, Vec<proto::Memory>> = BTreeMap::new();
    for index in 0..shape.seed_memories {
        let (tenant, id) = shape.seeded(index);
        let vector = workload::random_vector(&mut rng, shape.dim);
        by_tenant
            .entry(tenant)
            .or_default()
            .push(workload::memory(id, vector, index as u64));
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
    let client = MemoryServiceClient::new(channel.clone()).max_encoding_message_size(usize::MAX);
    let mut pending = requests.into_iter();
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.len() < SEED_CONCURRENCY {
            let Some(request) = pending.next() else { break };
            let mut client = client.clone();
            in_flight.spawn(async move { client.upsert(request).await });
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

/// One worker: calls until told to stop; its latencies and error counts.
async fn drive(
    mut client: MemoryServiceClient<Channel>,
    mut workload: Workload,
    stop: Stop,
    issued: Arc<AtomicU64>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    timeout: Duration,
) -> (Histogram<u64>, BTreeMap<String, u64>) {
    let mut latencies = new_histogram();
    let mut errors = BTreeMap::new();
    loop {
        match stop {
            Stop::Count(total) if issued.fetch_add(1, Ordering::Relaxed) >= total => break,
            Stop::After(end) if Instant::now() >= end => break,
            _ => {}
        }
        if let Some(limiter) = &limiter {
            limiter.until_ready().await;
        }
        let call = workload.next_call();
        let started = Instant::now();
        let outcome = send(&mut client, call, timeout).await;
        match outcome {
            Ok(()) => {
                let micros = started.elapsed().as_micros().max(1);
                latencies.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
            }
            Err(status) => {
                let code = crate::error::code_name(status.code()).to_owned();
                *errors.entry(code).or_insert(0) += 1;
            }
        }
    }
    (latencies, errors)
}

async fn send(
    client: &mut MemoryServiceClient<Channel>,
    call: Call,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        request
    }
    match call {
        Call::Search(r) => client.search(request(r, timeout)).await.map(drop),
        Call::Upsert(r) => client.upsert(request(r, timeout)).await.map(drop),
        Call::Get(r) => client.get(request(r, timeout)).await.map(drop),
        Call::Delete(r) => client.delete(request(r, timeout)).await.map(drop),
    }
}
