//! API keys over gRPC: no key, a wrong key, a key for another tenant and a
//! read-only key writing each get their own code and write nothing; health
//! probes need no key.

mod support;

use serde_json::json;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

use support::data::*;
use support::{Backend, TestServer};
use vecmem::proto;
use vecmem::proto::memory_service_client::MemoryServiceClient;

const WRITER_A: &str = "writer-for-a-secret";
const READER_AB: &str = "reader-for-a-and-b";
const ADMIN: &str = "admin-for-everyone";

fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let hash = vecmem::auth::hash_key;
    let text = format!(
        r#"
[[auth.keys]]
name = "writer-a"
sha256 = "{}"
tenants = ["a"]
access = "read_write"

[[auth.keys]]
sha256 = "{}"
tenants = ["a", "b"]
access = "read_only"

[[auth.keys]]
name = "admin"
sha256 = "{}"
tenants = ["*"]
access = "read_write"
"#,
        hash(WRITER_A),
        hash(READER_AB),
        hash(ADMIN)
    );
    let path = dir.join("auth.toml");
    std::fs::write(&path, text).expect("config file");
    path
}

fn start(dir: &std::path::Path) -> TestServer {
    let config = config_file(dir);
    Backend::embedded().start_server_with(
        &dir.join("data"),
        &[("VECMEM_CONFIG", config.to_str().expect("utf-8 path"))],
    )
}

/// Sends the key the way clients do, in either header.
#[derive(Clone)]
struct Key(Option<(&'static str, String)>);

impl Interceptor for Key {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some((header, value)) = &self.0 {
            let value = MetadataValue::try_from(value.as_str()).expect("ascii key");
            request.metadata_mut().insert(*header, value);
        }
        Ok(request)
    }
}

type Client = MemoryServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Key>,
>;

async fn client(server: &TestServer, key: Option<&str>) -> Client {
    let key = Key(key.map(|k| ("authorization", format!("Bearer {k}"))));
    MemoryServiceClient::with_interceptor(server.channel().await, key)
}

async fn count_of(admin: &mut Client, tenant: &str) -> u64 {
    admin
        .count(count(tenant, None))
        .await
        .expect("admin counts")
        .into_inner()
        .count
}

fn one(tenant: &str, id: &str) -> proto::UpsertRequest {
    upsert(tenant, vec![memory(id, [1.0, 0.0, 0.0, 0.0], json!({}))])
}

#[tokio::test]
async fn keys_are_required_and_bound_to_their_tenants_and_access() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let mut admin = client(&server, Some(ADMIN)).await;

    // No key, a wrong key.
    for key in [None, Some("not-a-key")] {
        let mut anonymous = client(&server, key).await;
        let status = anonymous.upsert(one("a", "x")).await.expect_err("no entry");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let status = anonymous
            .search(search("a", [1.0, 0.0, 0.0, 0.0], 5))
            .await
            .expect_err("no entry");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    // The x-api-key header works as well as the bearer token.
    let mut writer = MemoryServiceClient::with_interceptor(
        server.channel().await,
        Key(Some(("x-api-key", WRITER_A.to_owned()))),
    );
    writer.upsert(one("a", "mine")).await.expect("own tenant");

    // Another tenant: denied for writes, reads, batch items and deletes.
    let status = writer
        .upsert(one("b", "theirs"))
        .await
        .expect_err("other tenant");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = writer
        .get(get("b", &["x"]))
        .await
        .expect_err("other tenant");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let batch = proto::SearchBatchRequest {
        searches: vec![
            search("a", [1.0, 0.0, 0.0, 0.0], 5),
            search("b", [1.0, 0.0, 0.0, 0.0], 5),
        ],
    };
    let status = writer.search_batch(batch).await.expect_err("one item is b");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    admin
        .upsert(one("b", "theirs"))
        .await
        .expect("admin writes b");
    let status = writer
        .delete(proto::DeleteRequest {
            namespace: "memories".into(),
            tenant: "b".into(),
            selector: Some(proto::delete_request::Selector::Filter(must(vec![
                keyword("kind", "any"),
            ]))),
        })
        .await
        .expect_err("other tenant");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A read-only key reads both of its tenants and writes neither.
    let mut reader = client(&server, Some(READER_AB)).await;
    for tenant in ["a", "b"] {
        reader
            .search(search(tenant, [1.0, 0.0, 0.0, 0.0], 5))
            .await
            .expect("read allowed");
        let status = reader
            .upsert(one(tenant, "ro"))
            .await
            .expect_err("read-only");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }

    // Nothing refused was written.
    assert_eq!(count_of(&mut admin, "a").await, 1);
    assert_eq!(count_of(&mut admin, "b").await, 1);
}

#[tokio::test]
async fn health_probes_need_no_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health without a key")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let (code, _) = support::http_get(&format!("http://{}/health/ready", server.http_addr)).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn the_rest_gateway_checks_the_same_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let url = format!("http://{}/v1/namespaces/test/memories", server.http_addr);
    let body =
        || Some(json!({"tenant": "a", "memories": [{"id": "r", "vector": [1.0, 0.0, 0.0, 0.0]}]}));

    let answer = support::http("POST", &url, body(), &[]).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.json()["code"], "UNAUTHENTICATED");

    let bearer = format!("Bearer {READER_AB}");
    let answer = support::http("POST", &url, body(), &[("authorization", &bearer)]).await;
    assert_eq!(answer.status, 403, "read-only: {}", answer.body);
    assert_eq!(answer.json()["code"], "PERMISSION_DENIED");

    let other =
        Some(json!({"tenant": "b", "memories": [{"id": "r", "vector": [1.0, 0.0, 0.0, 0.0]}]}));
    let answer = support::http("POST", &url, other, &[("x-api-key", WRITER_A)]).await;
    assert_eq!(answer.status, 403, "other tenant: {}", answer.body);

    let answer = support::http("POST", &url, body(), &[("x-api-key", WRITER_A)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Metrics stay open unless auth.protect_metrics is set.
    let (status, _) = support::http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(status, 200);
}

/// A snapshot holds every tenant's data: only a key for all of them gets one.
#[tokio::test]
async fn a_snapshot_needs_a_key_for_every_tenant() {
    use vecmem::proto::namespace_service_client::NamespaceServiceClient;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    for (key, code) in [
        (None, Code::Unauthenticated),
        (Some(WRITER_A), Code::PermissionDenied),
        (Some(READER_AB), Code::PermissionDenied),
    ] {
        let key = Key(key.map(|k| ("authorization", format!("Bearer {k}"))));
        let mut namespaces = NamespaceServiceClient::with_interceptor(server.channel().await, key);
        let status = namespaces
            .snapshot(proto::SnapshotRequest {})
            .await
            .expect_err("no snapshot");
        assert_eq!(status.code(), code, "{status:?}");
    }
    let admin = Key(Some(("authorization", format!("Bearer {ADMIN}"))));
    let mut namespaces = NamespaceServiceClient::with_interceptor(server.channel().await, admin);
    let mut chunks = namespaces
        .snapshot(proto::SnapshotRequest {})
        .await
        .expect("the all-tenant key gets a snapshot")
        .into_inner();
    let first = chunks.message().await.expect("a chunk").expect("not empty");
    assert_eq!(&first.data[..2], &[0x1f, 0x8b], "a gzip stream");
    while chunks
        .message()
        .await
        .expect("the archive streams whole")
        .is_some()
    {}
}
