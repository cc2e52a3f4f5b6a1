//! `QdrantStore`: every call becomes Qdrant gRPC calls, through the request
//! and client types that `qdrant-client` generates from Qdrant's protos.
//!
//! vecmem drives those clients over its own tonic channel rather than the
//! high-level `Qdrant` client, because each call must carry its caller's
//! remaining deadline as its gRPC timeout (so Qdrant stops work the caller no
//! longer waits for), which the high-level client only sets per client.
//!
//! `backend.qdrant.url` may name several peers of one cluster; calls go to
//! the live ones and move off a dead one at once ([`peers`]). Qdrant's own
//! answers that a replica or peer of the cluster is failing are UNAVAILABLE
//! (retryable), not INTERNAL ([`errors`]).
//!
//! Writes use `wait = true` (acknowledged means applied) with the configured
//! write ordering; reads use the configured read consistency. Collections are
//! created at start-up, or as soon as Qdrant answers when it was down then;
//! an existing collection of another dimension or distance is an error, never
//! silently used.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use qdrant_client::qdrant::{
    self, CollectionStatus, CountPoints, GetCollectionInfoRequest, GetPoints, PointsSelector,
    PointsUpdateOperation, QueryBatchPoints, ScrollPoints, UpdateBatchPoints, UpsertPoints,
    collections_client::CollectionsClient, points_client::PointsClient,
    points_selector::PointsSelectorOneOf, points_update_operation as update,
};
use tokio::sync::Mutex;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;

use crate::backend::text::{TEXT_VECTOR, TextChange};
use crate::backend::{
    MemoryKey, NamespaceStats, PayloadUpdate, ScrollQuery, StorePage, TenantDelete, TenantMemory,
    TenantSearch, VectorStore, answer_keys, layout, score,
};
use crate::backup::SnapshotCopy;
use crate::config::{Distance, NamespaceConfig, QdrantConfig};
use crate::error::{Error, Result};
use crate::model::{DeleteSelector, Filter, Memory, ScoredMemory};

pub mod answers;
mod bootstrap;
mod connection;
mod errors;
mod peers;
mod query;
pub mod requests;
pub mod translate;

use answers::{GetAnswer, QueryBatchAnswer, ScrollAnswer, lean_unary};
use bootstrap::BootstrapError;
use connection::Connections;
use errors::RETRY_AFTER;
pub(crate) use errors::backend_error;
use peers::Peers;
use translate::{live_filter, read_consistency, tenant_filter, tenant_ids_filter, write_ordering};

pub struct QdrantStore {
    peers: Peers,
    api_key: Option<AsciiMetadataValue>,
    timeout: Duration,
    ordering: Option<qdrant::WriteOrdering>,
    read_consistency: qdrant::ReadConsistency,
    namespaces: BTreeMap<String, NamespaceConfig>,
    collection_prefix: String,
    /// For each namespace with a text field: whether its collection has the
    /// text vector (known once bootstrapped; one created before the field
    /// was declared has not).
    text_vectors: BTreeMap<String, AtomicBool>,
    /// Set once every collection exists with its tenant index.
    bootstrapped: AtomicBool,
    bootstrap_lock: Mutex<()>,
    /// Result of the last readiness probe.
    reachable: AtomicBool,
}

