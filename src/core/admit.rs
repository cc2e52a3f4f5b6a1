//! The prologue every data RPC runs before it touches the store, written
//! once: resolve the namespace, validate the request against it, let the
//! caller act for the tenant, and take from the tenant's rate budget. Each
//! request type says only what differs: its namespace, tenant, kind of
//! access and validation rules.

use crate::model::{
    Access, CountRequest, DeleteRequest, ExportRequest, GetRequest, ScrollRequest,
    SearchGroupsRequest, SearchRequest, UpdatePayloadRequest, UpsertRequest, Validator,
};

/// A request the core admits through [`super::Core::admit`].
pub trait Admissible {
    /// Whether the request reads or writes: the key's permission and the
    /// rate budget it is charged to.
    const ACCESS: Access;
    fn namespace(&self) -> &str;
    fn tenant(&self) -> &str;
    /// Records every rule the request breaks, under `prefix` (empty for a
    /// request on its own; `searches[3]` for one inside a batch).
    fn validate(&self, prefix: &str, validator: &mut Validator<'_>);
}

impl Admissible for SearchRequest {
    const ACCESS: Access = Access::Read;
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn validate(&self, prefix: &str, validator: &mut Validator<'_>) {
        validator.search(prefix, self);
    }
}

impl Admissible for SearchGroupsRequest {
    const ACCESS: Access = Access::Read;
    fn namespace(&self) -> &str {
        &self.search.namespace
    }
    fn tenant(&self) -> &str {
        &self.search.tenant
    }
    fn validate(&self, _prefix: &str, validator: &mut Validator<'_>) {
        validator.search_groups(self);
    }
}

/// The requests that are never part of a batch: `Validator::$rule` checks
/// them whole.
macro_rules! admissible {
    ($request:ty, $access:expr, $rule:ident) => {
        impl Admissible for $request {
            const ACCESS: Access = $access;
            fn namespace(&self) -> &str {
                &self.namespace
            }
            fn tenant(&self) -> &str {
                &self.tenant
            }
            fn validate(&self, _prefix: &str, validator: &mut Validator<'_>) {
                validator.$rule(self);
            }
        }
    };
}

admissible!(UpsertRequest, Access::Write, upsert);
admissible!(GetRequest, Access::Read, get);
admissible!(DeleteRequest, Access::Write, delete);
admissible!(ScrollRequest, Access::Read, scroll);
admissible!(CountRequest, Access::Read, count);
admissible!(ExportRequest, Access::Read, export);
admissible!(UpdatePayloadRequest, Access::Write, update_payload);
