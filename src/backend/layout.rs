//! How a memory is laid out as a Qdrant point, shared by every backend so the
//! embedded engine and a Qdrant server hold the same data the same way.
//!
//! - The point id is a UUIDv5 of (tenant, id): deterministic, so an upsert
//!   replaces, and distinct per tenant, so two tenants can both own `"pref-1"`.
//! - The stored payload is `{tenant, memory_id, updated_at_us, expires_at_us,
//!   payload}`: the caller's JSON lives under `payload`, so none of its keys
//!   can collide with ours, and filters address it as `payload.<key>`.
//!   `expires_at_us` is there only for a memory that expires.
//! - `tenant` carries a keyword index flagged `is_tenant`, so Qdrant lays out
//!   each tenant's points together and a tenant filter is cheap.
//!   `expires_at_us` carries an integer range index: every read excludes
//!   the expired with a range condition on it ([`expired_before`]), and the
//!   sweeper finds them with the same condition.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use uuid::Uuid;

use crate::model::{ExpiryChange, Memory, Payload};

/// Payload field holding the owning tenant (indexed, `is_tenant`).
pub const TENANT_FIELD: &str = "tenant";
/// Payload field holding the caller's memory id.
pub const ID_FIELD: &str = "memory_id";
/// Payload field holding the write time, microseconds since the epoch.
pub const UPDATED_AT_FIELD: &str = "updated_at_us";
/// Payload field holding when the memory expires, microseconds since the
/// epoch; absent for a memory that never expires.
pub const EXPIRES_AT_FIELD: &str = "expires_at_us";
/// Payload field holding the caller's own payload object.
pub const PAYLOAD_FIELD: &str = "payload";

/// Fixed UUIDv5 namespace of vecmem point ids. Changing it orphans all data.
const POINT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c0b_5f5e_9a77_4f0e_8d1e_2b7a_4c3d_9e01);

/// The point id of memory `id` of `tenant`.
///
/// The tenant is length-prefixed so that no (tenant, id) pair can produce the
/// same name as another: ("ab", "c") and ("a", "bc") hash different bytes.
pub fn point_id(tenant: &str, id: &str) -> Uuid {
    let mut name = Vec::with_capacity(8 + tenant.len() + id.len());
    name.extend_from_slice(&(tenant.len() as u64).to_be_bytes());
    name.extend_from_slice(tenant.as_bytes());
    name.extend_from_slice(id.as_bytes());
    Uuid::new_v5(&POINT_ID_NAMESPACE, &name)
}

/// The path of a caller's payload key inside the stored payload.
pub fn payload_key_path(key: &str) -> String {
    format!("{PAYLOAD_FIELD}.{key}")
}

/// Microseconds since the epoch, saturating; times before 1970 become 0.
pub fn to_micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The upper bound of the range condition that matches the memories expired
/// at `now`: `expires_at_us <= expired_before(now)`. A memory is expired from
/// the instant it names on. As an f64 (Qdrant's range type), exact for any
/// time before the year 2255.
pub fn expired_before(now: SystemTime) -> f64 {
    to_micros(now) as f64
}

/// Whether a memory that expires at `expires_at` is expired at `now`.
pub fn is_expired(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    expires_at.is_some_and(|at| to_micros(at) <= to_micros(now))
}

fn from_micros(micros: i64) -> Option<SystemTime> {
    let micros = u64::try_from(micros).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_micros(micros))
}

/// The payload stored for `memory` of `tenant`.
pub fn stored_payload(tenant: &str, memory: &Memory) -> Payload {
    let mut stored = Payload::new();
    stored.insert(TENANT_FIELD.into(), Value::from(tenant));
    stored.insert(ID_FIELD.into(), Value::from(memory.id.as_str()));
    if let Some(updated_at) = memory.updated_at {
        stored.insert(UPDATED_AT_FIELD.into(), Value::from(to_micros(updated_at)));
    }
    if let Some(expires_at) = memory.expires_at {
        stored.insert(EXPIRES_AT_FIELD.into(), Value::from(to_micros(expires_at)));
    }
    stored.insert(PAYLOAD_FIELD.into(), Value::Object(memory.payload.clone()));
    stored
}

/// One set-payload write: `fields` set at the top level (`key` = `None`) or
/// merged into the object under `key`.
pub struct PayloadWrite {
    pub fields: Payload,
    pub key: Option<&'static str>,
}

