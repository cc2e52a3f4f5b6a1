//! Every RPC vecmem serves, in one table: its name (the proto method, and
//! the `rpc` label of the request metrics), its gRPC service, its REST
//! method and route, and its message types. The REST router mounts the
//! routes from it, the OpenAPI document describes them from it, and the
//! edge's observe layer labels calls with it, so a new RPC is one row here
//! (plus its proto, core method and handlers) and cannot be missing from any
//! of them.

/// Each RPC, for exhaustive matches (the REST router's handler per RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Upsert,
    Search,
    SearchBatch,
    SearchGroups,
    Get,
    Delete,
    Scroll,
    Count,
    UpdatePayload,
    Import,
    Export,
    ListNamespaces,
    DescribeNamespace,
    Snapshot,
}

/// How a REST call is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
}

impl HttpMethod {
    /// Lower case, as OpenAPI names operations.
    pub fn openapi_name(self) -> &'static str {
        match self {
            HttpMethod::Get => "get",
            HttpMethod::Post => "post",
        }
    }
}

/// Which side of an RPC streams. Over REST a stream is NDJSON: one JSON
/// document a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streaming {
    Unary,
    /// The client streams (Import): the REST body is NDJSON.
    Client,
    /// The server streams (Export): the REST response is NDJSON.
    Server,
    /// The server streams a file in chunks (Snapshot): the REST response is
    /// the file itself.
    Archive,
}

/// The REST media type of a streamed request or response body.
pub const NDJSON: &str = "application/x-ndjson";
/// The REST media type of a `Streaming::Archive` response.
pub const ARCHIVE: &str = "application/gzip";

/// One row of the table.
#[derive(Debug)]
pub struct RpcSpec {
    pub rpc: Rpc,
    /// The proto method name: `Search`.
    pub name: &'static str,
    /// The fully qualified gRPC service: `vecmem.v1.MemoryService`.
    pub service: &'static str,
    pub http_method: HttpMethod,
    /// The REST route, with `{namespace}` where the path carries it.
    pub path: &'static str,
    /// The request message carried as the JSON body (without the package);
    /// `None` for GETs, whose request comes from the path.
    pub body: Option<&'static str>,
    /// The response message (without the package).
    pub response: &'static str,
    pub streaming: Streaming,
}

const MEMORY: &str = "vecmem.v1.MemoryService";
const NAMESPACE: &str = "vecmem.v1.NamespaceService";

const fn memory_rpc(
    rpc: Rpc,
    name: &'static str,
    path: &'static str,
    body: &'static str,
    response: &'static str,
) -> RpcSpec {
    RpcSpec {
        rpc,
        name,
        service: MEMORY,
        http_method: HttpMethod::Post,
        path,
        body: Some(body),
        response,
        streaming: Streaming::Unary,
    }
}

