//! The floor under a gRPC proxy built on the `h2` crate itself, with no
//! tonic or hyper on either side.
//!
//! `proxy_floor` answers what a stock tokio/tonic proxy costs per call;
//! `tcp_relay` what a hop that parses nothing costs. Between them lies
//! the question of whether vecmem's own gRPC server (h2 driven directly)
//! would bring the CPU per call under issue 12's targets. This device
//! answers it without writing that server: it serves vecmem's `Get` and
//! `Search` over HTTP/2 and makes the same Qdrant calls as `proxy_floor`
//! (same point ids, tenant filter, payload selection and limit), with
//! everything that is not HTTP/2 itself taken out:
//!
//! - one task per client connection, which drives that connection, its own
//!   HTTP/2 connection to Qdrant and every call in flight on them
//!   (`FuturesUnordered`): no task spawned per call, no channel, no hand-off
//!   between tasks, so a call wakes one task per frame that arrives;
//! - the request is decoded and Qdrant's request encoded with prost, and
//!   Qdrant's answer is read whole but not decoded; the answer is
//!   `proxy_floor`'s (every id missing, no hits).
//!
//! With `H2_FLOOR_CALLS=spawned` in its environment each call runs in a
//! task of its own instead, as hyper's server runs them, so the two can be
//! told apart: what HTTP/2 without tonic and hyper saves, and what serving
//! a connection's calls from its own task saves on top.
//!
//! Built and run:
//!
//!     cargo build --profile profiling --example h2_floor
//!     [H2_FLOOR_CALLS=spawned] target/profiling/examples/h2_floor LISTEN QDRANT_URL COLLECTION [WORKERS]
//!
//! A measuring device, not a server to call: no TLS, no timeouts, no
//! limits, no reflection or health, unknown methods are answered
//! UNIMPLEMENTED, and a failed Qdrant call ends its call with INTERNAL.

#[path = "common/qdrant_calls.rs"]
mod qdrant_calls;
#[path = "common/runtime.rs"]
mod runtime;

use anyhow::{Context, anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use h2::RecvStream;
use h2::client::SendRequest;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue, Request, Response};
use prost::Message;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use vecmem::proto::{GetRequest, GetResponse, SearchRequest, SearchResponse};

/// hyper's HTTP/2 client defaults (its server's are 1 MiB each). A get's
/// or a search's messages are far smaller than either, so flow control
/// plays no part in the comparison with `proxy_floor`.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

fn main() -> anyhow::Result<()> {
    let usage = "usage: h2_floor LISTEN QDRANT_URL COLLECTION [WORKERS]";
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(qdrant), Some(collection)) = (args.next(), args.next(), args.next())
    else {
        bail!(usage);
    };
    let qdrant: http::Uri = qdrant.parse()?;
    let authority = qdrant
        .authority()
        .context("QDRANT_URL has no host:port")?
        .to_string();
    let spawn_calls = match std::env::var("H2_FLOOR_CALLS").as_deref() {
        Ok("spawned") => true,
        Ok("inline") | Err(_) => false,
        Ok(other) => bail!("H2_FLOOR_CALLS is inline or spawned, not {other:?}"),
    };
    let upstream = Arc::new(Upstream {
        authority,
        collection,
        spawn_calls,
    });
    runtime::runtime(args.next())?.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Err(err) = serve_connection(client, upstream).await {
                    eprintln!("h2_floor: {err:#}");
                }
            });
        }
    })
}

/// Where calls go: Qdrant's gRPC port and the collection to query; and
/// whether each call runs in a task of its own.
struct Upstream {
    authority: String,
    collection: String,
    spawn_calls: bool,
}

/// Serves one client connection, and every call on it, from this one task
/// (unless calls are spawned).
async fn serve_connection(client: TcpStream, upstream: Arc<Upstream>) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut server = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(client)
        .await?;
    let qdrant_tcp = TcpStream::connect(&upstream.authority).await?;
    qdrant_tcp.set_nodelay(true)?;
    let (qdrant, qdrant_connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .enable_push(false)
        .handshake::<_, Bytes>(qdrant_tcp)
        .await?;
    let mut qdrant_connection = std::pin::pin!(qdrant_connection);
    let mut calls = FuturesUnordered::new();
    loop {
        tokio::select! {
            accepted = server.accept() => match accepted {
                Some(Ok((request, respond))) if upstream.spawn_calls => {
                    let (qdrant, upstream) = (qdrant.clone(), upstream.clone());
                    tokio::spawn(async move { call(request, respond, qdrant, &upstream).await });
                }
                Some(Ok((request, respond))) => {
                    calls.push(call(request, respond, qdrant.clone(), &upstream));
                }
                Some(Err(err)) => return Err(err.into()),
                None => return Ok(()),
            },
            closed = &mut qdrant_connection => {
                return closed.map_err(|err| anyhow!("qdrant connection: {err}"));
            }
            Some(()) = calls.next(), if !calls.is_empty() => {}
        }
    }
}

