//! `google.protobuf.Struct`, the payload of a memory, held as the
//! `serde_json` object the rest of vecmem works with.
//!
//! pbjson-types holds a `Struct` as a `HashMap` of protobuf `Value`s, so
//! every payload of a request or an answer was rebuilt key by key between
//! that and `serde_json`, SipHashing each key. Counted with callgrind
//! (`benches/callgrind.sh`), building those maps for a 10-hit answer took
//! ~10,600 of the ~298,000 instructions vecmem spent on an uncached
//! search. build.rs maps `.google.protobuf.Struct` to this type (every
//! other well-known type stays pbjson-types'), so a payload is moved into
//! a message, not converted, and written here straight from the object.
//!
//! On the wire it is `Struct`'s form: entries in field 1, each a key (1)
//! and a `Value` (2) whose kind is null (1), number (2), string (3), bool
//! (4), struct (5) or list (6). Entries are read through prost, one at a
//! time, with its limits and errors, and keep their order at every level;
//! a key sent twice keeps the last value, as for any protobuf map. In JSON
//! it is the object itself, as the proto3 JSON mapping has it.
//!
//! Two rules apply on the way in, from the wire or from JSON. A whole
//! number within 2^53 becomes an integer, so that integer filters match
//! it. A number JSON cannot hold (NaN, ±infinity: only the wire carries
//! them) is stored as null and its path recorded, so that the request's
//! validation refuses it at that path.

use bytes::{Buf, BufMut};
use prost::encoding::{
    DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, skip_field,
};
use prost::{DecodeError, Message};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::model::join;

/// Largest integer a JSON number (an f64) holds exactly: 2^53.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A JSON object as the `google.protobuf.Struct` of vecmem's messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Struct {
    /// The object, in the order its keys were written.
    pub fields: Map<String, Value>,
    /// Numbers read off the wire that JSON cannot hold: the top-level key
    /// each lies under, and its path from the object (`a.b[2]`).
    non_finite: Vec<(String, String)>,
}

impl Struct {
    /// Paths, from this object, of the numbers read off the wire that JSON
    /// cannot hold (stored as null in `fields`).
    pub fn non_finite_paths(&self) -> impl Iterator<Item = &str> {
        self.non_finite.iter().map(|(_, path)| path.as_str())
    }
}

impl From<Map<String, Value>> for Struct {
    fn from(fields: Map<String, Value>) -> Self {
        Self {
            fields,
            non_finite: Vec::new(),
        }
    }
}

/// A JSON number as vecmem stores it: whole numbers within 2^53 as
/// integers, others as floats; `None` for NaN and ±infinity.
fn stored_number(n: f64) -> Option<Value> {
    if !n.is_finite() {
        None
    } else if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        Some(Value::from(n as i64))
    } else {
        Number::from_f64(n).map(Value::Number)
    }
}

impl Message for Struct {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        write_entries(&self.fields, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != 1 {
            return skip_field(wire_type, tag, buf, ctx);
        }
        let mut entry = WireEntry::default();
        prost::encoding::message::merge(wire_type, &mut entry, buf, ctx)?;
        let WireEntry { key, value } = entry;
        let mut paths = Vec::new();
        let value = value.map_or(Value::Null, |value| {
            json_from_wire(value, &|| key.clone(), &mut paths)
        });
        // A key sent again replaces its value, and what was recorded under it.
        if !self.non_finite.is_empty() {
            self.non_finite.retain(|(under, _)| *under != key);
        }
        self.non_finite
            .extend(paths.into_iter().map(|path| (key.clone(), path)));
        self.fields.insert(key, value);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        entries_len(&self.fields)
    }

    fn clear(&mut self) {
        self.fields.clear();
        self.non_finite.clear();
    }
}

impl Serialize for Struct {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.fields.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Struct {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut fields = Map::deserialize(deserializer)?;
        fields.values_mut().for_each(store_numbers);
        Ok(Self::from(fields))
    }
}

