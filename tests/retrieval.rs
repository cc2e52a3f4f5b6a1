//! Retrieval quality: does search by text and vector together find more of
//! what is relevant than either alone?
//!
//! The corpus is generated here, deterministically, to have the two kinds
//! of evidence real memories have. Every query asks for one entity of one
//! topic (a made-up name such as "korvane", plus a topic word), and four
//! memories are relevant to it:
//!
//! - Their vectors sit near the topic and the entity, as an embedding model
//!   would put them, with noise that blurs one entity into its topic's
//!   others. So a vector search finds some, and memories about the topic's
//!   other entities crowd out the rest.
//! - Two of them name the entity; the other two call it by another name
//!   (an alias, as people do), so a text search cannot find those. And the
//!   name also occurs in two memories of another topic (a homonym), which
//!   text search cannot tell from the relevant ones.
//!
//! recall@10 is the share of a query's relevant memories among its first
//! 10 hits, averaged over the 50 queries. The figures are printed and
//! quoted in the README; the test asserts that hybrid search (RRF) beats
//! both vector-only and text-only search.

mod support;

use serde_json::json;
use vecmem::proto;

use support::{Backend, TestServer};

on_every_backend!(hybrid_search_recalls_more_than_vector_or_text_alone);

const NAMESPACE: &str = "corpus";
const DIM: usize = 64;
const TOPICS: usize = 10;
const ENTITIES_PER_TOPIC: usize = 5;
/// How far a memory's vector leans towards its entity, beside its topic.
const ENTITY_WEIGHT: f32 = 0.5;
/// The norm of the noise added to every vector.
const NOISE: f32 = 1.3;
const K: usize = 10;

const TOPIC_WORDS: [[&str; 3]; TOPICS] = [
    ["garden", "soil", "compost"],
    ["invoice", "payment", "ledger"],
    ["flight", "airport", "luggage"],
    ["recipe", "oven", "flour"],
    ["server", "deploy", "latency"],
    ["doctor", "clinic", "prescription"],
    ["guitar", "chord", "rehearsal"],
    ["mortgage", "lender", "appraisal"],
    ["puppy", "leash", "vaccine"],
    ["marathon", "stride", "hydration"],
];

const FILLER: [&str; 24] = [
    "note",
    "remember",
    "later",
    "friday",
    "called",
    "asked",
    "about",
    "again",
    "shared",
    "plans",
    "monday",
    "week",
    "email",
    "thoughts",
    "quick",
    "update",
    "mentioned",
    "follow",
    "morning",
    "evening",
    "list",
    "check",
    "maybe",
    "soon",
];

const SYLLABLES: [&str; 16] = [
    "kor", "van", "mel", "dri", "sta", "lun", "bex", "tor", "qui", "zan", "pol", "ras", "fen",
    "gul", "nix", "ved",
];

/// xorshift64*: a small deterministic generator, so every run (and every
/// backend) sees the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [-1, 1).
    fn signed(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn unit(&mut self) -> Vec<f32> {
        normalized((0..DIM).map(|_| self.signed()).collect())
    }

    fn word(&mut self) -> String {
        (0..3)
            .map(|_| SYLLABLES[self.below(SYLLABLES.len())])
            .collect()
    }

    fn filler(&mut self, n: usize) -> Vec<&'static str> {
        (0..n).map(|_| FILLER[self.below(FILLER.len())]).collect()
    }
}

