//! The double's gRPC services.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use qdrant_client::qdrant::{
    self,
    collections_server::{Collections, CollectionsServer},
    points_selector::PointsSelectorOneOf,
    points_server::{Points, PointsServer},
    points_update_operation::Operation,
    qdrant_server::{Qdrant, QdrantServer},
};
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    CountRequest, CreateIndex, Distance, EdgeConfigBuilder, EdgeSparseVectorParamsBuilder,
    EdgeVectorParamsBuilder, FieldIndexOperations, IntegerIndexParams, KeywordIndexParams,
    Modifier, PayloadFieldSchema, PayloadOps, PayloadSchemaParams, PointInsertOperations,
    PointOperations, PointStructPersisted, PointVectorsPersisted, QueryRequest, ScrollRequest,
    SetPayloadOp, UpdateOperation, UpdateVectorsOp, VectorOperations,
};
use tonic::codegen::http;
use tonic::{Request, Response, Status};

use super::convert;
use super::{Collection, State};

/// Serves the double's services on `incoming` until the future is dropped;
/// `requests` counts every request this listener receives.
pub async fn serve(
    state: Arc<State>,
    requests: Arc<AtomicU64>,
    incoming: tonic::transport::server::TcpIncoming,
) -> Result<(), tonic::transport::Error> {
    let service = Service(state);
    let count = move |request: http::Request<tonic::body::Body>| {
        requests.fetch_add(1, Ordering::SeqCst);
        request
    };
    tonic::transport::Server::builder()
        .layer(tower::util::MapRequestLayer::new(count))
        .add_service(QdrantServer::new(service.clone()))
        .add_service(CollectionsServer::new(service.clone()))
        .add_service(PointsServer::new(service))
        .serve_with_incoming(incoming)
        .await
}

#[derive(Clone)]
struct Service(Arc<State>);

impl Service {
    fn collection(&self, name: &str) -> Result<Arc<Collection>, Status> {
        let collections = self.0.collections.lock().expect("lock");
        collections.get(name).cloned().ok_or_else(|| {
            Status::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
        })
    }

    /// Applies faults, then runs `f` on the blocking pool with the collection.
    async fn with<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&Collection) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        self.0.faults.apply().await?;
        let collection = self.collection(name)?;
        tokio::task::spawn_blocking(move || f(&collection))
            .await
            .map_err(|err| {
                // A stopping peer (`stop_peer`) shuts its runtime down, and
                // tokio then cancels engine calls while their connection can
                // still answer. A Qdrant that dies answers nothing, which
                // vecmem sees as a failed transport, UNAVAILABLE; answering
                // INTERNAL instead would be the double's artefact.
                if err.is_cancelled() {
                    Status::unavailable("the peer is stopping")
                } else {
                    Status::internal(err.to_string())
                }
            })?
    }
}

fn engine(err: impl std::fmt::Display) -> Status {
    Status::internal(format!("engine: {err}"))
}

/// Applies operations and flushes, as Qdrant's `wait = true` promises.
/// Writes to a collection take turns: the engine's flush expects its locks
/// uncontended, and Qdrant itself orders a collection's updates too.
fn apply(
    collection: &Collection,
    operations: Vec<UpdateOperation>,
) -> Result<qdrant::UpdateResult, Status> {
    let _turn = collection
        .writes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for operation in operations {
        collection.shard.update(operation).map_err(engine)?;
    }
    collection.shard.flush();
    collection.index_pending.store(true, Ordering::SeqCst);
    Ok(qdrant::UpdateResult {
        operation_id: Some(0),
        status: qdrant::UpdateStatus::Completed as i32,
    })
}

fn selector_operation(selector: Option<qdrant::PointsSelector>) -> Result<PointOperations, Status> {
    match selector.and_then(|s| s.points_selector_one_of) {
        Some(PointsSelectorOneOf::Points(list)) => {
            let ids: Result<Vec<_>, _> = list.ids.iter().map(convert::edge_id).collect();
            Ok(PointOperations::DeletePoints { ids: ids? })
        }
        Some(PointsSelectorOneOf::Filter(filter)) => {
            let filter = convert::filter(Some(filter))?.unwrap_or_default();
            Ok(PointOperations::DeletePointsByFilter(filter))
        }
        None => Err(Status::invalid_argument("points selector is required")),
    }
}

