//! An in-memory [`VectorStore`] for the pipeline's unit tests: it records
//! every call, can be told to fail the next calls, rejects any call that
//! touches a "poisoned" tenant, the way a backend rejects one bad item, and
//! can hold reads (recorded, not answered) to stand in for a busy backend.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

use crate::backend::{
    MemoryKey, NamespaceStats, PayloadUpdate, ScrollQuery, StorePage, TenantDelete, TenantMemory,
    TenantSearch, VectorStore,
};
use crate::backup::SnapshotCopy;
use crate::error::{Error, Result};
use crate::model::{DeleteSelector, Filter, Memory, ScoredMemory};

/// One call as the backend saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// (tenant, id, first vector component) of each memory.
    Upsert(Vec<(String, String, f32)>),
    Delete(usize),
    Search(usize),
    Get(usize),
}

#[derive(Default)]
pub struct FakeStore {
    pub calls: Mutex<Vec<Call>>,
    failures: Mutex<VecDeque<Error>>,
    memories: Mutex<HashMap<(String, String), Memory>>,
    pub poisoned_tenant: Mutex<Option<String>>,
    /// Reads wait on this after being recorded; see [`FakeStore::hold_reads`].
    read_gate: Arc<RwLock<()>>,
}

pub fn unavailable() -> Error {
    Error::Unavailable {
        message: "down".into(),
        retry_after: std::time::Duration::from_millis(100),
    }
}

impl FakeStore {
    /// The next `count` calls fail with `error`.
    pub fn fail_next(&self, count: usize, error: Error) {
        let mut failures = self.failures.lock().expect("lock");
        failures.extend(std::iter::repeat_n(error, count));
    }

    /// Reads are recorded and then wait, unanswered, until the guard drops.
    pub async fn hold_reads(&self) -> OwnedRwLockWriteGuard<()> {
        self.read_gate.clone().write_owned().await
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }

    fn enter<'a>(&self, call: Call, tenants: impl IntoIterator<Item = &'a str>) -> Result<()> {
        self.calls.lock().expect("lock").push(call);
        if let Some(error) = self.failures.lock().expect("lock").pop_front() {
            return Err(error);
        }
        let poisoned = self.poisoned_tenant.lock().expect("lock").clone();
        if let Some(poisoned) = poisoned
            && tenants.into_iter().any(|tenant| tenant == poisoned)
        {
            return Err(Error::internal("backend rejected an item"));
        }
        Ok(())
    }
}

#[async_trait]
impl VectorStore for FakeStore {
    async fn upsert(&self, _: &str, memories: Vec<TenantMemory>) -> Result<()> {
        let call = Call::Upsert(
            memories
                .iter()
                .map(|m| {
                    let first = m.memory.vector.first().copied().unwrap_or_default();
                    (m.tenant.clone(), m.memory.id.clone(), first)
                })
                .collect(),
        );
        self.enter(call, memories.iter().map(|m| m.tenant.as_str()))?;
        let mut stored = self.memories.lock().expect("lock");
        for item in memories {
            stored.insert((item.tenant, item.memory.id.clone()), item.memory);
        }
        Ok(())
    }

    async fn search(&self, _: &str, searches: Vec<TenantSearch>) -> Result<Vec<Vec<ScoredMemory>>> {
        self.enter(
            Call::Search(searches.len()),
            searches.iter().map(|s| s.tenant.as_str()),
        )?;
        let _open = self.read_gate.read().await;
        let stored = self.memories.lock().expect("lock");
        Ok(searches
            .iter()
            .map(|search| {
                let mut hits: Vec<ScoredMemory> = stored
                    .iter()
                    .filter(|((tenant, _), _)| *tenant == search.tenant)
                    .map(|(_, memory)| ScoredMemory {
                        memory: memory.clone(),
                        score: 1.0,
                    })
                    .collect();
                hits.sort_by(|a, b| a.memory.id.cmp(&b.memory.id));
                hits.truncate(search.limit);
                hits
            })
            .collect())
    }

    async fn get(
        &self,
        _: &str,
        keys: Vec<MemoryKey>,
        with_vector: bool,
    ) -> Result<Vec<Option<Memory>>> {
        self.enter(
            Call::Get(keys.len()),
            keys.iter().map(|k| k.tenant.as_str()),
        )?;
        let _open = self.read_gate.read().await;
        let stored = self.memories.lock().expect("lock");
        Ok(keys
            .iter()
            .map(|key| {
                stored
                    .get(&(key.tenant.clone(), key.id.clone()))
                    .cloned()
                    .map(|mut memory| {
                        if !with_vector {
                            memory.vector.clear();
                        }
                        memory
                    })
            })
            .collect())
    }

    async fn delete(&self, _: &str, deletes: Vec<TenantDelete>) -> Result<()> {
        self.enter(
            Call::Delete(deletes.len()),
            deletes.iter().map(|d| d.tenant.as_str()),
        )?;
        let mut stored = self.memories.lock().expect("lock");
        for delete in deletes {
            match delete.selector {
                DeleteSelector::Ids(ids) => {
                    for id in ids {
                        stored.remove(&(delete.tenant.clone(), id));
                    }
                }
                DeleteSelector::Filter(_) | DeleteSelector::All => {
                    stored.retain(|(tenant, _), _| *tenant != delete.tenant);
                }
            }
        }
        Ok(())
    }

    async fn scroll(&self, _: &str, _: &str, _: ScrollQuery) -> Result<StorePage> {
        Err(Error::internal("not used by these tests"))
    }

    async fn count(&self, _: &str, _: &str, _: Filter) -> Result<u64> {
        Err(Error::internal("not used by these tests"))
    }

    async fn update_payload(&self, _: &str, _: PayloadUpdate) -> Result<()> {
        Err(Error::internal("not used by these tests"))
    }

    async fn delete_expired(&self, _: &str, _: SystemTime, _: usize) -> Result<usize> {
        Err(Error::internal("not used by these tests"))
    }

    async fn stats(&self, _: &str) -> Result<NamespaceStats> {
        Err(Error::internal("not used by these tests"))
    }

    async fn is_ready(&self) -> bool {
        true
    }

    async fn snapshot(&self) -> Result<SnapshotCopy> {
        Err(Error::SnapshotUnavailable)
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
