//! Criterion benchmarks of the in-process hot paths, the work vecmem adds to
//! every call before and after the backend: validating an upsert, building a
//! search's cache key, translating a filter for Qdrant, and taking 64
//! concurrent upserts through the batcher (into a backend that does
//! nothing, so only the batching is measured).
//!
//!     cargo bench --bench hot_paths

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use vecmem::backend::qdrant::translate::tenant_filter;
use vecmem::backend::{
    MemoryKey, NamespaceStats, PayloadUpdate, ScrollQuery, StorePage, TenantDelete, TenantMemory,
    TenantSearch, VectorStore,
};
use vecmem::backup::SnapshotCopy;
use vecmem::config::{BatchConfig, CacheConfig, Config, Distance};
use vecmem::error::{Error, Result};
use vecmem::metrics::Metrics;
use vecmem::model::{
    Condition, FieldTest, Filter, MatchValue, Memory, ScoredMemory, UpsertRequest, Validator,
};
use vecmem::pipeline::batch_store::BatchingStore;
use vecmem::pipeline::cache::ResultCache;

const DIM: usize = 1024;

fn vector(seed: usize) -> Vec<f32> {
    (0..DIM)
        .map(|i| ((i * 31 + seed) % 97) as f32 / 97.0)
        .collect()
}

fn filter() -> Filter {
    let keyword = |key: &str, value: &str| Condition::Field {
        key: key.into(),
        test: FieldTest::Equals(MatchValue::Keyword(value.into())),
    };
    Filter {
        must: vec![keyword("kind", "note"), keyword("source.app", "mail")],
        should: vec![keyword("lang", "en"), keyword("lang", "de")],
        must_not: vec![keyword("archived", "yes")],
    }
}

fn memory(id: usize) -> Memory {
    let payload = json!({"kind": "note", "text": "a short memory of something", "n": id});
    Memory {
        id: format!("m-{id}"),
        vector: vector(id),
        payload: payload.as_object().cloned().unwrap_or_default(),
        updated_at: None,
        expires_at: None,
    }
}

fn validation(c: &mut Criterion) {
    let config = Config::load_with_env(None, Vec::new()).expect("default config");
    let request = UpsertRequest {
        namespace: "memories".into(),
        tenant: "t".into(),
        memories: (0..64).map(memory).collect(),
    };
    c.bench_function("validate an upsert of 64 x 1024", |b| {
        b.iter(|| {
            let mut validator = Validator::new(&config.limits, DIM, Distance::Cosine);
            validator.upsert(black_box(&request));
            validator.finish().expect("valid")
        })
    });
}

fn search() -> TenantSearch {
    TenantSearch {
        tenant: "tenant-42".into(),
        vector: Some(vector(7)),
        text: None,
        limit: 10,
        min_score: Some(0.5),
        filter: filter(),
        exclude_ids: Vec::new(),
        boost: None,
        with_payload: true,
        with_vector: false,
    }
}

fn cache_key(c: &mut Criterion) {
    let cache = ResultCache::new(
        &CacheConfig {
            enabled: true,
            max_bytes: 1 << 26,
            ttl: Duration::from_secs(5),
            serve_stale_on_error: false,
            stale_max_age: Duration::from_secs(300),
        },
        Arc::new(Metrics::new()),
    );
    let search = search();
    c.bench_function("cache key of a 1024-dim filtered search", |b| {
        b.iter(|| cache.search_key("memories", black_box(&search)))
    });
}

fn filter_translation(c: &mut Criterion) {
    let filter = filter();
    c.bench_function("translate a 5-condition filter for Qdrant", |b| {
        b.iter(|| tenant_filter(black_box("tenant-42"), black_box(&filter)))
    });
}

/// A backend that answers at once, so only the batcher is measured.
struct Nothing;

#[async_trait]
impl VectorStore for Nothing {
    async fn upsert(&self, _: &str, _: Vec<TenantMemory>) -> Result<()> {
        Ok(())
    }
    async fn search(&self, _: &str, searches: Vec<TenantSearch>) -> Result<Vec<Vec<ScoredMemory>>> {
        Ok(vec![Vec::new(); searches.len()])
    }
    async fn get(&self, _: &str, keys: Vec<MemoryKey>, _: bool) -> Result<Vec<Option<Memory>>> {
        Ok(vec![None; keys.len()])
    }
    async fn delete(&self, _: &str, _: Vec<TenantDelete>) -> Result<()> {
        Ok(())
    }
    async fn scroll(&self, _: &str, _: &str, _: ScrollQuery) -> Result<StorePage> {
        Ok(StorePage {
            memories: Vec::new(),
            next_offset: None,
        })
    }
    async fn count(&self, _: &str, _: &str, _: Filter) -> Result<u64> {
        Ok(0)
    }
    async fn update_payload(&self, _: &str, _: PayloadUpdate) -> Result<()> {
        Ok(())
    }
    async fn delete_expired(&self, _: &str, _: SystemTime, _: usize) -> Result<usize> {
        Ok(0)
    }
    async fn stats(&self, _: &str) -> Result<NamespaceStats> {
        Ok(NamespaceStats {
            points_count: 0,
            indexed_vectors_count: 0,
            indexing: false,
            text_search: false,
        })
    }
    async fn is_ready(&self) -> bool {
        true
    }
    async fn snapshot(&self) -> Result<SnapshotCopy> {
        Err(Error::SnapshotUnavailable)
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

fn batch_assembly(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = runtime.block_on(async {
        BatchingStore::new(
            Arc::new(Nothing),
            ["memories"],
            &BatchConfig {
                enabled: true,
                max_batch_size: NonZeroUsize::new(64).expect("not zero"),
                max_search_batch_size: NonZeroUsize::new(8).expect("not zero"),
                max_delay: Duration::ZERO,
                queue_capacity: NonZeroUsize::new(1024).expect("not zero"),
                concurrent_searches: NonZeroUsize::new(8).expect("not zero"),
                concurrent_gets: NonZeroUsize::new(2).expect("not zero"),
            },
            Arc::new(Metrics::new()),
        )
    });
    let store = Arc::new(store);
    let items: Vec<Vec<TenantMemory>> = (0..64)
        .map(|i| {
            vec![TenantMemory {
                tenant: format!("t{}", i % 8),
                memory: memory(i),
                text: None,
            }]
        })
        .collect();
    c.bench_function("64 concurrent upserts through the batcher", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let calls = items.iter().cloned().map(|item| {
                    let store = store.clone();
                    async move { store.upsert("memories", item).await }
                });
                futures::future::try_join_all(calls).await.expect("upserts")
            })
        })
    });
}

criterion_group!(
    hot_paths,
    validation,
    cache_key,
    filter_translation,
    batch_assembly
);
criterion_main!(hot_paths);
