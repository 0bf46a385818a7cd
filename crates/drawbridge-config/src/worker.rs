//! `worker`: the worker's listeners, queues, timeouts and heartbeat.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// HTTP API (`/prompt`, `/health`, `/slots`, `/drain`).
    pub http_listen: SocketAddr,
    /// gRPC API for the engine.
    pub grpc_listen: SocketAddr,
    /// Per-account homes are created under this directory (`<data_dir>/<account>/home`).
    pub data_dir: PathBuf,
    /// The accounts this worker serves (empty: all of `accounts`).
    pub accounts: Vec<String>,
    /// How long an agent may take to start and answer `initialize`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How long a request may wait for a free slot before it is refused.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// How many requests may wait per account before new ones are refused.
    pub max_queue: usize,
    /// The longest a single answer may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The longest an agent may stay silent during a turn before the turn fails and the
    /// process is replaced. Any frame of the agent's counts (text, reasoning, tool calls and
    /// their progress, metadata, usage): a long tool phase is not silence.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// After a client goes away: how long the agent has to answer `session/cancel` before its
    /// process is replaced instead of reused.
    #[serde(with = "humantime_serde")]
    pub cancel_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a live session (a turn whose answer ended with the client's tool calls, its
    /// agent waiting for the results) waits for the client's next request before it is
    /// cancelled and its process serves again. A later follow-up is answered in a fresh
    /// session from the whole conversation.
    #[serde(with = "humantime_serde")]
    pub live_session_ttl: Duration,
    /// Warm sessions per account: after an answer its session may stay open, holding its
    /// process, so that a follow-up extending the conversation sends only its new messages.
    /// A request that finds no idle process takes one back from a warm session. 0: off.
    pub warm_sessions: u32,
    /// How long a warm session waits for its follow-up.
    #[serde(with = "humantime_serde")]
    pub warm_session_ttl: Duration,
    /// With `redis.url`: how often the worker renews its `pod:{id}` registry entry …
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// … and how long the entry lives without renewal.
    #[serde(with = "humantime_serde")]
    pub heartbeat_ttl: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8090)),
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            data_dir: PathBuf::from(".drawbridge/accounts"),
            accounts: Vec::new(),
            handshake_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(30),
            max_queue: 64,
            request_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            cancel_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            live_session_ttl: Duration::from_secs(300),
            warm_sessions: 2,
            warm_session_ttl: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_ttl: Duration::from_secs(15),
        }
    }
}

impl WorkerConfig {
    /// The worker's own settings (the accounts it serves are checked against `accounts` by
    /// [`crate::Config::validate`]).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.live_session_ttl.is_zero() {
            return Err(ConfigError::invalid(
                "worker.live_session_ttl",
                "must be more than 0 (a client needs time to run its tools)",
            ));
        }
        if self.heartbeat_ttl <= self.heartbeat_interval {
            return Err(ConfigError::invalid(
                "worker.heartbeat_ttl",
                "must be longer than worker.heartbeat_interval (e.g. 3×)",
            ));
        }
        Ok(())
    }
}
