//! Conversions between the generated protobuf types and the domain model.
//!
//! Requests convert with `TryFrom`, destructuring every field so that a new
//! proto field fails the build until it is handled. Structural problems the
//! proto allows but the API does not (a condition with no test, a value of
//! neither kind, a non-finite number in a payload) become field violations
//! here; semantic rules (dimensions, limits) are checked by the core.

use crate::core::NamespaceInfo;
use crate::error::Error;
use crate::model::{self, DeleteSelector, ExpiryChange, UpdateTarget, Violations, join};
use crate::proto;
use crate::{backend::NamespaceStats, config::Distance};

mod search;
mod values;

pub use search::{search_batch_from_proto, search_groups_response, search_response};
use values::{
    consistency_from_proto, expiry_from_proto, filter_from_proto, payload_from_proto,
    system_time_from_micros, timestamp_micros, timestamp_to_proto,
};

impl TryFrom<proto::UpsertRequest> for model::UpsertRequest {
    type Error = Error;

    fn try_from(req: proto::UpsertRequest) -> Result<Self, Error> {
        let proto::UpsertRequest {
            namespace,
            tenant,
            memories,
        } = req;
        let mut violations = Violations::new();
        let memories = memories
            .into_iter()
            .enumerate()
            .map(|(i, memory)| {
                // `updated_at` is server-set; a client value is ignored.
                let memory = proto::Memory {
                    updated_at: None,
                    ..memory
                };
                memory_from_proto(memory, &format!("memories[{i}]"), &mut violations)
            })
            .collect();
        violations.into_result(model::UpsertRequest {
            namespace,
            tenant,
            memories,
        })
    }
}

/// A memory to write, as sent, `updated_at` included (Import keeps it).
pub fn memory_from_proto(
    memory: proto::Memory,
    path: &str,
    violations: &mut Violations,
) -> model::Memory {
    let proto::Memory {
        id,
        vector,
        payload,
        updated_at,
        expires_at,
        ttl,
    } = memory;
    let payload = payload_from_proto(payload, &join(path, "payload"), violations);
    let updated_at = updated_at
        .and_then(|at| timestamp_micros(at, &join(path, "updated_at"), violations))
        .map(system_time_from_micros);
    let expires_at = expiry_from_proto(expires_at, ttl, path, violations);
    model::Memory {
        id,
        vector,
        payload,
        updated_at,
        expires_at,
    }
}

impl TryFrom<proto::ExportRequest> for model::ExportRequest {
    type Error = Error;

    fn try_from(req: proto::ExportRequest) -> Result<Self, Error> {
        let proto::ExportRequest {
            namespace,
            tenant,
            filter,
            page_size,
        } = req;
        let mut violations = Violations::new();
        let filter = filter_from_proto(filter, "filter", &mut violations);
        violations.into_result(model::ExportRequest {
            namespace,
            tenant,
            filter,
            page_size,
        })
    }
}

