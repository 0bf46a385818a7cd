//! Layer 2: the engine. It keeps a view of what every worker serves (refreshed from their
//! `Slots`), picks the account for each request with the seeds' credit-aware score, sends the
//! turn to that account's worker, and retries on the next-best account when a turn fails
//! before its first byte. It serves an internal OpenAI-compatible endpoint (what the gateway
//! and NEW-API call) through [`drawbridge_http`].

mod affinity;
mod answer;
mod breakers;
mod cooldowns;
mod credits;
pub mod discovery;
pub mod fleet;
pub mod leader;
pub mod process_driver;
pub mod reconciler;
pub mod workers;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use drawbridge_core::schedule::{self, Shortage};
use drawbridge_http::{AccountsAdmin, ChatBackend, ChatContext, EventStream, events};
use drawbridge_state::{
    AffinityStore, BreakerStore, CooldownStore, CreditStore, EmbeddedCredits, EmbeddedRouting,
};
use drawbridge_telemetry::{Metrics, Shutdown};
use drawbridge_types::worker::{AccountSlots, AccountStatus, PromptBody, PromptInput};
use drawbridge_types::{
    AccountView, ApiError, ChatCompletionRequest, CreditChange, ErrorKind, HealthReport,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use affinity::AffinitySettings;
pub use credits::grants;
pub use workers::{GrpcWorkerConn, WorkerConn};

/// How long one worker may take to answer `Slots`.
const SLOTS_TIMEOUT: Duration = Duration::from_secs(2);

/// One account on one worker, as last reported.
#[derive(Debug, Clone)]
struct Route {
    worker: usize,
    draining: bool,
    slots: AccountSlots,
}

pub(crate) type RouteKey = (usize, String);

/// How the engine retries and resumes.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Accounts one request may use in all: first try, retries before the first byte, and
    /// resumptions after it.
    pub max_attempts: usize,
    /// Resume an answer that broke off after its first byte on another account.
    pub resume_after_first_byte: bool,
    pub breaker: drawbridge_core::breaker::BreakerConfig,
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
}

impl EngineSettings {
    pub fn from_config(config: &drawbridge_config::Config) -> Self {
        let cb = &config.health.circuit_breaker;
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
            },
            breaker: drawbridge_core::breaker::BreakerConfig {
                failure_threshold: cb.failure_threshold,
                window_size: cb.window_size,
                reset_timeout: cb.reset_timeout,
                half_open_probes: cb.half_open_probes,
            },
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_attempts: 3,
            resume_after_first_byte: true,
            breaker: drawbridge_core::breaker::BreakerConfig::default(),
            request_cost: 1.0,
            rate_limit_cooldown: Duration::from_secs(60),
            retries_per_account: 0,
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(900),
            affinity: AffinitySettings::default(),
        }
    }
}

/// The state an engine shares with the others: on ValKey in a cluster, in process otherwise.
#[derive(Clone)]
pub struct EngineState {
    pub credits: Arc<dyn CreditStore>,
    pub breakers: Arc<dyn BreakerStore>,
    pub cooldowns: Arc<dyn CooldownStore>,
    pub affinity: Arc<dyn AffinityStore>,
}

impl EngineState {
    /// State of this process only (the single-node binary, an engine without `redis.url`).
    pub fn embedded() -> Self {
        let routing = Arc::new(EmbeddedRouting::new());
        EngineState {
            credits: Arc::new(EmbeddedCredits::new()),
            breakers: routing.clone(),
            cooldowns: routing.clone(),
            affinity: routing,
        }
    }

    /// State shared through `store` with every engine on the same ValKey.
    pub fn shared(store: Arc<drawbridge_state::ValkeyRegistry>) -> Self {
        EngineState {
            credits: store.clone(),
            breakers: store.clone(),
            cooldowns: store.clone(),
            affinity: store,
        }
    }
}

