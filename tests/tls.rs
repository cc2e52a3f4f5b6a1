//! TLS: with a certificate configured, a client that trusts its CA gets
//! through on both ports; a plaintext client does not. With a client CA
//! configured, a client without a certificate is refused.

mod support;

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use support::data::count;
use support::{Backend, TestServer};
use vecmem::proto::memory_service_client::MemoryServiceClient;

/// A CA, and a server certificate for localhost/127.0.0.1 it signed.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let issue = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    let (cert_pem, key_pem) = issue(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert_pem, client_key_pem) = issue(vec!["client.example".into()]);
    Pki {
        ca_pem: ca.pem(),
        cert_pem,
        key_pem,
        client_cert_pem,
        client_key_pem,
    }
}

fn start(dir: &Path, pki: &Pki, require_client_certs: bool) -> TestServer {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("pem file");
        path.to_str().expect("utf-8").to_owned()
    };
    let cert = write("server.pem", &pki.cert_pem);
    let key = write("server.key", &pki.key_pem);
    let ca = write("ca.pem", &pki.ca_pem);
    let mut env = vec![
        ("VECMEM__SERVER__TLS__CERT_PATH", cert.as_str()),
        ("VECMEM__SERVER__TLS__KEY_PATH", key.as_str()),
    ];
    if require_client_certs {
        env.push(("VECMEM__SERVER__TLS__CLIENT_CA_PATH", ca.as_str()));
    }
    Backend::embedded().start_server_with(&dir.join("data"), &env)
}

async fn tls_channel(
    server: &TestServer,
    pki: &Pki,
    identity: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if identity {
        tls = tls.identity(Identity::from_pem(
            &pki.client_cert_pem,
            &pki.client_key_pem,
        ));
    }
    Endpoint::from_shared(format!("https://{}", server.grpc_addr))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

async fn count_works(channel: Channel) -> Result<u64, tonic::Status> {
    let response = MemoryServiceClient::new(channel)
        .count(count("t", None))
        .await?;
    Ok(response.into_inner().count)
}

#[tokio::test]
async fn a_client_trusting_the_ca_gets_through_and_plaintext_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let server = start(dir.path(), &pki, false);

    let channel = tls_channel(&server, &pki, false)
        .await
        .expect("TLS connect");
    assert_eq!(count_works(channel).await.expect("count over TLS"), 0);

    let plaintext = Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .expect("uri")
        .connect()
        .await;
    let failed = match plaintext {
        Err(_) => true,
        Ok(channel) => count_works(channel).await.is_err(),
    };
    assert!(failed, "a plaintext gRPC client got an answer");

    // The HTTP port speaks only TLS too.
    let plain = hyper_get_fails(&format!("http://{}/health/live", server.http_addr)).await;
    assert!(plain, "plaintext HTTP got an answer");
}

/// Docker's HEALTHCHECK (`vecmem health`) works with TLS on: it reads the
/// same config and trusts exactly the server's certificate.
#[tokio::test]
async fn the_health_probe_speaks_tls_when_the_server_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let server = start(dir.path(), &pki, false);
    let http_addr = server.http_addr.to_string();
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    let probe = health_probe(&http_addr, path("server.pem"), path("server.key")).await;
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // A certificate other than the server's is not trusted.
    let (cert, key) = pki_other_cert(dir.path());
    let probe = health_probe(&http_addr, cert, key).await;
    assert!(
        !probe.status.success(),
        "trusted a certificate it was not given"
    );
}

/// `vecmem health` with TLS configured from these files.
async fn health_probe(http_addr: &str, cert: String, key: String) -> std::process::Output {
    let http_addr = http_addr.to_owned();
    tokio::task::spawn_blocking(move || {
        support::run_vecmem(
            &["health"],
            &[
                ("VECMEM__SERVER__HTTP_ADDR", http_addr.as_str()),
                ("VECMEM__SERVER__TLS__CERT_PATH", cert.as_str()),
                ("VECMEM__SERVER__TLS__KEY_PATH", key.as_str()),
            ],
        )
    })
    .await
    .expect("probe")
}

/// Another CA's certificate and key, written beside the server's.
fn pki_other_cert(dir: &Path) -> (String, String) {
    let other = pki();
    let cert = dir.join("other.pem");
    let key = dir.join("other.key");
    std::fs::write(&cert, &other.cert_pem).expect("write");
    std::fs::write(&key, &other.key_pem).expect("write");
    (
        cert.to_str().expect("utf-8").to_owned(),
        key.to_str().expect("utf-8").to_owned(),
    )
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_certificate_get_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let server = start(dir.path(), &pki, true);

    let with = tls_channel(&server, &pki, true).await.expect("mutual TLS");
    assert_eq!(
        count_works(with).await.expect("count with a client cert"),
        0
    );

    let without = match tls_channel(&server, &pki, false).await {
        Err(_) => true,
        Ok(channel) => count_works(channel).await.is_err(),
    };
    assert!(without, "a client without a certificate got an answer");
}

async fn hyper_get_fails(url: &str) -> bool {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<axum::body::Bytes>>();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.get(url.parse().expect("url")),
    )
    .await;
    !matches!(answer, Ok(Ok(_)))
}

/// The drain over TLS: connections the server took before SIGTERM but
/// whose TLS handshake ends only after the listener closed are served, and
/// their first call answered or refused by GOAWAY. Dropping them instead
/// would cut calls: a TLS 1.3 client sends its first call right behind its
/// last handshake message, before the server has read that message. Each
/// raw connection is opened before a normal call that is answered: the
/// listener takes connections in order, so by then it holds every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_still_handshaking_at_the_drain_has_its_first_call_answered() {
    use std::sync::Arc;

    use serde_json::json;
    use support::data::{get, memory, upsert};
    use tokio::net::TcpStream;

    const CONNECTIONS: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let server = start(dir.path(), &pki, false);
    let mut raw = Vec::new();
    for _ in 0..CONNECTIONS {
        raw.push(TcpStream::connect(server.grpc_addr).await.expect("connect"));
    }
    let channel = tls_channel(&server, &pki, false)
        .await
        .expect("TLS connect");
    let mut client = MemoryServiceClient::new(channel);
    client.get(get("t", &["none"])).await.expect("served");

    let exit = server.begin_drain().await;

    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&pki)));
    let mut answered = 0;
    for (n, tcp) in raw.into_iter().enumerate() {
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector
            .connect(name, tcp)
            .await
            .expect("the TLS handshake of a connection taken before the drain");
        let mut late = MemoryServiceClient::new(support::channel_over(tls));
        let request = upsert("t", vec![memory(&format!("late-{n}"), [1.0; 4], json!({}))]);
        match late.upsert(request).await {
            Ok(_) => answered += 1,
            Err(status) => assert!(
                support::never_taken(&status),
                "call {n} was cut: {status:?}"
            ),
        }
    }
    println!("{answered} of {CONNECTIONS} late calls answered");
    let exit = exit.await.expect("terminate");
    assert!(exit.success(), "exit status {exit:?}");
}

/// A rustls client config that trusts the test CA and speaks HTTP/2.
fn client_config(pki: &Pki) -> rustls::ClientConfig {
    use std::sync::Arc;

    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA pem");
    roots.add(ca).expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}
