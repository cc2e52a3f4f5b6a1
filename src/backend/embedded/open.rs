//! Opening a namespace's engine shard: loading the one on disk and checking
//! that it has the configured dimension and distance, or creating it with
//! the configured index, quantization and the tenant index.

use std::path::Path;

use qdrant_edge::{
    CreateIndex, Distance as EdgeDistance, EdgeConfigBuilder, EdgeOptimizersConfig, EdgeShard,
    EdgeVectorParamsBuilder, FieldIndexOperations, HnswIndexConfig, KeywordIndexParams,
    PayloadFieldSchema, PayloadSchemaParams, QuantizationConfig, UpdateOperation,
};

use crate::backend::layout::TENANT_FIELD;
use crate::config::{Distance, NamespaceConfig, Quantization};

pub fn open_shard(name: &str, dir: &Path, ns: &NamespaceConfig) -> anyhow::Result<EdgeShard> {
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
        return Ok(engine);
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
