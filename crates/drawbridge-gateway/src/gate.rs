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
use drawbridge_http::{Caller, Ended, Entry, Gate, Keys, Outcome, Pass, Refusal};
use drawbridge_state::{
    ApiKeyRecord, CHARGE_DEDUP_WINDOW, Clock, KeyStore, Quota, QuotaUnit, RateDecision,
    RateLimiter, StateError, UsageEntry, UsageStore,
};
use drawbridge_telemetry::metrics::Rejection;
use drawbridge_telemetry::{LiveConfig, Metrics, Shutdown};
use drawbridge_types::{ApiError, ChatCompletionRequest, ErrorKind};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::secret;

/// The rate-limit window.
const WINDOW: Duration = Duration::from_secs(60);
/// How long a key record read from the store may still be used while the store is
/// unreachable (never while it answers: then every request reads the store).
const STALE_KEY_LIMIT: Duration = Duration::from_secs(600);
/// Records kept for that purpose at most.
const STALE_KEYS_MAX: usize = 10_000;
/// The ledger's account for an answer that failed before anyone reported serving it.
pub const UNKNOWN_ACCOUNT: &str = "unknown";

/// The stores the gateway keeps its records in: ValKey (shared by every gateway node) or the
/// embedded data file; and the clock it reads beside them.
#[derive(Clone)]
pub struct Stores {
    pub keys: Arc<dyn KeyStore>,
    pub limiter: Arc<dyn RateLimiter>,
    pub usage: Arc<dyn UsageStore>,
    /// Now, in ms since the Unix epoch: what a key's expiry, its last use, a new key's times
    /// and the ledger's entries are read from. The system clock ([`system_clock`]); a test
    /// gives one it controls (the embedded store's, with
    /// `EmbeddedGatewayStore::with_clock`).
    pub clock: Clock,
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
fn system_ms() -> u64 {
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

/// Charges one request when its answer has ended: the ledger row and the key's spent totals,
/// once, and its quota reservation released.
struct Charge {
    usage: Arc<dyn UsageStore>,
    clock: Clock,
    tasks: Shutdown,
    key_id: String,
    /// The request's id, for the log.
    request_id: String,
    /// The id its reservation and its ledger entry are made under ([`charge_id`]).
    charge_id: String,
    model: String,
    prompt_tokens: u64,
    reserved: bool,
    /// What an answer that broke off is charged in credits (the agent's figure never came):
    /// what was reserved, for a key whose quota is in credits; nothing otherwise.
    partial_credits: f64,
}

/// The first wait before a failed charge is tried again; it doubles up to [`RETRY_MAX_WAIT`].
const RETRY_FIRST_WAIT: Duration = Duration::from_millis(100);
const RETRY_MAX_WAIT: Duration = Duration::from_secs(5);
/// How long a charge is retried while the store is unreachable: well inside the store's
/// memory of charged ids, so a retry of a charge that did land is recognised.
const RETRY_WINDOW: Duration = Duration::from_secs(10 * 60);
const _: () = assert!(RETRY_WINDOW.as_secs() * 2 <= CHARGE_DEDUP_WINDOW.as_secs());

/// Run `op` until it succeeds, fails for good, or the store has been unreachable for
/// [`RETRY_WINDOW`]; once shutdown has begun, one more try and no more waiting.
async fn retrying<F, Fut>(scope: &Shutdown, mut op: F) -> Result<(), StateError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StateError>>,
{
    let give_up = tokio::time::Instant::now() + RETRY_WINDOW;
    let mut wait = RETRY_FIRST_WAIT;
    let mut failures = 0u32;
    loop {
        let error = match op().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "usage recorded after the store came back");
                }
                return Ok(());
            }
            Err(error) => error,
        };
        let late = tokio::time::Instant::now() + wait > give_up;
        if !error.retryable() || late || scope.is_cancelled() {
            return Err(error);
        }
        if failures == 0 {
            tracing::warn!(%error, "cannot record usage now; retrying until the store is back");
        }
        failures += 1;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = scope.cancelled() => {}
        }
        wait = (wait * 2).min(RETRY_MAX_WAIT);
    }
}

/// An id no other request of any gateway node has: this process's random tag and a counter
/// (the request id is added for the reader of ValKey; it is not what makes it unique).
fn charge_id(request_id: &str) -> String {
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let mut random = [0u8; 8];
        // Without a random source, the start time still tells processes apart.
        if getrandom::fill(&mut random).is_err() {
            random = (system_ms() ^ u64::from(std::process::id())).to_le_bytes();
        }
        drawbridge_core::hex::encode(&random)
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{process}-{n}-{request_id}")
}

