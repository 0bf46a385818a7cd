//! [`StaticKey`]: a bearer key from the config (`gateway.api_keys`, `engine.channel_keys`).

use std::collections::BTreeSet;

use drawbridge_types::rules::{self, MAX_ID_LEN};
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

/// A bearer key accepted by a layer (the config's bootstrap keys; the admin API adds more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    pub name: String,
    pub key: Secret,
    /// Gateway keys only: requests per minute for this key (default
    /// `gateway.rate_limit.requests_per_minute`; 0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
}

/// The longest `name` of a [`StaticKey`]: its id, `static.<name>`, stays a store id.
const MAX_KEY_NAME_LEN: usize = 64;
const _: () = assert!("static.".len() + MAX_KEY_NAME_LEN <= MAX_ID_LEN);

/// Check the keys listed under `key` (`gateway.api_keys`, `engine.channel_keys`).
pub(crate) fn validate(key: &str, keys: &[StaticKey]) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, k) in keys.iter().enumerate() {
        // The name becomes part of the key's id (`static.<name>`), which the stores use: an id
        // by their rule, short enough that the whole id is one too.
        if !rules::valid_id(&k.name) || k.name.len() > MAX_KEY_NAME_LEN {
            return Err(ConfigError::invalid(
                format!("{key}[{i}].name"),
                "use 1 to 64 letters, digits, '-', '_' and '.'",
            ));
        }
        if !names.insert(k.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}[{i}].name"),
                format!("the name '{}' is used twice", k.name),
            ));
        }
        if k.key.expose().len() < 8 {
            return Err(ConfigError::invalid(
                format!("{key}[{i}].key"),
                "must be at least 8 characters",
            ));
        }
        if !seen.insert(k.key.expose()) {
            return Err(ConfigError::invalid(
                format!("{key}[{i}].key"),
                "the same key is listed twice",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Role};

    /// A key's id (`static.<name>`) is one the stores take, for every name the config takes.
    #[test]
    fn names_make_store_ids() {
        for (name, ok) in [
            ("a".repeat(MAX_KEY_NAME_LEN), true),
            ("a".repeat(MAX_KEY_NAME_LEN + 1), false),
            ("a:b".into(), false),
            (String::new(), false),
        ] {
            let yaml = format!(
                "accounts: [{{ id: a }}]\nengine: {{ channel_keys: [{{ name: '{name}', key: channel-key-1 }}] }}"
            );
            let result = Config::from_yaml(&yaml).unwrap().validate(Role::Engine);
            assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
            if ok {
                assert!(rules::valid_id(&format!("static.{name}")));
            } else {
                let err = result.unwrap_err().to_string();
                assert!(err.contains("`engine.channel_keys[0].name`"), "{err}");
            }
        }
    }
}
