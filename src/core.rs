//! The service core: the one place that resolves namespaces, validates
//! requests, assigns ids and timestamps, and calls the store. Both transports
//! call it, so validation and tenancy rules cannot drift between gRPC and
//! HTTP; handlers only convert.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::Stream;
use uuid::Uuid;

use crate::auth::Caller;
use crate::backend::text::TextIndex;
use crate::backend::{
    MemoryKey, NamespaceStats, ScrollQuery, TenantDelete, TenantMemory, TenantSearch, VectorStore,
};
use crate::backup;
use crate::config::{Config, Distance, Limits, NamespaceConfig};
use crate::error::{Error, Result};
use crate::model::{
    Access, CountRequest, DeleteRequest, GetRequest, GetResult, Memory, ScoredMemory, ScrollPage,
    ScrollRequest, SearchRequest, Served, UpsertRequest, Validator, join,
};
use crate::pipeline::Pipeline;
use crate::pipeline::admission::TenantRates;
use crate::pipeline::cache::ResultCache;

mod admit;
mod export;
mod groups;
mod import;
mod search;
mod update;

pub use admit::Admissible;
pub use import::Importer;
use search::PlannedSearch;

/// What `DescribeNamespace` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceInfo {
    pub name: String,
    pub dim: u32,
    pub distance: Distance,
    pub text_field: Option<String>,
    /// Lifetime of a memory written without its own expiry.
    pub default_ttl: Option<Duration>,
    pub stats: NamespaceStats,
}

/// What a write of one namespace fills in on the memories it stores,
/// looked up once per request (or Import stream), not per memory.
struct WriteDefaults<'a> {
    /// Lifetime of a memory written without its own expiry.
    default_ttl: Option<Duration>,
    /// The namespace's BM25 model, if it has a text field.
    text: Option<&'a TextIndex>,
}

impl WriteDefaults<'_> {
    /// A memory as the store writes it, as of `now`: with an id (a new
    /// UUIDv7 if it has none), `updated_at` (now, unless it has one), the
    /// default expiry (unless it has one), and the BM25 vector of its text.
    fn to_store(&self, tenant: &str, mut memory: Memory, now: SystemTime) -> TenantMemory {
        if memory.id.is_empty() {
            memory.id = Uuid::now_v7().to_string();
        }
        memory.updated_at.get_or_insert(now);
        if memory.expires_at.is_none() {
            memory.expires_at = self.default_ttl.and_then(|ttl| now.checked_add(ttl));
        }
        TenantMemory {
            tenant: tenant.to_owned(),
            text: self.text.and_then(|text| text.document(&memory.payload)),
            memory,
        }
    }
}

pub struct Core {
    namespaces: BTreeMap<String, NamespaceConfig>,
    /// The BM25 model of each namespace with a `text_field`.
    texts: HashMap<String, TextIndex>,
    limits: Limits,
    rates: TenantRates,
    store: Arc<dyn VectorStore>,
    cache: ResultCache,
}

impl Core {
    pub fn new(config: &Config, pipeline: Pipeline) -> anyhow::Result<Self> {
        let mut texts = HashMap::new();
        for (name, ns) in &config.namespaces {
            if let Some(field) = &ns.text_field {
                texts.insert(name.clone(), TextIndex::new(field)?);
            }
        }
        Ok(Self {
            namespaces: config.namespaces.clone(),
            texts,
            limits: config.limits.clone(),
            rates: TenantRates::new(&config.admission, pipeline.metrics.clone()),
            store: pipeline.store,
            cache: pipeline.cache,
        })
    }

    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    /// The prologue of every data RPC: the request is valid for its
    /// namespace, and `caller` may act for its tenant within the tenant's
    /// rate budget.
    fn admit<R: Admissible>(&self, caller: &Caller, req: &R) -> Result<()> {
        let mut validator = self.validator("namespace", req.namespace())?;
        req.validate("", &mut validator);
        validator.finish()?;
        self.authorize(caller, req.tenant(), R::ACCESS)
    }

    /// Lets `caller` act for `tenant`, within the tenant's rate budget.
    fn authorize(&self, caller: &Caller, tenant: &str, access: Access) -> Result<()> {
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
        Ok(Validator::new(&self.limits, ns.dim(), ns.distance)
            .with_text_field(ns.text_field.as_deref()))
    }

    /// The BM25 model of a namespace with a text field.
    fn text_index(&self, namespace: &str) -> Option<&TextIndex> {
        self.texts.get(namespace)
    }

    pub async fn upsert(&self, caller: &Caller, req: UpsertRequest) -> Result<Vec<String>> {
        self.admit(caller, &req)?;

        let now = SystemTime::now();
        let UpsertRequest {
            namespace,
            tenant,
            memories,
        } = req;
        let defaults = self.write_defaults(&namespace);
        let items: Vec<TenantMemory> = memories
            .into_iter()
            .map(|memory| {
                // Upsert sets `updated_at`, whatever the client sent.
                let memory = Memory {
                    updated_at: None,
                    ..memory
                };
                defaults.to_store(&tenant, memory, now)
            })
            .collect();
        let ids = items.iter().map(|item| item.memory.id.clone()).collect();
        let written = self.store.upsert(&namespace, items).await;
        self.cache.written(&namespace, &tenant);
        written?;
        Ok(ids)
    }

