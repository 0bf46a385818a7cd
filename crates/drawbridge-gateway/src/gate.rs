//! The gateway's [`Gate`]: API keys (the config's static keys, and keys made with the admin
//! API, looked up by hash in the store on every request so a revocation is seen at once by
//! every node), per-key rate limits (a sliding minute, shared through the store), allowed
//! models, quotas (a reservation while the request runs, the real usage when it ends), and the
//! usage ledger.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use drawbridge_config::{Config, Secret};
use drawbridge_http::{Caller, Entry, Gate, Keys, Pass, Refusal};
use drawbridge_state::{
    ApiKeyRecord, Clock, KeyStore, Quota, QuotaUnit, RateDecision, RateLimiter, StateError,
    UsageStore,
};
use drawbridge_telemetry::metrics::Rejection;
use drawbridge_telemetry::{LiveConfig, Metrics, Shutdown};
use drawbridge_types::{ApiError, ChatCompletionRequest, ErrorKind};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

pub use crate::charge::UNKNOWN_ACCOUNT;
use crate::charge::{Charge, charge_id};
use crate::secret;

/// The rate-limit window.
const WINDOW: Duration = Duration::from_secs(60);
/// How long a key record read from the store may still be used while the store is
/// unreachable (never while it answers: then every request reads the store).
const STALE_KEY_LIMIT: Duration = Duration::from_secs(600);
/// Records kept for that purpose at most.
const STALE_KEYS_MAX: usize = 10_000;

/// The stores the gateway keeps its records in: ValKey (shared by every gateway node) or the
/// embedded data file; and the clock it reads beside them.
#[derive(Clone)]
pub struct Stores {
    pub keys: Arc<dyn KeyStore>,
    pub limiter: Arc<dyn RateLimiter>,
    pub usage: Arc<dyn UsageStore>,
    /// The Responses API's stored responses.
    pub responses: Arc<dyn drawbridge_state::ResponseStore>,
    /// Now, in ms since the Unix epoch: what a key's expiry, its last use, a new key's times
    /// and the ledger's entries are read from. The system clock ([`system_clock`]); a test
    /// gives one it controls (the embedded store's, with
    /// `EmbeddedGatewayStore::with_clock`).
    pub clock: Clock,
}

impl Stores {
    /// The gateway's part of a process's stores, on the system clock.
    pub fn from_state(stores: &drawbridge_state::Stores) -> Stores {
        Stores {
            keys: Arc::clone(&stores.keys),
            limiter: Arc::clone(&stores.limiter),
            usage: Arc::clone(&stores.usage),
            responses: Arc::clone(&stores.responses),
            clock: system_clock(),
        }
    }
}

/// The system clock, in ms since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(system_ms)
}

/// What [`GatewayGate`]'s `enter` learnt about the key, for `admit`: its limits beyond the
/// rate limit.
#[derive(Clone, Debug, Default)]
pub struct KeyContext {
    /// The models it may use; empty: all.
    models: Vec<String>,
    quota: Option<Quota>,
}

/// The settings the gateway reads on every request, derived from the running configuration.
pub struct Settings {
    pub static_keys: Keys,
    /// Static key name → its own requests per minute.
    pub static_rpm: HashMap<String, Option<u32>>,
    pub default_rpm: u32,
    pub reserve_tokens: u64,
    pub reserve_credits: f64,
    pub reservation_ttl: Duration,
    pub log_messages: bool,
    pub admin_token: Option<Secret>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Settings {
            static_keys: Keys::required(&config.gateway.api_keys),
            static_rpm: config
                .gateway
                .api_keys
                .iter()
                .map(|k| (k.name.clone(), k.rpm))
                .collect(),
            default_rpm: config.gateway.rate_limit.requests_per_minute,
            reserve_tokens: config.gateway.quota.reserve_tokens,
            reserve_credits: config.gateway.quota.reserve_credits,
            reservation_ttl: config.gateway.quota.reservation_ttl,
            log_messages: config.log.messages,
            admin_token: config.admin.auth_token.clone(),
        }
    }
}

