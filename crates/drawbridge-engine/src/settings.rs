//! The engine's settings, in one holder every part reads: a reload swaps them whole, and
//! whatever starts after it (a request, a breaker decision, a charge) sees the new ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use drawbridge_config::{RouteConfig, RouteStrategy};
use drawbridge_core::breaker::BreakerConfig;
use drawbridge_core::route::Strategy;

use crate::affinity::AffinitySettings;
use crate::routing::{Plan, PlanTarget};

pub use drawbridge_config::ReasoningMode;

/// How the engine retries and resumes, keeps quiet streams alive, shows reasoning and names
/// models.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Accounts one request may use in all: first try, retries before the first byte, and
    /// resumptions after it.
    pub max_attempts: usize,
    /// Resume an answer that broke off after its first byte on another account.
    pub resume_after_first_byte: bool,
    /// The circuit breaker of an account without settings of its own (`health.circuit_breaker`).
    pub breaker: BreakerConfig,
    /// Per account: the circuit breaker a route target gives it (`routes.*.targets[].
    /// circuit_breaker` over `health.circuit_breaker`); see [`EngineSettings::breaker_for`].
    pub breakers: Arc<BTreeMap<String, BreakerConfig>>,
    /// Credits charged for a finished turn that reported no cost.
    pub request_cost: f64,
    /// How long an account rests after a rate limit that did not say for how long.
    pub rate_limit_cooldown: Duration,
    /// Tries of a failed turn on the same account before moving on (the retry budget;
    /// `max_attempts` is the rotation budget).
    pub retries_per_account: u32,
    /// The longest wait for a turn's first byte.
    pub first_byte_timeout: Duration,
    /// The longest silence between two events of a started turn.
    pub idle_timeout: Duration,
    /// The deadline of a whole request.
    pub request_timeout: Duration,
    /// Session affinity.
    pub affinity: AffinitySettings,
    /// How long a streamed answer may show nothing before it commits and sends keep-alive
    /// comments (`engine.keepalive_interval`).
    pub keepalive_interval: Duration,
    /// What the client sees of the model's reasoning (`engine.reasoning`).
    pub reasoning: ReasoningMode,
    /// Client model names → the model the accounts serve (`model_aliases`).
    pub aliases: Arc<BTreeMap<String, String>>,
    /// Per model or alias: its route (`routes`).
    pub routes: Arc<BTreeMap<String, RouteConfig>>,
    /// Per account: its blended price (`prices`, input plus output per million tokens).
    pub prices: Arc<BTreeMap<String, f64>>,
}

impl EngineSettings {
    pub fn from_config(config: &drawbridge_config::Config) -> Self {
        let breaker = |cb: &drawbridge_config::CircuitBreakerConfig| BreakerConfig {
            failure_threshold: cb.failure_threshold,
            window_size: cb.window_size,
            reset_timeout: cb.reset_timeout,
            half_open_probes: cb.half_open_probes,
        };
        EngineSettings {
            max_attempts: config.engine.max_attempts as usize,
            resume_after_first_byte: config.engine.resume_after_first_byte,
            request_cost: config.engine.request_cost,
            rate_limit_cooldown: config.engine.rate_limit_cooldown,
            retries_per_account: config.engine.retries_per_account,
            first_byte_timeout: config.engine.first_byte_timeout,
            idle_timeout: config.engine.idle_timeout,
            request_timeout: config.engine.request_timeout,
            affinity: AffinitySettings {
                enabled: config.engine.affinity.enabled,
                user_field: config.engine.affinity.user_field,
                ttl: config.engine.affinity.ttl,
                session_ttl: config.engine.affinity.session_ttl,
            },
            keepalive_interval: config.engine.keepalive_interval,
            reasoning: config.engine.reasoning,
            aliases: Arc::new(config.model_aliases.clone()),
            routes: Arc::new(config.routes.clone()),
            prices: Arc::new(
                config
                    .prices
                    .iter()
                    .map(|(account, price)| (account.clone(), price.blended()))
                    .collect(),
            ),
            breaker: breaker(&config.health.circuit_breaker),
            breakers: Arc::new(
                drawbridge_config::breaker_overrides(
                    &config.routes,
                    &config.health.circuit_breaker,
                )
                .iter()
                .map(|(account, cb)| (account.clone(), breaker(cb)))
                .collect(),
            ),
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_attempts: 3,
            resume_after_first_byte: true,
            breaker: BreakerConfig::default(),
            breakers: Arc::default(),
            request_cost: 1.0,
            rate_limit_cooldown: Duration::from_secs(60),
            retries_per_account: 0,
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(900),
            affinity: AffinitySettings::default(),
            keepalive_interval: Duration::from_secs(10),
            reasoning: ReasoningMode::On,
            aliases: Arc::default(),
            routes: Arc::default(),
            prices: Arc::default(),
        }
    }
}

impl EngineSettings {
    /// The circuit-breaker settings of `account`: a route target's for it, else
    /// `health.circuit_breaker`'s.
    pub fn breaker_for(&self, account: &str) -> BreakerConfig {
        self.breakers.get(account).copied().unwrap_or(self.breaker)
    }

    /// The model the accounts serve for the client's `model`: an alias's target, else the
    /// name itself (an alias wins over an account model of the same name).
    pub fn target<'a>(&'a self, model: &'a str) -> &'a str {
        self.aliases.get(model).map_or(model, String::as_str)
    }

    /// The route of a request for the client's `model` from the key `key_id`: the route
    /// under the name the client used, else the one under the model it stands for; `None`
    /// when neither has one (credit-aware over every account that serves the model).
    pub(crate) fn plan(&self, model: &str, key_id: &str) -> Option<Plan> {
        let route = self
            .routes
            .get(model)
            .or_else(|| self.routes.get(self.target(model)))?;
        Some(Plan {
            strategy: strategy(route.strategy),
            targets: route
                .targets
                .iter()
                .map(|t| PlanTarget {
                    accounts: t.accounts.clone(),
                    weight: t.weight.unwrap_or(1),
                    applies: t.when.as_ref().is_none_or(|w| w.matches(model, key_id)),
                    retry: t.retry.clone(),
                })
                .collect(),
            prices: Arc::clone(&self.prices),
        })
    }
}

/// The scheduler's strategy for a configured one.
fn strategy(configured: RouteStrategy) -> Strategy {
    match configured {
        RouteStrategy::Single => Strategy::Single,
        RouteStrategy::Fallback => Strategy::Fallback,
        RouteStrategy::Loadbalance => Strategy::Loadbalance,
        RouteStrategy::Conditional => Strategy::Conditional,
        RouteStrategy::LeastLatency => Strategy::LeastLatency,
        RouteStrategy::CostOptimized => Strategy::CostOptimized,
        RouteStrategy::CreditAware => Strategy::CreditAware,
    }
}

/// The settings in force, shared by every part of one engine.
#[derive(Clone)]
pub(crate) struct Settings(Arc<ArcSwap<EngineSettings>>);

impl Settings {
    pub fn new(settings: EngineSettings) -> Self {
        Settings(Arc::new(ArcSwap::from_pointee(settings)))
    }

    /// The settings in force now.
    pub fn get(&self) -> EngineSettings {
        EngineSettings::clone(&self.0.load())
    }

    /// Use `settings` from now on.
    pub fn set(&self, settings: EngineSettings) {
        self.0.store(Arc::new(settings));
    }
}
