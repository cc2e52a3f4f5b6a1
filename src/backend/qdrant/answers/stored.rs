//! A point's stored payload as vecmem reads it: its own fields (the memory
//! id, the tenant, the timestamps) and the caller's payload as JSON, kept
//! from Qdrant's `map<string, Value>` entries as they are read, with nothing
//! built for the rest.
//!
//! Qdrant sends a payload as repeated key/value entries. Decoded into a
//! list of entries, every key and every string of a hit was allocated and
//! checked before vecmem matched its few keys and dropped the rest, and the
//! caller's payload was built twice (entries, then JSON). Here each entry
//! is applied as it is read: [`read`](super::read) matches the keys as
//! bytes and builds JSON straight from the wire, and prost, where it reads
//! instead, decodes one [`Entry`] at a time and applies it the same way.
//! A key sent twice keeps its last value, as a map would.

use std::collections::HashMap;

use qdrant_client::qdrant;
use serde_json::Value as Json;

use super::super::translate::to_qdrant_payload;
use crate::backend::layout::{self, StoredFields};
use crate::model::Payload;

/// vecmem's fields of a stored point, each as its last entry left it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stored {
    /// `None` unless the memory id is a string: a point vecmem did not write.
    pub memory_id: Option<String>,
    /// `None` unless the tenant is a string.
    pub tenant: Option<String>,
    /// `None` unless an integer.
    pub updated_at_us: Option<i64>,
    /// `None` unless an integer.
    pub expires_at_us: Option<i64>,
    /// The caller's payload; empty unless an object.
    pub payload: Payload,
}

/// Which of vecmem's fields a payload key is, if any.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Field {
    MemoryId,
    Tenant,
    UpdatedAt,
    ExpiresAt,
    Payload,
}

impl Field {
    /// The field stored under `key`, matched as bytes so a key read off the
    /// wire need not be checked as UTF-8 or copied first.
    pub fn of(key: &[u8]) -> Option<Field> {
        const FIELDS: [(&str, Field); 5] = [
            (layout::ID_FIELD, Field::MemoryId),
            (layout::TENANT_FIELD, Field::Tenant),
            (layout::UPDATED_AT_FIELD, Field::UpdatedAt),
            (layout::EXPIRES_AT_FIELD, Field::ExpiresAt),
            (layout::PAYLOAD_FIELD, Field::Payload),
        ];
        FIELDS
            .iter()
            .find(|(name, _)| name.as_bytes() == key)
            .map(|&(_, field)| field)
    }
}

impl Stored {
    /// Takes `value` as the field's value, replacing what an earlier entry
    /// left: JSON of another type than the field's leaves it empty, as
    /// [`layout::memory_from_stored`] reads it.
    pub fn set(&mut self, field: Field, value: Json) {
        match field {
            Field::MemoryId => self.memory_id = string(value),
            Field::Tenant => self.tenant = string(value),
            Field::UpdatedAt => self.updated_at_us = value.as_i64(),
            Field::ExpiresAt => self.expires_at_us = value.as_i64(),
            Field::Payload => {
                self.payload = match value {
                    Json::Object(payload) => payload,
                    _ => Payload::new(),
                }
            }
        }
    }

    /// Applies one entry as prost decodes it.
    pub fn apply(&mut self, entry: Entry) {
        if let Some(field) = Field::of(entry.key.as_bytes()) {
            self.set(field, entry.value.map_or(Json::Null, value_to_json));
        }
    }

    /// The memory's fields, with the caller's payload only if it was asked
    /// for; `None` for a point that vecmem did not write (no string
    /// `memory_id`).
    pub fn into_fields(self, with_payload: bool) -> Option<StoredFields> {
        Some(StoredFields {
            id: self.memory_id?,
            updated_at_us: self.updated_at_us,
            expires_at_us: self.expires_at_us,
            payload: if with_payload {
                self.payload
            } else {
                Payload::new()
            },
        })
    }

    /// The payload Qdrant would send for these fields (the caller's payload
    /// when it is not empty), as `qdrant-client` holds one, for encoding.
    pub fn qdrant_payload(&self) -> HashMap<String, qdrant::Value> {
        let strings = [
            (layout::ID_FIELD, &self.memory_id),
            (layout::TENANT_FIELD, &self.tenant),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, Json::from(value.as_deref()?))));
        let integers = [
            (layout::UPDATED_AT_FIELD, self.updated_at_us),
            (layout::EXPIRES_AT_FIELD, self.expires_at_us),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, Json::from(value?))));
        let payload = (!self.payload.is_empty())
            .then(|| (layout::PAYLOAD_FIELD, Json::Object(self.payload.clone())));
        let stored = strings
            .chain(integers)
            .chain(payload)
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        to_qdrant_payload(stored)
    }
}

fn string(value: Json) -> Option<String> {
    match value {
        Json::String(string) => Some(string),
        _ => None,
    }
}

/// One entry of a `map<string, Value>`, as prost decodes it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Value>,
}

/// `Value` of `json_with_int.proto`: JSON with integers kept apart.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(int32, tag = "1")]
    Null(i32),
    #[prost(double, tag = "2")]
    Double(f64),
    #[prost(int64, tag = "3")]
    Integer(i64),
    #[prost(string, tag = "4")]
    String(String),
    #[prost(bool, tag = "5")]
    Bool(bool),
    #[prost(message, tag = "6")]
    Object(Object),
    #[prost(message, tag = "7")]
    List(List),
}

/// `Struct`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Object {
    #[prost(message, repeated, tag = "1")]
    pub fields: Vec<Entry>,
}

/// `ListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct List {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

/// A decoded `Value` as JSON; a double JSON cannot hold (NaN, infinite) is
/// null, and a key sent twice in an object keeps its last value.
pub fn value_to_json(value: Value) -> Json {
    match value.kind {
        None | Some(Kind::Null(_)) => Json::Null,
        Some(Kind::Double(number)) => double(number),
        Some(Kind::Integer(number)) => Json::from(number),
        Some(Kind::String(string)) => Json::String(string),
        Some(Kind::Bool(boolean)) => Json::Bool(boolean),
        Some(Kind::Object(object)) => Json::Object(
            object
                .fields
                .into_iter()
                .map(|entry| (entry.key, entry.value.map_or(Json::Null, value_to_json)))
                .collect(),
        ),
        Some(Kind::List(list)) => Json::Array(list.values.into_iter().map(value_to_json).collect()),
    }
}

/// A double as JSON: null where JSON cannot hold it (NaN, infinite).
pub fn double(number: f64) -> Json {
    serde_json::Number::from_f64(number).map_or(Json::Null, Json::Number)
}
