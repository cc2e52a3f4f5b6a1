//! Measures what the background indexer buys: search latency on a
//! 100,000-memory, 1024-dimension namespace before and after its HNSW index
//! is built, through vecmem's own `EmbeddedStore`.
//!
//! Vectors are drawn around CLUSTERS random centres (default 1,000), the way
//! embeddings of a corpus gather by topic; CLUSTERS = 0 draws them uniformly
//! on the sphere instead, where every distance is nearly the same and no
//! approximate index does well (reported for contrast).
//!
//! Phase 1 opens the store with the indexer parked, loads the data and times
//! exact (full-scan) searches; their results are the ground truth. Phase 2
//! reopens the same data with the indexer running, waits until it reports the
//! namespace indexed, and times the same queries, reporting recall@10
//! against the exact results.
//!
//!     cargo run --release --example index_speedup [-- POINTS DIM QUERIES CLUSTERS]

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use vecmem::backend::embedded::EmbeddedStore;
use vecmem::backend::{TenantMemory, TenantSearch, VectorStore};
use vecmem::config::{Distance, EmbeddedConfig, NamespaceConfig, Quantization};
use vecmem::model::{Filter, Memory, Payload};

const NAMESPACE: &str = "bench";
const TENANT: &str = "org-1";
const LOAD_BATCH: usize = 1_000;
const TOP_K: usize = 10;
const MAX_INDEXING_WAIT: Duration = Duration::from_secs(3600);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let points = args.first().copied().unwrap_or(100_000);
    let dim = args.get(1).copied().unwrap_or(1024);
    let queries = args.get(2).copied().unwrap_or(100);
    let clusters = args.get(3).copied().unwrap_or(1_000);

    let dir = tempfile::tempdir()?;
    let namespaces = BTreeMap::from([(
        NAMESPACE.to_owned(),
        NamespaceConfig {
            dim: NonZeroU32::new(dim as u32).context("dim must be at least 1")?,
            distance: Distance::Cosine,
            on_disk: false,
            hnsw_m: NonZeroUsize::new(16).expect("not zero"),
            hnsw_ef_construct: 100,
            indexing_threshold_kb: 10_000,
            quantization: Quantization::None,
            shard_number: NonZeroU32::MIN,
            replication_factor: NonZeroU32::MIN,
            write_consistency_factor: NonZeroU32::MIN,
            text_field: None,
            default_ttl: None,
        },
    )]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let centres: Vec<Vec<f32>> = (0..clusters).map(|_| rng.unit_vector(dim)).collect();
    let draw = |rng: &mut Rng| match centres.len() {
        0 => rng.unit_vector(dim),
        n => {
            let centre = rng.below(n);
            rng.near(&centres[centre])
        }
    };
    let query_vectors: Vec<Vec<f32>> = (0..queries).map(|_| draw(&mut rng)).collect();
    println!("{points} memories, dim {dim}, {queries} queries, {clusters} clusters (0 = uniform)");

    // Phase 1: indexer parked (one pass at open, on an empty shard, then a day's wait).
    let parked = EmbeddedConfig {
        path: dir.path().to_owned(),
        optimize_interval: Duration::from_secs(86_400),
        max_unindexed_points: 0,
    };
    let store = EmbeddedStore::open(&parked, &namespaces)?;
    let started = Instant::now();
    for batch_start in (0..points).step_by(LOAD_BATCH) {
        let batch = (batch_start..(batch_start + LOAD_BATCH).min(points))
            .map(|i| TenantMemory {
                tenant: TENANT.to_owned(),
                memory: Memory {
                    id: format!("m{i}"),
                    vector: draw(&mut rng),
                    payload: Payload::new(),
                    updated_at: Some(SystemTime::now()),
                    expires_at: None,
                },
                text: None,
            })
            .collect();
        store.upsert(NAMESPACE, batch).await?;
    }
    println!(
        "loaded {points} memories of dim {dim} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let stats = store.stats(NAMESPACE).await?;
    println!(
        "before indexing: {} points, {} indexed vectors",
        stats.points_count, stats.indexed_vectors_count
    );
    let (unindexed, exact) = time_searches(&store, &query_vectors).await?;
    store.close().await?;
    drop(store);

    // Phase 2: the same data, the indexer running in the background.
    let running = EmbeddedConfig {
        path: dir.path().to_owned(),
        optimize_interval: Duration::from_millis(200),
        max_unindexed_points: 0,
    };
    let store = EmbeddedStore::open(&running, &namespaces)?;
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        anyhow::ensure!(
            started.elapsed() < MAX_INDEXING_WAIT,
            "not indexed within {MAX_INDEXING_WAIT:?}"
        );
        // Not `indexing`: an indexer pass found nothing left to do. Namespaces
        // below the indexing threshold stay exact scans by design.
        let stats = store.stats(NAMESPACE).await?;
        if !stats.indexing {
            println!(
                "indexed in the background in {:.1} s: {} points, {} indexed vectors",
                started.elapsed().as_secs_f64(),
                stats.points_count,
                stats.indexed_vectors_count
            );
            break;
        }
    }
    let (indexed, approximate) = time_searches(&store, &query_vectors).await?;
    store.close().await?;

    let recall = exact
        .iter()
        .zip(&approximate)
        .map(|(e, a)| a.iter().filter(|id| e.contains(id)).count() as f64 / e.len().max(1) as f64)
        .sum::<f64>()
        / exact.len().max(1) as f64;
    println!("search, {queries} sequential top-{TOP_K} queries with the tenant filter:");
    println!(
        "  before indexing: mean {:.2} ms, p50 {:.2} ms",
        unindexed.mean_ms(),
        unindexed.p50_ms()
    );
    println!(
        "  after indexing:  mean {:.2} ms, p50 {:.2} ms",
        indexed.mean_ms(),
        indexed.p50_ms()
    );
    println!(
        "  speed-up (mean): {:.1}x; recall@{TOP_K} vs exact: {:.3}",
        unindexed.mean_ms() / indexed.mean_ms(),
        recall
    );
    Ok(())
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn mean_ms(&self) -> f64 {
        self.0.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / self.0.len().max(1) as f64
    }

    fn p50_ms(&self) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted
            .get(sorted.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

async fn time_searches(
    store: &EmbeddedStore,
    queries: &[Vec<f32>],
) -> anyhow::Result<(Latencies, Vec<Vec<String>>)> {
    let mut latencies = Vec::with_capacity(queries.len());
    let mut results = Vec::with_capacity(queries.len());
    for vector in queries {
        let search = TenantSearch {
            tenant: TENANT.to_owned(),
            vector: Some(vector.clone()),
            text: None,
            limit: TOP_K,
            min_score: None,
            filter: Filter::default(),
            exclude_ids: Vec::new(),
            boost: None,
            with_payload: false,
            with_vector: false,
        };
        let started = Instant::now();
        let mut hits = store.search(NAMESPACE, vec![search]).await?;
        latencies.push(started.elapsed());
        let hits = hits.pop().unwrap_or_default();
        results.push(hits.into_iter().map(|h| h.memory.id).collect());
    }
    Ok((Latencies(latencies), results))
}

/// xorshift64*: deterministic vectors without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        normalized((0..dim).map(|_| self.next_f32()).collect())
    }

    /// A unit vector near `centre`: noise of about half its length added.
    fn near(&mut self, centre: &[f32]) -> Vec<f32> {
        let noise = self.unit_vector(centre.len());
        normalized(centre.iter().zip(noise).map(|(c, n)| c + 0.5 * n).collect())
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next_f32() + 1.0) / 2.0 * n as f32) as usize % n
    }
}

fn normalized(v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.into_iter().map(|x| x / norm).collect()
}