fn normalized(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// `topic + ENTITY_WEIGHT * entity + NOISE * random direction`, normalised.
fn embedding(rng: &mut Rng, topic: &[f32], entity: &[f32]) -> Vec<f32> {
    let noise = rng.unit();
    normalized(
        (0..DIM)
            .map(|i| topic[i] + ENTITY_WEIGHT * entity[i] + NOISE * noise[i])
            .collect(),
    )
}

struct Query {
    vector: Vec<f32>,
    text: String,
    relevant: Vec<String>,
}

struct Corpus {
    memories: Vec<proto::Memory>,
    queries: Vec<Query>,
}

fn corpus() -> Corpus {
    let mut rng = Rng(0x5eed_cafe_f00d_beef);
    let topics: Vec<Vec<f32>> = (0..TOPICS).map(|_| rng.unit()).collect();
    let mut names = std::collections::HashSet::new();
    let mut fresh_word = |rng: &mut Rng| loop {
        let word = rng.word();
        if names.insert(word.clone()) {
            return word;
        }
    };
    let mut memories = Vec::new();
    let mut queries = Vec::new();
    fn add(memories: &mut Vec<proto::Memory>, vector: Vec<f32>, text: String) -> String {
        let id = format!("m{}", memories.len());
        memories.push(proto::Memory {
            id: id.clone(),
            vector,
            payload: Some(support::data::to_struct(json!({ "text": text }))),
            ..Default::default()
        });
        id
    }
    for (t, topic) in topics.iter().enumerate() {
        for _ in 0..ENTITIES_PER_TOPIC {
            let entity = rng.unit();
            let name = fresh_word(&mut rng);
            let alias = fresh_word(&mut rng);
            let mut relevant = Vec::new();
            for called in [&name, &name, &alias, &alias] {
                let words = TOPIC_WORDS[t];
                let mut text = vec![called.as_str(), words[rng.below(3)], words[rng.below(3)]];
                text.extend(rng.filler(4));
                let vector = embedding(&mut rng, topic, &entity);
                relevant.push(add(&mut memories, vector, text.join(" ")));
            }
            // The same name, meaning something else in another topic.
            for _ in 0..2 {
                let other = (t + 1 + rng.below(TOPICS - 1)) % TOPICS;
                let words = TOPIC_WORDS[other];
                let mut text = vec![name.as_str(), words[rng.below(3)]];
                text.extend(rng.filler(5));
                let elsewhere = rng.unit();
                let vector = embedding(&mut rng, &topics[other], &elsewhere);
                add(&mut memories, vector, text.join(" "));
            }
            queries.push(Query {
                vector: embedding(&mut rng, topic, &entity),
                text: format!("{name} {}", TOPIC_WORDS[t][rng.below(3)]),
                relevant,
            });
        }
    }
    Corpus { memories, queries }
}

fn search(query: &Query, with_vector: bool, with_text: bool) -> proto::SearchRequest {
    proto::SearchRequest {
        namespace: NAMESPACE.into(),
        tenant: "corpus".into(),
        vector: if with_vector {
            query.vector.clone()
        } else {
            Vec::new()
        },
        text: if with_text {
            query.text.clone()
        } else {
            String::new()
        },
        limit: K as u32,
        ..Default::default()
    }
}

async fn recall_at_k(
    server: &TestServer,
    corpus: &Corpus,
    with_vector: bool,
    with_text: bool,
) -> f64 {
    let mut client = server.memory().await;
    let mut total = 0.0;
    for query in &corpus.queries {
        let hits = client
            .search(search(query, with_vector, with_text))
            .await
            .expect("search")
            .into_inner()
            .hits;
        assert!(hits.len() <= K);
        let found = hits
            .iter()
            .filter_map(|hit| hit.memory.as_ref())
            .filter(|memory| query.relevant.contains(&memory.id))
            .count();
        total += found as f64 / query.relevant.len() as f64;
    }
    total / corpus.queries.len() as f64
}

async fn hybrid_search_recalls_more_than_vector_or_text_alone(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dim = DIM.to_string();
    let server = backend.start_server_with(
        dir.path(),
        &[
            ("VECMEM__NAMESPACES__CORPUS__DIM", dim.as_str()),
            ("VECMEM__NAMESPACES__CORPUS__TEXT_FIELD", "text"),
        ],
    );
    let corpus = corpus();
    let mut client = server.memory().await;
    for chunk in corpus.memories.chunks(50) {
        client
            .upsert(proto::UpsertRequest {
                namespace: NAMESPACE.into(),
                tenant: "corpus".into(),
                memories: chunk.to_vec(),
            })
            .await
            .expect("upsert");
    }

    let vector = recall_at_k(&server, &corpus, true, false).await;
    let text = recall_at_k(&server, &corpus, false, true).await;
    let hybrid = recall_at_k(&server, &corpus, true, true).await;
    println!(
        "recall@{K} over {} queries, {} memories: vector {vector:.3}, text {text:.3}, hybrid (RRF) {hybrid:.3}",
        corpus.queries.len(),
        corpus.memories.len()
    );
    assert!(
        hybrid > vector && hybrid > text,
        "hybrid {hybrid} must beat vector {vector} and text {text}"
    );
}