/// A query as the engine's own query stages: Qdrant's Query API and the
/// engine's are the same, stage for stage.
fn search(
    collection: &Collection,
    query: qdrant::QueryPoints,
) -> Result<Vec<qdrant::ScoredPoint>, Status> {
    let request = QueryRequest {
        prefetches: query
            .prefetch
            .into_iter()
            .map(convert::prefetch)
            .collect::<Result<_, _>>()?,
        query: convert::scoring(query.query, query.using)?,
        filter: convert::filter(query.filter)?,
        score_threshold: query.score_threshold.map(OrderedFloat),
        limit: query.limit.unwrap_or(10) as usize,
        offset: query.offset.unwrap_or(0) as usize,
        params: None,
        with_vector: convert::with_vector(query.with_vectors),
        with_payload: convert::with_payload(query.with_payload)?,
    };
    let hits = collection.shard.query(request).map_err(engine)?;
    Ok(hits
        .into_iter()
        .map(|hit| qdrant::ScoredPoint {
            id: Some(convert::grpc_id(&hit.id)),
            payload: convert::payload_to_grpc(hit.payload),
            score: hit.score,
            version: hit.version,
            vectors: convert::vectors_to_grpc(hit.vector),
            ..qdrant::ScoredPoint::default()
        })
        .collect())
}

fn retrieved(record: qdrant_edge::Record) -> qdrant::RetrievedPoint {
    qdrant::RetrievedPoint {
        id: Some(convert::grpc_id(&record.id)),
        payload: convert::payload_to_grpc(record.payload),
        vectors: convert::vectors_to_grpc(record.vector),
        ..qdrant::RetrievedPoint::default()
    }
}

/// Answers UNIMPLEMENTED, in the shape `#[async_trait]` gives trait methods.
macro_rules! unsupported {
    ($($name:ident: $request:ty => $response:ty;)*) => {$(
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            _request: Request<$request>,
        ) -> Pin<Box<dyn Future<Output = Result<Response<$response>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(Status::unimplemented(concat!("the Qdrant double does not implement ", stringify!($name)))) })
        }
    )*};
}

#[tonic::async_trait]
impl Qdrant for Service {
    async fn health_check(
        &self,
        _: Request<qdrant::HealthCheckRequest>,
    ) -> Result<Response<qdrant::HealthCheckReply>, Status> {
        self.0.faults.apply_uncounted().await?;
        Ok(Response::new(qdrant::HealthCheckReply {
            title: "qdrant - vector search engine (vecmem test double)".into(),
            version: "1.16.0".into(),
            commit: None,
        }))
    }
}