/// Applies [`stored_number`] to every number of a JSON value; JSON text
/// holds no NaN or infinity, so every number has a stored form.
fn store_numbers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(stored) = n.as_f64().and_then(stored_number) {
                *value = stored;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(store_numbers),
        Value::Object(map) => map.values_mut().for_each(store_numbers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// One entry of a `Struct` on the wire (prost's `map<string, Value>`).
#[derive(Clone, PartialEq, prost::Message)]
struct WireEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<WireValue>,
}

/// `google.protobuf.Value` on the wire; its struct kind is a [`Struct`],
/// so nested objects are read here too.
#[derive(Clone, PartialEq, prost::Message)]
struct WireValue {
    #[prost(oneof = "WireKind", tags = "1, 2, 3, 4, 5, 6")]
    kind: Option<WireKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum WireKind {
    /// `NullValue`, an enum of one value.
    #[prost(int32, tag = "1")]
    Null(i32),
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    String(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
    #[prost(message, tag = "5")]
    Struct(Struct),
    #[prost(message, tag = "6")]
    List(WireList),
}

/// `google.protobuf.ListValue` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct WireList {
    #[prost(message, repeated, tag = "1")]
    values: Vec<WireValue>,
}

/// A value read off the wire as JSON, recording in `non_finite` the path
/// (built only then) of each number JSON cannot hold.
fn json_from_wire(
    value: WireValue,
    path: &dyn Fn() -> String,
    non_finite: &mut Vec<String>,
) -> Value {
    match value.kind {
        None | Some(WireKind::Null(_)) => Value::Null,
        Some(WireKind::Bool(b)) => Value::Bool(b),
        Some(WireKind::String(s)) => Value::String(s),
        Some(WireKind::Number(n)) => stored_number(n).unwrap_or_else(|| {
            non_finite.push(path());
            Value::Null
        }),
        Some(WireKind::Struct(object)) => {
            let Struct {
                fields,
                non_finite: nested,
            } = object;
            if !nested.is_empty() {
                let path = path();
                non_finite.extend(nested.into_iter().map(|(_, p)| join(&path, &p)));
            }
            Value::Object(fields)
        }
        Some(WireKind::List(list)) => Value::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(i, item)| json_from_wire(item, &|| format!("{}[{i}]", path()), non_finite))
                .collect(),
        ),
    }
}

// Writing. Every tag below is under 16, so each key is one byte.

/// Bytes of a length-delimited field holding `len` bytes, its one-byte key
/// included (a field number under 16); vecmem's answers measure theirs
/// with it too.
pub(crate) fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The bytes of `map`'s entries, as a `Struct`'s fields.
pub(crate) fn entries_len(map: &Map<String, Value>) -> usize {
    map.iter()
        .map(|(key, value)| delimited_len(entry_len(key, value_len(value))))
        .sum()
}

/// An entry of a value of `value_len` bytes. Its key is left out when
/// empty, as prost leaves out a map entry's default key; its value always
/// has a kind, so is always written.
fn entry_len(key: &str, value_len: usize) -> usize {
    let key_len = if key.is_empty() {
        0
    } else {
        delimited_len(key.len())
    };
    key_len + delimited_len(value_len)
}

fn value_len(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 2,
        Value::Number(_) => 9,
        Value::String(s) => delimited_len(s.len()),
        Value::Array(items) => delimited_len(items_len(items)),
        Value::Object(map) => delimited_len(entries_len(map)),
    }
}

fn items_len(items: &[Value]) -> usize {
    items
        .iter()
        .map(|item| delimited_len(value_len(item)))
        .sum()
}

