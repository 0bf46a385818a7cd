//! Drawbridge's configuration: one YAML file shared by every binary (each reads the sections it
//! needs), overridden by `DRAWBRIDGE_*` environment variables (nested keys joined by `__`,
//! e.g. `DRAWBRIDGE_GATEWAY__LISTEN=127.0.0.1:9000`), plus `DRAWBRIDGE_ADMIN_TOKEN` for
//! `admin.auth_token`. Unknown keys are errors. [`Config::validate`] runs before any port is
//! bound, and every error names the key at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use serde::{Deserialize, Serialize};

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("{0}")]
    Load(String),
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A secret string (API key, token): usable, but never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

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
    /// The file this configuration was loaded from (set by [`Config::load`]; what a reload
    /// reads again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's id in the registry and in logs.
    pub id: String,
    /// The address other nodes reach this one at (defaults to the listen address).
    pub address: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: "node-1".to_owned(),
            address: None,
        }
    }
}

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
    /// Engine channel keys only: a caller with this key may name whose request it forwards
    /// (the `x-drawbridge-tenant` header; Drawbridge's own gateway does). Off: the header is
    /// ignored and the key itself is the tenant.
    #[serde(default)]
    pub trust_tenant: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Where the separate gateway finds the engine (unused by `drawbridge`).
    pub engine_url: String,
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
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            engine_url: "http://127.0.0.1:8081".to_owned(),
            engine_key: None,
            api_keys: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            rate_limit: RateLimitConfig::default(),
            quota: QuotaConfig::default(),
            data_file: PathBuf::from(".drawbridge/gateway.redb"),
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
    /// The longest an account may take to send the first byte of its answer before it counts
    /// as failed (and the next account is tried).
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// The longest an answer may stay silent between two chunks: a silent agent is a failure,
    /// not a wait (the answer resumes on another account).
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
}

impl Default for AffinityConfig {
    fn default() -> Self {
        AffinityConfig {
            enabled: false,
            header: "x-session-id".to_owned(),
            user_field: true,
            ttl: Duration::from_secs(3600),
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
        }
    }
}

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
    /// The longest an agent may stay silent (no text, no thought) during a turn before the
    /// turn fails and the process is replaced.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// After a client goes away: how long the agent has to answer `session/cancel` before its
    /// process is replaced instead of reused.
    #[serde(with = "humantime_serde")]
    pub cancel_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
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
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_ttl: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub id: String,
    /// Agent processes kept warm for this account; each serves one request at a time.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    #[serde(default)]
    pub tier: Option<String>,
    /// Model names this account serves (`GET /v1/models` lists their union).
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    #[serde(default)]
    pub agent: AgentConfig,
    /// The account's credit grant (Kiro credits; fractions allowed): its balance is set to
    /// this when the account has none yet or when this value changes (a top-up or a reset);
    /// every finished turn is charged against it and at 0 the account gets no traffic.
    /// Absent: unmetered (never exhausted).
    #[serde(default)]
    pub credits: Option<f64>,
}

/// The largest credit grant `accounts[].credits` takes (the stores keep milli-credits below
/// 2^53).
/// The longest affinity TTL or account rest the shared stores keep (30 days; the stores'
/// `drawbridge_state::MAX_ROUTING_TTL`, checked equal where both are known).
pub const MAX_ROUTING_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub const MAX_CREDITS: f64 = 1e12;

fn default_pool_size() -> u32 {
    3
}

fn default_models() -> Vec<String> {
    vec!["kiro".to_owned()]
}

/// How to start one of the account's agent processes. No shell is involved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// A path, or a name looked up on `PATH` and then beside the running binary.
    pub command: String,
    pub args: Vec<String>,
    /// Working directory (default: `<data_dir>/<account>/work`).
    pub cwd: Option<PathBuf>,
    /// The account's HOME (default: `<data_dir>/<account>/home`): holds its credentials.
    pub home: Option<PathBuf>,
    /// Extra environment; nothing else of the worker's environment is passed on.
    pub env: BTreeMap<String, String>,
    /// Tools the agent may run when it asks (`session/request_permission`): ACP tool kinds
    /// (`read`, `search`, `fetch`, `edit`, `execute`, ...) or exact tool titles. Empty (the
    /// default): every request is rejected.
    pub allow_tools: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            command: "kiro-cli".to_owned(),
            args: vec!["acp".to_owned()],
            cwd: None,
            home: None,
            env: BTreeMap::new(),
            allow_tools: Vec::new(),
        }
    }
}

