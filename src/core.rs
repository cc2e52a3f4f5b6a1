//! The service core: the one place that resolves namespaces, validates
//! requests, assigns ids and timestamps, and calls the store. Both transports
//! call it, so validation and tenancy rules cannot drift between gRPC and
//! HTTP; handlers only convert.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use crate::backend::{
    MemoryKey, NamespaceStats, PayloadUpdate, ScrollQuery, TenantDelete, TenantMemory,
    TenantSearch, VectorStore,
};
use crate::config::{Config, Distance, Limits, NamespaceConfig};
use crate::error::{Error, Result};
use crate::model::{
    CountRequest, DeleteRequest, GetRequest, GetResult, ScoredMemory, ScrollPage, ScrollRequest,
    SearchRequest, UpdatePayloadRequest, UpdatePayloadResult, UpsertRequest, Validator, join,
};
use crate::pipeline::admission::{Access, TenantRates};

/// What `DescribeNamespace` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceInfo {
    pub name: String,
    pub dim: u32,
    pub distance: Distance,
    pub stats: NamespaceStats,
}

pub struct Core {
    namespaces: BTreeMap<String, NamespaceConfig>,
    limits: Limits,
    rates: TenantRates,
    store: Arc<dyn VectorStore>,
}

impl Core {
    pub fn new(config: &Config, store: Arc<dyn VectorStore>) -> Self {
        Self {
            namespaces: config.namespaces.clone(),
            limits: config.limits.clone(),
            rates: TenantRates::new(&config.admission),
            store,
        }
    }

    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    /// Resolves a namespace and starts a validator for its dimension.
    fn validator(&self, field: &str, namespace: &str) -> Result<Validator<'_>> {
        if namespace.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        let ns = self
            .namespaces
            .get(namespace)
            .ok_or_else(|| Error::NamespaceNotFound(namespace.to_owned()))?;
        Ok(Validator::new(&self.limits, ns.dim as usize))
    }

    pub async fn upsert(&self, req: UpsertRequest) -> Result<Vec<String>> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.upsert(&req);
        validator.finish()?;
        self.rates.check(&req.tenant, Access::Write)?;

        let now = SystemTime::now();
        let UpsertRequest {
            namespace,
            tenant,
            memories,
        } = req;
        let items: Vec<TenantMemory> = memories
            .into_iter()
            .map(|mut memory| {
                if memory.id.is_empty() {
                    memory.id = Uuid::now_v7().to_string();
                }
                memory.updated_at = Some(now);
                TenantMemory {
                    tenant: tenant.clone(),
                    memory,
                }
            })
            .collect();
        let ids = items.iter().map(|item| item.memory.id.clone()).collect();
        self.store.upsert(&namespace, items).await?;
        Ok(ids)
    }

    pub async fn search(&self, req: SearchRequest) -> Result<Vec<ScoredMemory>> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.search("", &req);
        validator.finish()?;
        self.rates.check(&req.tenant, Access::Read)?;
        let namespace = req.namespace.clone();
        let mut results = self
            .store
            .search(&namespace, vec![self.tenant_search(req)])
            .await?;
        results
            .pop()
            .ok_or_else(|| Error::internal("store returned no search result"))
    }

    /// Runs searches that may span namespaces: one store call per namespace,
    /// results put back in request order.
    pub async fn search_batch(&self, reqs: Vec<SearchRequest>) -> Result<Vec<Vec<ScoredMemory>>> {
        if reqs.is_empty() || reqs.len() > self.limits.max_batch {
            return Err(Error::invalid(
                "searches",
                format!(
                    "must have 1 to {} searches (got {})",
                    self.limits.max_batch,
                    reqs.len()
                ),
            ));
        }
        let mut violations = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            let prefix = format!("searches[{i}]");
            let mut validator = self.validator(&join(&prefix, "namespace"), &req.namespace)?;
            validator.search(&prefix, req);
            if let Err(Error::InvalidArgument(found)) = validator.finish() {
                violations.extend(found);
            }
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        for req in &reqs {
            self.rates.check(&req.tenant, Access::Read)?;
        }

        let mut by_namespace: BTreeMap<String, Vec<(usize, TenantSearch)>> = BTreeMap::new();
        for (i, req) in reqs.into_iter().enumerate() {
            let namespace = req.namespace.clone();
            by_namespace
                .entry(namespace)
                .or_default()
                .push((i, self.tenant_search(req)));
        }
        let mut results = vec![Vec::new(); by_namespace.values().map(Vec::len).sum()];
        for (namespace, items) in by_namespace {
            let (positions, searches): (Vec<usize>, Vec<TenantSearch>) = items.into_iter().unzip();
            let found = self.store.search(&namespace, searches).await?;
            if found.len() != positions.len() {
                return Err(Error::internal(
                    "store returned a wrong number of search results",
                ));
            }
            for (position, hits) in positions.into_iter().zip(found) {
                results[position] = hits;
            }
        }
        Ok(results)
    }

    fn tenant_search(&self, req: SearchRequest) -> TenantSearch {
        TenantSearch {
            limit: Validator::resolve_limit(&self.limits, req.limit),
            tenant: req.tenant,
            vector: req.vector,
            min_score: req.min_score,
            filter: req.filter,
            with_payload: req.with_payload,
            with_vector: req.with_vector,
        }
    }

    pub async fn get(&self, req: GetRequest) -> Result<GetResult> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.get(&req);
        validator.finish()?;
        self.rates.check(&req.tenant, Access::Read)?;
        self.find(&req.namespace, &req.tenant, req.ids, req.with_vector)
            .await
    }

    /// Looks up `ids` of `tenant`: the memories found, in order, and the rest.
    async fn find(
        &self,
        namespace: &str,
        tenant: &str,
        ids: Vec<String>,
        with_vector: bool,
    ) -> Result<GetResult> {
        let keys = ids
            .iter()
            .map(|id| MemoryKey {
                tenant: tenant.to_owned(),
                id: id.clone(),
            })
            .collect();
        let found = self.store.get(namespace, keys, with_vector).await?;
        let mut result = GetResult::default();
        for (id, memory) in ids.into_iter().zip(found) {
            match memory {
                Some(memory) => result.memories.push(memory),
                None => result.missing_ids.push(id),
            }
        }
        Ok(result)
    }

    pub async fn delete(&self, req: DeleteRequest) -> Result<()> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.delete(&req);
        validator.finish()?;
        self.rates.check(&req.tenant, Access::Write)?;
        let delete = TenantDelete {
            tenant: req.tenant,
            selector: req.selector,
        };
        self.store.delete(&req.namespace, vec![delete]).await
    }

    pub async fn scroll(&self, req: ScrollRequest) -> Result<ScrollPage> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.scroll(&req);
        validator.finish()?;
        self.rates.check(&req.tenant, Access::Read)?;
        let offset = match req.page_token.as_str() {
            "" => None,
            token => Some(Uuid::try_parse(token).map_err(|_| {
                Error::invalid("page_token", "is not a token from a previous response")
            })?),
        };
        let query = ScrollQuery {
            filter: req.filter,
            limit: Validator::resolve_limit(&self.limits, req.limit),
            offset,
            with_vector: req.with_vector,
        };
        let page = self
            .store
            .scroll(&req.namespace, &req.tenant, query)
            .await?;
        Ok(ScrollPage {
            memories: page.memories,
            next_page_token: page
                .next_offset
                .map(|id| id.simple().to_string())
                .unwrap_or_default(),
        })
    }

    pub async fn count(&self, req: CountRequest) -> Result<u64> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.count(&req);
        validator.finish()?;
        self.rates.check(&req.tenant, Access::Read)?;
        self.store
            .count(&req.namespace, &req.tenant, req.filter)
            .await
    }

    /// Changes the payload of the ids that exist and reports the others.
    pub async fn update_payload(&self, req: UpdatePayloadRequest) -> Result<UpdatePayloadResult> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.update_payload(&req);
        validator.finish()?;
        self.rates.check(&req.tenant, Access::Write)?;
        let UpdatePayloadRequest {
            namespace,
            tenant,
            ids,
            payload,
            replace,
        } = req;
        let found = self.find(&namespace, &tenant, ids, false).await?;
        let result = UpdatePayloadResult {
            updated_ids: found.memories.into_iter().map(|m| m.id).collect(),
            missing_ids: found.missing_ids,
        };
        if !result.updated_ids.is_empty() {
            let update = PayloadUpdate {
                tenant,
                ids: result.updated_ids.clone(),
                payload,
                replace,
                updated_at: SystemTime::now(),
            };
            self.store.update_payload(&namespace, update).await?;
        }
        Ok(result)
    }

    pub async fn list_namespaces(&self) -> Result<Vec<NamespaceInfo>> {
        let mut infos = Vec::with_capacity(self.namespaces.len());
        for name in self.namespaces.keys() {
            infos.push(self.describe_namespace(name).await?);
        }
        Ok(infos)
    }

    pub async fn describe_namespace(&self, name: &str) -> Result<NamespaceInfo> {
        if name.is_empty() {
            return Err(Error::invalid("namespace", "is required"));
        }
        let ns = self
            .namespaces
            .get(name)
            .ok_or_else(|| Error::NamespaceNotFound(name.to_owned()))?;
        let stats = self.store.stats(name).await?;
        Ok(NamespaceInfo {
            name: name.to_owned(),
            dim: ns.dim,
            distance: ns.distance,
            stats,
        })
    }

    pub async fn is_ready(&self) -> bool {
        self.store.is_ready().await
    }
}
