//! TLS for both listeners (rustls with the ring provider), optional client
//! certificate verification, and the listener that serves it.
//!
//! [`TlsListener`] plugs into `axum::serve` like a TCP listener. TLS
//! handshakes run in their own tasks, bounded by a timeout, so one slow or
//! silent client never holds up the accept loop; failed handshakes are
//! logged at debug and dropped. [`TlsListener::drain`] hands out at shutdown
//! the connections it has taken but not handed out yet. ALPN offers `h2`
//! and `http/1.1`, so gRPC and REST clients both negotiate what they speak.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;

/// A handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Completed handshakes waiting for `accept`.
const READY_CONNECTIONS: usize = 64;

/// The server's TLS set-up, or `None` when `server.tls` is not configured.
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    if config.cert_path.as_os_str().is_empty() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(&config.cert_path, "server.tls.cert_path")?;
    let key = PrivateKeyDer::from_pem_file(&config.key_path)
        .with_context(|| format!("server.tls.key_path: {}", config.key_path.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if config.client_ca_path.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for cert in load_certs(&config.client_ca_path, "server.tls.client_ca_path")? {
            roots
                .add(cert)
                .context("server.tls.client_ca_path: not a usable CA certificate")?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .context("server.tls.client_ca_path")?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .context("server.tls: the certificate and key do not form a usable pair")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

fn load_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{key}: {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{key}: {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{key}: no certificate in {}",
        path.display()
    );
    Ok(certs)
}

/// Accepts TCP connections and hands out those that completed a handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_CONNECTIONS);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::debug!(error = %err, "accept failed");
                        // Out of file descriptors and the like: back off.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local_addr,
            accepting,
        })
    }

    /// Stops taking TCP connections (those in the kernel's backlog are
    /// reset: they sent nothing we read), then hands out, one per call, the
    /// connections already taken: those that had finished their handshake
    /// and those that finish it now, within its timeout. `None` once there
    /// are no more. A TLS 1.3 client sends its first call right behind its
    /// last handshake message, so a connection taken is served, not dropped.
    pub async fn drain(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.accepting.abort();
        self.ready.recv().await
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// A client config that trusts exactly the certificate in `cert_path` (the
/// server's own leaf), whatever name or issuer it has. For `vecmem health`
/// probing its own server: the probe runs beside the server and reads the
/// same file, so pinning is both sufficient and strict.
pub fn pinned_client_config(cert_path: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let leaf = load_certs(cert_path, "server.tls.cert_path")?
        .into_iter()
        .next()
        .context("server.tls.cert_path: no certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned {
        leaf,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the certificate in server.tls.cert_path".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
