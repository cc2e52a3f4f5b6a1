//! Creating and checking a namespace's Qdrant collection.
//!
//! A missing collection is created with the namespace's config and a keyword
//! index on the tenant field flagged `is_tenant` (Qdrant then keeps each
//! tenant's points together), and an integer range index on the expiry field
//! (added to an older collection too). An existing one must have the configured
//! dimension and distance, or start-up fails naming both. Replicas starting
//! at once may race to create it; the loser re-reads and checks it.
//!
//! A namespace with a `text_field` gets a sparse vector for its text, with
//! Qdrant's IDF modifier ([`crate::backend::text`]). A collection created
//! before the field was declared has none; it keeps serving, without search
//! by text. vecmem does not add the vector to it (Qdrant 1.18 could): its
//! existing memories would have no text vector, and a search by text would
//! silently miss every one of them.

use qdrant_client::qdrant::{
    self, CollectionInfo, CreateCollection, CreateFieldIndexCollection, FieldType,
    GetCollectionInfoRequest, HnswConfigDiff, IntegerIndexParams, KeywordIndexParams, Modifier,
    OptimizersConfigDiff, PayloadIndexParams, QuantizationType, ScalarQuantization,
    SparseVectorConfig, SparseVectorParams, VectorParams, VectorsConfig,
    collections_client::CollectionsClient, payload_index_params::IndexParams,
    points_client::PointsClient, quantization_config, vectors_config,
};
use tonic::Code;

use super::translate::qdrant_distance;
use super::{QdrantStore, backend_error};
use crate::backend::layout::{EXPIRES_AT_FIELD, TENANT_FIELD};
use crate::backend::text::TEXT_VECTOR;
use crate::config::{NamespaceConfig, Quantization};
use crate::error::Error;

pub enum BootstrapError {
    /// Qdrant failed or is unreachable; worth retrying.
    Qdrant(Error),
    /// The collection exists with another shape; retrying cannot help.
    Incompatible(String),
}

impl From<Error> for BootstrapError {
    fn from(err: Error) -> Self {
        Self::Qdrant(err)
    }
}

/// Creates or checks a namespace's collection; answers whether it holds
/// text vectors.
pub async fn ensure_collection(
    store: &QdrantStore,
    name: &str,
    collection: &str,
    ns: &NamespaceConfig,
) -> Result<bool, BootstrapError> {
    let info = match collection_info(store, collection).await? {
        Some(info) => info,
        None => {
            let created = store
                .send_raw(create_request(collection, ns), |peer, request| async move {
                    CollectionsClient::new(peer).create(request).await
                })
                .await;
            match created {
                Ok(_) => {
                    tracing::info!(namespace = name, dim = ns.dim, "qdrant collection created")
                }
                // Another replica may have created it first; the re-read decides.
                Err(status) => {
                    tracing::debug!(namespace = name, error = %status.message(), "create collection failed")
                }
            }
            collection_info(store, collection).await?.ok_or_else(|| {
                Error::internal(format!(
                    "qdrant collection {collection} could not be created"
                ))
            })?
        }
    };
    check_shape(name, collection, ns, &info)?;
    let has_text = check_text(name, collection, ns, &info)?;
    if !info.payload_schema.contains_key(TENANT_FIELD) {
        let tenant = IndexParams::KeywordIndexParams(KeywordIndexParams {
            is_tenant: Some(true),
            ..KeywordIndexParams::default()
        });
        create_index(store, collection, TENANT_FIELD, FieldType::Keyword, tenant).await?;
        tracing::info!(namespace = name, "qdrant tenant index created");
    }
    if !info.payload_schema.contains_key(EXPIRES_AT_FIELD) {
        // Every read's "not expired" condition and the sweeper filter by
        // range on it; a collection made before memories could expire
        // gets it now.
        let expiry = IndexParams::IntegerIndexParams(IntegerIndexParams {
            lookup: Some(false),
            range: Some(true),
            // Only ever filtered by range: no extra graph links.
            enable_hnsw: Some(false),
            ..IntegerIndexParams::default()
        });
        create_index(
            store,
            collection,
            EXPIRES_AT_FIELD,
            FieldType::Integer,
            expiry,
        )
        .await?;
        tracing::info!(namespace = name, "qdrant expiry index created");
    }
    Ok(has_text)
}

/// Creates a payload index on `field` and waits until it is built.
async fn create_index(
    store: &QdrantStore,
    collection: &str,
    field: &str,
    field_type: FieldType,
    params: IndexParams,
) -> Result<(), BootstrapError> {
    let index = CreateFieldIndexCollection {
        collection_name: collection.to_owned(),
        wait: Some(true),
        field_name: field.to_owned(),
        field_type: Some(field_type as i32),
        field_index_params: Some(PayloadIndexParams {
            index_params: Some(params),
        }),
        ordering: store.ordering,
        timeout: None,
    };
    store
        .send("create_field_index", index, |peer, request| async move {
            PointsClient::new(peer).create_field_index(request).await
        })
        .await?;
    Ok(())
}

