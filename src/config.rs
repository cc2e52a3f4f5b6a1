//! Typed configuration: compiled-in defaults (`config/default.toml`), then an
//! optional file, then `VECMEM__SECTION__KEY` environment variables.
//!
//! Everything is checked before a socket is bound: unknown keys are rejected
//! (`deny_unknown_fields` everywhere) and every error names the dotted key it
//! is about, so a typo in a deployment fails loudly instead of being ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The defaults every deployment starts from.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of the environment variables that override config keys.
const ENV_PREFIX: &str = "VECMEM";
/// Separates the prefix and each nesting level: `VECMEM__SERVER__GRPC_ADDR`.
const ENV_SEPARATOR: &str = "__";

/// Largest vector dimension a namespace may declare (Qdrant's own limit).
const MAX_DIM: u32 = 65_536;

/// A configuration error, always naming the dotted key it is about.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub runtime: RuntimeConfig,
    pub log: LogConfig,
    pub backend: BackendConfig,
    pub limits: Limits,
    pub admission: AdmissionConfig,
    pub pipeline: PipelineConfig,
    pub resilience: ResilienceConfig,
    pub auth: AuthConfig,
    pub namespaces: BTreeMap<String, NamespaceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub shutdown_grace_ms: u64,
    /// How long readiness reports "not ready" before the listeners close.
    pub shutdown_delay_ms: u64,
    pub tls: TlsConfig,
}

/// TLS on both listeners; off while `cert_path` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_path: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate
    /// signed by one of them.
    pub client_ca_path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Tokio worker threads; 0 defers to `TOKIO_WORKER_THREADS` or the core count.
    pub worker_threads: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub embedded: EmbeddedConfig,
    pub qdrant: QdrantConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Embedded,
    Qdrant,
}

/// How vecmem reaches a Qdrant server or cluster (`backend.kind = "qdrant"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdrantConfig {
    /// gRPC endpoints, `http://` or `https://` (TLS with the system roots):
    /// one Qdrant, or peers of one cluster. A string (comma-separated for
    /// several, as environment variables give it) or a list.
    pub url: PeerUrls,
    /// Sent as the `api-key` header; empty for none.
    pub api_key: String,
    pub connect_timeout_ms: u64,
    /// Per-call timeout when the caller set no deadline (or a longer one).
    pub timeout_ms: u64,
    /// HTTP/2 keep-alive ping interval, also on idle connections.
    pub keep_alive_interval_ms: u64,
    /// HTTP/2 connections to Qdrant; calls are spread over them.
    pub pool_size: usize,
    /// Fail start-up when Qdrant does not answer, instead of starting
    /// not-ready and becoming ready when it does.
    pub require_at_start: bool,
    pub write_ordering: WriteOrdering,
    /// `all`, `majority`, `quorum`, or a number of replicas.
    pub read_consistency: String,
    /// Prepended to namespace names to form collection names, so several
    /// deployments can share one Qdrant.
    pub collection_prefix: String,
}

/// The Qdrant URLs of `backend.qdrant.url`, at least one, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct PeerUrls(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for PeerUrls {
    fn from(urls: OneOrMany) -> Self {
        let urls = match urls {
            OneOrMany::One(list) => list.split(',').map(str::to_owned).collect(),
            OneOrMany::Many(urls) => urls,
        };
        PeerUrls(
            urls.iter()
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty())
                .collect(),
        )
    }
}

impl std::fmt::Display for PeerUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// Qdrant's write ordering for upserts, deletes and payload updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOrdering {
    Weak,
    Medium,
    Strong,
}

/// Qdrant's read consistency, parsed from `backend.qdrant.read_consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    All,
    Majority,
    Quorum,
    Replicas(u64),
}