impl QdrantStore {
    /// Connects lazily and bootstraps the collections. An incompatible
    /// collection always fails; an unreachable Qdrant fails only when
    /// `require_at_start`, otherwise the store starts not ready.
    pub async fn open(
        config: &QdrantConfig,
        namespaces: &BTreeMap<String, NamespaceConfig>,
    ) -> anyhow::Result<Self> {
        let api_key: Option<AsciiMetadataValue> = match config.api_key.as_str() {
            "" => None,
            key => Some(key.parse().map_err(|_| {
                anyhow::anyhow!("backend.qdrant.api_key: not a valid header value")
            })?),
        };
        let mut peers = Vec::with_capacity(config.url.0.len());
        for url in &config.url.0 {
            peers.push((url.clone(), Connections::lazy(config, url)?));
        }
        let store = Self {
            peers: Peers::new(peers, api_key.clone()),
            api_key,
            timeout: config.timeout,
            ordering: Some(qdrant::WriteOrdering {
                r#type: write_ordering(config.write_ordering) as i32,
            }),
            read_consistency: read_consistency(config.read_consistency),
            namespaces: namespaces.clone(),
            collection_prefix: config.collection_prefix.clone(),
            text_vectors: namespaces
                .iter()
                .filter(|(_, ns)| ns.text_field.is_some())
                .map(|(name, _)| (name.clone(), AtomicBool::new(false)))
                .collect(),
            bootstrapped: AtomicBool::new(false),
            bootstrap_lock: Mutex::new(()),
            reachable: AtomicBool::new(false),
        };
        match store.bootstrap().await {
            Ok(()) => store.reachable.store(true, Ordering::SeqCst),
            Err(BootstrapError::Incompatible(message)) => anyhow::bail!(message),
            Err(BootstrapError::Qdrant(err)) if config.require_at_start => {
                anyhow::bail!(
                    "qdrant at {} is not reachable and backend.qdrant.require_at_start is set: {err}",
                    config.url
                )
            }
            Err(BootstrapError::Qdrant(err)) => {
                tracing::warn!(url = %config.url, error = %err, "qdrant not reachable; starting not ready");
            }
        }
        Ok(store)
    }

    /// A request carrying `timeout` (the caller's remaining deadline) and
    /// the API key.
    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        if let Some(key) = &self.api_key {
            request.metadata_mut().insert("api-key", key.clone());
        }
        request
    }

    /// The Qdrant collection behind a namespace.
    fn collection(&self, namespace: &str) -> String {
        format!("{}{namespace}", self.collection_prefix)
    }

    /// Sends one call to the first live peer, and on to the next when a
    /// peer fails at the transport level (see [`peers`]). `rpc` is called
    /// once per attempt with a fresh request; the message is copied only
    /// when another peer is left to try. Each attempt is bounded by the
    /// caller's remaining deadline (or `timeout_ms`), sent to Qdrant as
    /// `grpc-timeout` and enforced here too: a peer that hangs is
    /// DEADLINE_EXCEEDED, not waited on.
    async fn send_raw<M, R, F, Fut>(&self, message: M, rpc: F) -> Result<R, Status>
    where
        M: Clone,
        F: Fn(Connections, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let peers = self.peers.in_order();
        let mut message = Some(message);
        let mut failure = None;
        for (attempt, peer) in peers.iter().enumerate() {
            let last = attempt + 1 == peers.len();
            let Some(message) = (if last {
                message.take()
            } else {
                message.clone()
            }) else {
                break;
            };
            let timeout = crate::deadline::timeout_within(self.timeout);
            let call = rpc(peer.connections.clone(), self.request(message, timeout));
            let answer = tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded("qdrant did not answer in time"))
                });
            match answer {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if peers::is_transport_failure(&status) => {
                    self.peers.mark_down(peer, &status);
                    failure = Some(status);
                }
                Err(status) => return Err(status),
            }
        }
        Err(failure.unwrap_or_else(|| Status::unavailable("no qdrant peer configured")))
    }

    /// [`Self::send_raw`] with the failure mapped to the service's error.
    async fn send<M, R, F, Fut>(&self, op: &'static str, message: M, rpc: F) -> Result<R>
    where
        M: Clone,
        F: Fn(Connections, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        self.send_raw(message, rpc)
            .await
            .map_err(|status| backend_error(op, status))
    }

    /// Creates or checks every collection, once; concurrent callers wait.
    /// Callers on the request path check `bootstrapped` first
    /// ([`Self::ensure_ready`]), so this is reached only until it succeeds.
    async fn bootstrap(&self) -> Result<(), BootstrapError> {
        let _guard = self.bootstrap_lock.lock().await;
        if self.bootstrapped.load(Ordering::SeqCst) {
            return Ok(());
        }
        for (name, ns) in &self.namespaces {
            let has_text =
                bootstrap::ensure_collection(self, name, &self.collection(name), ns).await?;
            if let Some(flag) = self.text_vectors.get(name) {
                flag.store(has_text, Ordering::SeqCst);
            }
        }
        self.bootstrapped.store(true, Ordering::SeqCst);
        tracing::info!(
            namespaces = self.namespaces.len(),
            "qdrant collections ready"
        );
        Ok(())
    }

    /// Bootstraps if a previous attempt failed; UNAVAILABLE until it succeeds.
    async fn ensure_ready(&self) -> Result<()> {
        if self.bootstrapped.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Boxed: inline, the bootstrap's state (every collection call it
        // makes) would be part of every call's future, which `async_trait`
        // then copies whole into its box: 14 KB per get or search.
        match Box::pin(self.bootstrap()).await {
            Ok(()) => Ok(()),
            Err(BootstrapError::Qdrant(err)) => Err(err),
            Err(BootstrapError::Incompatible(message)) => {
                tracing::error!(%message, "qdrant collection incompatible with the config");
                Err(Error::Unavailable {
                    message: "storage is misconfigured".into(),
                    retry_after: RETRY_AFTER,
                })
            }
        }
    }

    async fn update_batch(
        &self,
        namespace: &str,
        operations: Vec<PointsUpdateOperation>,
    ) -> Result<()> {
        self.ensure_ready().await?;
        let request = UpdateBatchPoints {
            collection_name: self.collection(namespace),
            wait: Some(true),
            operations,
            ordering: self.ordering,
            timeout: None,
        };
        self.send("update_batch", request, |peer, request| async move {
            PointsClient::new(peer).update_batch(request).await
        })
        .await?;
        Ok(())
    }

    /// The distance a namespace's collection was created with.
    fn distance(&self, namespace: &str) -> Result<Distance> {
        self.namespaces
            .get(namespace)
            .map(|ns| ns.distance)
            .ok_or_else(|| Error::NamespaceNotFound(namespace.to_owned()))
    }

    /// Whether a namespace's collection holds text vectors.
    fn has_text(&self, namespace: &str) -> bool {
        self.text_vectors
            .get(namespace)
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    }
}

