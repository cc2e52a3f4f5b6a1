//! What `vecmem bench` sends: the mix of operations and the requests
//! themselves, drawn from a seeded generator so two runs with the same flags
//! send the same work.
//!
//! Searches draw their vector from a fixed set of `distinct_queries`
//! vectors, picked with a Zipf distribution of exponent `zipf` (0 picks
//! uniformly), which is how repeated queries show up in real traffic and what
//! a result cache is measured against. Gets and deletes address the
//! memories written by the seeding phase; upserts write fresh ids.

use anyhow::{Context, bail};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::json;

use crate::proto;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Search,
    Upsert,
    Get,
    Delete,
    Mix,
}

/// One kind of call of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Search,
    Upsert,
    Get,
    Delete,
}

impl Kind {
    fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "search" => Kind::Search,
            "upsert" => Kind::Upsert,
            "get" => Kind::Get,
            "delete" => Kind::Delete,
            other => bail!("unknown operation {other:?} in --mix (search, upsert, get, delete)"),
        })
    }
}

/// Weighted kinds, e.g. `search=80,upsert=20`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(Vec<(Kind, u32)>);

impl Mix {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut weights = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("--mix entry {part:?} is not NAME=WEIGHT"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("--mix weight of {name:?} is not a whole number"))?;
            weights.push((Kind::parse(name.trim())?, weight));
        }
        if weights.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            bail!("--mix needs at least one positive weight");
        }
        Ok(Mix(weights))
    }

    pub fn only(kind: Kind) -> Self {
        Mix(vec![(kind, 1)])
    }

    fn pick(&self, rng: &mut SmallRng) -> Kind {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut ticket = rng.random_range(0..total);
        for &(kind, weight) in &self.0 {
            if ticket < weight {
                return kind;
            }
            ticket -= weight;
        }
        self.0[0].0
    }
}

/// The shape of the data and of the traffic.
#[derive(Debug, Clone)]
pub struct Shape {
    pub namespace: String,
    pub dim: usize,
    pub tenants: usize,
    pub seed_memories: usize,
    pub distinct_queries: usize,
    pub zipf: f64,
    pub batch: usize,
    pub limit: u32,
}

impl Shape {
    pub fn tenant(&self, index: usize) -> String {
        format!("bench-{}", index % self.tenants.max(1))
    }

    /// Seeded memory `index`: its tenant and id.
    pub fn seeded(&self, index: usize) -> (String, String) {
        let tenants = self.tenants.max(1);
        (self.tenant(index), format!("seed-{}", index / tenants))
    }
}

/// One worker's request generator.
pub struct Workload {
    shape: Shape,
    mix: Mix,
    rng: SmallRng,
    queries: Vec<Vec<f32>>,
    zipf: Option<Zipf<f64>>,
    worker: usize,
    written: u64,
}

/// A request ready to send.
pub enum Call {
    Search(proto::SearchRequest),
    Upsert(proto::UpsertRequest),
    Get(proto::GetRequest),
    Delete(proto::DeleteRequest),
}

impl Workload {
    /// `seed` fixes the query set; `worker` varies the draws between workers.
    pub fn new(shape: Shape, mix: Mix, seed: u64, worker: usize) -> anyhow::Result<Self> {
        let mut queries_rng = SmallRng::seed_from_u64(seed);
        let queries = (0..shape.distinct_queries.max(1))
            .map(|_| random_vector(&mut queries_rng, shape.dim))
            .collect::<Vec<_>>();
        let zipf = if shape.zipf > 0.0 {
            Some(
                Zipf::new(queries.len() as f64, shape.zipf)
                    .map_err(|err| anyhow::anyhow!("--zipf {}: {err}", shape.zipf))?,
            )
        } else {
            None
        };
        Ok(Self {
            rng: SmallRng::seed_from_u64(
                seed ^ (worker as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            shape,
            mix,
            queries,
            zipf,
            worker,
            written: 0,
        })
    }

    pub fn next_call(&mut self) -> Call {
        match self.mix.pick(&mut self.rng) {
            Kind::Search => Call::Search(self.search()),
            Kind::Upsert => Call::Upsert(self.upsert()),
            Kind::Get => Call::Get(self.get()),
            Kind::Delete => Call::Delete(self.delete()),
        }
    }

    fn random_tenant(&mut self) -> String {
        let index = self.rng.random_range(0..self.shape.tenants.max(1));
        self.shape.tenant(index)
    }

    fn search(&mut self) -> proto::SearchRequest {
        let query = match &self.zipf {
            // Zipf draws 1..=n as a float.
            Some(zipf) => (zipf.sample(&mut self.rng) as usize).saturating_sub(1),
            None => self.rng.random_range(0..self.queries.len()),
        };
        let query = query.min(self.queries.len() - 1);
        proto::SearchRequest {
            namespace: self.shape.namespace.clone(),
            tenant: self.shape.tenant(query),
            vector: self.queries[query].clone(),
            limit: self.shape.limit,
            with_payload: true,
            ..Default::default()
        }
    }

    fn upsert(&mut self) -> proto::UpsertRequest {
        let tenant = self.random_tenant();
        let memories = (0..self.shape.batch.max(1))
            .map(|_| {
                self.written += 1;
                memory(
                    format!("w{}-{}", self.worker, self.written),
                    random_vector(&mut self.rng, self.shape.dim),
                    self.written,
                )
            })
            .collect();
        proto::UpsertRequest {
            namespace: self.shape.namespace.clone(),
            tenant,
            memories,
        }
    }

    /// A seeded memory's tenant and id (or an id that was never written,
    /// when nothing was seeded).
    fn existing(&mut self) -> (String, String) {
        let index = self.rng.random_range(0..self.shape.seed_memories.max(1));
        self.shape.seeded(index)
    }

    fn get(&mut self) -> proto::GetRequest {
        let (tenant, id) = self.existing();
        proto::GetRequest {
            namespace: self.shape.namespace.clone(),
            tenant,
            ids: vec![id],
            ..Default::default()
        }
    }

    fn delete(&mut self) -> proto::DeleteRequest {
        let (tenant, id) = self.existing();
        proto::DeleteRequest {
            namespace: self.shape.namespace.clone(),
            tenant,
            selector: Some(proto::delete_request::Selector::Ids(proto::MemoryIds {
                values: vec![id],
            })),
        }
    }
}

pub fn random_vector(rng: &mut SmallRng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn memory(id: String, vector: Vec<f32>, sequence: u64) -> proto::Memory {
    let mut payload = crate::model::Payload::new();
    payload.insert("source".into(), json!("vecmem-bench"));
    payload.insert("sequence".into(), json!(sequence));
    proto::Memory {
        id,
        vector,
        payload: Some(crate::api::convert::payload_to_proto(payload)),
        ..Default::default()
    }
}