/// Account health as the engine judges it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub circuit_breaker: CircuitBreakerConfig,
}

/// Per-account circuit breaker: `failure_threshold` failures among the last `window_size`
/// outcomes open it; after `reset_timeout`, `half_open_probes` requests test the account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    pub failure_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub reset_timeout: Duration,
    pub window_size: u32,
    pub half_open_probes: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 3,
            reset_timeout: Duration::from_secs(60),
            window_size: 10,
            half_open_probes: 1,
        }
    }
}

/// Auto-continuation of truncated answers (the worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinuationConfig {
    pub enabled: bool,
    /// Continuation prompts per request at most.
    pub max_rounds: u32,
    /// Context use (0–1) above which an answer counts as cut off.
    pub context_threshold: f64,
    /// Answers longer than this (characters) that end mid-sentence count as cut off.
    pub min_chars: usize,
}

impl Default for ContinuationConfig {
    fn default() -> Self {
        ContinuationConfig {
            enabled: true,
            max_rounds: 5,
            context_threshold: 0.95,
            min_chars: 4000,
        }
    }
}

/// Output sanitization (the worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SanitizeConfig {
    /// `identity` (passthrough), `xml` (strip leaked internal XML blocks) or `full` (also
    /// built-in tool markers and identity lines).
    pub mode: SanitizeModeConfig,
    pub strip_xml_tags: bool,
    pub strip_builtin_tools: bool,
}

impl Default for SanitizeConfig {
    fn default() -> Self {
        SanitizeConfig {
            mode: SanitizeModeConfig::Full,
            strip_xml_tags: true,
            strip_builtin_tools: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SanitizeModeConfig {
    Identity,
    Xml,
    Full,
}

/// Several nodes on one ValKey (`redis.url`): how engines discover workers, elect the leader
/// that reconciles, and how workers learn which accounts to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Engine: re-read the whole registry this often, besides following its topology events.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Engine: take part in the election of the controller and, as leader, reconcile.
    pub reconcile: bool,
    /// Engine: the leader's lease (`leader:controller`) lives this long without renewal …
    #[serde(with = "humantime_serde")]
    pub leader_ttl: Duration,
    /// … and is renewed this often (a follower tries to take it as often).
    #[serde(with = "humantime_serde")]
    pub leader_renew_interval: Duration,
    /// Engine (leader): compare desired and actual accounts this often (and on topology events).
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Engine (leader): how workers come to exist. `static`: someone else starts them; the
    /// reconciler only assigns accounts. `process`: the leader starts local `kiro-worker`
    /// processes until `process.workers` workers are registered.
    pub fleet_driver: FleetDriverKind,
    /// The `process` fleet driver's settings.
    pub process: ProcessDriverConfig,
    /// Engine (leader): accounts one worker is assigned at most (0: no limit).
    pub max_accounts_per_worker: u32,
    /// Worker: serve the accounts of its config (`config`), or those the leader assigns it in
    /// the registry (`registry`, needs `redis.url`; the agent settings still come from
    /// `accounts`).
    pub assignment: AssignmentMode,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            sync_interval: Duration::from_secs(60),
            reconcile: true,
            leader_ttl: Duration::from_secs(60),
            leader_renew_interval: Duration::from_secs(20),
            reconcile_interval: Duration::from_secs(30),
            fleet_driver: FleetDriverKind::Static,
            process: ProcessDriverConfig::default(),
            max_accounts_per_worker: 0,
            assignment: AssignmentMode::Config,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetDriverKind {
    Static,
    Process,
}

/// `cluster.fleet_driver: process`: local `kiro-worker` processes started by the leader. Each
/// runs with `config` and, as overrides, its own `node.id` (`<engine id>-worker-<n>`), loopback
/// ports chosen by the system, `worker.data_dir` under `data_dir`, `cluster.assignment:
/// registry` and this engine's `redis.url`; its log goes to `<data_dir>/<id>.log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessDriverConfig {
    /// How many workers the cluster should have (registered ones count, whoever started them).
    pub workers: u32,
    /// The worker binary: a path, or a name looked up beside the engine's binary, then on PATH.
    pub command: String,
    /// The config file the workers read (their `accounts` give the agents' settings).
    pub config: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// How long a stopped worker may take to drain.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ProcessDriverConfig {
    fn default() -> Self {
        ProcessDriverConfig {
            workers: 1,
            command: "kiro-worker".to_owned(),
            config: None,
            data_dir: PathBuf::from(".drawbridge/workers"),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentMode {
    Config,
    Registry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Enables the admin API; also `DRAWBRIDGE_ADMIN_TOKEN`.
    pub auth_token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `drawbridge_engine=debug,info`; `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector (e.g. `http://otel-collector:4317`).
    pub otlp_endpoint: Option<String>,
    /// The share of new traces recorded (0.0–1.0); a trace begun upstream keeps its decision.
    pub trace_sample_ratio: f64,
    /// Log the messages of every chat request at the gateway (off: no message content is
    /// ever logged).
    pub messages: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
            messages: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Load `path` (which must exist) and the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Load(format!(
                "config file {}: not found",
                path.display()
            )));
        }
        let mut config = Self::from_figment(
            Figment::from(Yaml::file_exact(path))
                .merge(env_provider())
                .merge(
                    Env::raw()
                        .only(&["DRAWBRIDGE_ADMIN_TOKEN"])
                        .map(|_| "admin.auth_token".into()),
                ),
        )?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parse a YAML document, without the environment (for tests and tools).
    pub fn from_yaml(yaml: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Yaml::string(yaml)))
    }

    /// Extract from any figment (tests layer overrides with `Serialized` pairs).
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        figment
            .extract()
            .map_err(|err| ConfigError::Load(describe(err)))
    }