    /// What a write to `namespace` fills in on each memory it stores.
    fn write_defaults(&self, namespace: &str) -> WriteDefaults<'_> {
        WriteDefaults {
            default_ttl: self.namespaces.get(namespace).and_then(|ns| ns.default_ttl),
            text: self.text_index(namespace),
        }
    }

    pub async fn search(
        &self,
        caller: &Caller,
        req: SearchRequest,
    ) -> Result<Served<Vec<ScoredMemory>>> {
        self.admit(caller, &req)?;
        let namespace = req.namespace.clone();
        let consistency = req.consistency;
        let planned = self.plan_search(req, String::new())?;
        let key = || self.cache.search_key(&namespace, &planned.search);
        self.cache
            .get_or_load(key, consistency, || async {
                let search = self.with_query_vector(&namespace, &planned).await?;
                self.search_one(&namespace, search).await
            })
            .await
    }

    /// Runs searches that may span namespaces: one store call per namespace,
    /// results put back in request order.
    pub async fn search_batch(
        &self,
        caller: &Caller,
        reqs: Vec<SearchRequest>,
    ) -> Result<Served<Vec<Vec<ScoredMemory>>>> {
        if reqs.is_empty() || reqs.len() > self.limits.max_batch.get() {
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
            req.validate(&prefix, &mut validator);
            if let Err(Error::InvalidArgument(found)) = validator.finish() {
                violations.extend(found);
            }
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        for req in &reqs {
            self.authorize(caller, &req.tenant, SearchRequest::ACCESS)?;
        }

        let mut keys = Vec::with_capacity(reqs.len());
        let mut searches = Vec::with_capacity(reqs.len());
        for (i, req) in reqs.into_iter().enumerate() {
            let namespace = req.namespace.clone();
            let consistency = req.consistency;
            let planned = self.plan_search(req, format!("searches[{i}]"))?;
            // No key for a search that bypasses the cache.
            keys.push(
                (!self.cache.bypassed(consistency))
                    .then(|| self.cache.search_key(&namespace, &planned.search)),
            );
            searches.push((namespace, planned));
        }
        self.cache
            .get_many_or_load(keys, |misses| self.search_by_namespace(&searches, misses))
            .await
    }

    /// Runs the searches at positions `wanted` with one store call per
    /// namespace, answers in the order of `wanted`. A failed call fails
    /// each search it carried; a "more like this" search whose examples
    /// cannot be read fails alone.
    async fn search_by_namespace(
        &self,
        searches: &[(String, PlannedSearch)],
        wanted: Vec<usize>,
    ) -> Result<Vec<Result<Vec<ScoredMemory>>>> {
        let mut answers: Vec<Option<Result<Vec<ScoredMemory>>>> = vec![None; wanted.len()];
        // The examples of every "more like this" search are read at once.
        let ready = futures::future::join_all(wanted.iter().map(|&i| {
            let (namespace, planned) = &searches[i];
            self.with_query_vector(namespace, planned)
        }))
        .await;
        let mut by_namespace: BTreeMap<&str, Vec<(usize, TenantSearch)>> = BTreeMap::new();
        for (slot, (&i, search)) in wanted.iter().zip(ready).enumerate() {
            match search {
                Ok(search) => by_namespace
                    .entry(&searches[i].0)
                    .or_default()
                    .push((slot, search)),
                Err(error) => answers[slot] = Some(Err(error)),
            }
        }
        for (namespace, ready) in by_namespace {
            let (slots, batch): (Vec<usize>, Vec<TenantSearch>) = ready.into_iter().unzip();
            match self.store.search(namespace, batch).await {
                Ok(found) if found.len() == slots.len() => {
                    for (slot, hits) in slots.into_iter().zip(found) {
                        answers[slot] = Some(Ok(hits));
                    }
                }
                Ok(_) => {
                    return Err(Error::internal(
                        "store returned a wrong number of search results",
                    ));
                }
                Err(error) => {
                    for slot in slots {
                        answers[slot] = Some(Err(error.clone()));
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.ok_or_else(|| Error::internal("a search got no store call")))
            .collect()
    }

    pub async fn get(&self, caller: &Caller, req: GetRequest) -> Result<Served<GetResult>> {
        self.admit(caller, &req)?;
        let key = || {
            self.cache
                .get_key(&req.namespace, &req.tenant, &req.ids, req.with_vector)
        };
        self.cache
            .get_or_load(key, req.consistency, || {
                self.find(
                    &req.namespace,
                    &req.tenant,
                    req.ids.clone(),
                    req.with_vector,
                )
            })
            .await
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
        self.admit(caller, &req)?;
        let delete = TenantDelete {
            tenant: req.tenant.clone(),
            selector: req.selector,
        };
        let deleted = self.store.delete(&req.namespace, vec![delete]).await;
        self.cache.written(&req.namespace, &req.tenant);
        deleted
    }

    pub async fn scroll(&self, caller: &Caller, req: ScrollRequest) -> Result<ScrollPage> {
        self.admit(caller, &req)?;
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
        self.admit(caller, &req)?;
        self.store
            .count(&req.namespace, &req.tenant, req.filter)
            .await
    }

    /// A consistent copy of every namespace, as a gzipped tar archive in chunks
    /// (see [`crate::backup`]). Not charged to any tenant's rate: it reads
    /// every tenant's data, and only a key for all of them may ask.
    pub async fn snapshot(
        &self,
        caller: &Caller,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
        caller.authorize_every_tenant()?;
        let copy = self.store.snapshot().await?;
        Ok(backup::archive(copy))
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
            dim: ns.dim.get(),
            distance: ns.distance,
            text_field: ns.text_field.clone(),
            default_ttl: ns.default_ttl,
            stats,
        })
    }

    pub async fn is_ready(&self) -> bool {
        self.store.is_ready().await
    }
}
