//! The `[backend]` section: which engine stores the vectors, the embedded
//! engine's directory, and how vecmem reaches a Qdrant server or cluster.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, millis, nonzero_millis};

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    pub path: PathBuf,
    /// Pause between background indexing passes when there is nothing to index.
    #[serde(rename = "optimize_interval_ms", deserialize_with = "millis")]
    pub optimize_interval: Duration,
    /// Unindexed points a namespace may hold before its writes slow down
    /// (to 100 points/s at twice this); 0 never slows them.
    pub max_unindexed_points: usize,
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
    #[serde(rename = "connect_timeout_ms", deserialize_with = "nonzero_millis")]
    pub connect_timeout: Duration,
    /// Per-call timeout when the caller set no deadline (or a longer one).
    #[serde(rename = "timeout_ms", deserialize_with = "nonzero_millis")]
    pub timeout: Duration,
    /// HTTP/2 keep-alive ping interval, also on idle connections.
    #[serde(rename = "keep_alive_interval_ms", deserialize_with = "nonzero_millis")]
    pub keep_alive_interval: Duration,
    /// HTTP/2 connections to each peer; calls are spread over them.
    pub pool_size: NonZeroUsize,
    /// Fail start-up when Qdrant does not answer, instead of starting
    /// not-ready and becoming ready when it does.
    pub require_at_start: bool,
    pub write_ordering: WriteOrdering,
    pub read_consistency: QdrantReadConsistency,
    /// Prepended to namespace names to form collection names, so several
    /// deployments can share one Qdrant.
    pub collection_prefix: String,
}

impl QdrantConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.url.0.is_empty() {
            return Err(ConfigError::new(
                "backend.qdrant.url",
                "names no URL; give one, or the peers of one cluster",
            ));
        }
        for url in &self.url.0 {
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
        Ok(())
    }
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

/// How many copies of a shard Qdrant asks for each read
/// (`backend.qdrant.read_consistency`: `all`, `majority`, `quorum`, or a
/// number). Not the proto's `ReadConsistency`, which says whether a read may
/// come from vecmem's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum QdrantReadConsistency {
    All,
    Majority,
    Quorum,
    Replicas(u64),
}

impl TryFrom<String> for QdrantReadConsistency {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        Ok(match value.as_str() {
            "all" => Self::All,
            "majority" => Self::Majority,
            "quorum" => Self::Quorum,
            other => match other.parse::<u64>() {
                Ok(n) if n > 0 => Self::Replicas(n),
                _ => {
                    return Err(format!(
                        "{other:?} is not all, majority, quorum or a positive number"
                    ));
                }
            },
        })
    }
}
