//! The service core: the one place that resolves namespaces, validates
//! requests, assigns ids and timestamps, and calls the store. Both transports
//! call it, so validation and tenancy rules cannot drift between gRPC and
//! HTTP; handlers only convert.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use crate::auth::Caller;
use crate::backend::{
    MemoryKey, NamespaceStats, PayloadUpdate, ScrollQuery, TenantDelete, TenantMemory,
    TenantSearch, VectorStore,
};
use crate::config::{Config, Distance, Limits, NamespaceConfig};
use crate::error::{Error, Result};
use crate::model::{
    Access, CountRequest, DeleteRequest, GetRequest, GetResult, ScoredMemory, ScrollPage,
    ScrollRequest, SearchRequest, UpdatePayloadRequest, UpdatePayloadResult, UpsertRequest,
    Validator, join,
};
use crate::pipeline::Pipeline;
use crate::pipeline::admission::TenantRates;
use crate::pipeline::cache::{CacheKey, Cached, ResultCache, Served};

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
    cache: ResultCache,
}

impl Core {
    pub fn new(config: &Config, pipeline: Pipeline) -> Self {
        Self {
            namespaces: config.namespaces.clone(),
            limits: config.limits.clone(),
            rates: TenantRates::new(&config.admission, pipeline.metrics.clone()),
            store: pipeline.store,
            cache: pipeline.cache,
        }
    }

    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    /// Lets `caller` act for `tenant`, within the tenant's rate budget.
    fn admit(&self, caller: &Caller, tenant: &str, access: Access) -> Result<()> {
        caller.authorize(tenant, access)?;
        self.rates.check(tenant, access)
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

    pub async fn upsert(&self, caller: &Caller, req: UpsertRequest) -> Result<Vec<String>> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.upsert(&req);
        validator.finish()?;
        self.admit(caller, &req.tenant, Access::Write)?;

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
        let written = self.store.upsert(&namespace, items).await;
        self.cache.written(&namespace, &tenant);
        written?;
        Ok(ids)
    }

