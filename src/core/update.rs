//! UpdatePayload: a payload change for memories named by id, or for every
//! memory of the tenant a filter matches.
//!
//! An update by filter is found and applied a page at a time (the batch
//! limit): the core scrolls the tenant's matching memories in point order
//! and updates each page by id, through the same store call as an update
//! by ids. So the text vector follows the payload on every backend (Qdrant
//! sets vectors only by point id), the count returned is exact, each write
//! stays within the batch limit, and no backend needs a second code path.
//! The price is atomicity, which Qdrant would not give across shards
//! either: a memory written meanwhile may or may not be updated, and a call
//! that fails part way has updated the pages before. Paging by point id
//! visits each memory once, whatever the update does to whether it still
//! matches.

use std::time::SystemTime;

use crate::auth::Caller;
use crate::backend::text::TextChange;
use crate::backend::{PayloadUpdate, ScrollQuery};
use crate::error::Result;
use crate::model::{
    ExpiryChange, Filter, Payload, UpdatePayloadRequest, UpdatePayloadResult, UpdateTarget,
};

use super::Core;

/// One payload change, to apply to pages of ids.
struct Change<'a> {
    namespace: &'a str,
    tenant: &'a str,
    payload: Payload,
    replace: bool,
    text: TextChange,
    expiry: ExpiryChange,
}

impl Core {
    /// Changes the payload of the named memories that exist (reporting the
    /// others), or of every memory matching the filter.
    pub async fn update_payload(
        &self,
        caller: &Caller,
        req: UpdatePayloadRequest,
    ) -> Result<UpdatePayloadResult> {
        self.admit(caller, &req)?;
        let UpdatePayloadRequest {
            namespace,
            tenant,
            target,
            payload,
            replace,
            expiry,
        } = req;
        let text = self
            .text_index(&namespace)
            .map_or(TextChange::Keep, |text| text.change(&payload, replace));
        let change = Change {
            namespace: &namespace,
            tenant: &tenant,
            payload,
            replace,
            text,
            expiry,
        };
        match target {
            UpdateTarget::Ids(ids) => {
                let found = self.find(&namespace, &tenant, ids, false).await?;
                let updated_ids: Vec<String> = found.memories.into_iter().map(|m| m.id).collect();
                self.apply(&change, updated_ids.clone()).await?;
                Ok(UpdatePayloadResult {
                    updated_count: updated_ids.len() as u64,
                    updated_ids,
                    missing_ids: found.missing_ids,
                })
            }
            UpdateTarget::Filter(filter) => {
                let updated_count = self.update_matching(&change, filter).await?;
                Ok(UpdatePayloadResult {
                    updated_ids: Vec::new(),
                    missing_ids: Vec::new(),
                    updated_count,
                })
            }
        }
    }

    /// Updates every memory `filter` matches, a page at a time; returns how
    /// many.
    async fn update_matching(&self, change: &Change<'_>, filter: Filter) -> Result<u64> {
        let mut updated = 0;
        let mut offset = None;
        loop {
            let query = ScrollQuery {
                filter: filter.clone(),
                limit: self.limits.max_batch.get(),
                offset,
                with_vector: false,
            };
            let page = self
                .store
                .scroll(change.namespace, change.tenant, query)
                .await?;
            let ids: Vec<String> = page.memories.into_iter().map(|m| m.id).collect();
            updated += ids.len() as u64;
            self.apply(change, ids).await?;
            match page.next_offset {
                Some(next) => offset = Some(next),
                None => return Ok(updated),
            }
        }
    }

    /// Applies the change to `ids`, which exist (or did a moment ago).
    async fn apply(&self, change: &Change<'_>, ids: Vec<String>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let update = PayloadUpdate {
            tenant: change.tenant.to_owned(),
            ids,
            payload: change.payload.clone(),
            replace: change.replace,
            updated_at: SystemTime::now(),
            text: change.text.clone(),
            expiry: change.expiry,
        };
        let updated = self.store.update_payload(change.namespace, update).await;
        self.cache.written(change.namespace, change.tenant);
        updated
    }
}