impl From<model::ImportSummary> for proto::ImportResponse {
    fn from(summary: model::ImportSummary) -> Self {
        let model::ImportSummary {
            imported,
            rejected,
            expired,
            rejections,
        } = summary;
        Self {
            imported_count: imported,
            rejected_count: rejected,
            expired_count: expired,
            rejections: rejections
                .into_iter()
                .map(|rejection| proto::ImportRejection {
                    position: rejection.position,
                    id: rejection.id,
                    violations: rejection
                        .violations
                        .into_iter()
                        .map(|violation| proto::FieldViolation {
                            field: violation.field,
                            description: violation.description,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl TryFrom<proto::GetRequest> for model::GetRequest {
    type Error = Error;

    fn try_from(req: proto::GetRequest) -> Result<Self, Error> {
        let proto::GetRequest {
            namespace,
            tenant,
            ids,
            with_vector,
            consistency,
        } = req;
        let mut violations = Violations::new();
        let consistency = consistency_from_proto(consistency, "consistency", &mut violations);
        violations.into_result(model::GetRequest {
            namespace,
            tenant,
            ids,
            with_vector,
            consistency,
        })
    }
}

impl TryFrom<proto::DeleteRequest> for model::DeleteRequest {
    type Error = Error;

    fn try_from(req: proto::DeleteRequest) -> Result<Self, Error> {
        use proto::delete_request::Selector;
        let proto::DeleteRequest {
            namespace,
            tenant,
            selector,
        } = req;
        let mut violations = Violations::new();
        let selector = match selector {
            Some(Selector::Ids(proto::MemoryIds { values })) => DeleteSelector::Ids(values),
            Some(Selector::Filter(filter)) => {
                DeleteSelector::Filter(filter_from_proto(Some(filter), "filter", &mut violations))
            }
            Some(Selector::All(true)) => DeleteSelector::All,
            Some(Selector::All(false)) => {
                return Err(Error::invalid(
                    "all",
                    "must be true when set; choose ids, filter or all",
                ));
            }
            None => {
                return Err(Error::invalid(
                    "selector",
                    "set exactly one of ids, filter or all",
                ));
            }
        };
        violations.into_result(model::DeleteRequest {
            namespace,
            tenant,
            selector,
        })
    }
}

impl TryFrom<proto::ScrollRequest> for model::ScrollRequest {
    type Error = Error;

    fn try_from(req: proto::ScrollRequest) -> Result<Self, Error> {
        let proto::ScrollRequest {
            namespace,
            tenant,
            filter,
            limit,
            page_token,
            with_vector,
        } = req;
        let mut violations = Violations::new();
        let filter = filter_from_proto(filter, "filter", &mut violations);
        violations.into_result(model::ScrollRequest {
            namespace,
            tenant,
            filter,
            limit,
            page_token,
            with_vector,
        })
    }
}

impl TryFrom<proto::CountRequest> for model::CountRequest {
    type Error = Error;

    fn try_from(req: proto::CountRequest) -> Result<Self, Error> {
        let proto::CountRequest {
            namespace,
            tenant,
            filter,
        } = req;
        let mut violations = Violations::new();
        let filter = filter_from_proto(filter, "filter", &mut violations);
        violations.into_result(model::CountRequest {
            namespace,
            tenant,
            filter,
        })
    }
}

impl TryFrom<proto::UpdatePayloadRequest> for model::UpdatePayloadRequest {
    type Error = Error;

    fn try_from(req: proto::UpdatePayloadRequest) -> Result<Self, Error> {
        let proto::UpdatePayloadRequest {
            namespace,
            tenant,
            ids,
            payload,
            replace,
            filter,
            expiry,
        } = req;
        let mut violations = Violations::new();
        let payload = payload_from_proto(payload, "payload", &mut violations);
        use proto::update_payload_request::Expiry;
        let expiry = match expiry {
            None => ExpiryChange::Keep,
            Some(Expiry::NeverExpire(true)) => ExpiryChange::Never,
            Some(Expiry::NeverExpire(false)) => {
                violations.add("never_expire", "must be true when set");
                ExpiryChange::Keep
            }
            Some(Expiry::ExpiresAt(at)) => expiry_from_proto(Some(at), None, "", &mut violations)
                .map_or(ExpiryChange::Keep, ExpiryChange::At),
            Some(Expiry::Ttl(ttl)) => expiry_from_proto(None, Some(ttl), "", &mut violations)
                .map_or(ExpiryChange::Keep, ExpiryChange::At),
        };
        let target = match (ids.is_empty(), filter) {
            (true, None) => {
                return Err(Error::invalid("ids", "set ids, or a filter"));
            }
            (false, Some(_)) => {
                return Err(Error::invalid("filter", "set ids or a filter, not both"));
            }
            (false, None) => UpdateTarget::Ids(ids),
            (true, Some(filter)) => {
                UpdateTarget::Filter(filter_from_proto(Some(filter), "filter", &mut violations))
            }
        };
        violations.into_result(model::UpdatePayloadRequest {
            namespace,
            tenant,
            target,
            payload,
            replace,
            expiry,
        })
    }
}

impl From<model::Memory> for proto::Memory {
    fn from(memory: model::Memory) -> Self {
        let model::Memory {
            id,
            vector,
            payload,
            updated_at,
            expires_at,
        } = memory;
        Self {
            id,
            vector,
            payload: (!payload.is_empty()).then(|| proto::Struct::from(payload)),
            updated_at: updated_at.map(timestamp_to_proto),
            expires_at: expires_at.map(timestamp_to_proto),
            ttl: None,
        }
    }
}

impl From<NamespaceInfo> for proto::NamespaceInfo {
    fn from(info: NamespaceInfo) -> Self {
        let NamespaceInfo {
            name,
            dim,
            distance,
            text_field,
            default_ttl,
            stats,
        } = info;
        let NamespaceStats {
            points_count,
            indexed_vectors_count,
            indexing,
            text_search,
        } = stats;
        let distance = match distance {
            Distance::Cosine => proto::Distance::Cosine,
            Distance::Dot => proto::Distance::Dot,
            Distance::Euclid => proto::Distance::Euclid,
            Distance::Manhattan => proto::Distance::Manhattan,
        };
        let status = if indexing {
            proto::IndexStatus::Indexing
        } else {
            proto::IndexStatus::Indexed
        };
        Self {
            name,
            dim,
            distance: distance.into(),
            points_count,
            indexed_vectors_count,
            index_status: status.into(),
            text_field: text_field.unwrap_or_default(),
            text_search,
            default_ttl: default_ttl.map(pbjson_types::Duration::from),
        }
    }
}
