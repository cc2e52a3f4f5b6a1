//! The `[server]`, `[runtime]` and `[log]` sections: where vecmem listens,
//! how it shuts down, and how it runs and logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, millis};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// How long a graceful shutdown waits for in-flight calls.
    #[serde(rename = "shutdown_grace_ms", deserialize_with = "millis")]
    pub shutdown_grace: Duration,
    /// How long readiness reports "not ready" before the listeners close.
    #[serde(rename = "shutdown_delay_ms", deserialize_with = "millis")]
    pub shutdown_delay: Duration,
    pub tls: TlsConfig,
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.tls.validate()?;
        // Port 0 asks the OS for a free port, so two of those never clash.
        if self.grpc_addr == self.http_addr && self.grpc_addr.port() != 0 {
            return Err(ConfigError::new(
                "server.http_addr",
                "must differ from server.grpc_addr",
            ));
        }
        Ok(())
    }
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

impl TlsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let (cert, key) = (self.cert_path.as_os_str(), self.key_path.as_os_str());
        if cert.is_empty() != key.is_empty() {
            return Err(ConfigError::new(
                "server.tls.key_path",
                "server.tls.cert_path and server.tls.key_path are set together or not at all",
            ));
        }
        if cert.is_empty() && !self.client_ca_path.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "server.tls.client_ca_path",
                "needs server.tls.cert_path and key_path: client certificates are checked over TLS",
            ));
        }
        Ok(())
    }
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
