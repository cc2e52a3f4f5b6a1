//! Each RPC as one function from its protobuf request to its protobuf
//! response, over the core: the part both transports share. gRPC hands the
//! decoded message in and the message out; the REST gateway does the same
//! with the message's proto3 JSON form. So an RPC behaves identically on both
//! transports by construction.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::api::convert::{
    memory_from_proto, search_batch_from_proto, search_groups_response, search_response,
};
use crate::auth::Caller;
use crate::core::{Core, Importer};
use crate::error::{Error, Result};
use crate::model::{self, Served, Violations};
use crate::proto;

pub async fn upsert(
    core: &Core,
    caller: &Caller,
    request: proto::UpsertRequest,
) -> Result<proto::UpsertResponse> {
    let ids = core.upsert(caller, request.try_into()?).await?;
    Ok(proto::UpsertResponse { ids })
}

pub async fn search(
    core: &Core,
    caller: &Caller,
    request: proto::SearchRequest,
) -> Result<Served<proto::SearchResponse>> {
    let served = core.search(caller, request.try_into()?).await?;
    Ok(served.map(search_response))
}

pub async fn search_batch(
    core: &Core,
    caller: &Caller,
    request: proto::SearchBatchRequest,
) -> Result<Served<proto::SearchBatchResponse>> {
    let served = core
        .search_batch(caller, search_batch_from_proto(request)?)
        .await?;
    Ok(served.map(|results| proto::SearchBatchResponse {
        results: results.into_iter().map(search_response).collect(),
    }))
}

pub async fn search_groups(
    core: &Core,
    caller: &Caller,
    request: proto::SearchGroupsRequest,
) -> Result<Served<proto::SearchGroupsResponse>> {
    let served = core.search_groups(caller, request.try_into()?).await?;
    Ok(served.map(search_groups_response))
}

pub async fn get(
    core: &Core,
    caller: &Caller,
    request: proto::GetRequest,
) -> Result<Served<proto::GetResponse>> {
    let served = core.get(caller, request.try_into()?).await?;
    Ok(served.map(|found| proto::GetResponse {
        memories: found.memories.into_iter().map(Into::into).collect(),
        missing_ids: found.missing_ids,
    }))
}

pub async fn delete(
    core: &Core,
    caller: &Caller,
    request: proto::DeleteRequest,
) -> Result<proto::DeleteResponse> {
    core.delete(caller, request.try_into()?).await?;
    Ok(proto::DeleteResponse {})
}

pub async fn scroll(
    core: &Core,
    caller: &Caller,
    request: proto::ScrollRequest,
) -> Result<proto::ScrollResponse> {
    let page = core.scroll(caller, request.try_into()?).await?;
    Ok(proto::ScrollResponse {
        memories: page.memories.into_iter().map(Into::into).collect(),
        next_page_token: page.next_page_token,
    })
}

pub async fn count(
    core: &Core,
    caller: &Caller,
    request: proto::CountRequest,
) -> Result<proto::CountResponse> {
    let count = core.count(caller, request.try_into()?).await?;
    Ok(proto::CountResponse { count })
}

pub async fn update_payload(
    core: &Core,
    caller: &Caller,
    request: proto::UpdatePayloadRequest,
) -> Result<proto::UpdatePayloadResponse> {
    let result = core.update_payload(caller, request.try_into()?).await?;
    let model::UpdatePayloadResult {
        updated_ids,
        missing_ids,
        updated_count,
    } = result;
    Ok(proto::UpdatePayloadResponse {
        updated_ids,
        missing_ids,
        updated_count,
    })
}

/// An Import stream as both transports feed it: gRPC a message at a time,
/// REST a line of NDJSON at a time.
pub struct ImportStream<'a> {
    importer: Importer<'a>,
    namespace: String,
    tenant: String,
}

impl<'a> ImportStream<'a> {
    /// Opens the stream into `namespace` and `tenant` (of the first
    /// message, or the REST path and query).
    pub fn open(
        core: &'a Core,
        caller: &Caller,
        namespace: String,
        tenant: String,
        skip_invalid: bool,
    ) -> Result<Self> {
        let target = model::ImportTarget {
            namespace: namespace.clone(),
            tenant: tenant.clone(),
            skip_invalid,
        };
        Ok(Self {
            importer: core.import(caller, target)?,
            namespace,
            tenant,
        })
    }

    /// A gRPC message: its memories, in order. It may repeat the stream's
    /// namespace and tenant, or leave them empty, but not name others.
    pub async fn message(&mut self, message: proto::ImportRequest) -> Result<()> {
        let proto::ImportRequest {
            namespace,
            tenant,
            memories,
            skip_invalid: _,
        } = message;
        for (field, sent, open) in [
            ("namespace", &namespace, &self.namespace),
            ("tenant", &tenant, &self.tenant),
        ] {
            if !sent.is_empty() && sent != open {
                return Err(Error::invalid(
                    field,
                    format!("is {sent:?}, but the stream's first message named {open:?}"),
                ));
            }
        }
        for memory in memories {
            self.memory(Ok(memory)).await?;
        }
        Ok(())
    }

    /// The stream's next memory, or why the transport could not read it
    /// (a line of NDJSON that is not a memory).
    pub async fn memory(
        &mut self,
        memory: std::result::Result<proto::Memory, String>,
    ) -> Result<()> {
        match memory {
            Ok(memory) => {
                let mut violations = Violations::new();
                let memory = memory_from_proto(memory, "", &mut violations);
                self.importer.push(memory, violations).await
            }
            Err(unreadable) => {
                let mut violations = Violations::new();
                violations.add("", unreadable);
                self.importer.reject(String::new(), violations).await
            }
        }
    }

    /// Answers once every memory is written.
    pub async fn finish(self) -> Result<proto::ImportResponse> {
        Ok(self.importer.finish().await?.into())
    }
}

/// The pages of an Export, each one message.
pub async fn export(
    core: &Core,
    caller: &Caller,
    request: proto::ExportRequest,
) -> Result<impl Stream<Item = Result<proto::ExportResponse>> + Send + 'static> {
    let pages = core.export(caller, request.try_into()?).await?;
    Ok(pages.map(|page| {
        page.map(|memories| proto::ExportResponse {
            memories: memories.into_iter().map(Into::into).collect(),
        })
    }))
}

/// The snapshot archive, a chunk a message.
pub async fn snapshot(
    core: &Core,
    caller: &Caller,
    request: proto::SnapshotRequest,
) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
    let proto::SnapshotRequest {} = request;
    core.snapshot(caller).await
}

/// Every authenticated caller may list namespaces: they are configuration,
/// not any tenant's data.
pub async fn list_namespaces(
    core: &Core,
    _caller: &Caller,
    request: proto::ListNamespacesRequest,
) -> Result<proto::ListNamespacesResponse> {
    let proto::ListNamespacesRequest {} = request;
    let namespaces = core.list_namespaces().await?;
    Ok(proto::ListNamespacesResponse {
        namespaces: namespaces.into_iter().map(Into::into).collect(),
    })
}

/// Every authenticated caller may describe a namespace, as it may list them.
pub async fn describe_namespace(
    core: &Core,
    _caller: &Caller,
    request: proto::DescribeNamespaceRequest,
) -> Result<proto::NamespaceInfo> {
    let proto::DescribeNamespaceRequest { namespace } = request;
    Ok(core.describe_namespace(&namespace).await?.into())
}