fn write_delimited(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Writes `map`'s entries, as a `Struct`'s fields.
pub(crate) fn write_entries(map: &Map<String, Value>, buf: &mut impl BufMut) {
    for (key, value) in map {
        let value_len = value_len(value);
        write_delimited(1, entry_len(key, value_len), buf);
        if !key.is_empty() {
            write_delimited(1, key.len(), buf);
            buf.put_slice(key.as_bytes());
        }
        write_delimited(2, value_len, buf);
        write_value(value, buf);
    }
}

fn write_value(value: &Value, buf: &mut impl BufMut) {
    match value {
        Value::Null => {
            encode_key(1, WireType::Varint, buf);
            buf.put_u8(0);
        }
        Value::Number(n) => {
            encode_key(2, WireType::SixtyFourBit, buf);
            buf.put_f64_le(n.as_f64().unwrap_or_default());
        }
        Value::String(s) => {
            write_delimited(3, s.len(), buf);
            buf.put_slice(s.as_bytes());
        }
        Value::Bool(b) => {
            encode_key(4, WireType::Varint, buf);
            buf.put_u8(u8::from(*b));
        }
        Value::Object(map) => {
            write_delimited(5, entries_len(map), buf);
            write_entries(map, buf);
        }
        Value::Array(items) => {
            write_delimited(6, items_len(items), buf);
            for item in items {
                write_delimited(1, value_len(item), buf);
                write_value(item, buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pbjson_types::value::Kind;
    use serde_json::json;

    use super::*;

    fn object(json: Value) -> Map<String, Value> {
        match json {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// pbjson-types' reading of a value, as JSON with every number a double.
    fn reference_json(value: &pbjson_types::Value) -> Value {
        match &value.kind {
            None | Some(Kind::NullValue(_)) => Value::Null,
            Some(Kind::BoolValue(b)) => Value::Bool(*b),
            Some(Kind::NumberValue(n)) => json!(n),
            Some(Kind::StringValue(s)) => Value::String(s.clone()),
            Some(Kind::ListValue(list)) => list.values.iter().map(reference_json).collect(),
            Some(Kind::StructValue(s)) => Value::Object(
                s.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), reference_json(v)))
                    .collect(),
            ),
        }
    }

    /// JSON as pbjson-types' `Value`, numbers as doubles.
    fn reference_value(json: &Value) -> pbjson_types::Value {
        let kind = match json {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().expect("number")),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(items) => Kind::ListValue(pbjson_types::ListValue {
                values: items.iter().map(reference_value).collect(),
            }),
            Value::Object(map) => Kind::StructValue(pbjson_types::Struct {
                fields: map
                    .iter()
                    .map(|(k, v)| (k.clone(), reference_value(v)))
                    .collect(),
            }),
        };
        pbjson_types::Value { kind: Some(kind) }
    }

    fn as_doubles(json: &Value) -> Value {
        match json {
            Value::Number(n) => json!(n.as_f64()),
            Value::Array(items) => items.iter().map(as_doubles).collect(),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), as_doubles(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn sample() -> Map<String, Value> {
        object(json!({
            "text": "a note",
            "n": 3,
            "f": -2.5,
            "yes": true,
            "no": false,
            "nothing": null,
            "": "empty key",
            "tags": ["a", 1, null, {"deep": [[]]}, []],
            "nested": {"b": {"c": "d"}, "e": {}},
            "long": "x".repeat(300),
        }))
    }

    #[test]
    fn what_is_written_is_what_prost_reads_as_a_struct() {
        let ours = Struct::from(sample());
        let bytes = ours.encode_to_vec();
        assert_eq!(bytes.len(), ours.encoded_len());
        let reference = pbjson_types::Struct::decode(bytes.as_slice()).expect("prost reads it");
        let read: Map<String, Value> = reference
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), reference_json(v)))
            .collect();
        assert_eq!(Value::Object(read), as_doubles(&Value::Object(sample())));
    }

    #[test]
    fn one_entry_is_written_byte_for_byte_as_prost_writes_it() {
        for value in [
            json!(null),
            json!(true),
            json!(7),
            json!("s"),
            json!([1, "two", [null]]),
            json!({"a": {"b": 1.5}}),
            json!(""),
            json!([]),
        ] {
            let ours = Struct::from(object(json!({ "k": value.clone() })));
            let theirs = pbjson_types::Struct {
                fields: [("k".to_owned(), reference_value(&value))].into(),
            };
            assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec(), "{value}");
        }
    }

    #[test]
    fn what_prost_writes_is_read_with_whole_numbers_as_integers() {
        let written = Struct::from(sample()).encode_to_vec();
        let reference = pbjson_types::Struct::decode(written.as_slice()).expect("prost reads it");
        let read = Struct::decode(reference.encode_to_vec().as_slice()).expect("read");
        assert_eq!(read.non_finite_paths().count(), 0);
        assert_eq!(Value::Object(read.fields), Value::Object(sample()));
    }

    #[test]
    fn keys_keep_their_order_at_every_level() {
        let sent = object(json!({"z": 1, "a": {"y": 1, "b": 2, "x": 3}, "m": 2}));
        let read =
            Struct::decode(Struct::from(sent.clone()).encode_to_vec().as_slice()).expect("read");
        let keys = |map: &Map<String, Value>| map.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&read.fields), keys(&sent));
        assert_eq!(keys(&object(read.fields["a"].clone())), ["y", "b", "x"]);
    }

    fn number(n: f64) -> pbjson_types::Value {
        pbjson_types::Value {
            kind: Some(Kind::NumberValue(n)),
        }
    }

    fn nested(key: &str, value: pbjson_types::Value) -> pbjson_types::Value {
        pbjson_types::Value {
            kind: Some(Kind::StructValue(pbjson_types::Struct {
                fields: [(key.to_owned(), value)].into(),
            })),
        }
    }

    fn list(values: Vec<pbjson_types::Value>) -> pbjson_types::Value {
        pbjson_types::Value {
            kind: Some(Kind::ListValue(pbjson_types::ListValue { values })),
        }
    }

    fn read_one(key: &str, value: pbjson_types::Value) -> Struct {
        let sent = pbjson_types::Struct {
            fields: [(key.to_owned(), value)].into(),
        };
        Struct::decode(sent.encode_to_vec().as_slice()).expect("read")
    }

    #[test]
    fn numbers_json_cannot_hold_are_null_and_recorded_at_their_path() {
        let read = read_one(
            "a",
            nested("b", list(vec![number(1.0), number(f64::INFINITY)])),
        );
        assert_eq!(
            Value::Object(read.fields.clone()),
            json!({"a": {"b": [1, null]}})
        );
        assert_eq!(read.non_finite_paths().collect::<Vec<_>>(), ["a.b[1]"]);
        let read = read_one("score", number(f64::NAN));
        assert_eq!(read.non_finite_paths().collect::<Vec<_>>(), ["score"]);
    }

    #[test]
    fn a_key_sent_twice_keeps_its_last_value_and_only_its_paths() {
        let entry = |key: &str, value| {
            pbjson_types::Struct {
                fields: [(key.to_owned(), value)].into(),
            }
            .encode_to_vec()
        };
        let mut bytes = entry("k", number(f64::NAN));
        bytes.extend(entry("other", number(f64::NAN)));
        bytes.extend(entry("k", number(2.0)));
        let read = Struct::decode(bytes.as_slice()).expect("read");
        assert_eq!(
            Value::Object(read.fields.clone()),
            json!({"k": 2, "other": null})
        );
        assert_eq!(read.non_finite_paths().collect::<Vec<_>>(), ["other"]);
    }

    #[test]
    fn bad_bytes_fail_as_they_fail_prost() {
        let bytes = Struct::from(sample()).encode_to_vec();
        for end in 0..bytes.len() {
            let cut = &bytes[..end];
            assert_eq!(
                Struct::decode(cut).is_ok(),
                pbjson_types::Struct::decode(cut).is_ok(),
                "cut at {end}"
            );
        }
        let mut deep = number(1.0);
        for _ in 0..120 {
            deep = nested("d", deep);
        }
        let sent = pbjson_types::Struct {
            fields: [("d".to_owned(), deep)].into(),
        }
        .encode_to_vec();
        assert!(
            Struct::decode(sent.as_slice()).is_err(),
            "prost's recursion limit"
        );
    }

    #[test]
    fn json_is_the_object_with_whole_numbers_as_integers() {
        let read: Struct =
            serde_json::from_str(r#"{"a": 3.0, "b": [1.5, 2e3, {"c": 4}], "d": 1e300}"#)
                .expect("json");
        assert_eq!(
            serde_json::to_value(&read).expect("json"),
            json!({"a": 3, "b": [1.5, 2000, {"c": 4}], "d": 1e300})
        );
        assert!(matches!(read.fields["a"], Value::Number(ref n) if n.is_i64()));
    }

    #[test]
    fn whole_numbers_within_2_pow_53_become_integers() {
        assert_eq!(stored_number(3.0), Some(Value::from(3)));
        assert_eq!(stored_number(-2.5), Some(Value::from(-2.5)));
        assert_eq!(stored_number(1e300), Some(Value::from(1e300)));
        assert_eq!(stored_number(f64::NAN), None);
    }
}