#[tonic::async_trait]
impl Collections for Service {
    async fn get(
        &self,
        request: Request<qdrant::GetCollectionInfoRequest>,
    ) -> Result<Response<qdrant::GetCollectionInfoResponse>, Status> {
        let name = request.into_inner().collection_name;
        let indexing = self.0.background_indexing.load(Ordering::SeqCst);
        let info = self
            .with(&name, move |c| {
                let info = c.shard.info();
                let payload_schema = c
                    .indexes
                    .lock()
                    .expect("lock")
                    .iter()
                    .map(|(field, &data_type)| {
                        let info = qdrant::PayloadSchemaInfo {
                            data_type: data_type as i32,
                            ..Default::default()
                        };
                        (field.clone(), info)
                    })
                    .collect();
                let optimizing = indexing && c.index_pending.load(Ordering::SeqCst);
                Ok(qdrant::CollectionInfo {
                    status: if optimizing {
                        qdrant::CollectionStatus::Yellow
                    } else {
                        qdrant::CollectionStatus::Green
                    } as i32,
                    segments_count: info.segments_count as u64,
                    points_count: Some(info.points_count as u64),
                    indexed_vectors_count: Some(info.indexed_vectors_count as u64),
                    payload_schema,
                    config: Some(qdrant::CollectionConfig {
                        params: Some(qdrant::CollectionParams {
                            shard_number: 1,
                            vectors_config: Some(qdrant::VectorsConfig {
                                config: Some(qdrant::vectors_config::Config::Params(
                                    qdrant::VectorParams {
                                        size: c.dim,
                                        distance: c.distance,
                                        ..Default::default()
                                    },
                                )),
                            }),
                            sparse_vectors_config: c.sparse.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            })
            .await?;
        Ok(Response::new(qdrant::GetCollectionInfoResponse {
            result: Some(info),
            time: 0.0,
        }))
    }

    async fn create(
        &self,
        request: Request<qdrant::CreateCollection>,
    ) -> Result<Response<qdrant::CollectionOperationResponse>, Status> {
        self.0.faults.apply().await?;
        let request = request.into_inner();
        let name = request.collection_name;
        let Some(qdrant::vectors_config::Config::Params(params)) =
            request.vectors_config.and_then(|v| v.config)
        else {
            return Err(Status::invalid_argument(
                "the double needs a single unnamed vector",
            ));
        };
        let distance = match qdrant::Distance::try_from(params.distance) {
            Ok(qdrant::Distance::Cosine) => Distance::Cosine,
            Ok(qdrant::Distance::Dot) => Distance::Dot,
            Ok(qdrant::Distance::Euclid) => Distance::Euclid,
            Ok(qdrant::Distance::Manhattan) => Distance::Manhattan,
            _ => return Err(Status::invalid_argument("unknown distance")),
        };
        let mut collections = self.0.collections.lock().expect("lock");
        if collections.contains_key(&name) {
            return Err(Status::invalid_argument(format!(
                "Wrong input: Collection `{name}` already exists!"
            )));
        }
        let dir = self.0.dir.path().join(&name);
        std::fs::create_dir_all(&dir).map_err(engine)?;
        let mut config = EdgeConfigBuilder::new().vector(
            "",
            EdgeVectorParamsBuilder::new(params.size as usize, distance).build(),
        );
        for (vector, sparse) in request.sparse_vectors_config.iter().flat_map(|c| &c.map) {
            let mut params = EdgeSparseVectorParamsBuilder::new();
            if sparse.modifier == Some(qdrant::Modifier::Idf as i32) {
                params = params.modifier(Modifier::Idf);
            }
            config = config.sparse_vector(vector.clone(), params.build());
        }
        let config = config.build();
        let shard = qdrant_edge::EdgeShard::new(&dir, config).map_err(engine)?;
        let collection = Collection {
            shard,
            dim: params.size,
            distance: params.distance,
            sparse: request.sparse_vectors_config,
            indexes: Mutex::default(),
            writes: Mutex::new(()),
            index_pending: false.into(),
        };
        collections.insert(name, Arc::new(collection));
        Ok(Response::new(qdrant::CollectionOperationResponse {
            result: true,
            time: 0.0,
        }))
    }

    unsupported! {
        list: qdrant::ListCollectionsRequest => qdrant::ListCollectionsResponse;
        update: qdrant::UpdateCollection => qdrant::CollectionOperationResponse;
        delete: qdrant::DeleteCollection => qdrant::CollectionOperationResponse;
        update_aliases: qdrant::ChangeAliases => qdrant::CollectionOperationResponse;
        list_collection_aliases: qdrant::ListCollectionAliasesRequest => qdrant::ListAliasesResponse;
        list_aliases: qdrant::ListAliasesRequest => qdrant::ListAliasesResponse;
        collection_cluster_info: qdrant::CollectionClusterInfoRequest => qdrant::CollectionClusterInfoResponse;
        collection_exists: qdrant::CollectionExistsRequest => qdrant::CollectionExistsResponse;
        update_collection_cluster_setup: qdrant::UpdateCollectionClusterSetupRequest => qdrant::UpdateCollectionClusterSetupResponse;
        create_shard_key: qdrant::CreateShardKeyRequest => qdrant::CreateShardKeyResponse;
        delete_shard_key: qdrant::DeleteShardKeyRequest => qdrant::DeleteShardKeyResponse;
        list_shard_keys: qdrant::ListShardKeysRequest => qdrant::ListShardKeysResponse;
    }
}

#[tonic::async_trait]
impl Points for Service {
    async fn upsert(
        &self,
        request: Request<qdrant::UpsertPoints>,
    ) -> Result<Response<qdrant::PointsOperationResponse>, Status> {
        let request = request.into_inner();
        let points = request
            .points
            .into_iter()
            .map(|p| {
                let id = convert::edge_id(
                    p.id.as_ref()
                        .ok_or_else(|| Status::invalid_argument("point id"))?,
                )?;
                let payload = convert::payload_to_json(p.payload);
                Ok(PointStructPersisted {
                    id,
                    vector: convert::vectors(p.vectors)?,
                    payload: Some(qdrant_edge::Payload(payload.into_iter().collect())),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let upsert = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
            PointInsertOperations::PointsList(points),
        ));
        let result = self
            .with(&request.collection_name, move |c| apply(c, vec![upsert]))
            .await?;
        Ok(Response::new(qdrant::PointsOperationResponse {
            result: Some(result),
            time: 0.0,
            usage: None,
        }))
    }

    async fn get(
        &self,
        request: Request<qdrant::GetPoints>,
    ) -> Result<Response<qdrant::GetResponse>, Status> {
        let request = request.into_inner();
        let ids = request
            .ids
            .iter()
            .map(convert::edge_id)
            .collect::<Result<Vec<_>, _>>()?;
        let with_payload = convert::with_payload(request.with_payload)?;
        let with_vector = convert::with_vector(request.with_vectors);
        let result = self
            .with(&request.collection_name, move |c| {
                let records = c
                    .shard
                    .retrieve(&ids, Some(with_payload), Some(with_vector))
                    .map_err(engine)?;
                Ok(records.into_iter().map(retrieved).collect())
            })
            .await?;
        Ok(Response::new(qdrant::GetResponse {
            result,
            time: 0.0,
            usage: None,
        }))
    }

    async fn scroll(
        &self,
        request: Request<qdrant::ScrollPoints>,
    ) -> Result<Response<qdrant::ScrollResponse>, Status> {
        let request = request.into_inner();
        let scroll = ScrollRequest {
            offset: request.offset.as_ref().map(convert::edge_id).transpose()?,
            limit: request.limit.map(|l| l as usize),
            filter: convert::filter(request.filter)?,
            with_payload: Some(convert::with_payload(request.with_payload)?),
            with_vector: convert::with_vector(request.with_vectors),
            order_by: None,
        };
        let (result, next) = self
            .with(&request.collection_name, move |c| {
                // Qdrant holds its update lock across a scroll's two steps
                // (ids, then records), so a delete between them cannot
                // shorten the page and end the paging; the engine does not.
                let _no_writes = c
                    .writes
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let (records, next) = c.shard.scroll(scroll).map_err(engine)?;
                Ok((
                    records.into_iter().map(retrieved).collect(),
                    next.as_ref().map(convert::grpc_id),
                ))
            })
            .await?;
        Ok(Response::new(qdrant::ScrollResponse {
            next_page_offset: next,
            result,
            time: 0.0,
            usage: None,
        }))
    }

    async fn count(
        &self,
        request: Request<qdrant::CountPoints>,
    ) -> Result<Response<qdrant::CountResponse>, Status> {
        let request = request.into_inner();
        let filter = convert::filter(request.filter)?;
        let exact = request.exact.unwrap_or(true);
        let count = self
            .with(&request.collection_name, move |c| {
                c.shard
                    .count(CountRequest { filter, exact })
                    .map_err(engine)
            })
            .await?;
        Ok(Response::new(qdrant::CountResponse {
            result: Some(qdrant::CountResult {
                count: count as u64,
            }),
            time: 0.0,
            usage: None,
        }))
    }

    async fn query(
        &self,
        request: Request<qdrant::QueryPoints>,
    ) -> Result<Response<qdrant::QueryResponse>, Status> {
        let request = request.into_inner();
        let name = request.collection_name.clone();
        let result = self.with(&name, move |c| search(c, request)).await?;
        Ok(Response::new(qdrant::QueryResponse {
            result,
            time: 0.0,
            usage: None,
        }))
    }

    async fn query_batch(
        &self,
        request: Request<qdrant::QueryBatchPoints>,
    ) -> Result<Response<qdrant::QueryBatchResponse>, Status> {
        let request = request.into_inner();
        let queries = request.query_points;
        let result = self
            .with(&request.collection_name, move |c| {
                queries
                    .into_iter()
                    .map(|q| search(c, q).map(|result| qdrant::BatchResult { result }))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        Ok(Response::new(qdrant::QueryBatchResponse {
            result,
            time: 0.0,
            usage: None,
        }))
    }

    async fn update_batch(
        &self,
        request: Request<qdrant::UpdateBatchPoints>,
    ) -> Result<Response<qdrant::UpdateBatchResponse>, Status> {
        let request = request.into_inner();
        let mut operations = Vec::new();
        for operation in request.operations {
            operations.push(match operation.operation {
                Some(Operation::DeletePoints(delete)) => {
                    UpdateOperation::PointOperation(selector_operation(delete.points)?)
                }
                Some(Operation::SetPayload(set)) => {
                    let (points, filter) = match set
                        .points_selector
                        .and_then(|s| s.points_selector_one_of)
                    {
                        Some(PointsSelectorOneOf::Points(list)) => (
                            Some(
                                list.ids
                                    .iter()
                                    .map(convert::edge_id)
                                    .collect::<Result<Vec<_>, _>>()?,
                            ),
                            None,
                        ),
                        Some(PointsSelectorOneOf::Filter(filter)) => {
                            (None, convert::filter(Some(filter))?)
                        }
                        None => {
                            return Err(Status::invalid_argument("points selector is required"));
                        }
                    };
                    let key = set
                        .key
                        .map(|k| {
                            k.parse()
                                .map_err(|_| Status::invalid_argument("payload key"))
                        })
                        .transpose()?;
                    UpdateOperation::PayloadOperation(PayloadOps::SetPayload(SetPayloadOp {
                        payload: qdrant_edge::Payload(
                            convert::payload_to_json(set.payload).into_iter().collect(),
                        ),
                        points,
                        filter,
                        key,
                    }))
                }
                Some(Operation::UpdateVectors(update)) => {
                    let points = update
                        .points
                        .into_iter()
                        .map(|point| {
                            let id = point
                                .id
                                .as_ref()
                                .ok_or_else(|| Status::invalid_argument("point id"))?;
                            Ok(PointVectorsPersisted {
                                id: convert::edge_id(id)?,
                                vector: convert::vectors(point.vectors)?,
                            })
                        })
                        .collect::<Result<_, Status>>()?;
                    UpdateOperation::VectorOperation(VectorOperations::UpdateVectors(
                        UpdateVectorsOp {
                            points,
                            update_filter: convert::filter(update.update_filter)?,
                        },
                    ))
                }
                Some(Operation::DeleteVectors(delete)) => {
                    let names = delete.vectors.map(|v| v.names).unwrap_or_default();
                    match delete
                        .points_selector
                        .and_then(|s| s.points_selector_one_of)
                    {
                        Some(PointsSelectorOneOf::Filter(filter)) => {
                            let filter = convert::filter(Some(filter))?.unwrap_or_default();
                            UpdateOperation::VectorOperation(
                                VectorOperations::DeleteVectorsByFilter(filter, names),
                            )
                        }
                        _ => {
                            return Err(Status::unimplemented(
                                "the Qdrant double deletes vectors by filter only",
                            ));
                        }
                    }
                }
                other => {
                    return Err(Status::unimplemented(format!(
                        "the Qdrant double does not implement {other:?}"
                    )));
                }
            });
        }
        let count = operations.len();
        let result = self
            .with(&request.collection_name, move |c| apply(c, operations))
            .await?;
        Ok(Response::new(qdrant::UpdateBatchResponse {
            result: vec![result; count],
            time: 0.0,
            usage: None,
        }))
    }

    async fn create_field_index(
        &self,
        request: Request<qdrant::CreateFieldIndexCollection>,
    ) -> Result<Response<qdrant::PointsOperationResponse>, Status> {
        let request = request.into_inner();
        let field_type = request.field_type();
        let params = request
            .field_index_params
            .and_then(|params| params.index_params);
        use qdrant::payload_index_params::IndexParams;
        let (schema, data_type) = match (field_type, params) {
            (qdrant::FieldType::Keyword, Some(IndexParams::KeywordIndexParams(params))) => (
                PayloadSchemaParams::Keyword(KeywordIndexParams {
                    r#type: Default::default(),
                    is_tenant: params.is_tenant,
                    on_disk: None,
                    enable_hnsw: params.enable_hnsw,
                }),
                qdrant::PayloadSchemaType::Keyword,
            ),
            (qdrant::FieldType::Integer, Some(IndexParams::IntegerIndexParams(params))) => (
                PayloadSchemaParams::Integer(IntegerIndexParams {
                    r#type: Default::default(),
                    lookup: params.lookup,
                    range: params.range,
                    is_principal: params.is_principal,
                    on_disk: None,
                    enable_hnsw: params.enable_hnsw,
                }),
                qdrant::PayloadSchemaType::Integer,
            ),
            (field_type, _) => {
                return Err(Status::unimplemented(format!(
                    "the Qdrant double does not index {field_type:?} fields this way"
                )));
            }
        };
        let field = request.field_name;
        let result = self
            .with(&request.collection_name, move |c| {
                let index = CreateIndex {
                    field_name: field.parse().map_err(|_| Status::internal("path"))?,
                    field_schema: Some(PayloadFieldSchema::FieldParams(schema)),
                };
                let result = apply(
                    c,
                    vec![UpdateOperation::FieldIndexOperation(
                        FieldIndexOperations::CreateIndex(index),
                    )],
                )?;
                c.indexes.lock().expect("lock").insert(field, data_type);
                Ok(result)
            })
            .await?;
        Ok(Response::new(qdrant::PointsOperationResponse {
            result: Some(result),
            time: 0.0,
            usage: None,
        }))
    }

    unsupported! {
        delete: qdrant::DeletePoints => qdrant::PointsOperationResponse;
        update_vectors: qdrant::UpdatePointVectors => qdrant::PointsOperationResponse;
        delete_vectors: qdrant::DeletePointVectors => qdrant::PointsOperationResponse;
        set_payload: qdrant::SetPayloadPoints => qdrant::PointsOperationResponse;
        overwrite_payload: qdrant::SetPayloadPoints => qdrant::PointsOperationResponse;
        delete_payload: qdrant::DeletePayloadPoints => qdrant::PointsOperationResponse;
        clear_payload: qdrant::ClearPayloadPoints => qdrant::PointsOperationResponse;
        delete_field_index: qdrant::DeleteFieldIndexCollection => qdrant::PointsOperationResponse;
        create_vector_name: qdrant::CreateVectorNameRequest => qdrant::PointsOperationResponse;
        delete_vector_name: qdrant::DeleteVectorNameRequest => qdrant::PointsOperationResponse;
        search: qdrant::SearchPoints => qdrant::SearchResponse;
        search_batch: qdrant::SearchBatchPoints => qdrant::SearchBatchResponse;
        search_groups: qdrant::SearchPointGroups => qdrant::SearchGroupsResponse;
        recommend: qdrant::RecommendPoints => qdrant::RecommendResponse;
        recommend_batch: qdrant::RecommendBatchPoints => qdrant::RecommendBatchResponse;
        recommend_groups: qdrant::RecommendPointGroups => qdrant::RecommendGroupsResponse;
        discover: qdrant::DiscoverPoints => qdrant::DiscoverResponse;
        discover_batch: qdrant::DiscoverBatchPoints => qdrant::DiscoverBatchResponse;
        query_groups: qdrant::QueryPointGroups => qdrant::QueryGroupsResponse;
        facet: qdrant::FacetCounts => qdrant::FacetResponse;
        search_matrix_pairs: qdrant::SearchMatrixPoints => qdrant::SearchMatrixPairsResponse;
        search_matrix_offsets: qdrant::SearchMatrixPoints => qdrant::SearchMatrixOffsetsResponse;
    }
}
