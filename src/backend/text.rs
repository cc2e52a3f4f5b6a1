//! Search by text: a namespace's `text_field` is kept as a BM25 sparse
//! vector, named [`TEXT_VECTOR`], beside the point's dense vector, so the
//! engine's sparse index ranks it and its Query API fuses that ranking with
//! the dense one (prefetch + RRF or DBSF) in one call.
//!
//! vecmem computes the sparse vectors itself, with the BM25 embedder that
//! qdrant-edge ships, which is Qdrant's own code (its tokeniser, English
//! stopwords and stemmer, term hashing, k1 = 1.2, b = 0.75, average length
//! 256). Both backends therefore store and query exactly the same vectors,
//! and a Qdrant server needs no inference configured. The IDF half of BM25
//! is the engine's (the sparse vector's `idf` modifier): only the engine
//! knows how many points hold a term.

use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use serde_json::Value;

use crate::model::{Fusion, Payload};

/// Name of the sparse vector that holds a memory's text.
pub const TEXT_VECTOR: &str = "text";

/// A sparse vector: `values[i]` is the weight of dimension `indices[i]`;
/// indices are unique.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseVector {
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The text part of a search: its BM25 query and, when the search has a
/// vector too, how the two rankings are fused.
#[derive(Debug, Clone, PartialEq)]
pub struct TextQuery {
    pub vector: SparseVector,
    pub fusion: Fusion,
}

/// What a payload change does to a memory's text vector.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum TextChange {
    /// The text field is untouched (or the namespace has none).
    #[default]
    Keep,
    /// The text field is set to a text with this vector.
    Set(SparseVector),
    /// The text field is removed (or set to text without a single term).
    Clear,
}

/// A namespace's text field and the BM25 model that turns it into vectors.
#[derive(Debug)]
pub struct TextIndex {
    field: String,
    bm25: EdgeBm25,
}

impl TextIndex {
    /// The index of payload key `field`, with Qdrant's BM25 defaults.
    pub fn new(field: &str) -> anyhow::Result<Self> {
        let bm25 = EdgeBm25::new(EdgeBm25Config::default())
            .map_err(|err| anyhow::anyhow!("BM25 model: {err}"))?;
        Ok(Self {
            field: field.to_owned(),
            bm25,
        })
    }

    /// The payload key whose text is indexed.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The vector of a memory's text: `None` when its payload has no text
    /// there, or text without a single term (stopwords only, say).
    pub fn document(&self, payload: &Payload) -> Option<SparseVector> {
        let Some(Value::String(text)) = payload.get(&self.field) else {
            return None;
        };
        let embedded = self.bm25.embed_document(text);
        let vector = SparseVector {
            indices: embedded.indices,
            values: embedded.values,
        };
        (!vector.is_empty()).then_some(vector)
    }

    /// The vector of a query text: weight 1 for each of its terms.
    pub fn query(&self, text: &str) -> SparseVector {
        let embedded = self.bm25.embed_query(text);
        SparseVector {
            indices: embedded.indices,
            values: embedded.values,
        }
    }

    /// What a payload change does to the text vector: a replacement sets
    /// the text it carries or clears it; a merge changes it only if it
    /// names the text field (`null` removes the key, and so the text).
    pub fn change(&self, payload: &Payload, replace: bool) -> TextChange {
        if !replace && !payload.contains_key(&self.field) {
            return TextChange::Keep;
        }
        match self.document(payload) {
            Some(vector) => TextChange::Set(vector),
            None => TextChange::Clear,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(value: Value) -> Payload {
        value.as_object().cloned().unwrap_or_default()
    }

    fn index() -> TextIndex {
        TextIndex::new("text").expect("default BM25 model")
    }

    #[test]
    fn a_document_and_a_query_share_their_terms() {
        let index = index();
        let document = index
            .document(&payload(json!({"text": "The cats were chasing mice"})))
            .expect("has terms");
        let query = index.query("cat chases");
        // Stemmed: "cats" and "cat", "chasing" and "chases" meet.
        assert_eq!(query.indices.len(), 2);
        assert!(query.indices.iter().all(|i| document.indices.contains(i)));
        assert!(query.values.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn no_text_is_no_vector() {
        let index = index();
        assert_eq!(index.document(&payload(json!({"other": "cats"}))), None);
        assert_eq!(index.document(&payload(json!({"text": 3}))), None);
        assert_eq!(index.document(&payload(json!({"text": "the of a"}))), None);
    }

    #[test]
    fn a_payload_change_touches_the_text_only_when_it_names_it() {
        let index = index();
        let other = payload(json!({"kind": "note"}));
        assert_eq!(index.change(&other, false), TextChange::Keep);
        assert_eq!(index.change(&other, true), TextChange::Clear);
        let removed = payload(json!({"text": null}));
        assert_eq!(index.change(&removed, false), TextChange::Clear);
        let set = payload(json!({"text": "mice"}));
        assert!(matches!(index.change(&set, false), TextChange::Set(_)));
        assert!(matches!(index.change(&set, true), TextChange::Set(_)));
    }
}