/// One call: vecmem's request in, Qdrant's call out and back, an answer.
async fn call(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    qdrant: SendRequest<Bytes>,
    upstream: &Upstream,
) {
    let method = request.uri().path().to_owned();
    let (status, message) = match forward(&method, request.into_body(), qdrant, upstream).await {
        Ok(answer) => ("0", Some(answer)),
        Err(Failure::Unimplemented) => ("12", None),
        Err(Failure::Internal(err)) => {
            eprintln!("h2_floor: {method}: {err:#}");
            ("13", None)
        }
    };
    let head = Response::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap_or_default();
    let Ok(mut stream) = respond.send_response(head, false) else {
        return;
    };
    if let Some(message) = message {
        let _ = stream.send_data(message, false);
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    let _ = stream.send_trailers(trailers);
}

enum Failure {
    Unimplemented,
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Internal(err)
    }
}

/// Decodes the call, makes the matching Qdrant call, and returns the
/// answer's message, framed.
async fn forward(
    method: &str,
    body: RecvStream,
    qdrant: SendRequest<Bytes>,
    upstream: &Upstream,
) -> Result<Bytes, Failure> {
    match method {
        "/vecmem.v1.MemoryService/Get" => {
            let request =
                GetRequest::decode(read_message(body).await?).map_err(anyhow::Error::from)?;
            let points = qdrant_calls::get_points(&upstream.collection, &request);
            unary(qdrant, upstream, "/qdrant.Points/Get", &points).await?;
            Ok(frame(&GetResponse {
                memories: Vec::new(),
                missing_ids: request.ids,
            }))
        }
        "/vecmem.v1.MemoryService/Search" => {
            let request =
                SearchRequest::decode(read_message(body).await?).map_err(anyhow::Error::from)?;
            let query = qdrant_calls::query_points(&upstream.collection, request);
            unary(qdrant, upstream, "/qdrant.Points/Query", &query).await?;
            Ok(frame(&SearchResponse { hits: Vec::new() }))
        }
        _ => Err(Failure::Unimplemented),
    }
}

/// A unary call to Qdrant from this task: the headers and the framed
/// message are queued together, and the answer and its trailers read here.
async fn unary(
    mut qdrant: SendRequest<Bytes>,
    upstream: &Upstream,
    path: &str,
    message: &impl Message,
) -> anyhow::Result<()> {
    let request = Request::post(format!("http://{}{path}", upstream.authority))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    std::future::poll_fn(|cx| qdrant.poll_ready(cx)).await?;
    let (answer, mut stream) = qdrant.send_request(request, false)?;
    stream.send_data(frame(message), true)?;
    let (head, mut body) = answer.await?.into_parts();
    read_data(&mut body).await?;
    // A failed call may be answered with headers alone ("trailers-only").
    let trailers = std::future::poll_fn(|cx| body.poll_trailers(cx))
        .await?
        .unwrap_or(head.headers);
    match trailers.get("grpc-status").map(HeaderValue::as_bytes) {
        Some(b"0") => Ok(()),
        status => Err(anyhow!("qdrant answered grpc-status {status:?}")),
    }
}

/// The message of a request's body, without its 5-byte gRPC frame header.
async fn read_message(mut body: RecvStream) -> anyhow::Result<Bytes> {
    let data = read_data(&mut body).await?;
    if data.len() < 5 {
        bail!("a gRPC message of {} bytes", data.len());
    }
    Ok(data.slice(5..))
}

/// A body's data, whole, each chunk handed back to flow control as read.
async fn read_data(body: &mut RecvStream) -> anyhow::Result<Bytes> {
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    Ok(data.freeze())
}

/// `message` with gRPC's frame header: not compressed, then its length.
fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + len);
    framed.put_u8(0);
    framed.put_u32(len as u32);
    message.encode_raw(&mut framed);
    framed.freeze()
}