pub struct Engine {
    me: Weak<Engine>,
    /// Follows the configuration: [`Engine::follow_reloads`].
    settings: arc_swap::ArcSwap<EngineSettings>,
    breakers: Arc<breakers::Breakers>,
    credits: Arc<credits::Credits>,
    cooldowns: Arc<cooldowns::Cooldowns>,
    affinity: Arc<affinity::Affinity>,
    workers: fleet::WorkerSet,
    routes: RwLock<Vec<Route>>,
    /// Turns this engine has in flight per route, between two refreshes.
    inflight: Arc<Mutex<HashMap<RouteKey, u32>>>,
    rotation: AtomicUsize,
    shutdown: Shutdown,
    /// This engine's metrics (breaker transitions, failovers; requests when it serves HTTP).
    metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(
        workers: Vec<Arc<dyn WorkerConn>>,
        settings: EngineSettings,
        state: EngineState,
        shutdown: Shutdown,
    ) -> Arc<Engine> {
        let metrics = Arc::new(Metrics::new());
        Arc::new_cyclic(|me| Engine {
            me: me.clone(),
            breakers: breakers::Breakers::new(
                settings.breaker,
                state.breakers,
                Arc::clone(&metrics),
                shutdown.clone(),
            ),
            credits: Arc::new(credits::Credits::new(state.credits, settings.request_cost)),
            cooldowns: Arc::new(cooldowns::Cooldowns::new(state.cooldowns)),
            affinity: Arc::new(affinity::Affinity::new(state.affinity, settings.affinity)),
            settings: arc_swap::ArcSwap::from_pointee(settings),
            workers: fleet::WorkerSet::fixed(workers),
            routes: RwLock::new(Vec::new()),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            rotation: AtomicUsize::new(0),
            shutdown,
            metrics,
        })
    }

    /// The settings in force now.
    pub fn settings(&self) -> EngineSettings {
        **self.settings.load()
    }

    /// Use `settings` from now on: requests that start after this see them (retries,
    /// budgets, time limits, breaker thresholds, the default cost, affinity).
    pub fn apply_settings(&self, settings: EngineSettings) {
        self.breakers.set_config(settings.breaker);
        self.credits.set_request_cost(settings.request_cost);
        self.affinity.set_settings(settings.affinity);
        self.settings.store(Arc::new(settings));
    }

    /// Follow `live`: on every reload (SIGHUP, or the file changing), apply the engine's
    /// settings and the accounts' configured credit grants (a changed grant resets that
    /// account's balance).
    pub fn follow_reloads(
        self: &Arc<Self>,
        live: drawbridge_telemetry::LiveConfig,
        scope: &Shutdown,
    ) {
        let engine = Arc::clone(self);
        live.follow(scope, move |config| {
            let engine = Arc::clone(&engine);
            async move {
                engine.apply_settings(EngineSettings::from_config(&config));
                engine.apply_grants(&grants(&config)).await;
                tracing::info!("engine settings reloaded");
            }
        });
    }

    /// The metrics this engine counts into; its HTTP API serves them on `/metrics`.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The circuit-breaker transitions this engine made since it started (each transition is
    /// made, logged and counted by exactly one engine: the one whose write made it):
    /// `(account, state entered, count)`.
    pub fn breaker_transitions(&self) -> Vec<(String, &'static str, u64)> {
        self.breakers.transitions()
    }

    /// An engine whose workers come from the registry ([`discovery::spawn`]).
    pub fn discovering(
        settings: EngineSettings,
        state: EngineState,
        shutdown: Shutdown,
    ) -> Arc<Engine> {
        Self::new(Vec::new(), settings, state, shutdown)
    }

    /// Apply the configured credit grants ([`grants`]): at start, before serving.
    pub async fn apply_grants(&self, grants: &[drawbridge_state::Grant]) {
        self.credits.apply_grants(grants).await;
    }

