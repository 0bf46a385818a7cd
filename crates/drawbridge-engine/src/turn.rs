//! One turn's start: pick the best account not tried yet (for the model the request's model
//! stands for: `model_aliases`), send the turn to its worker and wait for its first event of
//! any kind (activity, reasoning, text: a sign of life, not yet the answer's first byte). A
//! turn that fails before it, with an error another account could avoid, moves on to the next
//! account (the rotation budget, `max_attempts`, counted in [`Attempts`]); one that crashed or
//! went silent is first tried again on the same account (the retry budget,
//! `retries_per_account`). Each wait for a first event is bounded by `first_byte_timeout`, and
//! everything by the request's deadline.
//!
//! Under a route, a target with a `retry` policy counts the tries made in it: after a failure
//! whose status its `on_status` covers it is tried again (the same account again after an
//! upstream failure or a timeout, another of its accounts after an account's own limit),
//! waiting its backoff (doubled each try) first, until its `attempts` are spent; after any
//! other failure, or once they are, the route goes on without it. See [`TargetTry`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use drawbridge_config::RetryConfig;
use drawbridge_core::breaker::{Outcome, classify};
use drawbridge_core::conversation;
use drawbridge_http::{ChatContext, events};
use drawbridge_telemetry::{Metrics, Shutdown};
use drawbridge_types::worker::{PromptBody, PromptInput, TurnTools, WorkerEvent};
use drawbridge_types::{ApiError, ChatCompletionRequest, ErrorKind};
use futures::stream::BoxStream;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::affinity::Affinity;
use crate::breakers::{Breakers, Ticket};
use crate::cooldowns::Cooldowns;
use crate::credits::Credits;
use crate::errors;
use crate::routing::{InflightGuard, Picked, PlanTarget, RouteKey, Routing};
use crate::settings::{EngineSettings, Settings};
use crate::workers::WorkerConn;

/// The accounts one request has used, how many more it may use, and its deadline.
pub(crate) struct Attempts {
    tried: HashSet<RouteKey>,
    max: usize,
    /// When the whole request must be over (`engine.request_timeout` after it began).
    pub deadline: Instant,
    /// The conversation key (session affinity), and the account it is bound to.
    pub conversation: Option<String>,
    pub bound: Option<String>,
    /// The live session the request continues (its tool results answer calls that session
    /// holds, or it extends the conversation a warm session holds); `bound` is then the
    /// account that holds it.
    pub live: Option<String>,
    /// The key of the request's conversation, under which a worker may keep the session warm.
    pub conversation_key: Option<String>,
    /// Per target of the request's route (by index): the tries made in it, and whether the
    /// route is done with it.
    targets: HashMap<usize, TargetTries>,
}

/// The tries one request made in one route target.
#[derive(Debug, Clone, Copy, Default)]
struct TargetTries {
    made: u32,
    done: bool,
}

impl Attempts {
    pub fn new(max: usize, deadline: Instant) -> Self {
        Attempts {
            tried: HashSet::new(),
            max: max.max(1),
            deadline,
            conversation: None,
            bound: None,
            live: None,
            conversation_key: None,
            targets: HashMap::new(),
        }
    }

    /// Whether the route is done with its target `target` for this request.
    fn target_done(&self, target: usize) -> bool {
        self.targets.get(&target).is_some_and(|t| t.done)
    }

    /// The tries made in route target `target`.
    fn tries_in(&self, target: usize) -> u32 {
        self.targets.get(&target).map_or(0, |t| t.made)
    }

    /// Whether another account may be tried: the rotation budget is not spent and the
    /// deadline has not passed.
    pub fn left(&self) -> bool {
        self.tried.len() < self.max && !self.expired()
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub fn used(&self) -> usize {
        self.tried.len()
    }
}

/// A started turn: its first event, the rest, and its place in the in-flight count.
pub(crate) struct Turn {
    pub account: String,
    pub first: Option<WorkerEvent>,
    pub rest: BoxStream<'static, WorkerEvent>,
    /// The account's circuit-breaker ticket, resolved when the turn ends.
    pub ticket: Option<Ticket>,
    pub _guard: InflightGuard,
}

/// A try under a route target's `retry` policy: the target's index in the route and its
/// policy.
struct TargetTry<'a> {
    index: usize,
    retry: &'a RetryConfig,
}

