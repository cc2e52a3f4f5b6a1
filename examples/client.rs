//! A vecmem client as a backend service writes one: tonic stubs generated
//! from `proto/`, an upsert, a filtered search, and the two errors a caller
//! must handle on purpose. INVALID_ARGUMENT carries a `BadRequest` naming
//! each bad field; RESOURCE_EXHAUSTED and UNAVAILABLE carry a `RetryInfo`
//! saying when to try again.
//!
//! ```sh
//! cargo run --release -- serve &                   # a server on :50051
//! cargo run --example client                       # or VECMEM_ADDR=http://host:port
//! ```
//!
//! It uses the crate's generated types; your service would generate the
//! same ones from `proto/vecmem/v1/*.proto` with tonic-build.

use std::time::Duration;

use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use vecmem::proto;
use vecmem::proto::memory_service_client::MemoryServiceClient;
use vecmem::proto::namespace_service_client::NamespaceServiceClient;

/// Calls refused for load are retried this many times at most.
const MAX_ATTEMPTS: u32 = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("VECMEM_ADDR").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let namespace = std::env::var("VECMEM_NAMESPACE").unwrap_or_else(|_| "memories".into());
    let channel = tonic::transport::Endpoint::from_shared(addr)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut memories = MemoryServiceClient::new(channel.clone());

    // The namespace's dimension decides the vectors' length.
    let dim = NamespaceServiceClient::new(channel)
        .describe_namespace(proto::DescribeNamespaceRequest {
            namespace: namespace.clone(),
        })
        .await?
        .into_inner()
        .dim as usize;
    let vector =
        |hot: usize| -> Vec<f32> { (0..dim).map(|i| if i == hot { 1.0 } else { 0.0 }).collect() };

    let upsert = proto::UpsertRequest {
        namespace: namespace.clone(),
        tenant: "alice".into(),
        memories: vec![
            memory(
                "pref-1",
                vector(0),
                r#"{"kind": "preference", "text": "likes green tea"}"#,
            )?,
            memory(
                "todo-1",
                vector(1),
                r#"{"kind": "todo", "text": "book flights"}"#,
            )?,
        ],
    };
    let ids = with_retries(|| {
        let (mut client, request) = (memories.clone(), upsert.clone());
        async move { client.upsert(Request::new(request)).await }
    })
    .await?
    .into_inner()
    .ids;
    println!("upserted {}", ids.join(", "));

    let search = proto::SearchRequest {
        namespace: namespace.clone(),
        tenant: "alice".into(),
        vector: vector(0),
        limit: 5,
        with_payload: true,
        filter: Some(proto::Filter {
            must: vec![proto::Condition {
                key: "kind".into(),
                test: Some(proto::condition::Test::Equals(proto::MatchValue {
                    value: Some(proto::match_value::Value::Keyword("todo".into())),
                })),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let hits = with_retries(|| {
        let (mut client, request) = (memories.clone(), search.clone());
        async move { client.search(Request::new(request)).await }
    })
    .await?
    .into_inner()
    .hits;
    for hit in &hits {
        if let Some(memory) = &hit.memory {
            println!("found {} (score {:.3})", memory.id, hit.score);
        }
    }

    // A vector of the wrong length: the error names the field.
    let wrong = proto::UpsertRequest {
        namespace,
        tenant: "alice".into(),
        memories: vec![memory("bad-1", vec![1.0, 0.0, 0.0], "{}")?],
    };
    match memories.upsert(wrong).await {
        Err(status) if status.code() == Code::InvalidArgument => {
            for violation in status
                .get_error_details()
                .bad_request()
                .map(|bad| bad.field_violations.clone())
                .unwrap_or_default()
            {
                println!("rejected {}: {}", violation.field, violation.description);
            }
        }
        other => return Err(format!("expected INVALID_ARGUMENT, got {other:?}").into()),
    }
    Ok(())
}

fn memory(id: &str, vector: Vec<f32>, payload: &str) -> Result<proto::Memory, serde_json::Error> {
    let payload: serde_json::Map<String, serde_json::Value> = serde_json::from_str(payload)?;
    Ok(proto::Memory {
        id: id.into(),
        vector,
        payload: Some(proto::Struct::from(payload)),
        ..Default::default()
    })
}

/// Runs `call`, waiting and retrying while the server says to (shed load,
/// backend unavailable), as its `RetryInfo` asks.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status)
                if attempt < MAX_ATTEMPTS
                    && matches!(status.code(), Code::ResourceExhausted | Code::Unavailable) =>
            {
                let delay = status
                    .get_error_details()
                    .retry_info()
                    .and_then(|info| info.retry_delay)
                    .unwrap_or(Duration::from_millis(100));
                eprintln!("{:?}; retrying in {delay:?}", status.code());
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
