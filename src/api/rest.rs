//! The REST/JSON gateway: every MemoryService and NamespaceService call on
//! the HTTP port, with bodies in the proto3 JSON mapping of the same
//! messages (field names in lowerCamelCase or as in the proto), running the
//! same [`calls`] as gRPC. The routes come from the RPC table
//! ([`crate::api::rpcs`]); `GET /v1/openapi.json` describes them
//! ([`crate::api::openapi`]).
//!
//! The routes are served behind the same edge as gRPC (`api::layers`): the
//! caller arrives authenticated, admitted and bounded by its `grpc-timeout`.
//! The namespace comes from the path; a body may repeat it but not contradict
//! it. Errors are JSON (`code`, `message`, `field_violations`) with the HTTP
//! status of the contract table; gzip request bodies are accepted and
//! responses are compressed when the client asks.

use std::convert::identity;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use bytes::BytesMut;
use futures::StreamExt;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower_http::compression::predicate::{NotForContentType, Predicate};
use tower_http::compression::{CompressionLayer, DefaultPredicate};
use tower_http::decompression::RequestDecompressionLayer;

use crate::api::calls::{self, ImportStream};
use crate::api::grpc::STALE_HEADER;
use crate::api::rpcs::{ARCHIVE, HttpMethod, NDJSON, RPCS, Rpc};
use crate::auth::Caller;
use crate::core::Core;
use crate::error::{Error, Result};
use crate::model::Served;
use crate::proto;

/// The `/v1` routes; bodies above `body_limit` bytes are refused.
pub fn router(core: Arc<Core>, body_limit: usize) -> Router {
    RPCS.iter()
        .fold(Router::new(), |router, spec| {
            let method = match spec.http_method {
                HttpMethod::Get => MethodFilter::GET,
                HttpMethod::Post => MethodFilter::POST,
            };
            router.route(spec.path, handler(spec.rpc, method, body_limit))
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestDecompressionLayer::new())
        // An archive is gzipped already: compressing it again would cost a
        // core for nothing and hand `curl -o` a file gzipped twice.
        .layer(
            CompressionLayer::new()
                .compress_when(DefaultPredicate::new().and(NotForContentType::const_new(ARCHIVE))),
        )
        .with_state(core)
}

/// The handler of `rpc`, for `method`. A body is at most `body_limit`
/// bytes, and so is a line of an NDJSON body.
fn handler(rpc: Rpc, method: MethodFilter, body_limit: usize) -> MethodRouter<Arc<Core>> {
    match rpc {
        Rpc::Upsert => on(method, upsert),
        Rpc::Search => on(method, search),
        Rpc::SearchBatch => on(method, search_batch),
        Rpc::SearchGroups => on(method, search_groups),
        Rpc::Get => on(method, get_memories),
        Rpc::Delete => on(method, delete),
        Rpc::Scroll => on(method, scroll),
        Rpc::Count => on(method, count),
        Rpc::UpdatePayload => on(method, update_payload),
        Rpc::Import => on(method, move |core, caller, namespace, query, body| {
            import(core, caller, namespace, query, body, body_limit)
        }),
        Rpc::Export => on(method, export),
        Rpc::ListNamespaces => on(method, list_namespaces),
        Rpc::DescribeNamespace => on(method, describe_namespace),
        Rpc::Snapshot => on(method, snapshot),
    }
}

/// Decodes the JSON body, runs `call` and encodes its answer.
async fn handle<Req, Resp, F, Fut>(
    core: Arc<Core>,
    caller: Caller,
    body: std::result::Result<Bytes, BytesRejection>,
    call: F,
) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Arc<Core>, Caller, Req) -> Fut,
    Fut: Future<Output = Result<Served<Resp>>>,
{
    let outcome = async {
        let request: Req = decode(body)?;
        call(core, caller, request).await
    }
    .await;
    answer(outcome)
}

fn decode<T: DeserializeOwned>(body: std::result::Result<Bytes, BytesRejection>) -> Result<T> {
    let body = body.map_err(|rejection| Error::invalid("body", rejection.body_text()))?;
    // An empty body is an empty message, as in protobuf.
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    serde_json::from_slice(body).map_err(|err| Error::invalid("body", err.to_string()))
}