    pub async fn search(
        &self,
        caller: &Caller,
        req: SearchRequest,
    ) -> Result<Served<Vec<ScoredMemory>>> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.search("", &req);
        validator.finish()?;
        self.admit(caller, &req.tenant, Access::Read)?;
        let namespace = req.namespace.clone();
        let consistency = req.consistency;
        let search = self.tenant_search(req);
        let key = || self.cache.search_key(&namespace, &search);
        let served = self
            .cache
            .get_or_load(key, consistency, || async {
                let mut results = self.store.search(&namespace, vec![search.clone()]).await?;
                let hits = results
                    .pop()
                    .ok_or_else(|| Error::internal("store returned no search result"))?;
                Ok(Cached::Hits(hits))
            })
            .await?;
        Ok(Served {
            value: hits(served.value)?,
            stale: served.stale,
        })
    }

    /// Runs searches that may span namespaces: one store call per namespace,
    /// results put back in request order.
    pub async fn search_batch(
        &self,
        caller: &Caller,
        reqs: Vec<SearchRequest>,
    ) -> Result<Served<Vec<Vec<ScoredMemory>>>> {
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
            self.admit(caller, &req.tenant, Access::Read)?;
        }

        // Answers from the cache where it has them; the rest from the store,
        // one call per namespace.
        let mut results: Vec<Option<Vec<ScoredMemory>>> = vec![None; reqs.len()];
        let mut misses: BTreeMap<String, Vec<(usize, Option<CacheKey>, TenantSearch)>> =
            BTreeMap::new();
        for (i, req) in reqs.into_iter().enumerate() {
            let namespace = req.namespace.clone();
            let consistency = req.consistency;
            let search = self.tenant_search(req);
            // No key for a search that bypasses the cache.
            let key = (!self.cache.bypassed(consistency))
                .then(|| self.cache.search_key(&namespace, &search));
            let cached = match &key {
                Some(key) => self.cache.peek(key).await,
                None => None,
            };
            match cached {
                Some(cached) => results[i] = Some(hits(cached)?),
                None => misses.entry(namespace).or_default().push((i, key, search)),
            }
        }
        let mut stale = false;
        for (namespace, items) in misses {
            let searches = items.iter().map(|item| item.2.clone()).collect();
            match self.store.search(&namespace, searches).await {
                Ok(found) if found.len() == items.len() => {
                    for ((i, key, _), hits) in items.into_iter().zip(found) {
                        if let Some(key) = key {
                            let cached = Arc::new(Cached::Hits(hits.clone()));
                            self.cache.put(key, cached).await;
                        }
                        results[i] = Some(hits);
                    }
                }
                Ok(_) => {
                    return Err(Error::internal(
                        "store returned a wrong number of search results",
                    ));
                }
                // Served stale only if every search of the batch can be.
                Err(error) => {
                    for (i, key, _) in items {
                        let Some(key) = key else {
                            return Err(error);
                        };
                        let cached = self.cache.stale_or(&key, error.clone()).await?;
                        results[i] = Some(hits(cached)?);
                        stale = true;
                    }
                }
            }
        }
        let value = results
            .into_iter()
            .map(|hits| hits.ok_or_else(|| Error::internal("a search of the batch got no answer")))
            .collect::<Result<_>>()?;
        Ok(Served { value, stale })
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

    pub async fn get(&self, caller: &Caller, req: GetRequest) -> Result<Served<GetResult>> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.get(&req);
        validator.finish()?;
        self.admit(caller, &req.tenant, Access::Read)?;
        let key = || {
            self.cache
                .get_key(&req.namespace, &req.tenant, &req.ids, req.with_vector)
        };
        let served = self
            .cache
            .get_or_load(key, req.consistency, || async {
                let found = self
                    .find(
                        &req.namespace,
                        &req.tenant,
                        req.ids.clone(),
                        req.with_vector,
                    )
                    .await?;
                Ok(Cached::Found(found))
            })
            .await?;
        // Unwrapped without a copy unless the cache holds it too.
        match Arc::unwrap_or_clone(served.value) {
            Cached::Found(found) => Ok(Served {
                value: found,
                stale: served.stale,
            }),
            Cached::Hits(_) => Err(Error::internal("cache returned search hits for a get")),
        }
    }

    /// Looks up `ids` of `tenant`: the memories found, in order, and the rest.
    /// An id named more than once is looked up and answered once, at the
    /// place it was first named.
    async fn find(
        &self,
        namespace: &str,
        tenant: &str,
        ids: Vec<String>,
        with_vector: bool,
    ) -> Result<GetResult> {
        let mut seen = HashSet::new();
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect();
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

    pub async fn delete(&self, caller: &Caller, req: DeleteRequest) -> Result<()> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.delete(&req);
        validator.finish()?;
        self.admit(caller, &req.tenant, Access::Write)?;
        let delete = TenantDelete {
            tenant: req.tenant.clone(),
            selector: req.selector,
        };
        let deleted = self.store.delete(&req.namespace, vec![delete]).await;
        self.cache.written(&req.namespace, &req.tenant);
        deleted
    }

    pub async fn scroll(&self, caller: &Caller, req: ScrollRequest) -> Result<ScrollPage> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.scroll(&req);
        validator.finish()?;
        self.admit(caller, &req.tenant, Access::Read)?;
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

    pub async fn count(&self, caller: &Caller, req: CountRequest) -> Result<u64> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.count(&req);
        validator.finish()?;
        self.admit(caller, &req.tenant, Access::Read)?;
        self.store
            .count(&req.namespace, &req.tenant, req.filter)
            .await
    }

    /// Changes the payload of the ids that exist and reports the others.
    pub async fn update_payload(
        &self,
        caller: &Caller,
        req: UpdatePayloadRequest,
    ) -> Result<UpdatePayloadResult> {
        let mut validator = self.validator("namespace", &req.namespace)?;
        validator.update_payload(&req);
        validator.finish()?;
        self.admit(caller, &req.tenant, Access::Write)?;
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
                tenant: tenant.clone(),
                ids: result.updated_ids.clone(),
                payload,
                replace,
                updated_at: SystemTime::now(),
            };
            let updated = self.store.update_payload(&namespace, update).await;
            self.cache.written(&namespace, &tenant);
            updated?;
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

/// The hits of a search answer, without a copy unless the cache holds it too.
fn hits(cached: Arc<Cached>) -> Result<Vec<ScoredMemory>> {
    match Arc::unwrap_or_clone(cached) {
        Cached::Hits(hits) => Ok(hits),
        Cached::Found(_) => Err(Error::internal("cache returned a get answer for a search")),
    }
}