    /// Ask every worker what it serves; a worker that does not answer drops out of the view
    /// until it does.
    pub async fn refresh(&self) {
        let reports = futures::future::join_all(self.workers.snapshot().into_iter().map(
            |(i, worker)| async move {
                match tokio::time::timeout(SLOTS_TIMEOUT, worker.slots()).await {
                    Ok(Ok(report)) => Some((i, report)),
                    Ok(Err(error)) => {
                        tracing::debug!(worker = worker.name(), %error, "worker did not report");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(worker = worker.name(), "worker slots timed out");
                        None
                    }
                }
            },
        ))
        .await;
        let routes: Vec<Route> = reports
            .into_iter()
            .flatten()
            .flat_map(|(worker, report)| {
                let draining = report.draining;
                report.accounts.into_iter().map(move |slots| Route {
                    worker,
                    draining,
                    slots,
                })
            })
            .collect();
        let mut accounts: Vec<String> = routes.iter().map(|r| r.slots.account.clone()).collect();
        accounts.sort();
        accounts.dedup();
        if let Ok(mut current) = self.routes.write() {
            *current = routes;
        }
        futures::join!(
            self.credits.refresh(&accounts),
            self.breakers.refresh(&accounts),
            self.cooldowns.refresh(&accounts),
        );
    }