/// Fills the body's namespace from the path; a different one is an error.
fn in_namespace(field: &mut String, path: String) -> Result<()> {
    if !field.is_empty() && *field != path {
        return Err(Error::invalid(
            "namespace",
            format!("is {field:?} in the body but {path:?} in the path"),
        ));
    }
    *field = path;
    Ok(())
}

/// Encodes a call's outcome: the answer as JSON (marked when served stale),
/// or the error with its HTTP status.
fn answer<T: Serialize>(outcome: Result<Served<T>>) -> Response {
    let served = match outcome {
        Ok(served) => served,
        Err(error) => return error.into_response(),
    };
    let mut response = axum::Json(served.value).into_response();
    if served.stale {
        response
            .headers_mut()
            .insert(STALE_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// A namespaced route: `$call` answers either a plain response (wrapped by
/// `Served::current`) or an already `Served` one (passed on by `identity`).
/// The body's namespace is its `namespace` field, or where `$namespace`
/// finds it.
macro_rules! route {
    ($name:ident, $request:ty, $call:path, $served:path) => {
        route!($name, $request, $call, $served, |request| &mut request
            .namespace);
    };
    ($name:ident, $request:ty, $call:path, $served:path, |$r:ident| $namespace:expr) => {
        async fn $name(
            State(core): State<Arc<Core>>,
            Extension(caller): Extension<Caller>,
            Path(namespace): Path<String>,
            body: std::result::Result<Bytes, BytesRejection>,
        ) -> Response {
            handle(
                core,
                caller,
                body,
                |core, caller, mut $r: $request| async move {
                    in_namespace($namespace, namespace)?;
                    $call(&core, &caller, $r).await.map($served)
                },
            )
            .await
        }
    };
}

route!(upsert, proto::UpsertRequest, calls::upsert, Served::current);
route!(search, proto::SearchRequest, calls::search, identity);
route!(
    search_groups,
    proto::SearchGroupsRequest,
    calls::search_groups,
    identity,
    |request| &mut request.search.get_or_insert_default().namespace
);
route!(get_memories, proto::GetRequest, calls::get, identity);
route!(delete, proto::DeleteRequest, calls::delete, Served::current);
route!(scroll, proto::ScrollRequest, calls::scroll, Served::current);
route!(count, proto::CountRequest, calls::count, Served::current);
route!(
    update_payload,
    proto::UpdatePayloadRequest,
    calls::update_payload,
    Served::current
);

async fn search_batch(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    handle(
        core,
        caller,
        body,
        |core, caller, request: proto::SearchBatchRequest| async move {
            calls::search_batch(&core, &caller, request).await
        },
    )
    .await
}

/// `GET /v1/openapi.json`, kept apart from the routes it describes so that
/// fetching it is not counted as a call.
pub fn openapi_router() -> Router {
    Router::new().route("/v1/openapi.json", get(openapi))
}

async fn openapi() -> Response {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(crate::api::openapi::document)).into_response()
}

async fn list_namespaces(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let request = proto::ListNamespacesRequest {};
    let outcome = calls::list_namespaces(&core, &caller, request).await;
    answer(outcome.map(Served::current))
}

async fn describe_namespace(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
) -> Response {
    let request = proto::DescribeNamespaceRequest { namespace };
    let outcome = calls::describe_namespace(&core, &caller, request).await;
    answer(outcome.map(Served::current))
}

/// The query of a REST Import.
#[derive(Debug, Deserialize)]
struct ImportQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    skip_invalid: bool,
}

/// `POST …/memories/import?tenant=T[&skip_invalid=true]` with an NDJSON
/// body, a `Memory` a line (blank lines are skipped), read as it arrives.
/// A line that is not a memory counts as an invalid memory at its position.
async fn import(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    query: std::result::Result<Query<ImportQuery>, QueryRejection>,
    body: Body,
    line_limit: usize,
) -> Response {
    let outcome = async {
        let Query(query) =
            query.map_err(|rejection| Error::invalid("query", rejection.body_text()))?;
        let mut import =
            ImportStream::open(&core, &caller, namespace, query.tenant, query.skip_invalid)?;
        let mut lines = NdjsonLines::new(body, line_limit);
        while let Some(line) = lines.next().await? {
            let memory = serde_json::from_slice::<proto::Memory>(&line)
                .map_err(|err| format!("is not a Memory in JSON: {err}"));
            import.memory(memory).await?;
        }
        import.finish().await
    }
    .await;
    answer(outcome.map(Served::current))
}

/// `POST …/memories/export` with an `ExportRequest` body: NDJSON, a
/// `Memory` a line, written as pages are read. An error once lines have
/// been sent cannot change the status any more: the response is then cut
/// off without its end (HTTP clients report an incomplete body; curl exits
/// 18), never ended as if complete.
async fn export(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let pages = async {
        let mut request: proto::ExportRequest = decode(body)?;
        in_namespace(&mut request.namespace, namespace)?;
        calls::export(&core, &caller, request).await
    }
    .await;
    let pages = match pages {
        Ok(pages) => pages,
        Err(error) => return error.into_response(),
    };
    let lines = pages.map(|page| {
        page.and_then(ndjson_page).inspect_err(|error| {
            tracing::warn!(%error, "export failed after its first page; response cut off");
        })
    });
    (
        [(CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
        Body::from_stream(lines),
    )
        .into_response()
}

/// `POST /v1/snapshot`: the gzipped tar archive itself, written as it is made. As
/// with an export, an error once bytes have been sent cuts the response off
/// without its end.
async fn snapshot(
    State(core): State<Arc<Core>>,
    Extension(caller): Extension<Caller>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let chunks = async {
        let request: proto::SnapshotRequest = decode(body)?;
        calls::snapshot(&core, &caller, request).await
    }
    .await;
    let chunks = match chunks {
        Ok(chunks) => chunks,
        Err(error) => return error.into_response(),
    };
    let chunks = chunks.inspect(|chunk| {
        if let Err(error) = chunk {
            tracing::warn!(%error, "snapshot failed while streaming; response cut off");
        }
    });
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(ARCHIVE)),
            (
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"vecmem-snapshot.tar.gz\""),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// A page of an Export as NDJSON lines.
fn ndjson_page(page: proto::ExportResponse) -> Result<Bytes> {
    let mut lines = Vec::new();
    for memory in page.memories {
        serde_json::to_writer(&mut lines, &memory).map_err(Error::internal)?;
        lines.push(b'\n');
    }
    Ok(lines.into())
}

/// The lines of an NDJSON request body, as they arrive.
struct NdjsonLines {
    body: BodyDataStream,
    buffer: BytesMut,
    line_limit: usize,
    ended: bool,
}

impl NdjsonLines {
    fn new(body: Body, line_limit: usize) -> Self {
        Self {
            body: body.into_data_stream(),
            buffer: BytesMut::new(),
            line_limit,
            ended: false,
        }
    }

    /// The next line that is not blank, without its line break; `None`
    /// at the end of the body.
    async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let line = self.buffer.split_to(end + 1).freeze();
                match line.trim_ascii() {
                    [] => continue,
                    _ => return Ok(Some(trimmed(line))),
                }
            }
            if self.buffer.len() > self.line_limit {
                return Err(Error::invalid(
                    "body",
                    format!("has a line of more than {} bytes", self.line_limit),
                ));
            }
            if self.ended {
                let rest = self.buffer.split().freeze();
                return Ok((!rest.trim_ascii().is_empty()).then(|| trimmed(rest)));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(err)) => return Err(Error::invalid("body", err.to_string())),
                None => self.ended = true,
            }
        }
    }
}

/// `line` without the whitespace around it (a line break, a `\r`).
fn trimmed(line: Bytes) -> Bytes {
    let start = line.len() - line.trim_ascii_start().len();
    let end = line.trim_ascii_end().len();
    line.slice(start..end)
}