impl QdrantConfig {
    pub fn read_consistency(&self) -> Result<ReadConsistency, ConfigError> {
        let key = "backend.qdrant.read_consistency";
        Ok(match self.read_consistency.as_str() {
            "all" => ReadConsistency::All,
            "majority" => ReadConsistency::Majority,
            "quorum" => ReadConsistency::Quorum,
            other => match other.parse::<u64>() {
                Ok(n) if n > 0 => ReadConsistency::Replicas(n),
                _ => {
                    return Err(ConfigError::new(
                        key,
                        format!("{other:?} is not all, majority, quorum or a positive number"),
                    ));
                }
            },
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    pub path: PathBuf,
    pub optimize_interval_ms: u64,
}

/// Request limits enforced by validation before anything reaches a backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_limit: u32,
    pub default_limit: u32,
    pub max_batch: usize,
    pub max_payload_bytes: usize,
    pub max_filter_depth: usize,
    pub max_filter_conditions: usize,
}

/// Admission control: how much load a replica takes before shedding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Calls of MemoryService and NamespaceService in flight at once; beyond
    /// it calls are shed with RESOURCE_EXHAUSTED, never queued.
    pub max_concurrency: usize,
    /// The retry delay shed callers are given.
    pub retry_after_ms: u64,
    /// Per-tenant reads (searches, gets, scrolls, counts) per second; 0 = unlimited.
    pub tenant_read_rps: u32,
    /// Per-tenant writes (upserts, deletes, payload updates) per second; 0 = unlimited.
    pub tenant_write_rps: u32,
    /// Bucket size of both per-tenant limits; 0 = one second's worth.
    pub tenant_burst: u32,
}

/// API keys and what they may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// No keys: auth is off.
    pub keys: Vec<ApiKeyConfig>,
    /// Require a key for /metrics too (health probes never need one).
    pub protect_metrics: bool,
}

/// One `[[auth.keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Shown in logs instead of the key.
    #[serde(default)]
    pub name: Option<String>,
    /// SHA-256 of the key, 64 hex digits (`printf %s KEY | sha256sum`).
    pub sha256: String,
    /// Tenants the key may act for; `"*"` for all.
    pub tenants: Vec<String>,
    pub access: KeyAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAccess {
    ReadOnly,
    ReadWrite,
}

/// The layers between admission and the backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub batch: BatchConfig,
    pub cache: CacheConfig,
}

/// Coalescing of concurrent calls into batched backend calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    pub enabled: bool,
    /// Most requests in one backend call.
    pub max_batch_size: usize,
    /// Longest wait for more requests after the first; 0 takes only what is
    /// already queued.
    pub max_delay_us: u64,
    /// Requests that may wait per namespace and kind before callers are
    /// pushed back.
    pub queue_capacity: usize,
    /// Batches of searches (and of gets) of one namespace run at once.
    pub concurrent_reads: usize,
}

/// The result cache of searches and gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Size bound, in bytes of cached keys and results.
    pub max_bytes: u64,
    /// How long an entry is served; the staleness bound across replicas.
    pub ttl_ms: u64,
    /// Answer from an expired entry while the backend is unavailable.
    pub serve_stale_on_error: bool,
    /// How old (since stored) an entry served that way may be.
    pub stale_max_age_ms: u64,
}

/// Retries and the circuit breaker in front of the backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Retries of a call that failed with UNAVAILABLE; 0 = none.
    pub max_retries: u32,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Retries allowed on top of first attempts, in percent of them.
    pub retry_budget_percent: u32,
    /// Retries per second always allowed, whatever the percentage.
    pub retry_budget_min_per_sec: u32,
    /// Consecutive failures that open the circuit; 0 = no breaker.
    pub circuit_failure_threshold: u32,
    /// How long the circuit stays open before one call probes the backend.
    pub circuit_open_ms: u64,
}

/// One namespace: a Qdrant collection (or embedded shard) of one dimension.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    pub dim: u32,
    #[serde(default)]
    pub distance: Distance,
    #[serde(default)]
    pub on_disk: bool,
    #[serde(default = "default_hnsw_m")]
    pub hnsw_m: usize,
    #[serde(default = "default_hnsw_ef_construct")]
    pub hnsw_ef_construct: usize,
    #[serde(default = "default_indexing_threshold_kb")]
    pub indexing_threshold_kb: usize,
    #[serde(default)]
    pub quantization: Quantization,
    /// Qdrant only: shards of the collection.
    #[serde(default = "one")]
    pub shard_number: u32,
    /// Qdrant only: copies of each shard.
    #[serde(default = "one")]
    pub replication_factor: u32,
    /// Qdrant only: replicas that must apply a write before it is acknowledged.
    #[serde(default = "one")]
    pub write_consistency_factor: u32,
}

