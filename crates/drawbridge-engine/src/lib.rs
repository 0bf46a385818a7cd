//! Layer 2: the engine. It keeps a view of what every worker serves (refreshed from their
//! `Slots`), resolves the request's model (`model_aliases`), picks the account for each
//! request with the seeds' credit-aware score, sends the turn to that account's worker, and
//! retries on the next-best account when a turn fails before its first text.
//!
//! Liveness is any frame: a worker's first event of any kind (activity, reasoning, text) meets
//! `first_byte_timeout`, and `idle_timeout` bounds the silence between any two events. Text
//! alone decides whether the client has the answer's first byte: a turn that fails after
//! activity or reasoning but before text is retried on the next account from scratch (shown
//! reasoning is not part of the answer, so a retry may show a second stretch of it); after
//! text, the answer is resumed. It serves an internal OpenAI-compatible endpoint (what the gateway
//! and NEW-API call) through [`drawbridge_http`].
//!
//! Code map: [`settings`](EngineSettings) (one holder every part reads), `routing` (the
//! scheduler's view, one immutable snapshot per change), `turn` (one turn's start with its
//! retry and rotation budgets), `answer` (one answer across accounts: reasoning shown, folded
//! or dropped, usage details), `keepalive` (a quiet streamed answer commits and sends SSE
//! comments), `errors` (what the
//! client gets when no account can answer), `versioned` (an older read never undoes this
//! engine's own write: credits, breakers, cooldowns), `router` (the HTTP surface), `app`
//! (the whole engine built from its config, with its drain order).

mod affinity;
mod answer;
mod app;
mod breakers;
mod cooldowns;
mod credits;
pub mod discovery;
mod errors;
pub mod fleet;
mod forward;
mod keepalive;
pub mod leader;
pub mod process_driver;
pub mod providers;
pub mod reconciler;
mod router;
mod routing;
mod settings;
mod stores;
mod turn;
mod versioned;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use drawbridge_http::{AccountsAdmin, ChatBackend, ChatContext, EventStream, Forward, Forwarded};
use drawbridge_telemetry::{Metrics, Shutdown};
use drawbridge_types::worker::PromptBody;
use drawbridge_types::{AccountView, ApiError, ChatCompletionRequest, CreditChange, HealthReport};
use futures::FutureExt;
use futures::future::BoxFuture;

pub use affinity::AffinitySettings;
pub use app::EngineApp;
pub use credits::grants;
pub use providers::ProviderConn;
pub use router::router;
pub use settings::EngineSettings;
pub use stores::EngineState;
pub use workers::{GrpcWorkerConn, WorkerConn};

