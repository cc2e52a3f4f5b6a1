//! `EmbeddedStore`: Qdrant's engine in-process (`qdrant-edge`), one shard per
//! namespace under `backend.embedded.path`, so vecmem runs with nothing else
//! installed.
//!
//! The engine is synchronous, so every call runs on tokio's blocking pool,
//! never on the async workers. Two properties of qdrant-edge 0.7.2 shape the
//! write path:
//!
//! - It does not replay its WAL on load; only `flush()` makes data durable.
//!   So every write is flushed before it is acknowledged.
//! - While an optimization (index build) runs, deletes of points in the
//!   segments being rebuilt live only in memory until it finishes. A crash
//!   then would bring an acknowledged delete back. So writes and index builds
//!   exclude each other through a per-namespace `write_gate`: reads carry on
//!   during an index build, writes wait for it (bounded by their deadline).
//!   For write-heavy production use, front a Qdrant server instead.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use qdrant_edge::{
    CountRequest, CreateIndex, Distance as EdgeDistance, EdgeConfigBuilder, EdgeOptimizersConfig,
    EdgeShard, EdgeVectorParamsBuilder, FieldIndexOperations, HnswIndexConfig, KeywordIndexParams,
    NamedQuery, PayloadFieldSchema, PayloadOps, PayloadSchemaParams, PointId,
    PointInsertOperations, PointOperations, QuantizationConfig, QueryEnum, ScrollRequest,
    SearchRequest, SetPayloadOp, UpdateOperation, WithVector,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::backend::layout::{self, TENANT_FIELD};
use crate::backend::{
    MemoryKey, NamespaceStats, PayloadUpdate, ScrollQuery, StorePage, TenantDelete, TenantMemory,
    TenantSearch, VectorStore, answer_keys, score,
};
use crate::config::{Distance, EmbeddedConfig, NamespaceConfig, Quantization};
use crate::error::{Error, Result};
use crate::model::{DeleteSelector, Filter, Memory, ScoredMemory};

mod translate;

use translate::{tenant_filter, tenant_ids_filter};

/// How long `close` waits for a running index build before giving up on the
/// final flush (every acknowledged write is flushed already).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub struct EmbeddedStore {
    shards: HashMap<String, Arc<Shard>>,
    indexer: std::sync::Mutex<Option<Indexer>>,
}

/// One namespace's engine shard.
struct Shard {
    name: String,
    distance: Distance,
    engine: Arc<EdgeShard>,
    /// Held by every write (update + flush) and by every index build.
    write_gate: Arc<Mutex<()>>,
    /// Bumped on every write; the indexer records the value it caught up with.
    writes: AtomicU64,
    indexed_through: AtomicU64,
}

/// The background thread that builds indexes.
struct Indexer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl EmbeddedStore {
    /// Opens (or creates) a shard per namespace and starts the indexer.
    /// Fails if existing data disagrees with the configured dim or distance.
    pub fn open(
        config: &EmbeddedConfig,
        namespaces: &BTreeMap<String, NamespaceConfig>,
    ) -> anyhow::Result<Self> {
        let mut shards = HashMap::new();
        for (name, ns) in namespaces {
            let dir = config.path.join(name);
            let engine = open_shard(name, &dir, ns)?;
            let shard = Shard {
                name: name.clone(),
                distance: ns.distance,
                engine: Arc::new(engine),
                write_gate: Arc::new(Mutex::new(())),
                writes: AtomicU64::new(1),
                indexed_through: AtomicU64::new(0),
            };
            shards.insert(name.clone(), Arc::new(shard));
        }
        let interval = Duration::from_millis(config.optimize_interval_ms);
        let indexer = Indexer::spawn(shards.values().cloned().collect(), interval)?;
        Ok(Self {
            shards,
            indexer: std::sync::Mutex::new(Some(indexer)),
        })
    }

    fn shard(&self, namespace: &str) -> Result<Arc<Shard>> {
        self.shards
            .get(namespace)
            .cloned()
            .ok_or_else(|| Error::NamespaceNotFound(namespace.to_owned()))
    }

    /// Runs a read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        namespace: &str,
        f: impl FnOnce(&EdgeShard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shard = self.shard(namespace)?;
        tokio::task::spawn_blocking(move || f(&shard.engine))
            .await
            .map_err(Error::internal)?
    }