impl TargetTry<'_> {
    /// Whether the policy has the failure `error` tried again: its status is in
    /// `on_status` (by default: it is a failure another try may get past), and it is not the
    /// client's error.
    fn covers(&self, error: &ApiError) -> bool {
        if error.kind == ErrorKind::InvalidRequest {
            return false;
        }
        match &self.retry.on_status {
            Some(statuses) => statuses.contains(&error.failure_status()),
            None => error.retryable(),
        }
    }

    /// Whether the target's tries are spent after `made` of them.
    fn spent(&self, made: u32) -> bool {
        self.retry.attempts.is_some_and(|max| made >= max)
    }
}

/// How one account's tries ended.
enum OnAccount {
    Started(Turn),
    /// Give the client this error: no other account would do better.
    Fatal(ApiError),
    /// Try the next account; the last error met here, if any.
    MoveOn(Option<ApiError>),
}

/// What starting a turn needs, and what an answer reports back: the narrow interface the
/// answer across accounts ([`crate::answer`]) works through.
pub(crate) struct Turns {
    pub settings: Settings,
    pub routing: Arc<Routing>,
    pub credits: Arc<Credits>,
    pub breakers: Arc<Breakers>,
    pub cooldowns: Arc<Cooldowns>,
    pub affinity: Arc<Affinity>,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
}

impl Turns {
    pub fn settings(&self) -> EngineSettings {
        self.settings.get()
    }

    /// The request's attempts, with its conversation's account when affinity binds it.
    pub async fn attempts(&self, request: &ChatCompletionRequest, ctx: &ChatContext) -> Attempts {
        let settings = self.settings();
        let mut attempts = Attempts::new(
            settings.max_attempts,
            Instant::now() + settings.request_timeout,
        );
        if let Some(key) = self.affinity.key(request, ctx) {
            attempts.bound = self.affinity.lookup(&key).await;
            attempts.conversation = Some(key);
        }
        let tools = request.offered_tools();
        if let Some(live) = live_session(request) {
            if let Some(account) = self.affinity.lookup(&live_key(live)).await {
                tracing::debug!(
                    request_id = ctx.request_id,
                    account,
                    "request continues a live session"
                );
                attempts.bound = Some(account);
                attempts.live = Some(live.to_owned());
            }
        } else if let Some((before, _, _)) = conversation::split_at_answer(&request.messages) {
            let key = conversation::key(&ctx.tenant, tools, before);
            if let Some(account) = self.affinity.lookup(&warm_key(&key)).await {
                tracing::debug!(
                    request_id = ctx.request_id,
                    account,
                    "request extends a warm session"
                );
                attempts.bound = Some(account);
                attempts.live = Some(key);
            }
        }
        attempts.conversation_key = Some(conversation::key(&ctx.tenant, tools, &request.messages));
        attempts
    }

    /// Bind the conversation `key` to the account whose worker keeps its session warm.
    pub fn bind_warm(&self, key: &str, account: &str) {
        self.affinity
            .bind_session(&warm_key(key), account, &self.shutdown);
    }

    /// Bind live session `live` to the account whose worker holds it, for the request that
    /// brings its tool results (from any engine: the binding is in the shared state).
    pub fn bind_live(&self, live: &str, account: &str) {
        self.affinity
            .bind_session(&live_key(live), account, &self.shutdown);
    }

