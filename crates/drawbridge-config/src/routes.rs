//! `routes` and `prices`: per model, which accounts serve it and how the engine chooses among
//! them; and what each account costs, for the `cost-optimized` strategy.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// `routes.<model>`: the targets that serve the model (the name the accounts serve, or an
/// alias of it; a route under an alias's name applies to that alias only) and the strategy
/// that chooses among them. A model without a route is scheduled credit-aware over every
/// account that serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub strategy: RouteStrategy,
    pub targets: Vec<TargetConfig>,
}

/// `routes.<model>.strategy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteStrategy {
    /// The one target.
    Single,
    /// The targets in order: the first with an account left serves.
    Fallback,
    /// A weighted random choice of target (`weight`).
    Loadbalance,
    /// The targets whose `when` matches the request, in order.
    Conditional,
    /// The target with the lowest recent p50 time to the first event.
    LeastLatency,
    /// The cheapest target by `prices`.
    CostOptimized,
    /// The credit-aware score over every account of every target (the default).
    #[default]
    CreditAware,
}

/// `routes.<model>.targets[]`: a group of accounts. Inside a group the credit-aware score
/// chooses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Account ids (`accounts[].id`).
    pub accounts: Vec<String>,
    /// Its share of the traffic (`loadbalance` only; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// When the target applies (`conditional` only); absent: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<WhenConfig>,
}

/// `routes.<model>.targets[].when`: a `conditional` target's rule. Every field given must
/// match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenConfig {
    /// The model name the client asked for (before aliases are resolved) is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model name the client asked for starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_prefix: Option<String>,
    /// The request comes from this API key: the name of a key of `gateway.api_keys`, or the
    /// id (`key_…`) of one made with the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl WhenConfig {
    /// Whether a request for `model` (the client's name) from the key whose id is `key_id`
    /// matches (a key of the config has the id `static.<name>`).
    pub fn matches(&self, model: &str, key_id: &str) -> bool {
        self.model.as_deref().is_none_or(|m| m == model)
            && self
                .model_prefix
                .as_deref()
                .is_none_or(|p| model.starts_with(p))
            && self
                .key
                .as_deref()
                .is_none_or(|k| k == key_id || key_id.strip_prefix("static.") == Some(k))
    }
}

/// `prices.<account>`: what the account's API charges, per million tokens, in any currency
/// used consistently across accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
}

impl PriceConfig {
    /// The figure `cost-optimized` ranks by: a million input tokens plus a million output
    /// tokens (a request's own sizes are the same on every target).
    pub fn blended(&self) -> f64 {
        self.input + self.output
    }
}

/// Check `routes` and `prices` against the account ids.
pub(crate) fn validate(
    routes: &BTreeMap<String, RouteConfig>,
    prices: &BTreeMap<String, PriceConfig>,
    ids: &BTreeSet<&str>,
) -> Result<(), ConfigError> {
    for (account, price) in prices {
        let key = format!("prices.{account}");
        if !ids.contains(account.as_str()) {
            return Err(ConfigError::invalid(
                key,
                format!("no account with id '{account}' in `accounts`"),
            ));
        }
        for (field, value) in [("input", price.input), ("output", price.output)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::invalid(
                    format!("{key}.{field}"),
                    "must be a price of 0 or more per million tokens",
                ));
            }
        }
    }
    for (model, route) in routes {
        if model.trim().is_empty() {
            return Err(ConfigError::invalid(
                "routes",
                "a route's model name is empty",
            ));
        }
        route.validate(&format!("routes.{model}"), prices, ids)?;
    }
    Ok(())
}