fn one() -> u32 {
    1
}

fn default_hnsw_m() -> usize {
    16
}
fn default_hnsw_ef_construct() -> usize {
    100
}
fn default_indexing_threshold_kb() -> usize {
    10_000
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

impl Config {
    /// Loads defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment, so tests need not
    /// mutate the process's.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(env)),
        );
        let merged = builder
            .build()
            .map_err(|err| ConfigError::new(source_key(&err), err.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|err| {
            let key = err.path().to_string();
            ConfigError::new(key, err.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        if limits.max_limit == 0 {
            return Err(ConfigError::new("limits.max_limit", "must be at least 1"));
        }
        if limits.default_limit == 0 || limits.default_limit > limits.max_limit {
            return Err(ConfigError::new(
                "limits.default_limit",
                format!(
                    "must be between 1 and limits.max_limit ({})",
                    limits.max_limit
                ),
            ));
        }
        for (key, value) in [
            ("limits.max_batch", limits.max_batch),
            ("limits.max_payload_bytes", limits.max_payload_bytes),
            ("limits.max_filter_depth", limits.max_filter_depth),
            ("limits.max_filter_conditions", limits.max_filter_conditions),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        if self.admission.max_concurrency == 0 {
            return Err(ConfigError::new(
                "admission.max_concurrency",
                "must be at least 1",
            ));
        }
        self.validate_pipeline()?;
        self.validate_auth()?;
        let tls = &self.server.tls;
        let (cert, key) = (tls.cert_path.as_os_str(), tls.key_path.as_os_str());
        if cert.is_empty() != key.is_empty() {
            return Err(ConfigError::new(
                "server.tls.key_path",
                "server.tls.cert_path and server.tls.key_path are set together or not at all",
            ));
        }
        if cert.is_empty() && !tls.client_ca_path.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "server.tls.client_ca_path",
                "needs server.tls.cert_path and key_path: client certificates are checked over TLS",
            ));
        }
        if self.namespaces.is_empty() {
            return Err(ConfigError::new(
                "namespaces",
                "at least one namespace is required",
            ));
        }
        for (name, ns) in &self.namespaces {
            let key = |field: &str| format!("namespaces.{name}.{field}");
            if !is_valid_namespace_name(name) {
                return Err(ConfigError::new(
                    format!("namespaces.{name}"),
                    "names are 1-64 characters of a-z, 0-9, '_' and '-'",
                ));
            }
            if ns.dim == 0 || ns.dim > MAX_DIM {
                return Err(ConfigError::new(
                    key("dim"),
                    format!("must be between 1 and {MAX_DIM} (got {})", ns.dim),
                ));
            }
            if ns.hnsw_m == 0 {
                return Err(ConfigError::new(key("hnsw_m"), "must be at least 1"));
            }
            for (field, value) in [
                ("shard_number", ns.shard_number),
                ("replication_factor", ns.replication_factor),
                ("write_consistency_factor", ns.write_consistency_factor),
            ] {
                if value == 0 {
                    return Err(ConfigError::new(key(field), "must be at least 1"));
                }
            }
            if ns.write_consistency_factor > ns.replication_factor {
                return Err(ConfigError::new(
                    key("write_consistency_factor"),
                    "cannot exceed replication_factor",
                ));
            }
            if ns.hnsw_ef_construct < 4 {
                return Err(ConfigError::new(
                    key("hnsw_ef_construct"),
                    "must be at least 4",
                ));
            }
        }
        self.validate_qdrant()?;
        // Port 0 asks the OS for a free port, so two of those never clash.
        if self.server.grpc_addr == self.server.http_addr && self.server.grpc_addr.port() != 0 {
            return Err(ConfigError::new(
                "server.http_addr",
                "must differ from server.grpc_addr",
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_auth(&self) -> Result<(), ConfigError> {
        for (i, key) in self.auth.keys.iter().enumerate() {
            let field = |name: &str| format!("auth.keys[{i}].{name}");
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::new(
                    field("sha256"),
                    "must be the 64 hex digits of the key's SHA-256 (printf %s KEY | sha256sum)",
                ));
            }
            if key.tenants.is_empty() || key.tenants.iter().any(String::is_empty) {
                return Err(ConfigError::new(
                    field("tenants"),
                    "must list at least one tenant (or \"*\" for all), none empty",
                ));
            }
        }
        Ok(())
    }

    fn validate_pipeline(&self) -> Result<(), ConfigError> {
        let batch = &self.pipeline.batch;
        for (key, value) in [
            ("pipeline.batch.max_batch_size", batch.max_batch_size),
            ("pipeline.batch.queue_capacity", batch.queue_capacity),
            ("pipeline.batch.concurrent_reads", batch.concurrent_reads),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        let cache = &self.pipeline.cache;
        if cache.enabled && (cache.ttl_ms == 0 || cache.max_bytes == 0) {
            let key = if cache.ttl_ms == 0 {
                "pipeline.cache.ttl_ms"
            } else {
                "pipeline.cache.max_bytes"
            };
            return Err(ConfigError::new(
                key,
                "must be at least 1 (set pipeline.cache.enabled = false to turn the cache off)",
            ));
        }
        let resilience = &self.resilience;
        if resilience.backoff_max_ms == 0 || resilience.backoff_min_ms > resilience.backoff_max_ms {
            return Err(ConfigError::new(
                "resilience.backoff_max_ms",
                "must be at least 1 and not below resilience.backoff_min_ms",
            ));
        }
        if resilience.retry_budget_min_per_sec > 1_000_000 {
            return Err(ConfigError::new(
                "resilience.retry_budget_min_per_sec",
                "must be at most 1000000",
            ));
        }
        if resilience.retry_budget_percent > 1000 {
            return Err(ConfigError::new(
                "resilience.retry_budget_percent",
                "must be between 0 and 1000",
            ));
        }
        Ok(())
    }

    fn validate_qdrant(&self) -> Result<(), ConfigError> {
        let qdrant = &self.backend.qdrant;
        if qdrant.url.0.is_empty() {
            return Err(ConfigError::new(
                "backend.qdrant.url",
                "names no URL; give one, or the peers of one cluster",
            ));
        }
        for url in &qdrant.url.0 {
            let uri: Result<axum::http::Uri, _> = url.parse();
            let scheme_ok = uri.as_ref().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !scheme_ok {
                return Err(ConfigError::new(
                    "backend.qdrant.url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        for (key, value) in [
            (
                "backend.qdrant.connect_timeout_ms",
                qdrant.connect_timeout_ms,
            ),
            ("backend.qdrant.timeout_ms", qdrant.timeout_ms),
            ("backend.qdrant.pool_size", qdrant.pool_size as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        qdrant.read_consistency().map(drop)
    }
}

/// Namespace names double as directory and Qdrant collection names.
fn is_valid_namespace_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Best-effort key for errors raised while merging sources (before typing).
fn source_key(err: &config::ConfigError) -> String {
    match err {
        config::ConfigError::Type { key: Some(key), .. } => key.clone(),
        config::ConfigError::NotFound(key) => key.clone(),
        config::ConfigError::At { key: Some(key), .. } => key.clone(),
        _ => "config".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(None, env)
    }

    #[test]
    fn defaults_load_and_declare_two_namespaces() {
        let config = load(&[]).expect("defaults are valid");
        assert_eq!(config.server.grpc_addr.port(), 50051);
        assert_eq!(config.server.http_addr.port(), 8090);
        assert_eq!(config.backend.kind, BackendKind::Embedded);
        assert_eq!(config.backend.embedded.path, PathBuf::from("./data"));
        let names: Vec<_> = config.namespaces.keys().cloned().collect();
        assert_eq!(names, ["documents", "memories"]);
        assert_eq!(config.namespaces["memories"].dim, 1024);
        assert_eq!(config.namespaces["memories"].distance, Distance::Cosine);
        assert_eq!(config.limits.max_limit, 100);
        assert_eq!(config.limits.default_limit, 10);
        assert_eq!(config.limits.max_batch, 256);
    }

    #[test]
    fn env_overrides_nested_keys_and_adds_namespaces() {
        let config = load(&[
            ("VECMEM__SERVER__GRPC_ADDR", "127.0.0.1:7000"),
            ("VECMEM__LIMITS__MAX_LIMIT", "500"),
            ("VECMEM__NAMESPACES__NOTES__DIM", "384"),
            ("VECMEM__NAMESPACES__NOTES__DISTANCE", "dot"),
            ("UNRELATED", "x"),
        ])
        .expect("valid overrides");
        assert_eq!(config.server.grpc_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(config.limits.max_limit, 500);
        assert_eq!(config.namespaces["notes"].dim, 384);
        assert_eq!(config.namespaces["notes"].distance, Distance::Dot);
        assert_eq!(config.namespaces["notes"].hnsw_m, 16);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let err = load(&[("VECMEM__SERVER__GRPC_PORT", "1")]).unwrap_err();
        assert!(err.key.starts_with("server"), "{err}");
        assert!(err.message.contains("grpc_port"), "{err}");
    }

    #[test]
    fn invalid_value_names_the_dotted_key() {
        let err = load(&[("VECMEM__SERVER__GRPC_ADDR", "not-an-address")]).unwrap_err();
        assert_eq!(err.key, "server.grpc_addr", "{err}");

        let err = load(&[("VECMEM__NAMESPACES__MEMORIES__DIM", "0")]).unwrap_err();
        assert_eq!(err.key, "namespaces.memories.dim", "{err}");

        let err = load(&[("VECMEM__NAMESPACES__MEMORIES__DISTANCE", "hamming")]).unwrap_err();
        assert_eq!(err.key, "namespaces.memories.distance", "{err}");

        let err = load(&[("VECMEM__LIMITS__DEFAULT_LIMIT", "1000")]).unwrap_err();
        assert_eq!(err.key, "limits.default_limit", "{err}");

        let err = load(&[("VECMEM__BACKEND__KIND", "sqlite")]).unwrap_err();
        assert_eq!(err.key, "backend.kind", "{err}");
    }

    #[test]
    fn a_file_overrides_defaults_and_env_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vecmem.toml");
        std::fs::write(&file, "[limits]\nmax_limit = 50\ndefault_limit = 5\n").expect("write");
        let env = [("VECMEM__LIMITS__MAX_LIMIT".to_owned(), "60".to_owned())];
        let config = Config::load_with_env(Some(&file), env).expect("valid");
        assert_eq!(config.limits.max_limit, 60);
        assert_eq!(config.limits.default_limit, 5);

        let missing = dir.path().join("absent.toml");
        assert!(Config::load_with_env(Some(&missing), []).is_err());
    }

    #[test]
    fn qdrant_url_takes_one_url_a_comma_separated_list_or_an_array() {
        let config = load(&[]).expect("defaults");
        assert_eq!(config.backend.qdrant.url.0, ["http://localhost:6334"]);

        let config = load(&[(
            "VECMEM__BACKEND__QDRANT__URL",
            "http://q0:6334, http://q1:6334,http://q2:6334",
        )])
        .expect("comma-separated peers");
        assert_eq!(
            config.backend.qdrant.url.0,
            ["http://q0:6334", "http://q1:6334", "http://q2:6334"]
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vecmem.toml");
        std::fs::write(
            &file,
            "[backend.qdrant]\nurl = [\"http://q0:6334\", \"https://q1:6334\"]\n",
        )
        .expect("write");
        let config = Config::load_with_env(Some(&file), []).expect("an array of peers");
        assert_eq!(
            config.backend.qdrant.url.0,
            ["http://q0:6334", "https://q1:6334"]
        );

        for bad in ["", "http://q0:6334,q1:6334", " , "] {
            let err = load(&[("VECMEM__BACKEND__QDRANT__URL", bad)]).unwrap_err();
            assert_eq!(err.key, "backend.qdrant.url", "{bad:?}: {err}");
        }
    }
}
