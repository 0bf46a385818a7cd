//! Bearer-key authentication. Keys are compared in constant time and never logged; a caller
//! is known by its key's name only.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use drawbridge_config::StaticKey;
use drawbridge_types::ApiError;
use subtle::ConstantTimeEq;

/// The authenticated caller: the key it used, by id and name (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Stable id of the key: what limits, quotas and the usage ledger are kept under
    /// (`key_…` for a key made with the admin API, `static.<name>` for a key of the config).
    pub key_id: String,
    pub key_name: String,
}

/// What the id of a key from the config starts with (the name follows).
const STATIC_PREFIX: &str = "static.";

impl Caller {
    /// The caller of a key from the config.
    pub fn from_static(name: &str) -> Self {
        Caller {
            key_id: format!("{STATIC_PREFIX}{name}"),
            key_name: name.to_owned(),
        }
    }

    /// The config name in a static key's id (`static.<name>`); `None` for any other id.
    pub fn static_name(key_id: &str) -> Option<&str> {
        key_id.strip_prefix(STATIC_PREFIX)
    }
}

/// The keys a listener accepts.
#[derive(Debug, Clone)]
pub struct Keys {
    keys: Vec<(String, Vec<u8>)>,
    open: bool,
    /// The names of the keys whose callers may name the tenant ([`StaticKey::trust_tenant`]).
    trusted: Vec<String>,
}

impl Keys {
    /// Only these keys are accepted (none listed: every request is refused).
    pub fn required(keys: &[StaticKey]) -> Self {
        Keys {
            keys: keys
                .iter()
                .map(|k| (k.name.clone(), k.key.expose().as_bytes().to_vec()))
                .collect(),
            open: false,
            trusted: keys
                .iter()
                .filter(|k| k.trust_tenant)
                .map(|k| k.name.clone())
                .collect(),
        }
    }

    /// These keys when any are listed, otherwise no authentication (an internal listener).
    pub fn optional(keys: &[StaticKey]) -> Self {
        Keys {
            open: keys.is_empty(),
            ..Self::required(keys)
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether `caller` authenticated with a key trusted to name the tenant. Without keys
    /// (an open listener) nobody is: an unauthenticated caller never says whose request it is.
    pub fn trusts_tenant(&self, caller: &Caller) -> bool {
        !self.open && self.trusted.contains(&caller.key_name)
    }

    /// Check `Authorization: Bearer <key>`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.open {
            return Ok(Caller {
                key_id: "anonymous".to_owned(),
                key_name: "anonymous".to_owned(),
            });
        }
        let presented = bearer(headers).ok_or_else(ApiError::invalid_api_key)?;
        self.find(presented)
            .map(Caller::from_static)
            .ok_or_else(ApiError::invalid_api_key)
    }

    /// The name of the key `presented` is, if it is one of these.
    pub fn find(&self, presented: &str) -> Option<&str> {
        // Check every key, so the time taken does not tell which one came closest.
        let mut found = None;
        for (name, key) in &self.keys {
            if bool::from(key.as_slice().ct_eq(presented.as_bytes())) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The key the caller presents: `Authorization: Bearer <key>` (OpenAI's clients, and
/// Anthropic's with an auth token), else `x-api-key: <key>` (Anthropic's clients).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .or_else(|| {
            headers
                .get(API_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// The header Anthropic's clients send their key in.
pub const API_KEY_HEADER: &str = "x-api-key";

#[cfg(test)]
mod tests {
    use super::*;
    use drawbridge_config::Secret;
    use drawbridge_types::ErrorKind;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, auth.parse().unwrap());
        h
    }

    fn keys() -> Vec<StaticKey> {
        vec![StaticKey {
            name: "team-a".into(),
            key: Secret::new("db-secret-1234"),
            rpm: None,
            trust_tenant: false,
        }]
    }

    #[test]
    fn only_a_key_marked_trust_tenant_may_name_the_tenant() {
        let mut trusted = keys();
        trusted.push(StaticKey {
            name: "gateway".into(),
            key: Secret::new("db-gateway-5678"),
            rpm: None,
            trust_tenant: true,
        });
        let k = Keys::required(&trusted);
        let gateway = k.authenticate(&headers("Bearer db-gateway-5678")).unwrap();
        let team = k.authenticate(&headers("Bearer db-secret-1234")).unwrap();
        assert!(k.trusts_tenant(&gateway));
        assert!(!k.trusts_tenant(&team));
        // An open listener (no keys) trusts nobody, whatever the caller says it is.
        let open = Keys::optional(&[]);
        let anonymous = open.authenticate(&HeaderMap::new()).unwrap();
        assert!(!open.trusts_tenant(&anonymous));
    }

    #[test]
    fn bearer_keys_are_checked() {
        let k = Keys::required(&keys());
        assert_eq!(
            k.authenticate(&headers("Bearer db-secret-1234"))
                .unwrap()
                .key_name,
            "team-a"
        );
        assert_eq!(
            k.authenticate(&headers("bearer  db-secret-1234 "))
                .unwrap()
                .key_name,
            "team-a"
        );
        for bad in [
            "Bearer db-secret-123",
            "Bearer ",
            "Basic db-secret-1234",
            "db-secret-1234",
        ] {
            let err = k.authenticate(&headers(bad)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidApiKey, "{bad}");
            assert!(
                !err.message.contains("db-secret"),
                "the key must not be echoed"
            );
        }
        assert!(k.authenticate(&HeaderMap::new()).is_err());
    }

    #[test]
    fn anthropic_clients_present_their_key_in_x_api_key() {
        let k = Keys::required(&keys());
        let mut h = HeaderMap::new();
        h.insert(API_KEY_HEADER, "db-secret-1234".parse().unwrap());
        assert_eq!(k.authenticate(&h).unwrap().key_name, "team-a");
        h.insert(API_KEY_HEADER, "db-secret-123".parse().unwrap());
        assert_eq!(
            k.authenticate(&h).unwrap_err().kind,
            ErrorKind::InvalidApiKey
        );
        // A bearer key wins over x-api-key when both are sent.
        h.insert(AUTHORIZATION, "Bearer db-secret-1234".parse().unwrap());
        assert_eq!(k.authenticate(&h).unwrap().key_name, "team-a");
    }

    #[test]
    fn required_with_no_keys_refuses_everyone() {
        assert!(
            Keys::required(&[])
                .authenticate(&headers("Bearer anything"))
                .is_err()
        );
    }

    #[test]
    fn optional_with_no_keys_is_open() {
        let k = Keys::optional(&[]);
        assert!(k.is_open());
        assert!(k.authenticate(&HeaderMap::new()).is_ok());
        assert!(
            Keys::optional(&keys())
                .authenticate(&HeaderMap::new())
                .is_err()
        );
    }
}