impl RouteConfig {
    fn validate(
        &self,
        key: &str,
        prices: &BTreeMap<String, PriceConfig>,
        ids: &BTreeSet<&str>,
    ) -> Result<(), ConfigError> {
        if self.targets.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.targets"),
                "list at least one target",
            ));
        }
        if self.strategy == RouteStrategy::Single && self.targets.len() > 1 {
            return Err(ConfigError::invalid(
                format!("{key}.targets"),
                "a `single` route has exactly one target (use `fallback` for more)",
            ));
        }
        for (t, target) in self.targets.iter().enumerate() {
            let key = format!("{key}.targets[{t}]");
            if target.accounts.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.accounts"),
                    "list at least one account id",
                ));
            }
            for (a, id) in target.accounts.iter().enumerate() {
                if !ids.contains(id.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("{key}.accounts[{a}]"),
                        format!("no account with id '{id}' in `accounts`"),
                    ));
                }
                if self.strategy == RouteStrategy::CostOptimized && !prices.contains_key(id) {
                    return Err(ConfigError::invalid(
                        format!("{key}.accounts[{a}]"),
                        format!("a `cost-optimized` route needs a price for '{id}' in `prices`"),
                    ));
                }
            }
            if target.weight.is_some() && self.strategy != RouteStrategy::Loadbalance {
                return Err(ConfigError::invalid(
                    format!("{key}.weight"),
                    "only a `loadbalance` route weighs its targets",
                ));
            }
            if let Some(when) = &target.when {
                if self.strategy != RouteStrategy::Conditional {
                    return Err(ConfigError::invalid(
                        format!("{key}.when"),
                        "only a `conditional` route has rules",
                    ));
                }
                if when == &WhenConfig::default() {
                    return Err(ConfigError::invalid(
                        format!("{key}.when"),
                        "name at least one of `model`, `model_prefix`, `key` (leave `when` \
                         out for a target that always applies)",
                    ));
                }
            }
        }
        if self.strategy == RouteStrategy::Loadbalance
            && self.targets.iter().all(|t| t.weight == Some(0))
        {
            return Err(ConfigError::invalid(
                format!("{key}.targets"),
                "at least one target needs a weight above 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, PriceConfig, Role, RouteStrategy, WhenConfig};

    const ACCOUNTS: &str = "
accounts:
  - { id: kiro-1, models: [claude-sonnet-4.6] }
  - { id: kiro-2, models: [claude-sonnet-4.6] }
  - id: openai-main
    kind: openai
    models: [claude-sonnet-4.6]
    provider: { base_url: 'http://127.0.0.1:9000/v1' }
";

    fn config(rest: &str) -> Result<Config, String> {
        let config = Config::from_yaml(&format!("{ACCOUNTS}{rest}")).map_err(|e| e.to_string())?;
        config.validate(Role::AllInOne).map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn routes_parse_with_their_defaults() {
        let config = config(
            "
routes:
  claude-sonnet-4.6:
    strategy: fallback
    targets:
      - { accounts: [kiro-1, kiro-2] }
      - { accounts: [openai-main] }
  plain:
    targets: [{ accounts: [kiro-1] }]
  split:
    strategy: loadbalance
    targets: [{ accounts: [kiro-1], weight: 70 }, { accounts: [openai-main], weight: 30 }]
  by-key:
    strategy: conditional
    targets:
      - { accounts: [openai-main], when: { key: batch } }
      - { accounts: [kiro-1] }
  cheap:
    strategy: cost-optimized
    targets: [{ accounts: [kiro-1] }, { accounts: [openai-main] }]
  fast: { strategy: least-latency, targets: [{ accounts: [kiro-1] }] }
  one: { strategy: single, targets: [{ accounts: [kiro-2] }] }
prices:
  kiro-1: { input: 0, output: 0 }
  openai-main: { input: 2.5, output: 10 }
",
        )
        .unwrap();
        let route = &config.routes["claude-sonnet-4.6"];
        assert_eq!(route.strategy, RouteStrategy::Fallback);
        assert_eq!(route.targets[0].accounts, ["kiro-1", "kiro-2"]);
        assert_eq!(config.routes["plain"].strategy, RouteStrategy::CreditAware);
        assert_eq!(config.routes["split"].targets[1].weight, Some(30));
        assert_eq!(config.routes["fast"].strategy, RouteStrategy::LeastLatency);
        assert_eq!(config.prices["openai-main"].blended(), 12.5);
        assert_eq!(config.prices["kiro-1"], PriceConfig::default());
        let when = config.routes["by-key"].targets[0].when.clone().unwrap();
        assert!(when.matches("anything", "static.batch"));
        assert!(when.matches("anything", "batch"));
        assert!(!when.matches("anything", "static.other"));
    }

    #[test]
    fn rules_match_on_every_field_given() {
        let when = WhenConfig {
            model: None,
            model_prefix: Some("gpt-".to_owned()),
            key: Some("team-a".to_owned()),
        };
        assert!(when.matches("gpt-4o", "static.team-a"));
        assert!(!when.matches("gpt-4o", "static.team-b"));
        assert!(!when.matches("claude", "static.team-a"));
        let exact = WhenConfig {
            model: Some("cheap".to_owned()),
            ..WhenConfig::default()
        };
        assert!(exact.matches("cheap", "key_1"));
        assert!(!exact.matches("cheaper", "key_1"));
    }

    #[test]
    fn bad_routes_are_errors_naming_the_field() {
        let table = [
            (
                "routes: { m: { targets: [] } }",
                "`routes.m.targets`",
                "at least one target",
            ),
            (
                "routes: { m: { targets: [{ accounts: [] }] } }",
                "`routes.m.targets[0].accounts`",
                "at least one account",
            ),
            (
                "routes: { m: { targets: [{ accounts: [kiro-1, ghost] }] } }",
                "`routes.m.targets[0].accounts[1]`",
                "'ghost'",
            ),
            (
                "routes: { m: { strategy: fallback, targets: [{ accounts: [kiro-1], weight: 3 }] } }",
                "`routes.m.targets[0].weight`",
                "loadbalance",
            ),
            (
                "routes: { m: { strategy: single, targets: [{ accounts: [kiro-1] }, { accounts: [kiro-2] }] } }",
                "`routes.m.targets`",
                "exactly one target",
            ),
            (
                "routes: { m: { targets: [{ accounts: [kiro-1], when: { key: a } }] } }",
                "`routes.m.targets[0].when`",
                "conditional",
            ),
            (
                "routes: { m: { strategy: conditional, targets: [{ accounts: [kiro-1], when: {} }] } }",
                "`routes.m.targets[0].when`",
                "at least one of",
            ),
            (
                "routes: { m: { strategy: loadbalance, targets: [{ accounts: [kiro-1], weight: 0 }] } }",
                "`routes.m.targets`",
                "weight above 0",
            ),
            (
                "routes: { m: { strategy: cost-optimized, targets: [{ accounts: [kiro-1] }] } }",
                "`routes.m.targets[0].accounts[0]`",
                "`prices`",
            ),
            (
                "prices: { ghost: { input: 1 } }",
                "`prices.ghost`",
                "'ghost'",
            ),
            (
                "prices: { kiro-1: { input: -1 } }",
                "`prices.kiro-1.input`",
                "0 or more",
            ),
        ];
        for (yaml, key, words) in table {
            let err = config(yaml).unwrap_err();
            assert!(err.contains(key), "{yaml}: {err}");
            assert!(err.contains(words), "{yaml}: {err}");
        }
        // Unknown strategies and fields are refused by the parser.
        for yaml in [
            "routes: { m: { strategy: random, targets: [{ accounts: [kiro-1] }] } }",
            "routes: { m: { targets: [{ accounts: [kiro-1], retry: 3 }] } }",
            "routes: { m: { targets: [{ accounts: [kiro-1], when: { header: x } }] } }",
        ] {
            assert!(config(yaml).is_err(), "{yaml}");
        }
    }
}