/// Every RPC of MemoryService and NamespaceService.
pub const RPCS: &[RpcSpec] = &[
    memory_rpc(
        Rpc::Upsert,
        "Upsert",
        "/v1/namespaces/{namespace}/memories",
        "UpsertRequest",
        "UpsertResponse",
    ),
    memory_rpc(
        Rpc::Search,
        "Search",
        "/v1/namespaces/{namespace}/memories/search",
        "SearchRequest",
        "SearchResponse",
    ),
    memory_rpc(
        Rpc::SearchBatch,
        "SearchBatch",
        "/v1/search_batch",
        "SearchBatchRequest",
        "SearchBatchResponse",
    ),
    memory_rpc(
        Rpc::SearchGroups,
        "SearchGroups",
        "/v1/namespaces/{namespace}/memories/search_groups",
        "SearchGroupsRequest",
        "SearchGroupsResponse",
    ),
    memory_rpc(
        Rpc::Get,
        "Get",
        "/v1/namespaces/{namespace}/memories/get",
        "GetRequest",
        "GetResponse",
    ),
    memory_rpc(
        Rpc::Delete,
        "Delete",
        "/v1/namespaces/{namespace}/memories/delete",
        "DeleteRequest",
        "DeleteResponse",
    ),
    memory_rpc(
        Rpc::Scroll,
        "Scroll",
        "/v1/namespaces/{namespace}/memories/scroll",
        "ScrollRequest",
        "ScrollResponse",
    ),
    memory_rpc(
        Rpc::Count,
        "Count",
        "/v1/namespaces/{namespace}/memories/count",
        "CountRequest",
        "CountResponse",
    ),
    memory_rpc(
        Rpc::UpdatePayload,
        "UpdatePayload",
        "/v1/namespaces/{namespace}/memories/update_payload",
        "UpdatePayloadRequest",
        "UpdatePayloadResponse",
    ),
    // REST: the body is NDJSON, a `Memory` a line; the namespace comes
    // from the path, the tenant and `skip_invalid` from the query.
    RpcSpec {
        streaming: Streaming::Client,
        ..memory_rpc(
            Rpc::Import,
            "Import",
            "/v1/namespaces/{namespace}/memories/import",
            "Memory",
            "ImportResponse",
        )
    },
    // REST: the response is NDJSON, a `Memory` a line, which the Import
    // route takes back as it is.
    RpcSpec {
        streaming: Streaming::Server,
        ..memory_rpc(
            Rpc::Export,
            "Export",
            "/v1/namespaces/{namespace}/memories/export",
            "ExportRequest",
            "Memory",
        )
    },
    RpcSpec {
        rpc: Rpc::ListNamespaces,
        name: "ListNamespaces",
        service: NAMESPACE,
        http_method: HttpMethod::Get,
        path: "/v1/namespaces",
        body: None,
        response: "ListNamespacesResponse",
        streaming: Streaming::Unary,
    },
    RpcSpec {
        rpc: Rpc::DescribeNamespace,
        name: "DescribeNamespace",
        service: NAMESPACE,
        http_method: HttpMethod::Get,
        path: "/v1/namespaces/{namespace}",
        body: None,
        response: "NamespaceInfo",
        streaming: Streaming::Unary,
    },
    // REST: the response is the gzipped tar archive itself (`curl -o`).
    RpcSpec {
        rpc: Rpc::Snapshot,
        name: "Snapshot",
        service: NAMESPACE,
        http_method: HttpMethod::Post,
        path: "/v1/snapshot",
        body: Some("SnapshotRequest"),
        response: "SnapshotChunk",
        streaming: Streaming::Archive,
    },
];

/// The RPC a gRPC call is for, from its path (`/vecmem.v1.MemoryService/Search`).
pub fn by_grpc_path(path: &str) -> Option<&'static RpcSpec> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    RPCS.iter()
        .find(|spec| spec.service == service && spec.name == method)
}

/// The RPC a REST call is for, from the route it matched.
pub fn by_rest_route(route: &str) -> Option<&'static RpcSpec> {
    RPCS.iter().find(|spec| spec.path == route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_named_from_the_table_or_not_at_all() {
        let name = |path| by_grpc_path(path).map(|spec| spec.name);
        assert_eq!(
            name("/vecmem.v1.MemoryService/SearchBatch"),
            Some("SearchBatch")
        );
        assert_eq!(
            name("/vecmem.v1.NamespaceService/DescribeNamespace"),
            Some("DescribeNamespace")
        );
        assert_eq!(name("/vecmem.v1.NamespaceService/Search"), None);
        assert_eq!(name("/vecmem.v1.MemoryService/tenant-42-secret"), None);
        assert_eq!(
            by_rest_route("/v1/namespaces/{namespace}").map(|spec| spec.rpc),
            Some(Rpc::DescribeNamespace)
        );
    }

    #[test]
    fn names_and_routes_are_unique() {
        for (i, a) in RPCS.iter().enumerate() {
            for b in &RPCS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.rpc, b.rpc);
                assert_ne!(a.path, b.path);
            }
        }
    }
}
