//! `routes` and `prices`: per model, which accounts serve it and how the engine chooses among
//! them; and what each account costs, for the `cost-optimized` strategy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{CircuitBreakerConfig, ConfigError};

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
    /// How often the target is tried for one request, after which failures, and how long
    /// it waits between tries; absent: as the engine's budgets allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// The circuit-breaker settings of the target's accounts, over `health.circuit_breaker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<BreakerOverride>,
}

/// `routes.<model>.targets[].retry`: the target's tries for one request. Once they are
/// spent, or after a failure whose status is not in `on_status`, the route moves on to its
/// next target. The request's `engine.max_attempts` and deadline bound everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries of the target for one request, over its accounts (tries again on the same
    /// account included); absent: no limit of the target's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The failure statuses after which the target is tried again (the upstream's status
    /// for a provider account, else the status the failure has for clients); absent: the
    /// failures another try could get past (5xx, an account's 429). A client error (400) is
    /// never tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_status: Option<Vec<u16>>,
    /// The wait before the target's second try, doubled before each one after (at most
    /// [`RetryConfig::MAX_BACKOFF_FACTOR`] times it); default 0.
    #[serde(default, with = "humantime_serde")]
    pub backoff: Duration,
}

impl RetryConfig {
    /// The longest wait between two tries, as a multiple of `backoff`.
    pub const MAX_BACKOFF_FACTOR: u32 = 10;

    /// The wait before the target's try number `try_number` (1: its first, no wait):
    /// `backoff`, doubled for each try after the second, capped at
    /// [`RetryConfig::MAX_BACKOFF_FACTOR`] times `backoff`.
    pub fn wait_before(&self, try_number: u32) -> Duration {
        if try_number < 2 {
            return Duration::ZERO;
        }
        let doublings = (try_number - 2).min(8);
        let factor = (1_u32 << doublings).min(Self::MAX_BACKOFF_FACTOR);
        self.backoff.saturating_mul(factor)
    }
}

/// `routes.<model>.targets[].circuit_breaker`: any of `health.circuit_breaker`'s settings,
/// for the breakers of the target's accounts. A breaker is the account's (one per account,
/// whichever route sends it traffic), so two targets may not give one account different
/// settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_size: Option<u32>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub reset_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
}

impl BreakerOverride {
    /// `base` with the settings this override gives.
    pub fn over(&self, base: &CircuitBreakerConfig) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_threshold: self.failure_threshold.unwrap_or(base.failure_threshold),
            window_size: self.window_size.unwrap_or(base.window_size),
            reset_timeout: self.reset_timeout.unwrap_or(base.reset_timeout),
            half_open_probes: self.half_open_probes.unwrap_or(base.half_open_probes),
        }
    }
}

/// The breaker settings of every account a route target overrides them for (`base`:
/// `health.circuit_breaker`); the other accounts keep `base`. Validation has refused two
/// targets giving one account different settings; were they given, the first (by model name,
/// then target) would count.
pub fn breaker_overrides(
    routes: &BTreeMap<String, RouteConfig>,
    base: &CircuitBreakerConfig,
) -> BTreeMap<String, CircuitBreakerConfig> {
    let mut overrides = BTreeMap::new();
    for route in routes.values() {
        for target in &route.targets {
            let Some(over) = &target.circuit_breaker else {
                continue;
            };
            for account in &target.accounts {
                overrides
                    .entry(account.clone())
                    .or_insert_with(|| over.over(base));
            }
        }
    }
    overrides
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

impl RetryConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.attempts == Some(0) {
            return Err(ConfigError::invalid(
                format!("{key}.attempts"),
                "must be at least 1 (the target's first try counts)",
            ));
        }
        for (i, status) in self.on_status.iter().flatten().enumerate() {
            if !(400..=599).contains(status) {
                return Err(ConfigError::invalid(
                    format!("{key}.on_status[{i}]"),
                    format!("{status} is not an error status (400 to 599)"),
                ));
            }
        }
        Ok(())
    }
}