    /// Refresh every `interval` until shutdown.
    pub fn spawn_refresher(self: &Arc<Self>, interval: Duration) {
        let engine = Arc::clone(self);
        self.shutdown.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = engine.shutdown.cancelled() => break,
                    _ = tick.tick() => engine.refresh().await,
                }
            }
        });
    }

    fn routes(&self) -> Vec<Route> {
        self.routes.read().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn model_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .routes()
            .into_iter()
            .flat_map(|r| r.slots.models)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        ids.sort();
        ids
    }

    /// Health as the engine sees it: an account whose circuit breaker is open counts as
    /// unhealthy (and its slots as unavailable), whatever its worker reports.
    pub fn health_report(&self) -> HealthReport {
        let accounts: Vec<AccountSlots> = self
            .routes()
            .into_iter()
            .map(|r| {
                let mut slots = r.slots;
                if self.breakers.is_open(&slots.account) {
                    slots.status = AccountStatus::Unhealthy;
                }
                slots
            })
            .collect();
        HealthReport::from_accounts(&accounts, self.shutdown.is_cancelled())
    }

    /// Every account as the engine sees it, for `/admin/accounts` and the per-account metrics.
    pub fn account_views(&self) -> Vec<AccountView> {
        self.routes()
            .into_iter()
            .map(|r| {
                let open = self.breakers.is_open(&r.slots.account);
                AccountView {
                    worker: self
                        .workers
                        .get(r.worker)
                        .map(|w| w.name().to_owned())
                        .unwrap_or_default(),
                    breaker: self.breakers.state_of(&r.slots.account).to_owned(),
                    status: if open {
                        AccountStatus::Unhealthy
                    } else {
                        r.slots.status
                    },
                    credits: self.credits.balance(&r.slots.account),
                    slots: r.slots.size,
                    busy: r.slots.busy,
                    queue_depth: r.slots.queue_depth,
                    draining: r.draining,
                    models: r.slots.models,
                    last_error: r.slots.last_error,
                    account: r.slots.account,
                }
            })
            .collect()
    }

    /// Pick the best route for `model`, skipping accounts already tried; when there is none,
    /// the error says why (see [`drawbridge_core::schedule`]).
    fn pick(
        &self,
        model: &str,
        tried: &HashSet<RouteKey>,
        bound: Option<&str>,
    ) -> Result<Route, Shortage> {
        let inflight = self.inflight.lock().map(|m| m.clone()).unwrap_or_default();
        let accounts: Vec<schedule::Account<Route>> = self
            .routes()
            .into_iter()
            .map(|route| {
                let key = (route.worker, route.slots.account.clone());
                let mine = inflight.get(&key).copied().unwrap_or(0);
                let busy = route.slots.busy.max(mine);
                schedule::Account {
                    serves_model: route.slots.models.iter().any(|m| m == model),
                    tried: tried.contains(&key),
                    reachable: self.workers.reachable(route.worker),
                    draining: route.draining,
                    unhealthy: route.slots.status == AccountStatus::Unhealthy,
                    breaker_open: self.breakers.is_open(&route.slots.account),
                    cooldown: self.cooldowns.left(&route.slots.account),
                    credits: self
                        .credits
                        .balance(&route.slots.account)
                        .map(drawbridge_state::from_milli),
                    available_slots: route.slots.size.saturating_sub(busy),
                    queue_depth: route.slots.queue_depth + mine.saturating_sub(route.slots.size),
                    key: route,
                }
            })
            .collect();
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let chosen = match bound {
            Some(bound) => schedule::pick_bound(&accounts, rotation, |r| r.slots.account == bound),
            None => schedule::pick(&accounts, rotation),
        };
        chosen.map(|i| accounts[i].key.clone())
    }

    /// Why no account can take a request for `model`, as the client's error.
    fn shortage_error(&self, shortage: Shortage, model: &str) -> ApiError {
        match shortage {
            Shortage::NoModel => {
                if self.workers.is_empty() || self.model_ids().is_empty() {
                    ApiError::unavailable("No worker is reachable right now.")
                } else {
                    ApiError::model_not_found(model)
                }
            }
            Shortage::AllTried => ApiError::unavailable("No account is left to try."),
            Shortage::CreditsSpent => spent(model),
            Shortage::CoolingDown { retry_after } => resting(model, retry_after),
            Shortage::Unavailable => {
                ApiError::unavailable(format!("No healthy account can serve '{model}' right now."))
                    .with_retry_after(Duration::from_secs(1))
            }
        }
    }

    /// What an account's failure says about the account itself: a spent quota marks it
    /// exhausted (credits 0, until an operator tops it up), a rate limit rests it for the time
    /// it asked (or `engine.rate_limit_cooldown`). Both keep it out of the scheduler's choice.
    pub(crate) fn account_failed(&self, account: &str, error: &ApiError) {
        match error.kind {
            ErrorKind::AccountQuotaExhausted => {
                tracing::warn!(
                    account,
                    "account quota spent; it gets no traffic until its credits are topped up"
                );
                self.credits.exhaust(account, &self.shutdown);
            }
            ErrorKind::AccountRateLimited => {
                let rest = error
                    .retry_after
                    .unwrap_or(self.settings().rate_limit_cooldown);
                tracing::warn!(
                    account,
                    rest_ms = u64::try_from(rest.as_millis()).unwrap_or(u64::MAX),
                    "account rate limited; resting it"
                );
                self.cooldowns.cool_down(account, rest, &self.shutdown);
            }
            _ => {}
        }
    }

    /// Top up or set `account`'s credits (the internal API's
    /// `POST /internal/accounts/{id}/credits`): its balance after, in milli-credits.
    pub async fn change_credits(
        &self,
        account: &str,
        change: CreditChange,
    ) -> Result<Option<i64>, ApiError> {
        if !self.routes().iter().any(|r| r.slots.account == account) {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("No worker serves an account '{account}'."),
            )
            .with_param("account"));
        }
        self.credits.change(account, change).await
    }

    /// Answer a chat request: pick an account, run the turn there, retry on another account if
    /// the turn fails before its first byte, and resume on another account if it fails after.
    pub async fn chat(
        &self,
        request: ChatCompletionRequest,
        ctx: &ChatContext,
    ) -> Result<EventStream, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::unavailable("The engine is shutting down."));
        }
        let engine = self
            .me
            .upgrade()
            .ok_or_else(|| ApiError::unavailable("The engine is shutting down."))?;
        let mut attempts = answer::Attempts::new(
            self.settings().max_attempts,
            tokio::time::Instant::now() + self.settings().request_timeout,
        );
        if let Some(key) = self.affinity.key(&request, ctx) {
            attempts.bound = self.affinity.lookup(&key).await;
            attempts.conversation = Some(key);
        }
        let body = PromptBody::Messages(request.messages.clone());
        let turn = self.start_turn(&request, ctx, &mut attempts, body).await?;
        Ok(answer::stream(engine, request, ctx.clone(), attempts, turn))
    }

    /// Start a turn on the best account not tried yet, moving on to the next one while the
    /// turn fails before its first content event with an error another account could avoid.
    /// A turn that crashed or timed out is first tried again on the same account, up to
    /// `retries_per_account` times. Each wait for a first byte is bounded by
    /// `first_byte_timeout`, and everything by the request's deadline.
    async fn start_turn(
        &self,
        request: &ChatCompletionRequest,
        ctx: &ChatContext,
        attempts: &mut answer::Attempts,
        body: PromptBody,
    ) -> Result<answer::Turn, ApiError> {
        let model = request.model.as_str();
        let mut last_error: Option<ApiError> = None;
        while attempts.left() {
            let route = match self.pick(model, &attempts.tried, attempts.bound.as_deref()) {
                Ok(route) => route,
                Err(shortage) => {
                    return Err(match last_error {
                        // After an account's limit, the state of every account explains best
                        // (all spent, all resting, ...), unless every one was tried.
                        Some(last) if account_limit(&last) && shortage != Shortage::AllTried => {
                            self.shortage_error(shortage, model)
                        }
                        Some(last) => for_client(last, model),
                        None => self.shortage_error(shortage, model),
                    });
                }
            };
            let key = (route.worker, route.slots.account.clone());
            attempts.record(key.clone());
            let Some(worker) = self.workers.get(route.worker) else {
                continue; // the worker left the registry since the last refresh
            };
            if last_error.is_some() {
                self.metrics.record_failover("retry");
            }
            let account = route.slots.account;
            let mut tries = 0;
            loop {
                let Some(ticket) = self.breakers.admit(&account).await else {
                    break; // its breaker has no probe slot left: the next account
                };
                let input = PromptInput {
                    request_id: ctx.request_id.clone(),
                    model: request.model.clone(),
                    account: Some(account.clone()),
                    body: body.clone(),
                    max_output_tokens: request.max_output_tokens(),
                };
                let guard = InflightGuard::new(Arc::clone(&self.inflight), key.clone());
                // One span per attempt; the worker's spans continue it.
                let span = tracing::info_span!(
                    "attempt",
                    account = %account,
                    attempt = attempts.used()
                );
                let events = span.in_scope(|| worker.prompt(input));
                let first_byte = self.settings().first_byte_timeout;
                let until = (tokio::time::Instant::now() + first_byte).min(attempts.deadline);
                let started =
                    tokio::time::timeout_at(until, events::first_content(events).instrument(span))
                        .await
                        .unwrap_or_else(|_| {
                            Err(if attempts.expired() {
                                deadline_passed()
                            } else {
                                ApiError::new(
                                    ErrorKind::Timeout,
                                    format!("The agent sent nothing within {first_byte:?}."),
                                )
                            })
                        });
                let error = match started {
                    Ok((first, rest)) => {
                        tracing::debug!(
                            request_id = ctx.request_id,
                            account,
                            attempt = attempts.used(),
                            "turn started"
                        );
                        if let Some(conversation) = &attempts.conversation {
                            if attempts.bound.as_deref() != Some(account.as_str()) {
                                tracing::info!(
                                    request_id = ctx.request_id,
                                    account,
                                    "conversation bound to an account"
                                );
                            }
                            self.affinity.bind(conversation, &account, &self.shutdown);
                            attempts.bound = Some(account.clone());
                        }
                        return Ok(answer::Turn {
                            account,
                            first: Some(first),
                            rest,
                            ticket: Some(ticket),
                            _guard: guard,
                        });
                    }
                    Err(error) => error,
                };
                tracing::warn!(
                    request_id = ctx.request_id,
                    account,
                    worker = worker.name(),
                    attempt = attempts.used(),
                    %error,
                    "turn failed before its first byte"
                );
                // The request's own deadline says nothing about this account.
                if attempts.expired() {
                    ticket.record(drawbridge_core::breaker::Outcome::Ignored);
                } else {
                    ticket.record(drawbridge_core::breaker::classify(error.kind));
                    self.account_failed(&account, &error);
                }
                if !error.retryable() {
                    return Err(error);
                }
                // A crash or a silence may not happen again on a fresh agent of the same
                // account; an account's limit or a busy pool would.
                let again = tries < self.settings().retries_per_account
                    && matches!(error.kind, ErrorKind::Upstream | ErrorKind::Timeout)
                    && !attempts.expired();
                last_error = Some(error);
                if !again {
                    break;
                }
                tries += 1;
                tracing::info!(
                    request_id = ctx.request_id,
                    account,
                    retry = tries,
                    "trying the same account again"
                );
            }
        }
        Err(match last_error {
            Some(error) if !attempts.expired() => for_client(error, model),
            Some(_) => deadline_passed(),
            None if attempts.expired() => deadline_passed(),
            None => ApiError::unavailable("No account is left to try."),
        })
    }
}