    /// Applies operations and flushes them, holding the write gate, before
    /// returning: the write is durable when this returns `Ok`.
    async fn write(&self, namespace: &str, operations: Vec<UpdateOperation>) -> Result<()> {
        let shard = self.shard(namespace)?;
        let gate = shard.write_gate.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || shard.apply(operations, gate))
            .await
            .map_err(Error::internal)?
    }
}

impl Shard {
    fn apply(&self, operations: Vec<UpdateOperation>, _gate: OwnedMutexGuard<()>) -> Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        for operation in operations {
            self.engine.update(operation).map_err(Error::internal)?;
        }
        self.engine.flush();
        Ok(())
    }

    /// Runs one indexing pass under the write gate; true if it did work.
    fn optimize(&self) -> bool {
        let _gate = self.write_gate.blocking_lock();
        let writes_seen = self.writes.load(Ordering::SeqCst);
        match self.engine.optimize() {
            Ok(true) => {
                self.engine.flush();
                true
            }
            Ok(false) => {
                self.indexed_through.store(writes_seen, Ordering::SeqCst);
                false
            }
            Err(err) => {
                tracing::error!(namespace = %self.name, error = %err, "index build failed");
                false
            }
        }
    }
}

impl Indexer {
    fn spawn(shards: Vec<Arc<Shard>>, interval: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vecmem-indexer".into())
            .spawn(move || {
                loop {
                    let mut worked = false;
                    for shard in &shards {
                        if stopped.try_recv().is_ok() {
                            return;
                        }
                        let started = std::time::Instant::now();
                        if shard.optimize() {
                            worked = true;
                            let info = shard.engine.info();
                            tracing::info!(
                                namespace = %shard.name,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                points = info.points_count,
                                indexed_vectors = info.indexed_vectors_count,
                                "index build finished"
                            );
                        }
                    }
                    let wait = if worked { Duration::ZERO } else { interval };
                    match stopped.recv_timeout(wait) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }
}

fn open_shard(name: &str, dir: &Path, ns: &NamespaceConfig) -> anyhow::Result<EdgeShard> {
    let expected_distance = edge_distance(ns.distance);
    if dir.join("edge_config.json").exists() {
        let engine = EdgeShard::load(dir, None).map_err(|err| {
            anyhow::anyhow!("namespace {name}: cannot load {}: {err}", dir.display())
        })?;
        let (found_dim, found_distance) = {
            let config = engine.config();
            let params = config.vectors.get("").ok_or_else(|| {
                anyhow::anyhow!(
                    "namespace {name}: data in {} has no default vector",
                    dir.display()
                )
            })?;
            (params.size, params.distance)
        };
        if found_dim != ns.dim as usize || found_distance != expected_distance {
            anyhow::bail!(
                "namespace {name}: existing data in {} has dim {found_dim} and distance \
                 {found_distance:?}, but the config says dim {} and distance {:?}; \
                 point the namespace at another path or remove the old data",
                dir.display(),
                ns.dim,
                ns.distance
            );
        }
        return Ok(engine);
    }
    std::fs::create_dir_all(dir)?;
    let mut vector =
        EdgeVectorParamsBuilder::new(ns.dim as usize, expected_distance).on_disk(ns.on_disk);
    if ns.quantization == Quantization::Scalar {
        // qdrant-edge does not export the wrapper type, so build the config
        // from Qdrant's documented JSON form.
        let scalar = serde_json::json!({"scalar": {"type": "int8", "always_ram": true}});
        vector = vector.quantization_config(serde_json::from_value::<QuantizationConfig>(scalar)?);
    }
    let hnsw = HnswIndexConfig {
        m: ns.hnsw_m,
        ef_construct: ns.hnsw_ef_construct,
        ..HnswIndexConfig::default()
    };
    let optimizers = EdgeOptimizersConfig {
        indexing_threshold: Some(ns.indexing_threshold_kb),
        ..EdgeOptimizersConfig::default()
    };
    let config = EdgeConfigBuilder::new()
        .vector("", vector.build())
        .hnsw_config(hnsw)
        .optimizers(optimizers)
        .build();
    let engine = EdgeShard::new(dir, config).map_err(|err| {
        anyhow::anyhow!("namespace {name}: cannot create {}: {err}", dir.display())
    })?;
    let tenant_index =
        PayloadFieldSchema::FieldParams(PayloadSchemaParams::Keyword(KeywordIndexParams {
            r#type: Default::default(),
            is_tenant: Some(true),
            on_disk: None,
            enable_hnsw: None,
        }));
    engine.update(UpdateOperation::FieldIndexOperation(
        FieldIndexOperations::CreateIndex(CreateIndex {
            field_name: TENANT_FIELD
                .parse()
                .map_err(|_| anyhow::anyhow!("tenant field path"))?,
            field_schema: Some(tenant_index),
        }),
    ))?;
    engine.flush();
    tracing::info!(namespace = name, path = %dir.display(), dim = ns.dim, "namespace created");
    Ok(engine)
}

fn edge_distance(distance: Distance) -> EdgeDistance {
    match distance {
        Distance::Cosine => EdgeDistance::Cosine,
        Distance::Dot => EdgeDistance::Dot,
        Distance::Euclid => EdgeDistance::Euclid,
        Distance::Manhattan => EdgeDistance::Manhattan,
    }
}

#[async_trait]
impl VectorStore for EmbeddedStore {
    async fn upsert(&self, namespace: &str, memories: Vec<TenantMemory>) -> Result<()> {
        let points = memories.iter().map(translate::to_point).collect();
        let upsert = PointOperations::UpsertPoints(PointInsertOperations::PointsList(points));
        self.write(namespace, vec![UpdateOperation::PointOperation(upsert)])
            .await
    }

    async fn search(
        &self,
        namespace: &str,
        searches: Vec<TenantSearch>,
    ) -> Result<Vec<Vec<ScoredMemory>>> {
        let distance = self.shard(namespace)?.distance;
        self.read(namespace, move |engine| {
            searches
                .into_iter()
                .map(|search| search_one(engine, distance, search))
                .collect()
        })
        .await
    }

    async fn get(
        &self,
        namespace: &str,
        keys: Vec<MemoryKey>,
        with_vector: bool,
    ) -> Result<Vec<Option<Memory>>> {
        self.read(namespace, move |engine| {
            let ids: Vec<PointId> = keys
                .iter()
                .map(|key| PointId::Uuid(layout::point_id(&key.tenant, &key.id)))
                .collect();
            let records = engine
                .retrieve(
                    &ids,
                    Some(translate::payload_selector(true)?),
                    Some(WithVector::Bool(with_vector)),
                )
                .map_err(Error::internal)?;
            // The engine answers each point once, however often it was named.
            let mut found = HashMap::with_capacity(records.len());
            for record in records {
                let Some(tenant) = translate::stored_tenant(record.payload.as_ref()) else {
                    continue;
                };
                let tenant = tenant.to_owned();
                if let Some(memory) = translate::to_memory(record.payload, record.vector, true) {
                    found.insert(record.id, (tenant, memory));
                }
            }
            Ok(answer_keys(&keys, &ids, found))
        })
        .await
    }

    async fn delete(&self, namespace: &str, deletes: Vec<TenantDelete>) -> Result<()> {
        let mut operations = Vec::with_capacity(deletes.len());
        for delete in deletes {
            let operation = match delete.selector {
                DeleteSelector::Ids(ids) => PointOperations::DeletePoints {
                    ids: ids
                        .iter()
                        .map(|id| PointId::Uuid(layout::point_id(&delete.tenant, id)))
                        .collect(),
                },
                DeleteSelector::Filter(filter) => {
                    PointOperations::DeletePointsByFilter(tenant_filter(&delete.tenant, &filter)?)
                }
                DeleteSelector::All => PointOperations::DeletePointsByFilter(tenant_filter(
                    &delete.tenant,
                    &Filter::default(),
                )?),
            };
            operations.push(UpdateOperation::PointOperation(operation));
        }
        self.write(namespace, operations).await
    }

    async fn scroll(&self, namespace: &str, tenant: &str, query: ScrollQuery) -> Result<StorePage> {
        let filter = tenant_filter(tenant, &query.filter)?;
        self.read(namespace, move |engine| {
            let (records, next) = engine
                .scroll(ScrollRequest {
                    offset: query.offset.map(PointId::Uuid),
                    limit: Some(query.limit),
                    filter: Some(filter),
                    with_payload: Some(translate::payload_selector(true)?),
                    with_vector: WithVector::Bool(query.with_vector),
                    order_by: None,
                })
                .map_err(Error::internal)?;
            let memories = records
                .into_iter()
                .filter_map(|r| translate::to_memory(r.payload, r.vector, true))
                .collect();
            Ok(StorePage {
                memories,
                next_offset: next.as_ref().and_then(translate::uuid_of),
            })
        })
        .await
    }

    async fn count(&self, namespace: &str, tenant: &str, filter: Filter) -> Result<u64> {
        let filter = tenant_filter(tenant, &filter)?;
        self.read(namespace, move |engine| {
            let count = engine
                .count(CountRequest {
                    filter: Some(filter),
                    exact: true,
                })
                .map_err(Error::internal)?;
            Ok(count as u64)
        })
        .await
    }

    async fn update_payload(&self, namespace: &str, update: PayloadUpdate) -> Result<()> {
        let ids: Vec<_> = update
            .ids
            .iter()
            .map(|id| layout::point_id(&update.tenant, id))
            .collect();
        let filter = tenant_ids_filter(&update.tenant, &ids)?;
        let operations = layout::payload_writes(update.payload, update.replace, update.updated_at)
            .into_iter()
            .map(|write| {
                let key = write
                    .key
                    .map(|k| k.parse().map_err(|_| Error::internal("payload field path")))
                    .transpose()?;
                Ok(UpdateOperation::PayloadOperation(PayloadOps::SetPayload(
                    SetPayloadOp {
                        payload: qdrant_edge::Payload(write.fields.into_iter().collect()),
                        points: None,
                        filter: Some(filter.clone()),
                        key,
                    },
                )))
            })
            .collect::<Result<Vec<_>>>()?;
        self.write(namespace, operations).await
    }

    async fn stats(&self, namespace: &str) -> Result<NamespaceStats> {
        let shard = self.shard(namespace)?;
        let indexing =
            shard.indexed_through.load(Ordering::SeqCst) < shard.writes.load(Ordering::SeqCst);
        self.read(namespace, move |engine| {
            let info = engine.info();
            Ok(NamespaceStats {
                points_count: info.points_count as u64,
                indexed_vectors_count: info.indexed_vectors_count as u64,
                indexing,
            })
        })
        .await
    }

    async fn is_ready(&self) -> bool {
        true
    }

    async fn close(&self) -> Result<()> {
        let indexer = self
            .indexer
            .lock()
            .map_err(|_| Error::internal("indexer lock poisoned"))?
            .take();
        if let Some(indexer) = indexer {
            // A build in progress is not interrupted; it finishes or dies with
            // the process, and is redone on the next start.
            let _ = indexer.stop.send(());
            drop(indexer.thread);
        }
        for shard in self.shards.values() {
            match tokio::time::timeout(CLOSE_WAIT, shard.write_gate.clone().lock_owned()).await {
                Ok(gate) => {
                    let shard = shard.clone();
                    tokio::task::spawn_blocking(move || shard.apply(Vec::new(), gate))
                        .await
                        .map_err(Error::internal)??;
                }
                Err(_) => tracing::warn!(
                    namespace = %shard.name,
                    "index build still running; skipping final flush (acknowledged writes are already durable)"
                ),
            }
        }
        Ok(())
    }
}

fn search_one(
    engine: &EdgeShard,
    distance: Distance,
    search: TenantSearch,
) -> Result<Vec<ScoredMemory>> {
    let hits = engine
        .search(SearchRequest {
            query: QueryEnum::Nearest(NamedQuery::default_dense(search.vector)),
            filter: Some(tenant_filter(&search.tenant, &search.filter)?),
            params: None,
            limit: search.limit,
            offset: 0,
            with_payload: Some(translate::payload_selector(search.with_payload)?),
            with_vector: Some(WithVector::Bool(search.with_vector)),
            score_threshold: score::engine_threshold(distance, search.min_score),
        })
        .map_err(Error::internal)?;
    let mut hits = hits
        .into_iter()
        .filter_map(|hit| {
            let memory = translate::to_memory(hit.payload, hit.vector, search.with_payload)?;
            Some(ScoredMemory {
                memory,
                score: hit.score,
            })
        })
        .collect();
    score::cut(distance, search.min_score, &mut hits);
    Ok(hits)
}
