//! Opening a namespace's engine shard: loading the one on disk and checking
//! that it has the configured dimension and distance, or creating it with
//! the configured index, quantization, the tenant and expiry indexes and, for a
//! namespace with a `text_field`, the text vector (BM25 with IDF). A shard
//! created before its namespace declared a text field has no text vector
//! and serves without search by text.

use std::path::Path;

use qdrant_edge::{
    CreateIndex, DEFAULT_VECTOR_NAME, Distance as EdgeDistance, EdgeConfigBuilder,
    EdgeOptimizersConfig, EdgeShard, EdgeSparseVectorParams, EdgeSparseVectorParamsBuilder,
    EdgeVectorParamsBuilder, FieldIndexOperations, HnswIndexConfig, IntegerIndexParams, JsonPath,
    KeywordIndexParams, Modifier, PayloadFieldSchema, PayloadSchemaParams, QuantizationConfig,
    UpdateOperation,
};

use crate::backend::layout::{EXPIRES_AT_FIELD, TENANT_FIELD};
use crate::backend::text::TEXT_VECTOR;
use crate::config::{Distance, NamespaceConfig, Quantization};

/// The namespace's shard, and whether it holds text vectors.
pub fn open_shard(
    name: &str,
    dir: &Path,
    ns: &NamespaceConfig,
) -> anyhow::Result<(EdgeShard, bool)> {
    let expected_distance = edge_distance(ns.distance);
    if dir.join("edge_config.json").exists() {
        let engine = EdgeShard::load(dir, None).map_err(|err| {
            anyhow::anyhow!("namespace {name}: cannot load {}: {err}", dir.display())
        })?;
        let (found_dim, found_distance, has_text) = {
            let config = engine.config();
            let has_text = has_text_vector(name, dir, ns, config.sparse_vectors.get(TEXT_VECTOR))?;
            let params = config.vectors.get(DEFAULT_VECTOR_NAME).ok_or_else(|| {
                anyhow::anyhow!(
                    "namespace {name}: data in {} has no default vector",
                    dir.display()
                )
            })?;
            (params.size, params.distance, has_text)
        };
        if found_dim != ns.dim() || found_distance != expected_distance {
            anyhow::bail!(
                "namespace {name}: existing data in {} has dim {found_dim} and distance \
                 {found_distance:?}, but the config says dim {} and distance {:?}; \
                 point the namespace at another path or remove the old data",
                dir.display(),
                ns.dim,
                ns.distance
            );
        }
        ensure_expiry_index(&engine)?;
        return Ok((engine, has_text));
    }
    std::fs::create_dir_all(dir)?;
    let mut vector = EdgeVectorParamsBuilder::new(ns.dim(), expected_distance).on_disk(ns.on_disk);
    if ns.quantization == Quantization::Scalar {
        // qdrant-edge does not export the wrapper type, so build the config
        // from Qdrant's documented JSON form.
        let scalar = serde_json::json!({"scalar": {"type": "int8", "always_ram": true}});
        vector = vector.quantization_config(serde_json::from_value::<QuantizationConfig>(scalar)?);
    }
    let hnsw = HnswIndexConfig {
        m: ns.hnsw_m.get(),
        ef_construct: ns.hnsw_ef_construct,
        ..HnswIndexConfig::default()
    };
    let optimizers = EdgeOptimizersConfig {
        indexing_threshold: Some(ns.indexing_threshold_kb),
        ..EdgeOptimizersConfig::default()
    };
    let mut config = EdgeConfigBuilder::new()
        .vector(DEFAULT_VECTOR_NAME, vector.build())
        .hnsw_config(hnsw)
        .optimizers(optimizers);
    if ns.text_field.is_some() {
        let text = EdgeSparseVectorParamsBuilder::new()
            .modifier(Modifier::Idf)
            .build();
        config = config.sparse_vector(TEXT_VECTOR, text);
    }
    let config = config.build();
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
    ensure_expiry_index(&engine)?;
    engine.flush();
    tracing::info!(namespace = name, path = %dir.display(), dim = ns.dim, "namespace created");
    Ok((engine, ns.text_field.is_some()))
}

/// Gives the shard the range index on `expires_at_us` that every read's
/// "not expired" condition and the sweeper use, if it lacks one (a shard
/// made before memories could expire).
fn ensure_expiry_index(engine: &EdgeShard) -> anyhow::Result<()> {
    let field: JsonPath = EXPIRES_AT_FIELD
        .parse()
        .map_err(|_| anyhow::anyhow!("expiry field path"))?;
    if engine.info().payload_schema.contains_key(&field) {
        return Ok(());
    }
    let index = PayloadFieldSchema::FieldParams(PayloadSchemaParams::Integer(IntegerIndexParams {
        r#type: Default::default(),
        lookup: Some(false),
        range: Some(true),
        is_principal: None,
        on_disk: None,
        // Only ever filtered by range, never matched: no extra graph links.
        enable_hnsw: Some(false),
    }));
    engine.update(UpdateOperation::FieldIndexOperation(
        FieldIndexOperations::CreateIndex(CreateIndex {
            field_name: field,
            field_schema: Some(index),
        }),
    ))?;
    engine.flush();
    Ok(())
}

/// Whether a loaded shard holds text vectors: for a namespace with a text
/// field, if it has them with IDF. Without them it serves, and says so.
fn has_text_vector(
    name: &str,
    dir: &Path,
    ns: &NamespaceConfig,
    text: Option<&EdgeSparseVectorParams>,
) -> anyhow::Result<bool> {
    let Some(field) = &ns.text_field else {
        return Ok(false);
    };
    match text {
        None => {
            tracing::warn!(
                namespace = name,
                path = %dir.display(),
                text_field = %field,
                "the data was created without a text vector: search by text is unavailable in \
                 this namespace (point it at a new path to get it)"
            );
            Ok(false)
        }
        Some(params) if params.modifier == Some(Modifier::Idf) => Ok(true),
        Some(_) => anyhow::bail!(
            "namespace {name}: the data in {} has a sparse vector {TEXT_VECTOR:?} without the \
             IDF modifier, so BM25 would rank wrongly; point the namespace at another path",
            dir.display()
        ),
    }
}

fn edge_distance(distance: Distance) -> EdgeDistance {
    match distance {
        Distance::Cosine => EdgeDistance::Cosine,
        Distance::Dot => EdgeDistance::Dot,
        Distance::Euclid => EdgeDistance::Euclid,
        Distance::Manhattan => EdgeDistance::Manhattan,
    }
}