/// The request's deadline (`engine.request_timeout`) has passed (504).
pub(crate) fn deadline_passed() -> ApiError {
    ApiError::new(
        ErrorKind::Timeout,
        "The request took longer than the engine's request timeout.",
    )
}

/// Every account for `model` has spent its credits (429 `insufficient_quota`).
fn spent(model: &str) -> ApiError {
    ApiError::new(
        ErrorKind::InsufficientQuota,
        format!("Every account that serves '{model}' has used up its credits."),
    )
}

/// Every account for `model` is resting after rate limits (429 with `Retry-After`).
fn resting(model: &str, retry_after: Duration) -> ApiError {
    ApiError::new(
        ErrorKind::RateLimited,
        format!("Every account that serves '{model}' is rate limited right now."),
    )
    .with_retry_after(retry_after)
}

/// Whether `error` is one account's limit (another account may serve).
fn account_limit(error: &ApiError) -> bool {
    matches!(
        error.kind,
        ErrorKind::AccountQuotaExhausted | ErrorKind::AccountRateLimited
    )
}

/// An error as the client gets it once no account is left: one account's limit becomes the
/// model's (429 `insufficient_quota`, or 429 `rate_limit_exceeded` with `Retry-After`).
pub(crate) fn for_client(error: ApiError, model: &str) -> ApiError {
    match error.kind {
        ErrorKind::AccountQuotaExhausted => spent(model),
        ErrorKind::AccountRateLimited => {
            resting(model, error.retry_after.unwrap_or(Duration::from_secs(1)))
        }
        _ => error,
    }
}