/// [`Settings`] that follow the live configuration: a reload (SIGHUP, or the file changing)
/// takes effect at the next request. Derived once per reload, read lock-free.
pub struct LiveSettings {
    live: LiveConfig,
    changes: watch::Receiver<u64>,
    current: ArcSwap<(u64, Arc<Settings>)>,
}

impl LiveSettings {
    pub fn new(live: LiveConfig) -> Self {
        let changes = live.subscribe();
        let generation = *changes.borrow();
        let settings = Arc::new(Settings::from_config(&live.load()));
        LiveSettings {
            live,
            changes,
            current: ArcSwap::from_pointee((generation, settings)),
        }
    }

    /// The settings of the configuration running now.
    pub fn now(&self) -> Arc<Settings> {
        let generation = *self.changes.borrow();
        let current = self.current.load();
        if current.0 == generation {
            return Arc::clone(&current.1);
        }
        let settings = Arc::new(Settings::from_config(&self.live.load()));
        self.current
            .store(Arc::new((generation, Arc::clone(&settings))));
        settings
    }
}

pub struct GatewayGate {
    settings: Arc<LiveSettings>,
    stores: Stores,
    metrics: Arc<Metrics>,
    /// Usage is written after the answer ended, on this scope's tracker (a drain waits).
    tasks: Shutdown,
    /// Key records by hash, for while the store is unreachable.
    recent: Mutex<HashMap<String, (ApiKeyRecord, tokio::time::Instant)>>,
}

