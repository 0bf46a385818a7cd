//! `gateway`: the public API's listener, its keys, limits and quotas.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use drawbridge_types::rules::MAX_ROUTING_TTL;
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Role, Secret, StaticKey};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The one-engine form of `engine_urls` (kept for existing configs; empty: not set). Set
    /// one of the two, not both. Read the engines through [`GatewayConfig::engine_urls`].
    #[serde(skip_serializing_if = "String::is_empty")]
    pub engine_url: String,
    /// Where the separate gateway finds its engines (unused by `drawbridge`), in order of
    /// preference: each request goes to the first one that is not resting after a failure,
    /// and moves on to the next on a transport failure before the answer's first byte.
    /// Unset (and no `engine_url`): `http://127.0.0.1:8081`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_urls: Option<Vec<String>>,
    /// The channel key the gateway presents to the engine.
    pub engine_key: Option<Secret>,
    /// Keys clients may use.
    pub api_keys: Vec<StaticKey>,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub rate_limit: RateLimitConfig,
    pub quota: QuotaConfig,
    /// Without `redis.url`: the file that keeps API keys and the usage ledger across restarts.
    pub data_file: PathBuf,
    /// How long a Responses API response is kept for `previous_response_id` and
    /// `GET /v1/responses/{id}` (in ValKey with `redis.url`, else in the process's memory).
    #[serde(with = "humantime_serde")]
    pub responses_ttl: Duration,
}

/// The engine of a gateway whose config names none.
const DEFAULT_ENGINE_URL: &str = "http://127.0.0.1:8081";

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            engine_url: String::new(),
            engine_urls: None,
            engine_key: None,
            api_keys: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            rate_limit: RateLimitConfig::default(),
            quota: QuotaConfig::default(),
            data_file: PathBuf::from(".drawbridge/gateway.redb"),
            responses_ttl: Duration::from_secs(3600),
        }
    }
}

/// Per-key rate limits: a sliding window of one minute, shared by every gateway node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per minute of a key that sets no limit of its own (0: unlimited).
    pub requests_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_minute: 60,
        }
    }
}

/// Per-key budgets (set on a key with the admin API). A request is charged what it used when
/// it ends; while it runs it holds a reservation, so concurrent requests overspend a budget
/// by at most about one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Tokens reserved for a request's answer against a tokens budget (its prompt's estimate
    /// is reserved too; `max_tokens` replaces this when the request sets it).
    pub reserve_tokens: u64,
    /// Credits reserved per request against a credits budget.
    pub reserve_credits: f64,
    /// A reservation whose request never reported (its gateway died) stops counting after this.
    #[serde(with = "humantime_serde")]
    pub reservation_ttl: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            reserve_tokens: 4096,
            reserve_credits: 1.0,
            reservation_ttl: Duration::from_secs(15 * 60),
        }
    }
}

impl GatewayConfig {
    /// The engines the gateway sends to, in order of preference: `engine_urls`, else
    /// `engine_url`, else `http://127.0.0.1:8081`.
    pub fn engine_urls(&self) -> Vec<String> {
        match &self.engine_urls {
            Some(urls) => urls.clone(),
            None if !self.engine_url.is_empty() => vec![self.engine_url.clone()],
            None => vec![DEFAULT_ENGINE_URL.to_owned()],
        }
    }

    /// `engine_url` / `engine_urls`: one of them at most, at least one engine, each an
    /// http:// URL, none twice. Errors name the key as the config wrote it.
    fn validate_engines(&self) -> Result<(), ConfigError> {
        let Some(urls) = &self.engine_urls else {
            if !self.engine_url.is_empty() && !self.engine_url.starts_with("http://") {
                return Err(ConfigError::invalid(
                    "gateway.engine_url",
                    "must be an http:// URL of the engine",
                ));
            }
            return Ok(());
        };
        if !self.engine_url.is_empty() {
            return Err(ConfigError::invalid(
                "gateway.engine_urls",
                "set gateway.engine_url (one engine) or gateway.engine_urls (a list), not both",
            ));
        }
        if urls.is_empty() {
            return Err(ConfigError::invalid(
                "gateway.engine_urls",
                "must list at least one engine",
            ));
        }
        for (i, url) in urls.iter().enumerate() {
            let key = format!("gateway.engine_urls[{i}]");
            if !url.starts_with("http://") || url.len() == "http://".len() {
                return Err(ConfigError::invalid(
                    key,
                    "must be an http:// URL of an engine",
                ));
            }
            let same = |other: &String| other.trim_end_matches('/') == url.trim_end_matches('/');
            if urls[..i].iter().any(same) {
                return Err(ConfigError::invalid(key, "lists an engine already listed"));
            }
        }
        Ok(())
    }

    /// For a binary that serves the gateway (`role`: the gateway or `drawbridge`); `has_redis`:
    /// whether `redis.url` is set.
    pub(crate) fn validate(&self, role: Role, has_redis: bool) -> Result<(), ConfigError> {
        crate::keys::validate(crate::keys::KeyList::GatewayApi, &self.api_keys)?;
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "gateway.max_body_bytes",
                "must be at least 1024",
            ));
        }
        let quota = &self.quota;
        if !(quota.reserve_credits.is_finite() && quota.reserve_credits >= 0.0) {
            return Err(ConfigError::invalid(
                "gateway.quota.reserve_credits",
                "must be a number of credits, 0 or more",
            ));
        }
        if quota.reservation_ttl.is_zero() {
            return Err(ConfigError::invalid(
                "gateway.quota.reservation_ttl",
                "must be greater than zero",
            ));
        }
        if self.responses_ttl.is_zero() {
            return Err(ConfigError::invalid(
                "gateway.responses_ttl",
                "must be greater than zero",
            ));
        }
        if self.responses_ttl > MAX_ROUTING_TTL {
            return Err(ConfigError::invalid(
                "gateway.responses_ttl",
                format!(
                    "must be at most {} days",
                    MAX_ROUTING_TTL.as_secs() / 86_400
                ),
            ));
        }
        if !has_redis && self.data_file.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "gateway.data_file",
                "name the file that keeps API keys and usage (or set redis.url)",
            ));
        }
        if role == Role::Gateway {
            self.validate_engines()?;
        }
        Ok(())
    }
}