/// Check `routes` and `prices` against the account ids, and the targets' breaker settings
/// against `breaker` (`health.circuit_breaker`) and each other.
pub(crate) fn validate(
    routes: &BTreeMap<String, RouteConfig>,
    prices: &BTreeMap<String, PriceConfig>,
    ids: &BTreeSet<&str>,
    breaker: &CircuitBreakerConfig,
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
        route.validate(&format!("routes.{model}"), prices, ids, breaker)?;
    }
    // One breaker per account: every target that sets an account's breaker agrees.
    let mut set_by: BTreeMap<&str, (String, CircuitBreakerConfig)> = BTreeMap::new();
    for (model, route) in routes {
        for (t, target) in route.targets.iter().enumerate() {
            let Some(over) = &target.circuit_breaker else {
                continue;
            };
            let key = format!("routes.{model}.targets[{t}].circuit_breaker");
            let config = over.over(breaker);
            for account in &target.accounts {
                match set_by.get(account.as_str()) {
                    Some((first, theirs)) if theirs != &config => {
                        return Err(ConfigError::invalid(
                            key,
                            format!(
                                "gives account '{account}' other breaker settings than \
                                 {first} (an account has one breaker, whichever route uses it)"
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        set_by.insert(account, (key.clone(), config.clone()));
                    }
                }
            }
        }
    }
    Ok(())
}

impl RouteConfig {
    fn validate(
        &self,
        key: &str,
        prices: &BTreeMap<String, PriceConfig>,
        ids: &BTreeSet<&str>,
        breaker: &CircuitBreakerConfig,
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
            if let Some(retry) = &target.retry {
                retry.validate(&format!("{key}.retry"))?;
            }
            if let Some(over) = &target.circuit_breaker {
                let key = format!("{key}.circuit_breaker");
                if over == &BreakerOverride::default() {
                    return Err(ConfigError::invalid(
                        key,
                        "name at least one of `failure_threshold`, `window_size`, \
                         `reset_timeout`, `half_open_probes` (leave `circuit_breaker` out for \
                         health.circuit_breaker's settings)",
                    ));
                }
                over.over(breaker).validate(&key)?;
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
    use std::time::Duration;

    use crate::{
        BreakerOverride, CircuitBreakerConfig, Config, PriceConfig, RetryConfig, Role,
        RouteStrategy, WhenConfig, breaker_overrides,
    };

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
            "routes: { m: { targets: [{ accounts: [kiro-1], retry: { tries: 3 } }] } }",
            "routes: { m: { targets: [{ accounts: [kiro-1], retry: { attempts: -1 } }] } }",
            "routes: { m: { targets: [{ accounts: [kiro-1], retry: { backoff: soon } }] } }",
            "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: { threshold: 2 } }] } }",
            "routes: { m: { targets: [{ accounts: [kiro-1], when: { header: x } }] } }",
        ] {
            assert!(config(yaml).is_err(), "{yaml}");
        }
    }

    #[test]
    fn target_overrides_parse_with_their_defaults() {
        let config = config(
            "
health: { circuit_breaker: { failure_threshold: 4, window_size: 8 } }
routes:
  m:
    strategy: fallback
    targets:
      - accounts: [kiro-1, kiro-2]
        retry: { attempts: 3, on_status: [429, 503], backoff: 200ms }
        circuit_breaker: { failure_threshold: 2, reset_timeout: 5s }
      - { accounts: [openai-main], retry: { backoff: 1s } }
      - { accounts: [kiro-1] }
",
        )
        .unwrap();
        let targets = &config.routes["m"].targets;
        assert_eq!(
            targets[0].retry,
            Some(RetryConfig {
                attempts: Some(3),
                on_status: Some(vec![429, 503]),
                backoff: Duration::from_millis(200),
            })
        );
        // Unset: no limit of the target's own, the retryable failures, no wait.
        let plain = targets[1].retry.clone().unwrap();
        assert_eq!((plain.attempts, plain.on_status), (None, None));
        assert_eq!(targets[2].retry, None);
        assert_eq!(targets[2].circuit_breaker, None);
        // The override applies over health.circuit_breaker, field by field.
        let overrides = breaker_overrides(&config.routes, &config.health.circuit_breaker);
        let over = CircuitBreakerConfig {
            failure_threshold: 2,
            window_size: 8,
            reset_timeout: Duration::from_secs(5),
            half_open_probes: 1,
        };
        assert_eq!(overrides.len(), 2, "{overrides:?}");
        assert_eq!(overrides["kiro-1"], over);
        assert_eq!(overrides["kiro-2"], over);
        assert!(!overrides.contains_key("openai-main"));
        // It serialises back to what was written.
        let again: crate::TargetConfig =
            figment::Figment::from(figment::providers::Serialized::defaults(&targets[0]))
                .extract()
                .unwrap();
        assert_eq!(again, targets[0]);
    }

    #[test]
    fn the_backoff_doubles_from_the_second_try_up_to_its_cap() {
        let retry = RetryConfig {
            backoff: Duration::from_millis(100),
            ..RetryConfig::default()
        };
        let waits: Vec<u64> = (1..=8)
            .map(|n| u64::try_from(retry.wait_before(n).as_millis()).unwrap())
            .collect();
        assert_eq!(waits, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(RetryConfig::default().wait_before(5), Duration::ZERO);
        assert_eq!(retry.wait_before(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn bad_target_overrides_are_errors_naming_the_field() {
        let table = [
            (
                "routes: { m: { targets: [{ accounts: [kiro-1] }, { accounts: [kiro-2], retry: { attempts: 0 } }] } }",
                "`routes.m.targets[1].retry.attempts`",
                "at least 1",
            ),
            (
                "routes: { m: { targets: [{ accounts: [kiro-1], retry: { on_status: [503, 200] } }] } }",
                "`routes.m.targets[0].retry.on_status[1]`",
                "400 to 599",
            ),
            (
                "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: {} }] } }",
                "`routes.m.targets[0].circuit_breaker`",
                "at least one of",
            ),
            (
                "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: { failure_threshold: 11 } }] } }",
                "`routes.m.targets[0].circuit_breaker.failure_threshold`",
                "between 1 and the window size (`window_size`: 10)",
            ),
            (
                "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: { window_size: 0 } }] } }",
                "`routes.m.targets[0].circuit_breaker.failure_threshold`",
                "between 1 and",
            ),
            (
                "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: { half_open_probes: 0 } }] } }",
                "`routes.m.targets[0].circuit_breaker.half_open_probes`",
                "at least 1",
            ),
            (
                "health: { circuit_breaker: { failure_threshold: 0 } }",
                "`health.circuit_breaker.failure_threshold`",
                "between 1 and",
            ),
        ];
        for (yaml, key, words) in table {
            let err = config(yaml).unwrap_err();
            assert!(err.contains(key), "{yaml}: {err}");
            assert!(err.contains(words), "{yaml}: {err}");
        }
    }

    #[test]
    fn two_targets_giving_an_account_different_breakers_is_an_error_naming_both() {
        let err = config(
            "
routes:
  a: { targets: [{ accounts: [kiro-1], circuit_breaker: { failure_threshold: 2 } }] }
  b:
    strategy: fallback
    targets:
      - { accounts: [kiro-2] }
      - { accounts: [openai-main, kiro-1], circuit_breaker: { failure_threshold: 5 } }
",
        )
        .unwrap_err();
        assert!(
            err.contains("`routes.b.targets[1].circuit_breaker`")
                && err.contains("routes.a.targets[0].circuit_breaker")
                && err.contains("'kiro-1'"),
            "{err}"
        );
        // The same settings, however written, agree; a target without an override leaves
        // the account's breaker to the one that has it.
        let config = config(
            "
routes:
  a: { targets: [{ accounts: [kiro-1], circuit_breaker: { failure_threshold: 2, window_size: 10 } }] }
  b: { targets: [{ accounts: [kiro-1], circuit_breaker: { failure_threshold: 2 } }] }
  c: { targets: [{ accounts: [kiro-1] }] }
",
        )
        .unwrap();
        let overrides = breaker_overrides(&config.routes, &config.health.circuit_breaker);
        assert_eq!(overrides["kiro-1"].failure_threshold, 2);
        assert_eq!(
            BreakerOverride::default().over(&config.health.circuit_breaker),
            config.health.circuit_breaker
        );
    }
}
