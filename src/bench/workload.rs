//! What `vecmem bench` sends: the mix of operations and the requests
//! themselves, drawn from a seeded generator so two runs with the same flags
//! send the same work.
//!
//! Searches draw their vector from a fixed set of `distinct_queries`
//! vectors, picked with a Zipf distribution of exponent `zipf` (0 picks
//! uniformly), which is how repeated queries show up in real traffic and what
//! a result cache is measured against. Gets and deletes address the
//! memories written by the seeding phase; upserts write fresh ids.
//!
//! With `--text`, every written memory carries a generated text (8 words
//! of a 4096-word vocabulary) under the text field, and every search a
//! 2-word text beside its vector: a hybrid search, fused by RRF.

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
    /// Import streams, one per worker, of `-n` memories in all.
    Import,
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
    /// The payload key of generated texts; `None` without `--text`.
    pub text_field: Option<String>,
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
    /// Boxed: a search request is several times the size of the others.
    Search(Box<proto::SearchRequest>),
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
            Kind::Search => Call::Search(Box::new(self.search())),
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
        let text = match &self.shape.text_field {
            Some(_) => generated_text(QUERY_TEXTS ^ query as u64, 2),
            None => String::new(),
        };
        proto::SearchRequest {
            namespace: self.shape.namespace.clone(),
            tenant: self.shape.tenant(query),
            vector: self.queries[query].clone(),
            text,
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
                    &self.shape,
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

/// A written memory: `sequence` numbers it in the payload and picks its
/// text, when the shape has a text field.
pub fn memory(shape: &Shape, id: String, vector: Vec<f32>, sequence: u64) -> proto::Memory {
    let mut payload = crate::model::Payload::new();
    payload.insert("source".into(), json!("vecmem-bench"));
    payload.insert("sequence".into(), json!(sequence));
    if let Some(field) = &shape.text_field {
        payload.insert(field.clone(), json!(generated_text(sequence, 8)));
    }
    proto::Memory {
        id,
        vector,
        payload: Some(crate::proto::Struct::from(payload)),
        ..Default::default()
    }
}

/// Keeps query texts apart from memory texts of the same number.
const QUERY_TEXTS: u64 = 1 << 63;

const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "do", "fu", "ge", "ho", "ja", "po", "qui", "zu",
];

/// `words` words for text number `n`: the same every run, uniform over a
/// vocabulary of 16^3 made-up three-syllable words.
pub fn generated_text(n: u64, words: usize) -> String {
    (0..words as u64)
        .map(|i| {
            let k = splitmix64(n.wrapping_mul(31).wrapping_add(i)) as usize;
            [k % 16, (k >> 4) % 16, (k >> 8) % 16]
                .map(|s| SYLLABLES[s])
                .concat()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_texts_are_stable_and_varied() {
        assert_eq!(generated_text(7, 8), generated_text(7, 8));
        assert_ne!(generated_text(7, 8), generated_text(8, 8));
        assert_eq!(generated_text(7, 8).split(' ').count(), 8);
        let words: std::collections::HashSet<String> = (0..1000)
            .flat_map(|n| {
                generated_text(n, 8)
                    .split(' ')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(words.len() > 3000, "{}", words.len());
    }
}
