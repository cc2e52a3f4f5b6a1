//! gzip-compressed responses under concurrency: a few hundred thousand calls
//! from clients that accept gzip (as grpcio's default channels do), every
//! answer decoded and compared with what was written. A response compressed
//! twice, or cut, or crossed with another call's, fails to decode or
//! compare here.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::join_all;
use serde_json::json;
use tonic::codec::CompressionEncoding;
use vecmem::proto::memory_service_client::MemoryServiceClient;
use vecmem::proto::{self, ReadConsistency};

use support::TestServer;
use support::data::*;

const CONNECTIONS: usize = 8;
const CALLERS_PER_CONNECTION: usize = 4;
const CALLS: usize = 200_000;
const MEMORIES: usize = 16;

/// A payload big enough that gzip is worth it and responses span frames.
fn payload(i: usize) -> serde_json::Value {
    // A float: numbers come back from a Struct as doubles.
    json!({"text": format!("memory {i} ").repeat(40), "i": i as f64})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gzip_answer_of_many_concurrent_calls_decodes_to_what_was_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(
        dir.path(),
        &[("VECMEM__ADMISSION__MAX_CONCURRENCY", "1024")],
    );
    let memories: Vec<proto::Memory> = (0..MEMORIES)
        .map(|i| memory(&format!("m{i}"), [1.0, i as f32, 0.0, 0.0], payload(i)))
        .collect();
    server
        .memory()
        .await
        .upsert(upsert("t", memories))
        .await
        .expect("upsert");

    let done = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = MemoryServiceClient::new(server.channel().await)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        for _ in 0..CALLERS_PER_CONNECTION {
            let (mut client, done) = (client.clone(), done.clone());
            callers.push(async move {
                let mut wrong = Vec::new();
                loop {
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    if n >= CALLS {
                        return wrong;
                    }
                    let i = n % MEMORIES;
                    let id = format!("m{i}");
                    let mut request = get("t", &[&id, "absent"]);
                    if n % 3 == 0 {
                        request.consistency = ReadConsistency::Fresh as i32;
                    }
                    match client.get(request).await {
                        Ok(answer) => {
                            let answer = answer.into_inner();
                            let right = ids_of(&answer.memories) == [id.as_str()]
                                && answer.missing_ids == ["absent"]
                                && answer.memories[0].payload.as_ref().map(from_struct)
                                    == Some(payload(i));
                            if !right {
                                wrong.push(format!("call {n}: {answer:?}"));
                            }
                        }
                        Err(status) => wrong.push(format!("call {n}: {status:?}")),
                    }
                }
            });
        }
    }
    let wrong: Vec<String> = join_all(callers).await.concat();
    assert!(
        wrong.is_empty(),
        "{} of {CALLS} answers wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}