    /// Start a turn of `body` on the best account not tried yet (see the module docs).
    pub async fn start(
        &self,
        request: &ChatCompletionRequest,
        ctx: &ChatContext,
        attempts: &mut Attempts,
        body: PromptBody,
    ) -> Result<Turn, ApiError> {
        // Errors name the model the client asked for; scheduling and the agent use what it
        // stands for.
        let model = request.model.as_str();
        let settings = self.settings();
        let target = settings.target(model);
        let mut plan = settings.plan(model, &ctx.tenant);
        let mut last_error: Option<ApiError> = None;
        // With images, the accounts that cannot take them are passed over without counting
        // as tried.
        let images = request.has_images();
        let mut passed_over: HashSet<RouteKey> = HashSet::new();
        while attempts.left() {
            if let Some(plan) = &mut plan {
                // The targets the route is done with have nothing left to give.
                for (i, target) in plan.targets.iter_mut().enumerate() {
                    if attempts.target_done(i) {
                        target.accounts.clear();
                    }
                }
                let usable =
                    |(i, t): (usize, &PlanTarget)| plan.may_use(i) && !t.accounts.is_empty();
                if !plan.targets.iter().enumerate().any(usable) {
                    // Done with every target it may use: the last failure is the answer.
                    break;
                }
            }
            let excluded: HashSet<RouteKey>;
            let tried = if passed_over.is_empty() {
                &attempts.tried
            } else {
                excluded = attempts.tried.union(&passed_over).cloned().collect();
                &excluded
            };
            let picked =
                match self
                    .routing
                    .pick(target, tried, attempts.bound.as_deref(), plan.as_ref())
                {
                    Ok(picked) => picked,
                    Err(_) if !passed_over.is_empty() && last_error.is_none() => {
                        return Err(errors::no_images(model));
                    }
                    Err(shortage) => return Err(self.no_account(shortage, last_error, model)),
                };
            let Some(worker) = self.routing.workers().get(picked.route.worker) else {
                attempts.tried.insert(picked.key());
                continue; // the worker left the registry since the last refresh
            };
            if images && !worker.takes_images(&picked.route.slots.account) {
                passed_over.insert(picked.key());
                continue;
            }
            attempts.tried.insert(picked.key());
            if last_error.is_some() {
                self.metrics.record_failover("retry");
            }
            let policy = plan.as_ref().zip(picked.target).and_then(|(plan, index)| {
                let retry = plan.targets.get(index)?.retry.as_ref()?;
                Some(TargetTry { index, retry })
            });
            let on_account = self
                .on_account(
                    request,
                    target,
                    ctx,
                    attempts,
                    &body,
                    &picked,
                    worker.as_ref(),
                    policy,
                )
                .await;
            match on_account {
                OnAccount::Started(turn) => return Ok(turn),
                OnAccount::Fatal(error) => return Err(error),
                OnAccount::MoveOn(Some(error)) => last_error = Some(error),
                OnAccount::MoveOn(None) => {}
            }
        }
        Err(match last_error {
            Some(error) if !attempts.expired() => errors::for_client(error, model),
            Some(_) => errors::deadline_passed(),
            None if attempts.expired() => errors::deadline_passed(),
            None => errors::no_account_left(),
        })
    }

    /// The error when the scheduler has no account left, after `last_error`.
    pub(crate) fn no_account(
        &self,
        shortage: drawbridge_core::schedule::Shortage,
        last_error: Option<ApiError>,
        model: &str,
    ) -> ApiError {
        let from_state = || errors::shortage(shortage, model, self.routing.serving_any());
        match last_error {
            // After an account's limit, the state of every account explains best (all
            // spent, all resting, ...), unless every one was tried.
            Some(last)
                if errors::account_limit(&last)
                    && shortage != drawbridge_core::schedule::Shortage::AllTried =>
            {
                from_state()
            }
            Some(last) => errors::for_client(last, model),
            None => from_state(),
        }
    }

