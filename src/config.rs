//! Typed configuration: compiled-in defaults (`config/default.toml`), then an
//! optional file, then `VECMEM__SECTION__KEY` environment variables.
//!
//! Everything is checked before a socket is bound: unknown keys are rejected
//! (`deny_unknown_fields` everywhere) and every error names the dotted key it
//! is about, so a typo in a deployment fails loudly instead of being ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod auth;
mod backend;
mod expiry;
mod limits;
mod namespace;
mod pipeline;
mod server;

pub use auth::{ApiKeyConfig, AuthConfig, KeyAccess};
pub use backend::{
    BackendConfig, BackendKind, EmbeddedConfig, PeerUrls, QdrantConfig, QdrantReadConsistency,
    WriteOrdering,
};
pub use expiry::ExpiryConfig;
pub use limits::{AdmissionConfig, Limits};
pub use namespace::{Distance, NamespaceConfig, Quantization};
pub use pipeline::{BatchConfig, CacheConfig, PipelineConfig, ResilienceConfig};
pub use server::{LogConfig, LogFormat, RuntimeConfig, ServerConfig, TlsConfig};

/// The defaults every deployment starts from.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of the environment variables that override config keys.
const ENV_PREFIX: &str = "VECMEM";
/// Separates the prefix and each nesting level: `VECMEM__SERVER__GRPC_ADDR`.
const ENV_SEPARATOR: &str = "__";

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
    pub expiry: ExpiryConfig,
    pub auth: AuthConfig,
    pub namespaces: BTreeMap<String, NamespaceConfig>,
}

/// A `..._ms` key as a [`Duration`].
fn millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}

/// A `..._ms` key that must be at least 1, as a [`Duration`].
fn nonzero_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match u64::deserialize(deserializer)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// A `..._us` key as a [`Duration`].
fn micros<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_micros)
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

    /// Checks what types alone cannot express: bounds that relate two
    /// keys, and formats. Each section checks its own.
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.limits.validate()?;
        self.pipeline.cache.validate()?;
        self.resilience.validate()?;
        self.auth.validate()?;
        if self.namespaces.is_empty() {
            return Err(ConfigError::new(
                "namespaces",
                "at least one namespace is required",
            ));
        }
        for (name, namespace) in &self.namespaces {
            namespace.validate(name)?;
        }
        self.backend.qdrant.validate()
    }
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
    use std::path::PathBuf;

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
        assert_eq!(config.namespaces["memories"].dim(), 1024);
        assert_eq!(config.namespaces["memories"].distance, Distance::Cosine);
        assert_eq!(config.limits.max_limit.get(), 100);
        assert_eq!(config.limits.default_limit.get(), 10);
        assert_eq!(config.limits.max_batch.get(), 256);
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
        assert_eq!(config.limits.max_limit.get(), 500);
        assert_eq!(config.namespaces["notes"].dim(), 384);
        assert_eq!(config.namespaces["notes"].distance, Distance::Dot);
        assert_eq!(config.namespaces["notes"].hnsw_m.get(), 16);
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
        assert_eq!(config.limits.max_limit.get(), 60);
        assert_eq!(config.limits.default_limit.get(), 5);

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