fn selector(filter: qdrant::Filter) -> Option<PointsSelector> {
    Some(PointsSelector {
        points_selector_one_of: Some(PointsSelectorOneOf::Filter(filter)),
    })
}

fn operation(operation: update::Operation) -> PointsUpdateOperation {
    PointsUpdateOperation {
        operation: Some(operation),
    }
}

#[async_trait]
impl VectorStore for QdrantStore {
    async fn upsert(&self, namespace: &str, memories: Vec<TenantMemory>) -> Result<()> {
        self.ensure_ready().await?;
        let request = UpsertPoints {
            collection_name: self.collection(namespace),
            wait: Some(true),
            points: memories
                .iter()
                .map(|memory| translate::to_point(memory, self.has_text(namespace)))
                .collect(),
            ordering: self.ordering,
            ..UpsertPoints::default()
        };
        let _: qdrant::PointsOperationResponse = self
            .send("upsert", request, |peer, request| {
                lean_unary(peer, request, "/qdrant.Points/Upsert")
            })
            .await?;
        Ok(())
    }

    async fn search(
        &self,
        namespace: &str,
        mut searches: Vec<TenantSearch>,
    ) -> Result<Vec<Vec<ScoredMemory>>> {
        self.ensure_ready().await?;
        let distance = self.distance(namespace)?;
        let now = SystemTime::now();
        let orders: Vec<_> = searches
            .iter()
            .map(|search| score::Order::of(distance, search))
            .collect();
        let request = QueryBatchPoints {
            collection_name: self.collection(namespace),
            query_points: searches
                .iter_mut()
                .zip(&orders)
                .map(|(search, &order)| self.query(namespace, order, search, now))
                .collect::<Result<_>>()?,
            read_consistency: Some(self.read_consistency),
            timeout: None,
        };
        let response: QueryBatchAnswer = self
            .send("query_batch", request, |peer, request| {
                lean_unary(peer, request, "/qdrant.Points/QueryBatch")
            })
            .await?;
        let results = response.result;
        if results.len() != searches.len() {
            return Err(Error::internal(
                "qdrant returned a wrong number of query results",
            ));
        }
        Ok(results
            .into_iter()
            .zip(searches.iter().zip(orders))
            .map(|(batch, (search, order))| {
                let mut hits = batch
                    .result
                    .into_iter()
                    .filter_map(|hit| {
                        let memory =
                            translate::to_memory(hit.stored, hit.vectors, search.with_payload)?;
                        Some(ScoredMemory {
                            memory,
                            score: hit.score,
                        })
                    })
                    .collect();
                score::cut(order, search.min_score, &mut hits);
                hits
            })
            .collect())
    }