    /// Check what serde cannot, for the binary `role`.
    pub fn validate(&self, role: Role) -> Result<(), ConfigError> {
        if self.node.id.trim().is_empty() {
            return Err(ConfigError::invalid("node.id", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.log.trace_sample_ratio) {
            return Err(ConfigError::invalid(
                "log.trace_sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if let Some(endpoint) = &self.log.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "log.otlp_endpoint",
                "must be an http:// or https:// URL of an OTLP/gRPC collector",
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            let key = |field: &str| format!("accounts[{i}].{field}");
            if account.id.trim().is_empty() {
                return Err(ConfigError::invalid(key("id"), "must not be empty"));
            }
            if !account
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                || account.id.starts_with('.')
            {
                return Err(ConfigError::invalid(
                    key("id"),
                    "use letters, digits, '-', '_' and '.' only (it names a directory)",
                ));
            }
            if !ids.insert(account.id.as_str()) {
                return Err(ConfigError::invalid(
                    key("id"),
                    format!("duplicate account id '{}'", account.id),
                ));
            }
            if account.pool_size == 0 {
                return Err(ConfigError::invalid(key("pool_size"), "must be at least 1"));
            }
            if account.models.is_empty() || account.models.iter().any(|m| m.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    key("models"),
                    "list at least one non-empty model name",
                ));
            }
            if let Some(credits) = account.credits
                && !(credits.is_finite() && (0.0..=MAX_CREDITS).contains(&credits))
            {
                return Err(ConfigError::invalid(
                    key("credits"),
                    "must be a number of credits between 0 and 1e12 (leave it out: unmetered)",
                ));
            }
            if account.agent.command.trim().is_empty() {
                return Err(ConfigError::invalid(
                    key("agent.command"),
                    "must not be empty",
                ));
            }
        }
        if matches!(role, Role::Worker | Role::AllInOne) {
            for (i, id) in self.worker.accounts.iter().enumerate() {
                if !ids.contains(id.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("worker.accounts[{i}]"),
                        format!("no account with id '{id}' in `accounts`"),
                    ));
                }
            }
            if self.worker_accounts().is_empty() {
                return Err(ConfigError::invalid(
                    "accounts",
                    "list at least one account for this worker to serve",
                ));
            }
        }
        if matches!(role, Role::Gateway | Role::AllInOne) {
            validate_keys("gateway.api_keys", &self.gateway.api_keys)?;
            if self.gateway.max_body_bytes < 1024 {
                return Err(ConfigError::invalid(
                    "gateway.max_body_bytes",
                    "must be at least 1024",
                ));
            }
            let quota = &self.gateway.quota;
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
            if self.redis.is_none() && self.gateway.data_file.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    "gateway.data_file",
                    "name the file that keeps API keys and usage (or set redis.url)",
                ));
            }
        }
        if role == Role::Gateway && !self.gateway.engine_url.starts_with("http://") {
            return Err(ConfigError::invalid(
                "gateway.engine_url",
                "must be an http:// URL of the engine",
            ));
        }
        if role == Role::Engine {
            validate_keys("engine.channel_keys", &self.engine.channel_keys)?;
            if self.engine.workers.is_empty() && self.redis.is_none() {
                return Err(ConfigError::invalid(
                    "engine.workers",
                    "list at least one worker gRPC address (or set redis.url to discover them)",
                ));
            }
            for (i, url) in self.engine.workers.iter().enumerate() {
                if !url.starts_with("http://") {
                    return Err(ConfigError::invalid(
                        format!("engine.workers[{i}]"),
                        "must be an http:// URL of a worker's gRPC listener",
                    ));
                }
            }
            if self.engine.refresh_interval.is_zero() {
                return Err(ConfigError::invalid(
                    "engine.refresh_interval",
                    "must be greater than zero",
                ));
            }
        }
        if matches!(role, Role::Worker | Role::AllInOne)
            && self.worker.heartbeat_ttl <= self.worker.heartbeat_interval
        {
            return Err(ConfigError::invalid(
                "worker.heartbeat_ttl",
                "must be longer than worker.heartbeat_interval (e.g. 3×)",
            ));
        }
        if let Some(redis) = &self.redis
            && !(redis.url.starts_with("redis://") || redis.url.starts_with("rediss://"))
        {
            return Err(ConfigError::invalid(
                "redis.url",
                "must be a redis:// or rediss:// URL",
            ));
        }
        self.validate_cluster(role)?;
        let cb = &self.health.circuit_breaker;
        if cb.window_size == 0 || cb.failure_threshold == 0 || cb.failure_threshold > cb.window_size
        {
            return Err(ConfigError::invalid(
                "health.circuit_breaker.failure_threshold",
                "must be between 1 and health.circuit_breaker.window_size",
            ));
        }
        if cb.half_open_probes == 0 {
            return Err(ConfigError::invalid(
                "health.circuit_breaker.half_open_probes",
                "must be at least 1",
            ));
        }
        let cost = self.engine.request_cost;
        if !(cost.is_finite() && (0.0..=MAX_CREDITS).contains(&cost)) {
            return Err(ConfigError::invalid(
                "engine.request_cost",
                "must be a number of credits between 0 and 1e12",
            ));
        }
        for (key, value) in [
            (
                "engine.rate_limit_cooldown",
                self.engine.rate_limit_cooldown,
            ),
            ("engine.first_byte_timeout", self.engine.first_byte_timeout),
            ("engine.idle_timeout", self.engine.idle_timeout),
            ("engine.request_timeout", self.engine.request_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        let affinity = &self.engine.affinity;
        let header = affinity.header.as_str();
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
        if affinity.ttl.is_zero() {
            return Err(ConfigError::invalid(
                "engine.affinity.ttl",
                "must be greater than zero",
            ));
        }
        for (key, value) in [
            ("engine.affinity.ttl", affinity.ttl),
            (
                "engine.rate_limit_cooldown",
                self.engine.rate_limit_cooldown,
            ),
        ] {
            if value > MAX_ROUTING_TTL {
                return Err(ConfigError::invalid(key, "must be at most 30 days"));
            }
        }
        if self.engine.retries_per_account > 5 {
            return Err(ConfigError::invalid(
                "engine.retries_per_account",
                "must be between 0 and 5",
            ));
        }
        if !(1..=10).contains(&self.engine.max_attempts) {
            return Err(ConfigError::invalid(
                "engine.max_attempts",
                "must be between 1 and 10",
            ));
        }
        let c = &self.continuation;
        if !(c.context_threshold > 0.0 && c.context_threshold <= 1.0) {
            return Err(ConfigError::invalid(
                "continuation.context_threshold",
                "must be a fraction in (0, 1], e.g. 0.95",
            ));
        }
        if c.max_rounds > 20 {
            return Err(ConfigError::invalid(
                "continuation.max_rounds",
                "must be at most 20",
            ));
        }
        if let Some(token) = &self.admin.auth_token
            && token.expose().len() < 16
        {
            return Err(ConfigError::invalid(
                "admin.auth_token",
                "must be at least 16 characters",
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self, role: Role) -> Result<(), ConfigError> {
        let c = &self.cluster;
        for (key, value) in [
            ("cluster.sync_interval", c.sync_interval),
            ("cluster.leader_renew_interval", c.leader_renew_interval),
            ("cluster.reconcile_interval", c.reconcile_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        if c.leader_ttl <= c.leader_renew_interval {
            return Err(ConfigError::invalid(
                "cluster.leader_ttl",
                "must be longer than cluster.leader_renew_interval (e.g. 3×)",
            ));
        }
        if role == Role::Worker && c.assignment == AssignmentMode::Registry && self.redis.is_none()
        {
            return Err(ConfigError::invalid(
                "cluster.assignment",
                "`registry` needs redis.url (the assignments are in the registry)",
            ));
        }
        if role == Role::Engine && c.fleet_driver == FleetDriverKind::Process {
            if self.redis.is_none() {
                return Err(ConfigError::invalid(
                    "cluster.fleet_driver",
                    "`process` needs redis.url (its workers register there)",
                ));
            }
            if c.process.config.is_none() {
                return Err(ConfigError::invalid(
                    "cluster.process.config",
                    "name the config file the started workers read",
                ));
            }
            if c.process.workers == 0 || c.process.workers > 64 {
                return Err(ConfigError::invalid(
                    "cluster.process.workers",
                    "must be between 1 and 64",
                ));
            }
        }
        if role == Role::AllInOne && c.assignment == AssignmentMode::Registry {
            return Err(ConfigError::invalid(
                "cluster.assignment",
                "`registry` is for separate kiro-worker processes; drawbridge serves its accounts",
            ));
        }
        Ok(())
    }

    /// The accounts this worker serves, in config order.
    pub fn worker_accounts(&self) -> Vec<&AccountConfig> {
        self.accounts
            .iter()
            .filter(|a| self.worker.accounts.is_empty() || self.worker.accounts.contains(&a.id))
            .collect()
    }
}

fn validate_keys(key: &str, keys: &[StaticKey]) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, k) in keys.iter().enumerate() {
        // The name becomes part of the key's id (`static.<name>`), which the stores use.
        if k.name.is_empty()
            || k.name.len() > 64
            || !k
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
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

/// `DRAWBRIDGE_A__B=v` → `a.b = v`. `DRAWBRIDGE_ADMIN_TOKEN` is mapped on its own.
fn env_provider() -> Env {
    Env::prefixed("DRAWBRIDGE_")
        .ignore(&["admin_token", "config"])
        .split("__")
}

/// figment's error, with the profile noise removed and every nested error listed. figment
/// already names the key (`for key "default.accounts.0.pool_size"`); say it as `accounts.0...`.
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(source) => format!(" (in {source})"),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            if path.is_empty() {
                format!("config: {}{source}", e.kind)
            } else {
                format!("config key `{path}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    const GOOD: &str = r#"
node: { id: n1 }
gateway:
  listen: 127.0.0.1:0
  api_keys: [{ name: demo, key: db-demo-key-123 }]
accounts:
  - id: pro-1
    pool_size: 2
    tier: pro
    agent: { command: mock-acp-agent, args: [], env: { MOCK_ACP_DELAY_MS: "5" } }
  - id: pro-2
"#;

    #[test]
    fn parses_the_seed_shape_with_defaults() {
        let config = Config::from_yaml(GOOD).unwrap();
        config.validate(Role::AllInOne).unwrap();
        assert_eq!(config.accounts[0].pool_size, 2);
        assert_eq!(config.accounts[1].pool_size, 3);
        assert_eq!(config.accounts[1].models, vec!["kiro"]);
        assert_eq!(config.accounts[1].agent.command, "kiro-cli");
        assert_eq!(config.accounts[1].agent.args, vec!["acp"]);
        assert_eq!(config.worker.queue_timeout, Duration::from_secs(30));
        assert_eq!(config.gateway.api_keys[0].key.expose(), "db-demo-key-123");
        assert_eq!(config.continuation.max_rounds, 5);
        assert_eq!(config.continuation.context_threshold, 0.95);
        assert_eq!(config.sanitize.mode, SanitizeModeConfig::Full);
        let seeds = Config::from_yaml(
            "continuation: { enabled: true, max_rounds: 5, context_threshold: 0.95 }\n\
             sanitize: { mode: xml, strip_xml_tags: true, strip_builtin_tools: true }",
        )
        .unwrap();
        assert_eq!(seeds.sanitize.mode, SanitizeModeConfig::Xml);
        let breaker = Config::from_yaml(
            "health: { circuit_breaker: { failure_threshold: 3, reset_timeout: 60s, window_size: 10 } }",
        )
        .unwrap();
        assert_eq!(
            breaker.health.circuit_breaker.reset_timeout,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn credits_are_optional_per_account() {
        let config = Config::from_yaml(
            "accounts: [{ id: metered, credits: 250.5 }, { id: free }]\nengine: { request_cost: 0.25 }",
        )
        .unwrap();
        config.validate(Role::AllInOne).unwrap();
        assert_eq!(config.accounts[0].credits, Some(250.5));
        assert_eq!(config.accounts[1].credits, None);
        assert_eq!(config.engine.request_cost, 0.25);
        assert_eq!(EngineConfig::default().request_cost, 1.0);
        let err = Config::from_yaml("accounts: [{ id: a }]\nengine: { rate_limit_cooldown: 0s }")
            .unwrap()
            .validate(Role::Engine)
            .unwrap_err()
            .to_string();
        assert!(err.contains("engine.rate_limit_cooldown"), "{err}");
        let engine = EngineConfig::default();
        assert_eq!(
            (engine.retries_per_account, engine.max_attempts),
            (0, 3),
            "the retry and rotation budgets"
        );
        for (yaml, key) in [
            ("engine: { idle_timeout: 0s }", "engine.idle_timeout"),
            (
                "engine: { first_byte_timeout: 0s }",
                "engine.first_byte_timeout",
            ),
            ("engine: { request_timeout: 0s }", "engine.request_timeout"),
            (
                "engine: { retries_per_account: 6 }",
                "engine.retries_per_account",
            ),
            (
                "engine: { affinity: { header: 'x session' } }",
                "engine.affinity.header",
            ),
            ("engine: { affinity: { ttl: 0s } }", "engine.affinity.ttl"),
            ("engine: { affinity: { ttl: 31d } }", "engine.affinity.ttl"),
            (
                "engine: { rate_limit_cooldown: 800h }",
                "engine.rate_limit_cooldown",
            ),
        ] {
            let err = Config::from_yaml(&format!("accounts: [{{ id: a }}]\n{yaml}"))
                .unwrap()
                .validate(Role::Engine)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{yaml} → {err}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_yaml("gateway: { listne: 1 }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listne"), "{err}");
        let err = Config::from_yaml("accounts: [{ id: a, pool_size: many }]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("accounts.0.pool_size"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            (
                "accounts: [{ id: a, pool_size: 0 }]",
                "accounts[0].pool_size",
            ),
            ("accounts: [{ id: a }, { id: a }]", "accounts[1].id"),
            ("accounts: [{ id: '../x' }]", "accounts[0].id"),
            ("accounts: [{ id: a, models: [] }]", "accounts[0].models"),
            ("accounts: []", "accounts"),
            (
                "accounts: [{ id: a }]\ngateway: { api_keys: [{ name: x, key: short }] }",
                "gateway.api_keys[0].key",
            ),
            (
                "accounts: [{ id: a }]\nworker: { accounts: [b] }",
                "worker.accounts[0]",
            ),
            (
                "accounts: [{ id: a }]\nadmin: { auth_token: tiny }",
                "admin.auth_token",
            ),
            ("accounts: [{ id: a, credits: -1 }]", "accounts[0].credits"),
            (
                "accounts: [{ id: a, credits: .inf }]",
                "accounts[0].credits",
            ),
            (
                "accounts: [{ id: a }]\nengine: { request_cost: -0.5 }",
                "engine.request_cost",
            ),
        ];
        for (yaml, key) in cases {
            let err = Config::from_yaml(yaml)
                .unwrap()
                .validate(Role::AllInOne)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{yaml} → {err}");
        }
    }

    #[test]
    fn each_role_checks_its_own_sections() {
        let gateway_only = Config::from_yaml("gateway: { engine_url: 'ftp://x' }").unwrap();
        assert!(gateway_only.validate(Role::Engine).is_ok());
        let err = gateway_only
            .validate(Role::Gateway)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.engine_url"), "{err}");
        // A gateway needs no accounts; a worker does.
        let empty = Config::default();
        assert!(empty.validate(Role::Gateway).is_ok());
        assert!(empty.validate(Role::Worker).is_err());
    }

    #[test]
    fn overrides_layer_over_the_file() {
        let figment = Figment::from(Yaml::string(GOOD))
            .merge(Serialized::default("gateway.listen", "127.0.0.1:9999"));
        let config = Config::from_figment(figment).unwrap();
        assert_eq!(config.gateway.listen, "127.0.0.1:9999".parse().unwrap());
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(&dir.path().join("nope.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.yaml"), "{err}");
    }

    #[test]
    fn the_shipped_configs_are_valid() {
        let demo = Config::from_yaml(include_str!("../../../config/demo.yaml")).unwrap();
        demo.validate(Role::AllInOne).unwrap();
        let kiro = Config::from_yaml(include_str!("../../../config/kiro.example.yaml")).unwrap();
        for role in [Role::AllInOne, Role::Gateway, Role::Engine, Role::Worker] {
            kiro.validate(role).unwrap();
        }
        assert_eq!(kiro.accounts[0].agent.command, "kiro-cli");
        let cluster = Config::from_yaml(include_str!("../../../config/cluster.yaml")).unwrap();
        for role in [Role::Gateway, Role::Engine, Role::Worker] {
            cluster.validate(role).unwrap();
        }
        assert_eq!(cluster.cluster.assignment, AssignmentMode::Registry);
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::from_yaml(GOOD).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("db-demo-key-123"), "{debug}");
    }

    #[test]
    fn worker_accounts_filters_by_assignment() {
        let mut config = Config::from_yaml(GOOD).unwrap();
        assert_eq!(config.worker_accounts().len(), 2);
        config.worker.accounts = vec!["pro-2".to_owned()];
        let ids: Vec<&str> = config
            .worker_accounts()
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(ids, vec!["pro-2"]);
    }

    #[test]
    fn an_engine_with_redis_needs_no_static_workers() {
        let yaml = format!(
            "{GOOD}redis: {{ url: \"redis://127.0.0.1:6379\" }}\nengine: {{ workers: [] }}\n"
        );
        let config = Config::from_yaml(&yaml).unwrap();
        config.validate(Role::Engine).unwrap();
        let config = Config::from_yaml(&format!("{GOOD}engine: {{ workers: [] }}\n")).unwrap();
        let err = config.validate(Role::Engine).unwrap_err().to_string();
        assert!(err.contains("engine.workers"), "{err}");
    }

    #[test]
    fn cluster_settings_are_checked() {
        let config = Config::from_yaml(&format!(
            "{GOOD}cluster: {{ leader_ttl: 10s, leader_renew_interval: 10s }}\n"
        ))
        .unwrap();
        let err = config.validate(Role::Engine).unwrap_err().to_string();
        assert!(err.contains("cluster.leader_ttl"), "{err}");
        let config =
            Config::from_yaml(&format!("{GOOD}cluster: {{ assignment: registry }}\n")).unwrap();
        let err = config.validate(Role::Worker).unwrap_err().to_string();
        assert!(err.contains("cluster.assignment"), "{err}");
        let config = Config::from_yaml(&format!(
            "{GOOD}cluster: {{ assignment: registry }}\nredis: {{ url: \"redis://h:6379\" }}\n"
        ))
        .unwrap();
        config.validate(Role::Worker).unwrap();
        assert_eq!(config.cluster.sync_interval, Duration::from_secs(60));
        assert_eq!(config.cluster.leader_ttl, Duration::from_secs(60));
        assert_eq!(
            config.cluster.leader_renew_interval,
            Duration::from_secs(20)
        );
        assert_eq!(config.cluster.reconcile_interval, Duration::from_secs(30));

        let redis = "redis: { url: \"redis://h:6379\" }\n";
        let config = Config::from_yaml(&format!(
            "{GOOD}{redis}cluster: {{ fleet_driver: process }}\n"
        ))
        .unwrap();
        let err = config.validate(Role::Engine).unwrap_err().to_string();
        assert!(err.contains("cluster.process.config"), "{err}");
        let config = Config::from_yaml(&format!(
            "{GOOD}{redis}cluster: {{ fleet_driver: process, process: {{ config: w.yaml, workers: 3 }} }}\n"
        ))
        .unwrap();
        config.validate(Role::Engine).unwrap();
        assert_eq!(config.cluster.process.command, "kiro-worker");
    }
}
