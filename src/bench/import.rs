//! `vecmem bench --op import`: `-n` memories loaded through Import streams,
//! one per worker (`-c`), in messages of `--batch` memories, generated as
//! they are sent. Each stream is one "call" of the report, whose
//! `memories_per_s` is the figure to set beside unary `--op upsert` runs
//! of the same batch size.

use futures::stream;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::report::{Errors, new_histogram};
use super::workload::{Shape, memory, random_vector};
use crate::proto;
use crate::proto::memory_service_client::MemoryServiceClient;

/// Runs the streams at once; their latencies (one per stream), errors and
/// how many memories were written.
pub async fn run(
    channels: &[Channel],
    shape: &Shape,
    total: u64,
    streams: usize,
    seed: u64,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, Errors, u64)> {
    let mut workers = Vec::with_capacity(streams);
    for worker in 0..streams {
        let share = total / streams as u64 + u64::from((worker as u64) < total % streams as u64);
        let client = MemoryServiceClient::new(channels[worker % channels.len()].clone())
            .max_encoding_message_size(usize::MAX);
        let shape = shape.clone();
        workers.push(tokio::spawn(stream_one(client, shape, share, worker, seed)));
    }
    let mut latencies = new_histogram();
    let mut errors = Errors::default();
    let mut written = 0;
    for worker in workers {
        match worker.await? {
            (Ok(answer), micros) => {
                latencies.saturating_record(micros.max(1));
                written += answer.imported_count;
            }
            (Err(status), micros) => {
                errors.record(crate::error::code_name(status.code()), &status, micros);
            }
        }
    }
    Ok((latencies, errors, written))
}

/// One Import stream of `count` memories into the worker's tenant; its
/// answer and how long it took, in microseconds.
async fn stream_one(
    mut client: MemoryServiceClient<Channel>,
    shape: Shape,
    count: u64,
    worker: usize,
    seed: u64,
) -> (Result<proto::ImportResponse, tonic::Status>, u64) {
    let batch = shape.batch.max(1) as u64;
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(worker as u64));
    let tenant = shape.tenant(worker);
    let messages = stream::iter((0..count.div_ceil(batch)).map(move |k| {
        let first = k * batch;
        let memories = (first..count.min(first + batch))
            .map(|n| {
                let vector = random_vector(&mut rng, shape.dim);
                memory(&shape, format!("import-{worker}-{n}"), vector, n)
            })
            .collect();
        proto::ImportRequest {
            namespace: if k == 0 {
                shape.namespace.clone()
            } else {
                String::new()
            },
            tenant: if k == 0 {
                tenant.clone()
            } else {
                String::new()
            },
            memories,
            skip_invalid: false,
        }
    }));
    let started = Instant::now();
    let answer = client
        .import(messages)
        .await
        .map(tonic::Response::into_inner);
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    (answer, micros)
}
