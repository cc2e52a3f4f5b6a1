//! API keys bound to tenants.
//!
//! Keys are configured as SHA-256 hashes (`[[auth.keys]]`), each with the
//! tenants it may act for (`"*"` for all) and whether it may write. A
//! transport turns the presented key (`authorization: Bearer KEY` or
//! `x-api-key: KEY`) into a [`Caller`] before anything else looks at the
//! request; the core then checks every tenant a request touches against it,
//! SearchBatch items included. The presented key is hashed and compared with
//! every configured hash in constant time, so neither a key nor how much of
//! one matched leaks through timing. With no key configured, auth is off and
//! every caller may act for every tenant (the server warns at start-up).

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ApiKeyConfig, KeyAccess};
use crate::error::{Error, Result};
use crate::model::Access;

/// Who is calling, as far as tenancy is concerned.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: no keys are configured.
    Anyone,
    /// A caller that presented a configured key.
    Key(Arc<Grant>),
}

/// What one key may do.
#[derive(Debug)]
pub struct Grant {
    /// The key's name in logs: its configured `name`, else a hash prefix.
    pub name: String,
    tenants: Tenants,
    access: KeyAccess,
}

#[derive(Debug)]
enum Tenants {
    All,
    Only(HashSet<String>),
}

impl Caller {
    /// Allows `access` to `tenant`'s data, or says why not.
    pub fn authorize(&self, tenant: &str, access: Access) -> Result<()> {
        let Caller::Key(grant) = self else {
            return Ok(());
        };
        let tenant_allowed = match &grant.tenants {
            Tenants::All => true,
            Tenants::Only(tenants) => tenants.contains(tenant),
        };
        if !tenant_allowed {
            return Err(Error::PermissionDenied(format!(
                "this API key may not act for tenant {tenant:?}"
            )));
        }
        if access == Access::Write && grant.access == KeyAccess::ReadOnly {
            return Err(Error::PermissionDenied(
                "this API key is read-only".to_owned(),
            ));
        }
        Ok(())
    }

    /// Allows reading every tenant's data at once (a snapshot), which only
    /// a key for all tenants (`"*"`) may do.
    pub fn authorize_every_tenant(&self) -> Result<()> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Key(grant) => match grant.tenants {
                Tenants::All => Ok(()),
                Tenants::Only(_) => Err(Error::PermissionDenied(
                    "a snapshot holds every tenant's data: it needs an API key allowed \
                     every tenant (tenants = [\"*\"])"
                        .to_owned(),
                )),
            },
        }
    }
}

struct StoredKey {
    hash: [u8; 32],
    grant: Arc<Grant>,
}

/// The configured keys; turns request headers into a [`Caller`].
pub struct Authenticator {
    keys: Vec<StoredKey>,
}

impl Authenticator {
    /// Keys are validated by the config loader: 64 hex digits each.
    pub fn new(keys: &[ApiKeyConfig]) -> Result<Self> {
        let keys = keys
            .iter()
            .map(|key| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&key.sha256, &mut hash)
                    .map_err(|err| Error::internal(format!("auth key hash: {err}")))?;
                let tenants = if key.tenants.iter().any(|t| t == "*") {
                    Tenants::All
                } else {
                    Tenants::Only(key.tenants.iter().cloned().collect())
                };
                let name = key
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("sha256:{}", &key.sha256[..12]));
                Ok(StoredKey {
                    hash,
                    grant: Arc::new(Grant {
                        name,
                        tenants,
                        access: key.access,
                    }),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { keys })
    }

    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The caller that presented these headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller> {
        if !self.is_enabled() {
            return Ok(Caller::Anyone);
        }
        let presented = presented_key(headers).ok_or_else(|| {
            Error::Unauthenticated(
                "an API key is required: send `authorization: Bearer KEY` or `x-api-key: KEY`"
                    .to_owned(),
            )
        })?;
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every stored hash is compared, whichever matches.
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&hash)) {
                found = Some(key.grant.clone());
            }
        }
        found
            .map(Caller::Key)
            .ok_or_else(|| Error::Unauthenticated("invalid API key".to_owned()))
    }
}

/// The key from `authorization: Bearer KEY`, else from `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, key) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
        })
        .filter(|key| !key.is_empty())
}

/// The SHA-256 hex of a key, as it goes into the config.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn key(secret: &str, tenants: &[&str], access: KeyAccess) -> ApiKeyConfig {
        ApiKeyConfig {
            name: None,
            sha256: hash_key(secret),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            access,
        }
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).expect("header"));
        headers
    }

    fn authenticator() -> Authenticator {
        Authenticator::new(&[
            key("alpha-secret", &["a"], KeyAccess::ReadWrite),
            key("reader-secret", &["a", "b"], KeyAccess::ReadOnly),
            key("admin-secret", &["*"], KeyAccess::ReadWrite),
        ])
        .expect("keys")
    }

    #[test]
    fn without_keys_everyone_may_do_everything() {
        let auth = Authenticator::new(&[]).expect("no keys");
        let caller = auth.authenticate(&HeaderMap::new()).expect("auth off");
        assert!(caller.authorize("anyone", Access::Write).is_ok());
    }

    #[test]
    fn a_key_is_accepted_in_either_header() {
        let auth = authenticator();
        for headers in [
            headers("authorization", "Bearer alpha-secret"),
            headers("authorization", "bearer alpha-secret"),
            headers("x-api-key", "alpha-secret"),
        ] {
            let caller = auth.authenticate(&headers).expect("valid key");
            assert!(caller.authorize("a", Access::Write).is_ok());
        }
    }

    #[test]
    fn a_missing_or_unknown_key_is_unauthenticated() {
        let auth = authenticator();
        for headers in [
            HeaderMap::new(),
            headers("authorization", "Bearer wrong"),
            headers("authorization", "Basic alpha-secret"),
            headers("x-api-key", ""),
        ] {
            let error = auth.authenticate(&headers).expect_err("no way in");
            assert!(matches!(error, Error::Unauthenticated(_)), "{error:?}");
        }
    }

    #[test]
    fn keys_act_only_for_their_tenants_and_within_their_access() {
        let auth = authenticator();
        let alpha = auth
            .authenticate(&headers("x-api-key", "alpha-secret"))
            .expect("alpha");
        assert!(matches!(
            alpha.authorize("b", Access::Read),
            Err(Error::PermissionDenied(_))
        ));
        let reader = auth
            .authenticate(&headers("x-api-key", "reader-secret"))
            .expect("reader");
        assert!(reader.authorize("b", Access::Read).is_ok());
        assert!(matches!(
            reader.authorize("b", Access::Write),
            Err(Error::PermissionDenied(_))
        ));
        let admin = auth
            .authenticate(&headers("x-api-key", "admin-secret"))
            .expect("admin");
        assert!(admin.authorize("whoever", Access::Write).is_ok());
    }

    #[test]
    fn random_keys_find_no_way_in() {
        use rand::{RngExt, SeedableRng};
        let auth = authenticator();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..1000 {
            let length = rng.random_range(1..64);
            let key: String = (0..length)
                .map(|_| char::from(rng.random_range(0x21u8..0x7f)))
                .collect();
            let result = auth.authenticate(&headers("x-api-key", &key));
            assert!(result.is_err(), "{key:?} got in");
        }
    }
}