/// The set-payload writes that apply a payload change, the same for every
/// backend: a merge sets the caller's keys inside `payload` (keeping the
/// others) and bumps `updated_at_us`; a replace sets `payload` whole. A
/// new expiry is set beside `updated_at_us`; "never" sets it to null, which
/// no expiry condition matches (as if absent).
pub fn payload_writes(
    payload: Payload,
    replace: bool,
    updated_at: SystemTime,
    expiry: ExpiryChange,
) -> Vec<PayloadWrite> {
    let mut top_level = Payload::new();
    top_level.insert(UPDATED_AT_FIELD.into(), Value::from(to_micros(updated_at)));
    match expiry {
        ExpiryChange::Keep => {}
        ExpiryChange::At(at) => {
            top_level.insert(EXPIRES_AT_FIELD.into(), Value::from(to_micros(at)));
        }
        ExpiryChange::Never => {
            top_level.insert(EXPIRES_AT_FIELD.into(), Value::Null);
        }
    }
    let mut writes = Vec::with_capacity(2);
    if replace {
        top_level.insert(PAYLOAD_FIELD.into(), Value::Object(payload));
    } else if !payload.is_empty() {
        // A merge of no keys (an update of the expiry alone) writes none.
        writes.push(PayloadWrite {
            fields: payload,
            key: Some(PAYLOAD_FIELD),
        });
    }
    writes.push(PayloadWrite {
        fields: top_level,
        key: None,
    });
    writes
}

/// Rebuilds a memory from a stored payload. Returns `None` for a point that
/// was not written by vecmem (no `memory_id`).
pub fn memory_from_stored(
    mut stored: Payload,
    vector: Vec<f32>,
    with_payload: bool,
) -> Option<Memory> {
    let id = match stored.remove(ID_FIELD)? {
        Value::String(id) => id,
        _ => return None,
    };
    let payload = match stored.remove(PAYLOAD_FIELD) {
        Some(Value::Object(payload)) if with_payload => payload,
        _ => Payload::new(),
    };
    let fields = StoredFields {
        id,
        updated_at_us: stored.get(UPDATED_AT_FIELD).and_then(Value::as_i64),
        expires_at_us: stored.get(EXPIRES_AT_FIELD).and_then(Value::as_i64),
        payload,
    };
    Some(fields.into_memory(vector))
}

/// A memory's fields as its stored payload holds them, read out by a
/// backend that does not hold the payload as JSON (Qdrant's wire entries).
pub struct StoredFields {
    pub id: String,
    pub updated_at_us: Option<i64>,
    pub expires_at_us: Option<i64>,
    /// The caller's payload, or empty when it was not asked for.
    pub payload: Payload,
}

impl StoredFields {
    pub fn into_memory(self, vector: Vec<f32>) -> Memory {
        Memory {
            id: self.id,
            vector,
            payload: self.payload,
            updated_at: self.updated_at_us.and_then(from_micros),
            expires_at: self.expires_at_us.and_then(from_micros),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn point_ids_are_deterministic_and_tenant_scoped() {
        assert_eq!(point_id("t1", "pref-1"), point_id("t1", "pref-1"));
        assert_ne!(point_id("t1", "pref-1"), point_id("t2", "pref-1"));
        assert_ne!(point_id("ab", "c"), point_id("a", "bc"));
    }

    #[test]
    fn stored_payload_round_trips() {
        let memory = Memory {
            id: "m1".into(),
            vector: vec![],
            payload: json!({"tenant": "spoof", "n": 3})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            updated_at: Some(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456)),
            expires_at: Some(UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_001)),
        };
        let stored = stored_payload("t1", &memory);
        assert_eq!(stored[TENANT_FIELD], json!("t1"));
        let back = memory_from_stored(stored, vec![], true).expect("vecmem point");
        assert_eq!(back, memory);
    }

    #[test]
    fn a_memory_is_expired_from_the_microsecond_it_names() {
        let at = UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_000);
        assert!(!is_expired(None, at));
        assert!(!is_expired(Some(at), at - Duration::from_micros(1)));
        assert!(is_expired(Some(at), at));
        assert!(is_expired(Some(at), at + Duration::from_nanos(999)));
        assert_eq!(expired_before(at), 1_800_000_000_000_000.0);
    }
}