impl Pass for Charge {
    fn end(self: Box<Self>, ended: &Ended) {
        let entry = match &ended.outcome {
            Outcome::Finished(finish) => Some(UsageEntry {
                request_id: self.charge_id.clone(),
                key_id: self.key_id.clone(),
                account: finish
                    .metering
                    .accounts
                    .last()
                    .cloned()
                    .unwrap_or_else(|| UNKNOWN_ACCOUNT.to_owned()),
                model: self.model.clone(),
                at_ms: (self.clock)(),
                prompt_tokens: finish.usage.prompt_tokens,
                completion_tokens: finish.usage.completion_tokens,
                credits: finish.metering.credits,
                tokens_estimated: finish.metering.tokens_estimated,
            }),
            // The client received part of an answer: it is charged for that part, estimated.
            Outcome::Failed(_) | Outcome::Abandoned if ended.delivered_chars > 0 => {
                Some(UsageEntry {
                    request_id: self.charge_id.clone(),
                    key_id: self.key_id.clone(),
                    account: UNKNOWN_ACCOUNT.to_owned(),
                    model: self.model.clone(),
                    at_ms: (self.clock)(),
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: (ended.delivered_chars as u64).div_ceil(4),
                    credits: self.partial_credits,
                    tokens_estimated: true,
                })
            }
            // Nothing reached the client: nothing is charged.
            Outcome::Failed(_) | Outcome::Abandoned => None,
        };
        let usage = Arc::clone(&self.usage);
        let (key_id, request_id, charge_id, reserved) =
            (self.key_id, self.request_id, self.charge_id, self.reserved);
        let tasks = self.tasks.clone();
        self.tasks.spawn(async move {
            let result = retrying(&tasks, || async {
                match &entry {
                    Some(entry) => usage.record_usage(entry).await,
                    None if reserved => usage.release(&key_id, &charge_id).await,
                    None => Ok(()),
                }
            })
            .await;
            if let Err(error) = result {
                tracing::error!(
                    %error,
                    key_id,
                    request_id,
                    usage = ?entry,
                    "the request's usage is lost: it could not be recorded"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn down() -> StateError {
        StateError::Unavailable("connection refused".into())
    }

    /// An operation failing with `error` its first `failures` calls, counting them all.
    fn failing(
        failures: u32,
        error: fn() -> StateError,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> futures::future::Ready<Result<(), StateError>>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&calls);
        let op = move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            futures::future::ready(if n < failures { Err(error()) } else { Ok(()) })
        };
        (calls, op)
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_is_retried_with_backoff_until_the_store_is_back() {
        let started = tokio::time::Instant::now();
        let (calls, op) = failing(5, down);
        assert_eq!(retrying(&Shutdown::new(), op).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        // 100 + 200 + 400 + 800 + 1600 ms of waiting.
        assert_eq!(started.elapsed(), Duration::from_millis(3_100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_is_given_up_after_the_retry_window() {
        let started = tokio::time::Instant::now();
        let (calls, op) = failing(u32::MAX, down);
        assert_eq!(retrying(&Shutdown::new(), op).await, Err(down()));
        assert!(started.elapsed() <= RETRY_WINDOW, "{:?}", started.elapsed());
        assert!(
            started.elapsed() > RETRY_WINDOW - RETRY_MAX_WAIT * 2,
            "{:?}",
            started.elapsed()
        );
        // About one try every RETRY_MAX_WAIT once the backoff is at its cap.
        let tries = calls.load(Ordering::SeqCst);
        assert!((110..=130).contains(&tries), "{tries}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_the_store_refuses_for_good_is_not_retried() {
        let (calls, op) = failing(u32::MAX, || StateError::Invalid("bad entry".into()));
        assert!(matches!(
            retrying(&Shutdown::new(), op).await,
            Err(StateError::Invalid(_))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_retries_after_one_more_try() {
        let scope = Shutdown::new();
        let (calls, op) = failing(u32::MAX, down);
        let retries = retrying(&scope, op);
        let cancel = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            scope.cancel();
        };
        let started = tokio::time::Instant::now();
        let (result, ()) = tokio::join!(retries, cancel);
        assert_eq!(result, Err(down()));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let before_cancel = 1 + 5 + (30_000 - 3_100) / 5_000; // the backoff, then every 5 s
        assert_eq!(calls.load(Ordering::SeqCst), before_cancel + 1);
    }
}
