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
    /// Engine channel keys only: the caller may name the tenant in `x-drawbridge-tenant`
    /// (usage and quotas are then kept under that tenant, not under this key), and may ask the
    /// engine to continue an answer another engine began (`x-drawbridge-resume`). Give it only to
    /// the gateway's channel key: any other caller holding a trusted key could spend under
    /// another tenant's name. Default `false`; refused on `gateway.api_keys`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trust_tenant: bool,
}

/// Where a list of [`StaticKey`]s is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyList {
    /// `gateway.api_keys`: the public API's clients.
    GatewayApi,
    /// `engine.channel_keys`: the engine's callers (the gateway, NEW-API).
    EngineChannel,
}

impl KeyList {
    fn key(self) -> &'static str {
        match self {
            KeyList::GatewayApi => "gateway.api_keys",
            KeyList::EngineChannel => "engine.channel_keys",
        }
    }
}

/// The longest `name` of a [`StaticKey`]: its id, `static.<name>`, stays a store id.
const MAX_KEY_NAME_LEN: usize = 64;
const _: () = assert!("static.".len() + MAX_KEY_NAME_LEN <= MAX_ID_LEN);

/// Check the keys of one list.
pub(crate) fn validate(list: KeyList, keys: &[StaticKey]) -> Result<(), ConfigError> {
    let key = list.key();
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
        if k.trust_tenant && list != KeyList::EngineChannel {
            return Err(ConfigError::invalid(
                format!("{key}[{i}].trust_tenant"),
                format!(
                    "only an engine channel key may trust the tenant header (key '{}'); \
                     set it in engine.channel_keys, on the gateway's key",
                    k.name
                ),
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

    #[test]
    fn only_channel_keys_trust_the_tenant() {
        let channel = |trust: &str| {
            Config::from_yaml(&format!(
                "accounts: [{{ id: a }}]\nengine: {{ channel_keys: [{{ name: gw, key: channel-key-1{trust} }}] }}"
            ))
            .unwrap()
        };
        let config = channel("");
        config.validate(Role::Engine).unwrap();
        assert!(
            !config.engine.channel_keys[0].trust_tenant,
            "off unless set"
        );
        let config = channel(", trust_tenant: true");
        config.validate(Role::Engine).unwrap();
        assert!(config.engine.channel_keys[0].trust_tenant);

        let config = Config::from_yaml(
            "gateway: { api_keys: [{ name: team-a, key: db-key-12345, trust_tenant: true }] }",
        )
        .unwrap();
        let err = config.validate(Role::Gateway).unwrap_err().to_string();
        assert!(err.contains("`gateway.api_keys[0].trust_tenant`"), "{err}");
        assert!(err.contains("team-a"), "{err}");
    }

    /// Every shipped shape where a gateway calls an engine lets that gateway name the tenant.
    #[test]
    fn shipped_gateway_channel_keys_trust_the_tenant() {
        for (file, yaml) in [
            ("cluster", include_str!("../../../config/cluster.yaml")),
            (
                "kiro.example",
                include_str!("../../../config/kiro.example.yaml"),
            ),
            ("compose", include_str!("../../../compose/drawbridge.yaml")),
            (
                "kubernetes",
                include_str!("../../../deploy/kubernetes/drawbridge.yaml"),
            ),
        ] {
            let config = Config::from_yaml(yaml).unwrap();
            let gateway = config.gateway.engine_key.as_ref().map(|k| k.expose());
            let key = config
                .engine
                .channel_keys
                .iter()
                .find(|k| Some(k.key.expose()) == gateway)
                .unwrap_or_else(|| panic!("{file}: no channel key for the gateway"));
            assert!(key.trust_tenant, "{file}");
        }
    }
}
