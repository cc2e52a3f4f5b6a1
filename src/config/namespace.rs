//! The `[namespaces.NAME]` tables: each namespace is a Qdrant collection
//! (or an embedded shard) of one dimension and distance, with its index and
//! cluster settings, its text field and the default lifetime of its memories.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::ConfigError;

/// Largest vector dimension a namespace may declare (Qdrant's own limit).
const MAX_DIM: u32 = 65_536;

/// One namespace: a Qdrant collection (or embedded shard) of one dimension.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    pub dim: NonZeroU32,
    #[serde(default)]
    pub distance: Distance,
    #[serde(default)]
    pub on_disk: bool,
    #[serde(default = "default_hnsw_m")]
    pub hnsw_m: NonZeroUsize,
    #[serde(default = "default_hnsw_ef_construct")]
    pub hnsw_ef_construct: usize,
    #[serde(default = "default_indexing_threshold_kb")]
    pub indexing_threshold_kb: usize,
    #[serde(default)]
    pub quantization: Quantization,
    /// Qdrant only: shards of the collection.
    #[serde(default = "one")]
    pub shard_number: NonZeroU32,
    /// Qdrant only: copies of each shard.
    #[serde(default = "one")]
    pub replication_factor: NonZeroU32,
    /// Qdrant only: replicas that must apply a write before it is acknowledged.
    #[serde(default = "one")]
    pub write_consistency_factor: NonZeroU32,
    /// The top-level payload key whose string is indexed for search by text
    /// (BM25, as a sparse vector beside the dense one); none by default.
    #[serde(default)]
    pub text_field: Option<String>,
    /// How long a memory written without its own expiry lives; `None`
    /// (`default_ttl_secs = 0`, the default): such memories never expire.
    #[serde(default, rename = "default_ttl_secs", deserialize_with = "ttl_secs")]
    pub default_ttl: Option<Duration>,
}

impl NamespaceConfig {
    /// The vector dimension, as the length vectors are checked against.
    pub fn dim(&self) -> usize {
        self.dim.get() as usize
    }

    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("namespaces.{name}.{field}");
        if !is_valid_namespace_name(name) {
            return Err(ConfigError::new(
                format!("namespaces.{name}"),
                "names are 1-64 characters of a-z, 0-9, '_' and '-'",
            ));
        }
        if self.dim.get() > MAX_DIM {
            return Err(ConfigError::new(
                key("dim"),
                format!("must be between 1 and {MAX_DIM} (got {})", self.dim),
            ));
        }
        if self.write_consistency_factor > self.replication_factor {
            return Err(ConfigError::new(
                key("write_consistency_factor"),
                "cannot exceed replication_factor",
            ));
        }
        if let Some(field) = &self.text_field
            && !is_valid_text_field(field)
        {
            return Err(ConfigError::new(
                key("text_field"),
                "must be a top-level payload key: 1-64 characters of letters, digits, '_' and '-'",
            ));
        }
        if self
            .default_ttl
            .is_some_and(|ttl| ttl.as_secs() > MAX_DEFAULT_TTL_SECS)
        {
            return Err(ConfigError::new(
                key("default_ttl_secs"),
                format!("must be at most {MAX_DEFAULT_TTL_SECS} (100 years); 0 for never"),
            ));
        }
        if self.hnsw_ef_construct < 4 {
            return Err(ConfigError::new(
                key("hnsw_ef_construct"),
                "must be at least 4",
            ));
        }
        Ok(())
    }
}

/// Longest default TTL: any expiry it sets stays a valid timestamp.
const MAX_DEFAULT_TTL_SECS: u64 = 100 * 365 * 24 * 3600;

/// `default_ttl_secs`: 0 means memories never expire.
fn ttl_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let secs = u64::deserialize(deserializer)?;
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

fn one() -> NonZeroU32 {
    NonZeroU32::MIN
}

fn default_hnsw_m() -> NonZeroUsize {
    const { NonZeroUsize::new(16).expect("16 is not zero") }
}
fn default_hnsw_ef_construct() -> usize {
    100
}
fn default_indexing_threshold_kb() -> usize {
    10_000
}

/// Namespace names double as directory and Qdrant collection names.
fn is_valid_namespace_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A text field is one top-level payload key, so an update can tell
/// whether it changes the text without reading the stored payload.
fn is_valid_text_field(field: &str) -> bool {
    (1..=64).contains(&field.len())
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    #[default]
    Cosine,
    Dot,
    Euclid,
    Manhattan,
}

/// Vector quantization; `scalar` keeps an int8 copy of every vector in RAM
/// for a 4x smaller search working set, rescoring with the originals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    #[default]
    None,
    Scalar,
}
