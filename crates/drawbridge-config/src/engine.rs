//! `engine`: the scheduler's listener, its channel keys, budgets, timeouts and affinity.

use std::net::SocketAddr;
use std::time::Duration;

use drawbridge_types::rules::MAX_ROUTING_TTL;
use serde::{Deserialize, Serialize};

use crate::{ConfigError, MAX_CREDITS, StaticKey};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    pub listen: SocketAddr,
    /// gRPC addresses of the workers (static discovery).
    pub workers: Vec<String>,
    /// Keys accepted on the engine's OpenAI-compatible endpoint (the gateway's, NEW-API's).
    /// Empty means the endpoint is open: bind it to a private address.
    pub channel_keys: Vec<StaticKey>,
    /// How often the engine refreshes what each worker serves.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The rotation budget: accounts one request may use in all (the first, the others tried
    /// before the first byte, and those that resume it after).
    pub max_attempts: u32,
    /// The retry budget: how many times a turn that failed before its first byte (its agent
    /// crashed, its worker broke off, it timed out) is tried again on the same account before
    /// the request moves on to the next one.
    pub retries_per_account: u32,
    /// The longest an account may take to show a first sign of life (any frame: a tool call,
    /// progress, reasoning or text) before it counts as failed (and the next account is
    /// tried).
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// The longest an answer may stay silent between two frames of any kind (activity counts):
    /// a silent agent is a failure, not a wait (the answer moves to another account).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The deadline of a whole request, every retry and resumption included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// When an answer breaks off after its first byte, continue it on another account.
    pub resume_after_first_byte: bool,
    /// Credits charged for a finished turn whose agent reported no cost (Kiro reports its
    /// own; other ACP agents may not). Only metered accounts are charged.
    pub request_cost: f64,
    /// How long an account rests after its agent reported a rate limit without saying for
    /// how long (when it says, e.g. "retry after 30 seconds", that wins).
    #[serde(with = "humantime_serde")]
    pub rate_limit_cooldown: Duration,
    /// Session affinity: a conversation keeps its account while that account is healthy.
    pub affinity: AffinityConfig,
    /// A streamed answer that has shown nothing (no text, no reasoning) for this long commits
    /// its `200` and sends an SSE comment (`: keep-alive`) every interval until it shows
    /// something, so clients and proxies do not time out during long tool phases. From then
    /// on a failure before text is retried inside the open stream, and an answer nobody can
    /// give ends with the OpenAI error chunk instead of an error status.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// What clients see of the model's reasoning.
    pub reasoning: ReasoningMode,
}

/// `engine.reasoning`: what happens to the model's reasoning (ACP `agent_thought_chunk`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningMode {
    /// Streamed as `delta.reasoning_content` (`message.reasoning_content` when not streamed).
    #[default]
    On,
    /// Dropped.
    Off,
    /// Put in the answer's text as `<think>…</think>` and a blank line, before the answer.
    Fold,
}

/// `engine.affinity`: requests with the same conversation key (the `header`, or else the
/// request's `user` field) go to the account that served the conversation last, while it can
/// take them. The binding lives `ttl` after the conversation's last request (in ValKey with
/// `redis.url`, shared by every engine). The gateway forwards `header` to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AffinityConfig {
    pub enabled: bool,
    /// The request header holding the conversation key.
    pub header: String,
    /// Use the request's `user` field as the key when the header is absent.
    pub user_field: bool,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long the binding of a live or warm session (a follow-up's way back to the worker
    /// that holds the session) lasts: the workers' `live_session_ttl` and `warm_session_ttl`.
    /// Apart from `ttl` (and on whether affinity is on), since a session outlives neither: a
    /// longer binding only points at sessions that are gone, one key per answer.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        AffinityConfig {
            enabled: false,
            header: "x-session-id".to_owned(),
            user_field: true,
            ttl: Duration::from_secs(3600),
            session_ttl: Duration::from_secs(300),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            workers: vec!["http://127.0.0.1:50051".to_owned()],
            channel_keys: Vec::new(),
            refresh_interval: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            max_attempts: 3,
            retries_per_account: 0,
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(900),
            resume_after_first_byte: true,
            request_cost: 1.0,
            rate_limit_cooldown: Duration::from_secs(60),
            affinity: AffinityConfig::default(),
            keepalive_interval: Duration::from_secs(10),
            reasoning: ReasoningMode::On,
        }
    }
}

impl EngineConfig {
    /// The engine binary's own endpoint: its channel keys and where it finds workers
    /// (`has_redis`: whether `redis.url` is set, to discover them; `has_providers`: whether
    /// the config lists provider accounts, which the engine serves itself, so that it may run
    /// without any worker).
    pub(crate) fn validate_endpoint(
        &self,
        has_redis: bool,
        has_providers: bool,
    ) -> Result<(), ConfigError> {
        crate::keys::validate(crate::keys::KeyList::EngineChannel, &self.channel_keys)?;
        if self.workers.is_empty() && !has_redis && !has_providers {
            return Err(ConfigError::invalid(
                "engine.workers",
                "list at least one worker gRPC address (or set redis.url to discover them, or list a provider account)",
            ));
        }
        for (i, url) in self.workers.iter().enumerate() {
            if !url.starts_with("http://") {
                return Err(ConfigError::invalid(
                    format!("engine.workers[{i}]"),
                    "must be an http:// URL of a worker's gRPC listener",
                ));
            }
        }
        if self.refresh_interval.is_zero() {
            return Err(ConfigError::invalid(
                "engine.refresh_interval",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    /// The scheduling settings every binary checks: cost, timeouts, affinity, budgets.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let cost = self.request_cost;
        if !(cost.is_finite() && (0.0..=MAX_CREDITS).contains(&cost)) {
            return Err(ConfigError::invalid(
                "engine.request_cost",
                "must be a number of credits between 0 and 1e12",
            ));
        }
        for (key, value) in [
            ("engine.rate_limit_cooldown", self.rate_limit_cooldown),
            ("engine.first_byte_timeout", self.first_byte_timeout),
            ("engine.idle_timeout", self.idle_timeout),
            ("engine.request_timeout", self.request_timeout),
            ("engine.keepalive_interval", self.keepalive_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        self.affinity.validate()?;
        for (key, value) in [
            ("engine.affinity.ttl", self.affinity.ttl),
            ("engine.affinity.session_ttl", self.affinity.session_ttl),
            ("engine.rate_limit_cooldown", self.rate_limit_cooldown),
        ] {
            if value > MAX_ROUTING_TTL {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "must be at most {} days",
                        MAX_ROUTING_TTL.as_secs() / 86_400
                    ),
                ));
            }
        }
        if self.retries_per_account > 5 {
            return Err(ConfigError::invalid(
                "engine.retries_per_account",
                "must be between 0 and 5",
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::invalid(
                "engine.max_attempts",
                "must be between 1 and 10",
            ));
        }
        Ok(())
    }
}

impl AffinityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let header = self.header.as_str();
        if header.is_empty()
            || header.len() > 64
            || !header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(ConfigError::invalid(
                "engine.affinity.header",
                "must be an HTTP header name (letters, digits, '-'), e.g. x-session-id",
            ));
        }
        for (key, ttl) in [
            ("engine.affinity.ttl", self.ttl),
            ("engine.affinity.session_ttl", self.session_ttl),
        ] {
            if ttl.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        Ok(())
    }
}