/// The collection's info, or `None` if it does not exist.
async fn collection_info(
    store: &QdrantStore,
    name: &str,
) -> Result<Option<CollectionInfo>, BootstrapError> {
    let request = GetCollectionInfoRequest {
        collection_name: name.to_owned(),
    };
    let answer = store
        .send_raw(request, |peer, request| async move {
            CollectionsClient::new(peer).get(request).await
        })
        .await;
    match answer {
        Ok(response) => Ok(response.result),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(backend_error("collection_info", status).into()),
    }
}

// `on_disk` and `always_ram` are deprecated in favour of `memory`, which
// servers before 1.17 do not know; every 1.x server still honours these.
#[allow(deprecated)]
fn create_request(name: &str, ns: &NamespaceConfig) -> CreateCollection {
    let quantization_config = match ns.quantization {
        Quantization::None => None,
        Quantization::Scalar => Some(qdrant::QuantizationConfig {
            quantization: Some(quantization_config::Quantization::Scalar(
                ScalarQuantization {
                    r#type: QuantizationType::Int8 as i32,
                    quantile: None,
                    always_ram: Some(true),
                    memory: None,
                },
            )),
        }),
    };
    CreateCollection {
        collection_name: name.to_owned(),
        vectors_config: Some(VectorsConfig {
            config: Some(vectors_config::Config::Params(VectorParams {
                size: u64::from(ns.dim.get()),
                distance: qdrant_distance(ns.distance) as i32,
                on_disk: Some(ns.on_disk),
                ..VectorParams::default()
            })),
        }),
        hnsw_config: Some(HnswConfigDiff {
            m: Some(ns.hnsw_m.get() as u64),
            ef_construct: Some(ns.hnsw_ef_construct as u64),
            ..HnswConfigDiff::default()
        }),
        optimizers_config: Some(OptimizersConfigDiff {
            indexing_threshold: Some(ns.indexing_threshold_kb as u64),
            ..OptimizersConfigDiff::default()
        }),
        quantization_config,
        sparse_vectors_config: ns.text_field.as_ref().map(|_| SparseVectorConfig {
            map: [(
                TEXT_VECTOR.to_owned(),
                SparseVectorParams {
                    index: None,
                    modifier: Some(Modifier::Idf as i32),
                },
            )]
            .into(),
        }),
        shard_number: Some(ns.shard_number.get()),
        replication_factor: Some(ns.replication_factor.get()),
        write_consistency_factor: Some(ns.write_consistency_factor.get()),
        ..CreateCollection::default()
    }
}

/// Whether the collection holds text vectors: for a namespace with a text
/// field, if it has them with IDF. Without them it serves, and says so.
fn check_text(
    name: &str,
    collection: &str,
    ns: &NamespaceConfig,
    info: &CollectionInfo,
) -> Result<bool, BootstrapError> {
    let Some(field) = &ns.text_field else {
        return Ok(false);
    };
    let text = info
        .config
        .as_ref()
        .and_then(|c| c.params.as_ref())
        .and_then(|p| p.sparse_vectors_config.as_ref())
        .and_then(|sparse| sparse.map.get(TEXT_VECTOR));
    match text {
        None => {
            tracing::warn!(
                namespace = name,
                collection,
                text_field = %field,
                "the collection was created without a text vector: search by text is unavailable \
                 in this namespace (use a new namespace to get it)"
            );
            Ok(false)
        }
        Some(params) if params.modifier == Some(Modifier::Idf as i32) => Ok(true),
        Some(_) => Err(BootstrapError::Incompatible(format!(
            "namespace {name}: the existing Qdrant collection {collection} has a sparse vector \
             {TEXT_VECTOR:?} without the IDF modifier, so BM25 would rank wrongly; use another \
             namespace name"
        ))),
    }
}

fn check_shape(
    name: &str,
    collection: &str,
    ns: &NamespaceConfig,
    info: &CollectionInfo,
) -> Result<(), BootstrapError> {
    let params = info
        .config
        .as_ref()
        .and_then(|c| c.params.as_ref())
        .and_then(|p| p.vectors_config.as_ref());
    let Some(vectors_config::Config::Params(params)) = params.and_then(|v| v.config.as_ref())
    else {
        return Err(BootstrapError::Incompatible(format!(
            "namespace {name}: the existing Qdrant collection {collection} does not have a single unnamed vector"
        )));
    };
    let expected_distance = qdrant_distance(ns.distance) as i32;
    if params.size != u64::from(ns.dim.get()) || params.distance != expected_distance {
        let found = qdrant::Distance::try_from(params.distance)
            .map_or("unknown".to_owned(), |d| format!("{d:?}"));
        return Err(BootstrapError::Incompatible(format!(
            "namespace {name}: the existing Qdrant collection {collection} has dim {} and distance {found}, \
             but the config says dim {} and distance {:?}; use another namespace name or migrate the collection",
            params.size, ns.dim, ns.distance
        )));
    }
    Ok(())
}
