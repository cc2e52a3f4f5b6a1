//! The `[auth]` section: API keys, the tenants each may act for, and
//! whether it may write.

use serde::Deserialize;

use super::ConfigError;

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

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (i, key) in self.keys.iter().enumerate() {
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
}