pub(crate) struct InflightGuard {
    map: Arc<Mutex<HashMap<RouteKey, u32>>>,
    key: RouteKey,
}

impl InflightGuard {
    fn new(map: Arc<Mutex<HashMap<RouteKey, u32>>>, key: RouteKey) -> Self {
        if let Ok(mut m) = map.lock() {
            *m.entry(key.clone()).or_default() += 1;
        }
        InflightGuard { map, key }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock()
            && let Some(n) = m.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl ChatBackend for Engine {
    fn chat(
        &self,
        request: ChatCompletionRequest,
        ctx: ChatContext,
    ) -> BoxFuture<'_, Result<EventStream, ApiError>> {
        async move { Engine::chat(self, request, &ctx).await }.boxed()
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, ApiError>> {
        futures::future::ready(Ok(self.model_ids())).boxed()
    }

    fn health(&self) -> BoxFuture<'_, HealthReport> {
        futures::future::ready(self.health_report()).boxed()
    }
}

impl AccountsAdmin for Engine {
    fn accounts(&self) -> BoxFuture<'_, Result<Vec<AccountView>, ApiError>> {
        futures::future::ready(Ok(self.account_views())).boxed()
    }

    fn change_credits<'a>(
        &'a self,
        account: &'a str,
        change: CreditChange,
    ) -> BoxFuture<'a, Result<Option<i64>, ApiError>> {
        Engine::change_credits(self, account, change).boxed()
    }
}

/// The engine's internal OpenAI-compatible API.
pub fn router(
    engine: Arc<Engine>,
    config: &drawbridge_config::Config,
    draining: CancellationToken,
) -> axum::Router {
    let metrics = engine.metrics();
    let mut state = drawbridge_http::ApiState::new(
        engine.clone(),
        Arc::new(drawbridge_http::Keys::optional(&config.engine.channel_keys)),
        config.gateway.max_body_bytes,
        draining,
    )
    .with_metrics(metrics)
    .with_accounts(engine);
    if let Some(header) = drawbridge_http::session_header(&config.engine.affinity.header) {
        state = state.with_session_header(header);
    }
    // Its callers are Drawbridge's gateway (which charges by the metering) and NEW-API (which
    // ignores the extra field).
    state.expose_metering = true;
    drawbridge_http::internal_router(state)
}