    async fn get(
        &self,
        namespace: &str,
        keys: Vec<MemoryKey>,
        with_vector: bool,
    ) -> Result<Vec<Option<Memory>>> {
        self.ensure_ready().await?;
        let ids: Vec<_> = keys
            .iter()
            .map(|key| layout::point_id(&key.tenant, &key.id))
            .collect();
        let request = GetPoints {
            collection_name: self.collection(namespace),
            ids: ids.iter().map(translate::point_id).collect(),
            with_payload: Some(true.into()),
            with_vectors: Some(translate::vectors_selector(with_vector)),
            read_consistency: Some(self.read_consistency),
            ..GetPoints::default()
        };
        let response: GetAnswer = self
            .send("get", request, |peer, request| {
                lean_unary(peer, request, "/qdrant.Points/Get")
            })
            .await?;
        // Qdrant answers each point once, however often it was named.
        let mut found = HashMap::with_capacity(response.result.len());
        for mut point in response.result {
            let Some(id) = point.id.as_ref().and_then(translate::uuid_of) else {
                continue;
            };
            let Some(tenant) = point.stored.tenant.take() else {
                continue;
            };
            if let Some(memory) = translate::to_memory(point.stored, point.vectors, true) {
                found.insert(id, (tenant, memory));
            }
        }
        Ok(answer_keys(&keys, &ids, found, SystemTime::now()))
    }

    async fn delete(&self, namespace: &str, deletes: Vec<TenantDelete>) -> Result<()> {
        let operations = deletes
            .into_iter()
            .map(|delete| {
                let filter = match delete.selector {
                    DeleteSelector::Ids(ids) => {
                        let ids: Vec<_> = ids
                            .iter()
                            .map(|id| layout::point_id(&delete.tenant, id))
                            .collect();
                        tenant_ids_filter(&delete.tenant, &ids)
                    }
                    DeleteSelector::Filter(filter) => tenant_filter(&delete.tenant, &filter),
                    DeleteSelector::All => tenant_filter(&delete.tenant, &Filter::default()),
                };
                operation(update::Operation::DeletePoints(update::DeletePoints {
                    points: selector(filter),
                    shard_key_selector: None,
                }))
            })
            .collect();
        self.update_batch(namespace, operations).await
    }

    async fn scroll(&self, namespace: &str, tenant: &str, query: ScrollQuery) -> Result<StorePage> {
        self.ensure_ready().await?;
        let request = ScrollPoints {
            collection_name: self.collection(namespace),
            filter: Some(live_filter(tenant, &query.filter, SystemTime::now())),
            offset: query.offset.as_ref().map(translate::point_id),
            limit: Some(u32::try_from(query.limit).unwrap_or(u32::MAX)),
            with_payload: Some(translate::payload_selector(true)),
            with_vectors: Some(translate::vectors_selector(query.with_vector)),
            read_consistency: Some(self.read_consistency),
            ..ScrollPoints::default()
        };
        let response: ScrollAnswer = self
            .send("scroll", request, |peer, request| {
                lean_unary(peer, request, "/qdrant.Points/Scroll")
            })
            .await?;
        Ok(StorePage {
            memories: response
                .result
                .into_iter()
                .filter_map(|point| translate::to_memory(point.stored, point.vectors, true))
                .collect(),
            next_offset: response
                .next_page_offset
                .as_ref()
                .and_then(translate::uuid_of),
        })
    }

