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
mod tests;