/// One engine: its settings, its view of the workers and accounts, and the turns it runs.
pub struct Engine {
    settings: settings::Settings,
    routing: Arc<routing::Routing>,
    credits: Arc<credits::Credits>,
    breakers: Arc<breakers::Breakers>,
    turns: Arc<turn::Turns>,
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
        let settings = settings::Settings::new(settings);
        let changes = versioned::Changes::default();
        let breakers = breakers::Breakers::new(
            settings.clone(),
            state.breakers,
            Arc::clone(&metrics),
            shutdown.clone(),
            changes.clone(),
        );
        let credits = Arc::new(credits::Credits::new(
            state.credits,
            settings.clone(),
            changes.clone(),
        ));
        let cooldowns = Arc::new(cooldowns::Cooldowns::new(state.cooldowns, changes.clone()));
        let routing = Arc::new(routing::Routing::new(
            Arc::new(fleet::WorkerSet::fixed(workers)),
            Arc::clone(&credits),
            Arc::clone(&breakers),
            Arc::clone(&cooldowns),
            changes,
        ));
        let turns = Arc::new(turn::Turns {
            settings: settings.clone(),
            routing: Arc::clone(&routing),
            credits: Arc::clone(&credits),
            breakers: Arc::clone(&breakers),
            cooldowns,
            affinity: Arc::new(affinity::Affinity::new(state.affinity, settings.clone())),
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
        });
        Arc::new(Engine {
            settings,
            routing,
            credits,
            breakers,
            turns,
            shutdown,
            metrics,
        })
    }

    /// An engine whose workers come from the registry ([`discovery::spawn`]).
    pub fn discovering(
        fixed: Vec<Arc<dyn WorkerConn>>,
        settings: EngineSettings,
        state: EngineState,
        shutdown: Shutdown,
    ) -> Arc<Engine> {
        Self::new(fixed, settings, state, shutdown)
    }

    /// The settings in force now.
    pub fn settings(&self) -> EngineSettings {
        self.settings.get()
    }

    /// Use `settings` from now on: requests that start after this see them (retries,
    /// budgets, time limits, breaker thresholds, the default cost, affinity).
    pub fn apply_settings(&self, settings: EngineSettings) {
        self.settings.set(settings);
    }

    /// Follow `live`: on every reload (SIGHUP, or the file changing), apply the engine's
    /// settings, the accounts' configured credit grants (a changed grant resets that
    /// account's balance) and the provider accounts it serves itself.
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
                for (_, worker) in engine.workers().snapshot() {
                    worker.reconfigure(&config);
                }
                engine.refresh().await;
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

    /// Apply the configured credit grants ([`grants`]): at start, before serving.
    pub async fn apply_grants(&self, grants: &[drawbridge_state::Grant]) {
        self.credits.apply_grants(grants).await;
    }

    pub(crate) fn workers(&self) -> &fleet::WorkerSet {
        self.routing.workers()
    }

    /// Ask every worker what it serves and re-read the accounts' shared state; a worker that
    /// does not answer drops out of the view until it does.
    pub async fn refresh(&self) {
        self.routing.refresh().await;
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

    /// Every model a client may ask for: each account's models, and each alias
    /// (`model_aliases`) whose target some account serves; sorted, each once.
    pub fn model_ids(&self) -> Vec<String> {
        let mut ids = self.routing.model_ids();
        let aliases = self.settings().aliases;
        let served: Vec<String> = aliases
            .iter()
            .filter(|(_, target)| ids.binary_search(target).is_ok())
            .map(|(alias, _)| alias.clone())
            .collect();
        ids.extend(served);
        ids.sort();
        ids.dedup();
        ids
    }

    /// Health as the engine sees it: an account whose circuit breaker is open counts as
    /// unhealthy (and its slots as unavailable), whatever its worker reports.
    pub fn health_report(&self) -> HealthReport {
        self.routing.health_report(self.shutdown.is_cancelled())
    }

    /// Every account as the engine sees it, for `/admin/accounts` and the per-account metrics.
    pub fn account_views(&self) -> Vec<AccountView> {
        self.routing.account_views()
    }

    /// Top up or set `account`'s credits (the internal API's
    /// `POST /internal/accounts/{id}/credits`): its balance after, in milli-credits.
    pub async fn change_credits(
        &self,
        account: &str,
        change: CreditChange,
    ) -> Result<Option<i64>, ApiError> {
        if !self.routing.serves(account) {
            return Err(errors::unknown_account(account));
        }
        self.credits.change(account, change).await
    }

    /// Answer a chat request: pick an account, run the turn there, retry on another account if
    /// the turn fails before its first byte, and resume on another account if it fails after.
    /// A request the gateway sent to continue an answer another engine began
    /// ([`ChatContext::resume`]) starts as such a resumption: its last message is the part the
    /// client has, and only the rest is sent.
    pub async fn chat(
        &self,
        mut request: ChatCompletionRequest,
        ctx: &ChatContext,
    ) -> Result<EventStream, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(errors::shutting_down());
        }
        let streamed = request.is_stream();
        let turns = Arc::clone(&self.turns);
        let ctx = ctx.clone();
        let start = async move {
            let partial = ctx
                .resume
                .then(|| request.messages.pop())
                .flatten()
                .map(|message| message.text());
            let mut attempts = turns.attempts(&request, &ctx).await;
            let body = match &partial {
                Some(partial) => {
                    tracing::info!(
                        request_id = ctx.request_id,
                        sent_chars = partial.len(),
                        "continuing an answer another engine began"
                    );
                    turns.resumed();
                    PromptBody::Resume {
                        messages: request.messages.clone(),
                        partial: partial.clone(),
                    }
                }
                None => PromptBody::Messages(request.messages.clone()),
            };
            let turn = turns.start(&request, &ctx, &mut attempts, body).await?;
            Ok(answer::stream(turns, request, ctx, attempts, turn, partial))
        }
        .boxed();
        if !streamed {
            // One JSON body at the end: nothing to keep alive, and every failure keeps its
            // status.
            return start.await;
        }
        keepalive::start(start, self.settings().keepalive_interval).await
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

    fn forward(
        &self,
        request: Forward,
        ctx: ChatContext,
    ) -> BoxFuture<'_, Result<Forwarded, ApiError>> {
        async move {
            if self.shutdown.is_cancelled() {
                return Err(errors::shutting_down());
            }
            self.turns.forward(request, &ctx).await
        }
        .boxed()
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
