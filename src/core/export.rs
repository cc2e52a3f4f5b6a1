//! Export: a tenant's memories as a stream of pages, vectors included, in
//! the form Import takes back.
//!
//! It pages through the tenant's memories in point-id order, as Scroll
//! does, with the live filter every read has. A memory's point id never
//! changes (it is derived from its tenant and id), so every memory that
//! exists for the whole export is read exactly once, in the version current
//! when its page is read, and no id is ever read twice. That is the
//! guarantee instead of a snapshot, which neither backend offers per
//! tenant. The first page is read before the stream is handed back, so a
//! bad request or an unavailable backend is answered with a status, not a
//! broken stream; the next page is read only when the transport asks for
//! it, so a slow reader holds back the export instead of buffering it.

use std::sync::Arc;

use futures::Stream;
use futures::stream;
use uuid::Uuid;

use crate::auth::Caller;
use crate::backend::{ScrollQuery, StorePage, VectorStore};
use crate::error::Result;
use crate::model::{ExportRequest, Memory};

use super::Core;

/// What is left to read of an export.
enum Next {
    /// A page read and not yet handed out.
    Page(StorePage),
    /// The page starting at this point id.
    From(Uuid),
    Done,
}

impl Core {
    /// The pages of `req`'s memories, with vectors. The stream is charged
    /// once to the tenant's read rate budget, as one call.
    pub async fn export(
        &self,
        caller: &Caller,
        req: ExportRequest,
    ) -> Result<impl Stream<Item = Result<Vec<Memory>>> + Send + 'static> {
        self.admit(caller, &req)?;
        let ExportRequest {
            namespace,
            tenant,
            filter,
            page_size,
        } = req;
        let query = ScrollQuery {
            filter,
            // Pages as large as allowed unless asked otherwise: fewer calls.
            limit: match page_size {
                0 => self.limits.max_limit.get() as usize,
                size => size as usize,
            },
            offset: None,
            with_vector: true,
        };
        let store: Arc<dyn VectorStore> = self.store.clone();
        let first = store.scroll(&namespace, &tenant, query.clone()).await?;
        Ok(stream::try_unfold(Next::Page(first), move |next| {
            let store = store.clone();
            let namespace = namespace.clone();
            let tenant = tenant.clone();
            let query = query.clone();
            async move {
                let page = match next {
                    Next::Done => return Ok(None),
                    Next::Page(page) => page,
                    Next::From(offset) => {
                        let query = ScrollQuery {
                            offset: Some(offset),
                            ..query
                        };
                        store.scroll(&namespace, &tenant, query).await?
                    }
                };
                let next = page.next_offset.map_or(Next::Done, Next::From);
                if page.memories.is_empty() {
                    // Only the last page can be empty (a tenant with none).
                    return Ok(None);
                }
                Ok(Some((page.memories, next)))
            }
        }))
    }
}