impl GatewayGate {
    pub fn new(
        settings: Arc<LiveSettings>,
        stores: Stores,
        metrics: Arc<Metrics>,
        tasks: Shutdown,
    ) -> Self {
        GatewayGate {
            settings,
            stores,
            metrics,
            tasks,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The record of the key whose hash is `hash`: from the store, or, while the store is
    /// unreachable, as it was last read (for at most [`STALE_KEY_LIMIT`]).
    async fn lookup(&self, hash: &str) -> Result<Option<ApiKeyRecord>, ApiError> {
        match self.stores.keys.key_by_hash(hash).await {
            Ok(found) => {
                if let Ok(mut recent) = self.recent.lock() {
                    match &found {
                        Some(record) => {
                            if recent.len() >= STALE_KEYS_MAX {
                                recent.clear();
                            }
                            recent.insert(
                                hash.to_owned(),
                                (record.clone(), tokio::time::Instant::now()),
                            );
                        }
                        None => {
                            recent.remove(hash);
                        }
                    }
                }
                Ok(found)
            }
            Err(error) => {
                let stale = self.recent.lock().ok().and_then(|recent| {
                    recent
                        .get(hash)
                        .filter(|(_, at)| at.elapsed() < STALE_KEY_LIMIT)
                        .map(|(record, _)| record.clone())
                });
                match stale {
                    Some(record) => {
                        tracing::warn!(%error, key_id = record.id, "key store unreachable; using the key as last read");
                        Ok(Some(record))
                    }
                    None => {
                        tracing::warn!(%error, "key store unreachable");
                        Err(store_unavailable(&error))
                    }
                }
            }
        }
    }

    /// Who the bearer key is, and its limits.
    async fn identify(&self, headers: &HeaderMap) -> Result<(Caller, u32, KeyContext), ApiError> {
        let presented =
            drawbridge_http::auth::bearer(headers).ok_or_else(ApiError::invalid_api_key)?;
        let settings = self.settings.now();
        if let Some(name) = settings.static_keys.find(presented) {
            let rpm = settings
                .static_rpm
                .get(name)
                .copied()
                .flatten()
                .unwrap_or(settings.default_rpm);
            return Ok((Caller::from_static(name), rpm, KeyContext::default()));
        }
        if !presented.starts_with(secret::PREFIX) {
            return Err(ApiError::invalid_api_key());
        }
        let record = self
            .lookup(&secret::hash(presented))
            .await?
            .ok_or_else(ApiError::invalid_api_key)?;
        let now = (self.stores.clock)();
        if record.revoked_at_ms.is_some() {
            return Err(ApiError::new(
                ErrorKind::InvalidApiKey,
                "This API key has been revoked.",
            ));
        }
        if record.expires_at_ms.is_some_and(|at| at <= now) {
            return Err(ApiError::new(
                ErrorKind::InvalidApiKey,
                "This API key has expired.",
            ));
        }
        let keys = Arc::clone(&self.stores.keys);
        let id = record.id.clone();
        self.tasks.spawn(async move {
            if let Err(error) = keys.touch_key(&id, now).await {
                tracing::debug!(%error, key_id = id, "cannot record the key's last use");
            }
        });
        let rpm = record.limits.rpm.unwrap_or(settings.default_rpm);
        Ok((
            Caller {
                key_id: record.id,
                key_name: record.name,
            },
            rpm,
            KeyContext {
                models: record.limits.models,
                quota: record.limits.quota,
            },
        ))
    }

    /// Tokens (or credits) to hold for `request` while it runs.
    fn reservation(
        settings: &Settings,
        quota: &Quota,
        request: &ChatCompletionRequest,
        prompt: u64,
    ) -> f64 {
        match quota.unit {
            QuotaUnit::Tokens => {
                let answer = request
                    .max_output_tokens()
                    .map_or(settings.reserve_tokens, u64::from);
                (prompt + answer) as f64
            }
            QuotaUnit::Credits => settings.reserve_credits,
        }
    }
}

fn store_unavailable(error: &StateError) -> ApiError {
    tracing::debug!(%error, "gateway store error");
    ApiError::unavailable("The gateway cannot reach its key store right now; retry shortly.")
        .with_retry_after(Duration::from_secs(1))
}

/// Milliseconds since the Unix epoch, on the system clock.
pub(crate) fn system_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The estimate of the request's prompt in tokens (what the agent is sent).
fn prompt_tokens(request: &ChatCompletionRequest) -> u64 {
    drawbridge_core::tokens::estimate_tokens(&drawbridge_core::prompt::render(&request.messages))
}

/// The `X-RateLimit-*` headers of a decision (the seed's names), and OpenAI's
/// `x-ratelimit-*-requests` ones, which some clients read.
fn rate_headers(decision: &RateDecision, now: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let reset_secs = decision.reset_at_ms.div_ceil(1000);
    let reset_in_ms = decision.reset_at_ms.saturating_sub(now);
    let pairs: [(&'static str, String); 6] = [
        ("x-ratelimit-limit", decision.limit.to_string()),
        ("x-ratelimit-remaining", decision.remaining.to_string()),
        ("x-ratelimit-reset", reset_secs.to_string()),
        ("x-ratelimit-limit-requests", decision.limit.to_string()),
        (
            "x-ratelimit-remaining-requests",
            decision.remaining.to_string(),
        ),
        (
            "x-ratelimit-reset-requests",
            format!("{}ms", reset_in_ms.max(1)),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

impl Gate for GatewayGate {
    type Context = KeyContext;

    fn enter<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> BoxFuture<'a, Result<Entry<KeyContext>, Refusal>> {
        async move {
            let (caller, rpm, context) = self.identify(headers).await?;
            let mut answer_headers = HeaderMap::new();
            if rpm > 0 {
                match self.stores.limiter.hit(&caller.key_id, rpm, WINDOW).await {
                    Ok(decision) => {
                        answer_headers = rate_headers(&decision, (self.stores.clock)());
                        if !decision.allowed {
                            self.metrics.record_rejection(Rejection::RateLimit);
                            let retry = Duration::from_millis(decision.retry_after_ms.max(1));
                            return Err(Refusal {
                                error: ApiError::new(
                                    ErrorKind::RateLimited,
                                    format!(
                                        "Rate limit reached: {rpm} requests per minute for this key. Retry in {} s.",
                                        retry.as_millis().div_ceil(1000)
                                    ),
                                )
                                .with_retry_after(retry),
                                headers: answer_headers,
                            });
                        }
                    }
                    // A rate limiter that cannot be reached lets requests through: better than
                    // refusing every request while the store is away.
                    Err(error) => {
                        tracing::warn!(%error, key_id = caller.key_id, "rate limiter unreachable; request let through");
                    }
                }
            }
            Ok(Entry {
                caller,
                headers: answer_headers,
                context,
            })
        }
        .boxed()
    }

    fn admit<'a>(
        &'a self,
        entry: &'a Entry<KeyContext>,
        request: &'a ChatCompletionRequest,
        request_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Pass>, ApiError>> {
        async move {
            let context = &entry.context;
            if !context.models.is_empty() && !context.models.contains(&request.model) {
                self.metrics.record_rejection(Rejection::Model);
                return Err(ApiError::new(
                    ErrorKind::PermissionDenied,
                    format!("This API key may not use the model '{}'.", request.model),
                )
                .with_param("model"));
            }
            let settings = self.settings.now();
            if settings.log_messages {
                tracing::info!(
                    request_id,
                    key = entry.caller.key_name,
                    messages = ?request.messages,
                    "chat request messages"
                );
            }
            // The reservation and the charge go under an id of our own: the request id may
            // be the client's `x-request-id`, which a client can repeat.
            let charge_id = charge_id(request_id);
            let prompt_tokens = prompt_tokens(request);
            let mut reserved = false;
            let mut partial_credits = 0.0;
            if let Some(quota) = &context.quota {
                let amount = Self::reservation(&settings, quota, request, prompt_tokens);
                let decision = self
                    .stores
                    .usage
                    .reserve(
                        &entry.caller.key_id,
                        &charge_id,
                        quota,
                        amount,
                        settings.reservation_ttl,
                    )
                    .await
                    .map_err(|error| store_unavailable(&error))?;
                if !decision.allowed {
                    self.metrics.record_rejection(Rejection::Quota);
                    let unit = match quota.unit {
                        QuotaUnit::Tokens => "tokens",
                        QuotaUnit::Credits => "credits",
                    };
                    let error = if decision.spent >= quota.limit {
                        ApiError::new(
                            ErrorKind::InsufficientQuota,
                            format!(
                                "This API key's budget of {} {unit} is spent ({} used).",
                                quota.limit, decision.spent
                            ),
                        )
                    } else {
                        ApiError::new(
                            ErrorKind::InsufficientQuota,
                            format!(
                                "This API key's remaining budget ({} {unit}) is held by {} request(s) in flight; retry when they finish.",
                                quota.limit - decision.spent,
                                decision.in_flight
                            ),
                        )
                        .with_retry_after(Duration::from_secs(1))
                    };
                    return Err(error);
                }
                reserved = true;
                if quota.unit == QuotaUnit::Credits {
                    partial_credits = amount;
                }
            }
            Ok(Box::new(Charge {
                usage: Arc::clone(&self.stores.usage),
                clock: Arc::clone(&self.stores.clock),
                tasks: self.tasks.clone(),
                key_id: entry.caller.key_id.clone(),
                request_id: request_id.to_owned(),
                charge_id,
                model: request.model.clone(),
                prompt_tokens,
                reserved,
                partial_credits,
            }) as Box<dyn Pass>)
        }
        .boxed()
    }

    fn visible_models(&self, entry: &Entry<KeyContext>, models: Vec<String>) -> Vec<String> {
        let allowed = &entry.context.models;
        if allowed.is_empty() {
            return models;
        }
        models.into_iter().filter(|m| allowed.contains(m)).collect()
    }
}
