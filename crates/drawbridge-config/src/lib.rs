//! Drawbridge's configuration: one YAML file shared by every binary (each reads the sections it
//! needs), overridden by `DRAWBRIDGE_*` environment variables (nested keys joined by `__`,
//! e.g. `DRAWBRIDGE_GATEWAY__LISTEN=127.0.0.1:9000`), plus `DRAWBRIDGE_ADMIN_TOKEN` for
//! `admin.auth_token`. Unknown keys are errors. [`Config::validate`] runs before any port is
//! bound, and every error names the key at fault.
//!
//! Each section is a module with its own struct and `validate`; [`Config::validate`] calls
//! them for the binary's [`Role`] and keeps the checks that span sections. Rules the stores
//! apply too (ids, TTL caps) come from `drawbridge_types::rules`.

mod accounts;
mod admin;
mod cluster;
mod continuation;
mod engine;
mod error;
mod gateway;
mod health;
mod keys;
mod load;
mod log;
mod node;
mod redis;
mod routes;
mod sanitize;
mod secret;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use accounts::{
    AccountConfig, AccountKind, AgentConfig, AgentTools, ClientTools, MAX_CREDITS, ProviderConfig,
    ProviderTimeouts,
};
pub use admin::AdminConfig;
pub use cluster::{AssignmentMode, ClusterConfig, FleetDriverKind, ProcessDriverConfig};
pub use continuation::ContinuationConfig;
pub use engine::{AffinityConfig, EngineConfig, ReasoningMode};
pub use error::ConfigError;
pub use gateway::{GatewayConfig, QuotaConfig, RateLimitConfig};
pub use health::{CircuitBreakerConfig, HealthConfig};
pub use keys::StaticKey;
pub use log::{LogConfig, LogFormat};
pub use node::NodeConfig;
pub use redis::RedisConfig;
pub use routes::{
    BreakerOverride, PriceConfig, RetryConfig, RouteConfig, RouteStrategy, TargetConfig,
    WhenConfig, breaker_overrides,
};
pub use sanitize::{SanitizeConfig, SanitizeModeConfig};
pub use secret::Secret;
pub use worker::WorkerConfig;

/// The longest affinity TTL or account rest the shared stores keep (30 days): the stores'
/// own cap, defined once in `drawbridge_types::rules`.
pub use drawbridge_types::rules::MAX_ROUTING_TTL;

/// Which binary is validating: each needs different sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Engine,
    Worker,
    /// `drawbridge`: all three layers in one process.
    AllInOne,
}

impl Role {
    /// The binary's name, as traces call the service.
    pub fn service_name(self) -> &'static str {
        match self {
            Role::Gateway => "drawbridge-gateway",
            Role::Engine => "drawbridge-engine",
            Role::Worker => "kiro-worker",
            Role::AllInOne => "drawbridge",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub gateway: GatewayConfig,
    pub engine: EngineConfig,
    pub worker: WorkerConfig,
    pub accounts: Vec<AccountConfig>,
    pub continuation: ContinuationConfig,
    pub sanitize: SanitizeConfig,
    pub health: HealthConfig,
    pub redis: Option<RedisConfig>,
    pub cluster: ClusterConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// Client model names mapped to the model an account serves (an agent's catalogue id or
    /// a configured label): `gpt-4o: claude-sonnet-4.6`. The engine schedules an alias on the
    /// accounts that serve its target, asks the agent for the target, and answers under the
    /// name the client used; `/v1/models` lists every alias whose target is served. An alias
    /// wins over an account model of the same name. Reloadable.
    pub model_aliases: BTreeMap<String, String>,
    /// Per model (or alias): the accounts that serve it and the strategy that chooses among
    /// them (see [`RouteConfig`]). A model without a route is scheduled credit-aware over
    /// every account that serves it. Reloadable.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Per account: its price per million input and output tokens (`cost-optimized` routes).
    /// Reloadable.
    pub prices: BTreeMap<String, PriceConfig>,
    /// The file this configuration was loaded from (set by [`Config::load`]; what a reload
    /// reads again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Config {
    /// Check what serde cannot, for the binary `role`: each section checks itself; the checks
    /// across sections (the accounts a worker serves, what needs `redis.url`) are here, in the
    /// order the errors are reported.
    pub fn validate(&self, role: Role) -> Result<(), ConfigError> {
        let has_redis = self.redis.is_some();
        let serves_gateway = matches!(role, Role::Gateway | Role::AllInOne);
        let serves_worker = matches!(role, Role::Worker | Role::AllInOne);
        self.node.validate()?;
        self.log.validate()?;
        let ids = accounts::validate(&self.accounts)?;
        if serves_worker {
            for (i, id) in self.worker.accounts.iter().enumerate() {
                if !ids.contains(id.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("worker.accounts[{i}]"),
                        format!("no account with id '{id}' in `accounts`"),
                    ));
                }
                if self.accounts.iter().any(|a| &a.id == id && !a.is_acp()) {
                    return Err(ConfigError::invalid(
                        format!("worker.accounts[{i}]"),
                        format!("'{id}' is a provider account: the engine serves it, not a worker"),
                    ));
                }
            }
            // A single node may serve provider accounts only; a worker needs an ACP account.
            let providers_here =
                role == Role::AllInOne && self.accounts.iter().any(|a| !a.is_acp());
            if self.worker_accounts().is_empty() && !providers_here {
                return Err(ConfigError::invalid(
                    "accounts",
                    "list at least one account for this worker to serve",
                ));
            }
        }
        if serves_gateway {
            self.gateway.validate(role, has_redis)?;
        }
        if role == Role::Engine {
            self.engine
                .validate_endpoint(has_redis, self.accounts.iter().any(|a| !a.is_acp()))?;
        }
        if serves_worker {
            self.worker.validate()?;
        }
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        self.cluster.validate(role, has_redis)?;
        self.health.validate()?;
        self.engine.validate()?;
        self.continuation.validate()?;
        validate_aliases(&self.model_aliases)?;
        routes::validate(
            &self.routes,
            &self.prices,
            &ids,
            &self.health.circuit_breaker,
        )?;
        self.admin.validate()
    }

    /// The accounts this worker serves, in config order: ACP accounts only (provider
    /// accounts are served by the engine).
    pub fn worker_accounts(&self) -> Vec<&AccountConfig> {
        self.accounts
            .iter()
            .filter(|a| a.is_acp())
            .filter(|a| self.worker.accounts.is_empty() || self.worker.accounts.contains(&a.id))
            .collect()
    }
}

/// `model_aliases`: names and targets non-empty and no longer than the stores' ids (a model
/// name is a label of the usage ledger), no alias of itself, and no alias whose target is
/// another alias (one lookup resolves every name).
fn validate_aliases(aliases: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    use drawbridge_types::rules::MAX_ID_LEN;
    for (name, target) in aliases {
        let key = format!("model_aliases.{name}");
        if name.trim().is_empty() {
            return Err(ConfigError::invalid(
                "model_aliases",
                "an alias name is empty",
            ));
        }
        if name.len() > MAX_ID_LEN || target.len() > MAX_ID_LEN {
            return Err(ConfigError::invalid(
                key,
                format!("names and targets must be at most {MAX_ID_LEN} bytes"),
            ));
        }
        if target.trim().is_empty() {
            return Err(ConfigError::invalid(key, "the target model is empty"));
        }
        if name == target {
            return Err(ConfigError::invalid(key, "an alias cannot name itself"));
        }
        if aliases.contains_key(target) {
            return Err(ConfigError::invalid(
                key,
                format!("the target '{target}' is itself an alias; name the model it stands for"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