    /// Try the turn on `picked`'s account, again while the retry budget (or the route
    /// target's `policy`) allows.
    #[expect(
        clippy::too_many_arguments,
        reason = "one turn's inputs, each used once"
    )]
    async fn on_account(
        &self,
        request: &ChatCompletionRequest,
        target: &str,
        ctx: &ChatContext,
        attempts: &mut Attempts,
        body: &PromptBody,
        picked: &Picked,
        worker: &dyn WorkerConn,
        policy: Option<TargetTry<'_>>,
    ) -> OnAccount {
        let account = picked.route.slots.account.clone();
        let mut last_error = None;
        let mut tries = 0;
        loop {
            if let Some(policy) = &policy {
                // The target's backoff before its second try and after (never past the
                // request's deadline).
                let wait = policy
                    .retry
                    .wait_before(attempts.tries_in(policy.index) + 1);
                if !wait.is_zero() {
                    tracing::debug!(
                        request_id = ctx.request_id,
                        account,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "waiting the route target's backoff"
                    );
                    tokio::time::sleep_until((Instant::now() + wait).min(attempts.deadline)).await;
                    if attempts.expired() {
                        return OnAccount::MoveOn(last_error);
                    }
                }
            }
            let Some(ticket) = self.breakers.admit(&account).await else {
                // Its breaker has no probe slot left: the next account.
                return OnAccount::MoveOn(last_error);
            };
            if let Some(policy) = &policy {
                attempts.targets.entry(policy.index).or_default().made += 1;
            }
            let guard = picked.inflight();
            let input = PromptInput {
                request_id: ctx.request_id.clone(),
                model: target.to_owned(),
                account: Some(account.clone()),
                body: body.clone(),
                max_output_tokens: request.max_output_tokens(),
                tools: TurnTools::of(request),
                // Only the account holding the session can continue it; any other renders
                // the whole conversation into a fresh one.
                live_session: attempts
                    .live
                    .clone()
                    .filter(|_| attempts.bound.as_deref() == Some(account.as_str())),
                conversation: attempts.conversation_key.clone(),
                params: upstream_params(request),
            };
            let error = match self.first_byte(worker, input, attempts).await {
                Ok((first, rest)) => {
                    tracing::debug!(
                        request_id = ctx.request_id,
                        account,
                        attempt = attempts.used(),
                        "turn started"
                    );
                    self.bind_conversation(ctx, attempts, &account);
                    return OnAccount::Started(Turn {
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
            self.settle(ticket, &account, &error, attempts.expired());
            let covered = policy.as_ref().is_some_and(|p| p.covers(&error));
            if !error.retryable() && !covered {
                return OnAccount::Fatal(error);
            }
            let again = match &policy {
                // A crash or a silence may not happen again on a fresh agent of the same
                // account; an account's limit or a busy pool would.
                None => {
                    tries < self.settings().retries_per_account
                        && matches!(error.kind, ErrorKind::Upstream | ErrorKind::Timeout)
                }
                Some(policy) => {
                    let made = attempts.tries_in(policy.index);
                    if !covered || policy.spent(made) {
                        tracing::info!(
                            request_id = ctx.request_id,
                            account,
                            status = error.failure_status(),
                            tries = made,
                            "the route moves on from this target"
                        );
                        attempts.targets.entry(policy.index).or_default().done = true;
                        return OnAccount::MoveOn(Some(error));
                    }
                    match policy.retry.attempts {
                        // The target's own count bounds tries again on this account, unless
                        // the failure was the account's own limit.
                        Some(_) => match error.kind {
                            ErrorKind::AccountQuotaExhausted => false,
                            // A rest longer than the wait: the account rests, another one
                            // of the target (if any) takes the next try.
                            ErrorKind::AccountRateLimited => error
                                .retry_after
                                .is_some_and(|r| r <= policy.retry.wait_before(made + 1)),
                            _ => true,
                        },
                        None => {
                            tries < self.settings().retries_per_account
                                && matches!(error.kind, ErrorKind::Upstream | ErrorKind::Timeout)
                        }
                    }
                }
            } && !attempts.expired();
            last_error = Some(error);
            if !again {
                return OnAccount::MoveOn(last_error);
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

    /// Send the turn and wait for its first event of any kind, within `first_byte_timeout`
    /// and the request's deadline.
    async fn first_byte(
        &self,
        worker: &dyn WorkerConn,
        input: PromptInput,
        attempts: &Attempts,
    ) -> Result<(WorkerEvent, BoxStream<'static, WorkerEvent>), ApiError> {
        // One span per attempt; the worker's spans continue it.
        let span = tracing::info_span!(
            "attempt",
            account = input.account.as_deref().unwrap_or_default(),
            attempt = attempts.used()
        );
        let account = input.account.clone().unwrap_or_default();
        let sent = Instant::now();
        let events = span.in_scope(|| worker.prompt(input));
        let first_byte = self.settings().first_byte_timeout;
        let until = (sent + first_byte).min(attempts.deadline);
        let first =
            tokio::time::timeout_at(until, events::first_content(events).instrument(span)).await;
        if let Ok(Ok(_)) = &first {
            self.routing.record_latency(&account, sent.elapsed());
        }
        first.unwrap_or_else(|_| {
            Err(if attempts.expired() {
                errors::deadline_passed()
            } else {
                ApiError::new(
                    ErrorKind::Timeout,
                    format!("The agent sent nothing within {first_byte:?}."),
                )
            })
        })
    }

    /// Bind the request's conversation (if affinity keys it) to the account that serves it.
    fn bind_conversation(&self, ctx: &ChatContext, attempts: &mut Attempts, account: &str) {
        let Some(conversation) = &attempts.conversation else {
            return;
        };
        if attempts.bound.as_deref() != Some(account) {
            tracing::info!(
                request_id = ctx.request_id,
                account,
                "conversation bound to an account"
            );
        }
        self.affinity.bind(conversation, account, &self.shutdown);
        attempts.bound = Some(account.to_owned());
    }

    /// Resolve the breaker ticket of a turn that failed with `error`, and let the failure
    /// mark the account. The request's own deadline (`expired`) says nothing about the
    /// account that happened to be answering when it passed.
    pub fn settle(&self, ticket: Ticket, account: &str, error: &ApiError, expired: bool) {
        if expired {
            ticket.record(Outcome::Ignored);
        } else {
            ticket.record(classify(error.kind));
            self.failed(account, error);
        }
    }

    /// What an account's failure says about the account itself: a spent quota marks it
    /// exhausted (credits 0, until an operator tops it up), a rate limit rests it for the time
    /// it asked (or `engine.rate_limit_cooldown`). Both keep it out of the scheduler's choice.
    pub fn failed(&self, account: &str, error: &ApiError) {
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

    /// A turn of `account` finished: charge what its agent reported (or the configured cost).
    pub fn finished(&self, account: &str, credits: f64) {
        self.credits.charge(account, credits, &self.shutdown);
    }

    /// An answer moved on to another account after its first byte.
    pub fn resumed(&self) {
        self.metrics.record_failover("resume");
    }
}

/// The live session a request continues: the one that issued the calls its trailing tool
/// messages answer.
fn live_session(request: &ChatCompletionRequest) -> Option<&str> {
    request
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role == drawbridge_types::Role::Tool)
        .find_map(|m| {
            m.tool_call_id
                .as_deref()
                .and_then(drawbridge_types::tools::live_session_of)
        })
}

/// The request's fields a provider account passes on upstream: the untyped ones (`extra`:
/// sampling, `stop`, `seed`, `response_format`, ...) and `user`, without nulls.
fn upstream_params(request: &ChatCompletionRequest) -> serde_json::Map<String, serde_json::Value> {
    let mut params: serde_json::Map<String, serde_json::Value> = request
        .extra
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if let Some(user) = &request.user {
        params.insert("user".to_owned(), serde_json::Value::String(user.clone()));
    }
    params
}

/// The binding of a warm session's conversation in the affinity store.
fn warm_key(conversation: &str) -> String {
    format!("warm:{conversation}")
}

/// The binding of live session `live` in the affinity store (never a conversation key: those
/// are 64 hex digits without a prefix).
fn live_key(live: &str) -> String {
    format!("live:{live}")
}