    async fn count(&self, namespace: &str, tenant: &str, filter: Filter) -> Result<u64> {
        self.ensure_ready().await?;
        let request = CountPoints {
            collection_name: self.collection(namespace),
            filter: Some(live_filter(tenant, &filter, SystemTime::now())),
            exact: Some(true),
            read_consistency: Some(self.read_consistency),
            ..CountPoints::default()
        };
        let response = self
            .send("count", request, |peer, request| async move {
                PointsClient::new(peer).count(request).await
            })
            .await?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    async fn update_payload(&self, namespace: &str, update: PayloadUpdate) -> Result<()> {
        // Bootstrapped first: whether the collection has text vectors is
        // known only then, and decides the operations.
        self.ensure_ready().await?;
        let ids: Vec<_> = update
            .ids
            .iter()
            .map(|id| layout::point_id(&update.tenant, id))
            .collect();
        let filter = tenant_ids_filter(&update.tenant, &ids);
        // The text vector first: the ids exist (the core just read them),
        // and if one was deleted since, Qdrant refuses the set-vectors
        // operation before any payload has changed.
        let text = match update.text {
            TextChange::Set(text) if self.has_text(namespace) => {
                Some(update::Operation::UpdateVectors(update::UpdateVectors {
                    points: translate::text_vectors(&ids, &text),
                    shard_key_selector: None,
                    update_filter: Some(filter.clone()),
                }))
            }
            TextChange::Clear if self.has_text(namespace) => {
                Some(update::Operation::DeleteVectors(update::DeleteVectors {
                    points_selector: selector(filter.clone()),
                    vectors: Some(qdrant::VectorsSelector {
                        names: vec![TEXT_VECTOR.to_owned()],
                    }),
                    shard_key_selector: None,
                }))
            }
            _ => None,
        };
        let payload = layout::payload_writes(
            update.payload,
            update.replace,
            update.updated_at,
            update.expiry,
        )
        .into_iter()
        .map(|write| {
            update::Operation::SetPayload(update::SetPayload {
                payload: translate::to_qdrant_payload(write.fields),
                points_selector: selector(filter.clone()),
                shard_key_selector: None,
                key: write.key.map(str::to_owned),
            })
        });
        let operations = text.into_iter().chain(payload).map(operation).collect();
        self.update_batch(namespace, operations).await
    }

    async fn delete_expired(
        &self,
        namespace: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<usize> {
        self.ensure_ready().await?;
        let request = ScrollPoints {
            collection_name: self.collection(namespace),
            filter: Some(translate::expired_filter(now)),
            limit: Some(u32::try_from(limit).unwrap_or(u32::MAX)),
            with_payload: Some(false.into()),
            with_vectors: Some(translate::vectors_selector(false)),
            read_consistency: Some(self.read_consistency),
            ..ScrollPoints::default()
        };
        let response: ScrollAnswer = self
            .send("scroll", request, |peer, request| {
                lean_unary(peer, request, "/qdrant.Points/Scroll")
            })
            .await?;
        let ids: Vec<qdrant::PointId> = response
            .result
            .into_iter()
            .filter_map(|point| point.id)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let deleted = ids.len();
        // By id, and only if still expired: a memory upserted again since
        // the scroll keeps its new life.
        let filter = qdrant::Filter::must([
            qdrant::Condition::has_id(ids),
            qdrant::Condition::from(translate::expired_filter(now)),
        ]);
        let delete = operation(update::Operation::DeletePoints(update::DeletePoints {
            points: selector(filter),
            shard_key_selector: None,
        }));
        self.update_batch(namespace, vec![delete]).await?;
        Ok(deleted)
    }

    async fn stats(&self, namespace: &str) -> Result<NamespaceStats> {
        self.ensure_ready().await?;
        let request = GetCollectionInfoRequest {
            collection_name: self.collection(namespace),
        };
        let response = self
            .send("collection_info", request, |peer, request| async move {
                CollectionsClient::new(peer).get(request).await
            })
            .await?;
        let info = response
            .result
            .ok_or_else(|| Error::internal("qdrant returned no collection info"))?;
        Ok(NamespaceStats {
            points_count: info.points_count.unwrap_or(0),
            indexed_vectors_count: info.indexed_vectors_count.unwrap_or(0),
            indexing: info.status != CollectionStatus::Green as i32,
            text_search: self.has_text(namespace),
        })
    }

    async fn is_ready(&self) -> bool {
        let reachable = self.peers.any_answers().await;
        if reachable != self.reachable.swap(reachable, Ordering::SeqCst) {
            tracing::info!(reachable, "qdrant reachability changed");
        }
        reachable && self.ensure_ready().await.is_ok()
    }

    /// Qdrant's snapshots copy collections where they live, shard by
    /// shard; vecmem has neither the files nor a copy to stream.
    async fn snapshot(&self) -> Result<SnapshotCopy> {
        Err(Error::SnapshotUnavailable)
    }

    async fn close(&self) -> Result<()> {
        // Every acknowledged write was applied by Qdrant (`wait = true`);
        // nothing is buffered here.
        Ok(())
    }
}
