//! Layer 3: the worker. For each account it serves it keeps a pool of warm ACP agent
//! processes (`kiro-cli acp` by default), and runs each chat turn as a fresh ACP session on one
//! of them, streaming the answer back as [`WorkerEvent`]s. The same [`Worker`] is served over
//! gRPC to the engine ([`grpc`]), over HTTP for people and probes ([`http`]), and called
//! directly by the single-process `drawbridge` binary.
//!
//! What the worker adapts to the agent it finds (from `initialize`; other ACP agents get only
//! the generic parts):
//! - **Models.** Each pool keeps its agent's model catalogue (read at start, refreshed by every
//!   turn's session). An account serves its configured labels (`accounts[].models`, which run
//!   the agent's default model) and the catalogue's ids (chosen per session: Kiro v2
//!   `session/set_model`, v3 `session/set_config_option`); `/slots` lists both and the default.
//! - **Sessions.** Each turn's session is deleted once the turn has ended (Kiro v3 keeps them
//!   on disk otherwise), after the client has its last event.
//! - **Tools.** `agent.tools: none` (the default): a Kiro account runs a tool-less agent
//!   profile (`~/.kiro/agents/drawbridge.json`; v2 `--agent drawbridge`, v3 as session mode),
//!   v3 autopilot is off, and every permission request is refused; `builtin` keeps the
//!   agent's tools (autopilot still off) and allows only `allow_tools`. Refusals are counted
//!   (`tools_refused` in `/slots`).
//! - **Liveness.** Any agent frame resets `idle_timeout`; non-text frames go out as
//!   `WorkerEvent::Activity` (at most one per `ACTIVITY_EVERY`), reasoning as
//!   `WorkerEvent::Reasoning`.
//! - **Usage.** Token counts the agent reported are used (`tokens_estimated: false`);
//!   otherwise they are estimated.
//! - **Unserved requests.** An agent that asks the client for something it cannot give (Kiro
//!   v3's access token without `--auth-method cli`) fails its turn at once and makes its
//!   account unhealthy, with the fix in `last_error`, until the pool is rebuilt.

mod app;
mod assignment;
pub mod bridge;
pub mod grpc;
pub mod http;
mod live;
mod pool;
mod profile;
pub mod registration;
mod settings;
mod turn;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use drawbridge_config::{AccountConfig, Config};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::Role;
use drawbridge_types::worker::{AccountStatus, PromptBody, PromptInput, SlotsReport, WorkerEvent};
use drawbridge_types::{ApiError, HealthStatus};
use tokio::sync::mpsc;
use tracing::Instrument as _;

pub use app::WorkerApp;
pub use pool::{AccountPool, PoolSettings};
use settings::PoolConfig;

/// Events buffered per request between the turn and its consumer.
const EVENT_BUFFER: usize = 64;
/// How long a stopped pool's idle agents get to exit before they are killed.
const POOL_STOP_GRACE: Duration = Duration::from_secs(2);

/// One account this worker serves.
struct PoolEntry {
    pool: Arc<AccountPool>,
    /// The pool's own scope, cancelled when the pool stops.
    scope: Shutdown,
    /// The settings the pool started with: a reload that changes them restarts the pool.
    settings: AccountConfig,
}

impl PoolEntry {
    /// Stop the pool: no more starts; its idle agents stop now, its leased ones when their
    /// turn ends.
    async fn stop(self) {
        self.scope.cancel();
        self.pool.close(POOL_STOP_GRACE).await;
    }
}

pub struct Worker {
    id: String,
    /// The accounts it serves, by id. Fixed in `cluster.assignment: config` mode (but for
    /// reloads); changed by the assignment in `registry` mode. Every request reads it; only
    /// [`Worker::change_pools`] writes it, holding `changes`.
    pools: RwLock<BTreeMap<String, PoolEntry>>,
    /// Held across each whole change of `pools` (decide from the map, start, swap, stop the
    /// old pools), so changes apply one at a time and each sees the last one's result.
    changes: tokio::sync::Mutex<()>,
    /// Every account of the config (what an assigned account's agent settings come from);
    /// replaced by a reload.
    catalogue: RwLock<Vec<AccountConfig>>,
    pool_config: PoolConfig,
    /// It serves the accounts the registry assigns it.
    assignable: bool,
    /// What every turn shares: settings, live sessions, the tool bridge.
    turn_env: turn::TurnEnv,
    shutdown: Shutdown,
    /// Turns in flight; drained before exit.
    turns: tokio_util::task::TaskTracker,
    /// Cancelled by a `Drain` call (gRPC or HTTP); the binary then drains.
    drain_requested: tokio_util::sync::CancellationToken,
    /// The `Drain` call asked to stay up, drained, instead of exiting.
    keep_running: std::sync::atomic::AtomicBool,
}

impl Worker {
    /// Build the pools for the accounts this worker serves and start warming them (none yet
    /// in `cluster.assignment: registry` mode: they come with the assignment).
    pub fn start(config: &Config, shutdown: Shutdown) -> Result<Arc<Worker>, anyhow::Error> {
        let pool_config = PoolConfig::new(config)?;
        let assignable = config.cluster.assignment == drawbridge_config::AssignmentMode::Registry;
        let mut pools = BTreeMap::new();
        if !assignable {
            for account in config.worker_accounts() {
                let entry = start_entry(&pool_config, &shutdown, account)?;
                pools.insert(account.id.clone(), entry);
            }
        }
        Ok(Arc::new(Worker {
            id: config.node.id.clone(),
            pools: RwLock::new(pools),
            changes: tokio::sync::Mutex::new(()),
            catalogue: RwLock::new(config.accounts.clone()),
            pool_config,
            assignable,
            turn_env: turn::TurnEnv {
                settings: turn::TurnSettings {
                    request_timeout: config.worker.request_timeout,
                    idle_timeout: config.worker.idle_timeout,
                    cancel_grace: config.worker.cancel_grace,
                    continuation: settings::continuation_options(&config.continuation),
                    sanitize: settings::sanitize_options(&config.sanitize),
                    live_session_ttl: config.worker.live_session_ttl,
                    warm_sessions: config.worker.warm_sessions,
                    warm_session_ttl: config.worker.warm_session_ttl,
                },
                live: Arc::default(),
                bridge: Arc::default(),
                shutdown: shutdown.clone(),
            },
            shutdown,
            turns: tokio_util::task::TaskTracker::new(),
            drain_requested: tokio_util::sync::CancellationToken::new(),
            keep_running: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether it serves the accounts the registry assigns it.
    pub fn is_assignable(&self) -> bool {
        self.assignable
    }

    fn read_pools<R>(&self, read: impl FnOnce(&BTreeMap<String, PoolEntry>) -> R) -> R {
        read(&self.pools.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The ids of the accounts it serves.
    fn serving(&self) -> Vec<String> {
        self.read_pools(|pools| pools.keys().cloned().collect())
    }

    /// Apply every reload of `live` (see [`Worker::reconfigure`]) until `scope` ends.
    pub fn follow_reloads(
        self: &Arc<Self>,
        live: drawbridge_telemetry::LiveConfig,
        scope: &Shutdown,
    ) {
        let worker = Arc::clone(self);
        live.follow(scope, move |config| {
            let worker = Arc::clone(&worker);
            async move { worker.reconfigure(&config).await }
        });
    }

    /// Every account of the running config.
    pub fn catalogue(&self) -> Vec<AccountConfig> {
        self.catalogue
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Take a reloaded configuration: in `config` mode serve its accounts (new ones start,
    /// removed ones stop, changed ones restart); in `registry` mode keep the assigned accounts
    /// but restart those whose settings changed. Turns in flight finish on the processes they
    /// started on.
    pub async fn reconfigure(&self, config: &Config) {
        let _changing = self.changes.lock().await;
        if let Ok(mut catalogue) = self.catalogue.write() {
            *catalogue = config.accounts.clone();
        }
        if self.assignable {
            let serving = self.serving();
            let keep: Vec<&AccountConfig> = config
                .accounts
                .iter()
                .filter(|a| serving.contains(&a.id))
                .collect();
            self.change_pools(&keep).await;
        } else {
            self.change_pools(&config.worker_accounts()).await;
        }
    }

    /// Serve exactly `accounts` (their agent settings from the config): start a pool for each
    /// new one, restart the pool of one whose settings changed, stop the pools of the others
    /// (their turns in flight finish; then their agent processes stop). A worker that is
    /// draining changes nothing. Concurrent calls apply one after the other.
    pub async fn assign(&self, accounts: &[&AccountConfig]) {
        let _changing = self.changes.lock().await;
        self.change_pools(accounts).await;
    }

    /// [`Worker::assign`]'s work; the caller holds `changes`, so the map read here is the one
    /// written here, and no pool is ever replaced without being stopped.
    async fn change_pools(&self, accounts: &[&AccountConfig]) {
        if self.is_draining() {
            return;
        }
        let mut stopping = Vec::new();
        {
            let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
            let unwanted: Vec<String> = pools
                .keys()
                .filter(|id| !accounts.iter().any(|a| &a.id == *id))
                .cloned()
                .collect();
            for id in unwanted {
                tracing::info!(account = id, "no longer serving account");
                stopping.extend(pools.remove(&id));
            }
            for account in accounts {
                if let Some(entry) = pools.get(&account.id) {
                    if entry.settings == **account {
                        continue;
                    }
                    tracing::info!(
                        account = account.id,
                        "account settings changed; its pool restarts"
                    );
                    stopping.extend(pools.remove(&account.id));
                }
                match start_entry(&self.pool_config, &self.shutdown, account) {
                    Ok(entry) => {
                        tracing::info!(account = account.id, "serving account");
                        stopping.extend(pools.insert(account.id.clone(), entry));
                    }
                    Err(error) => tracing::warn!(
                        account = account.id,
                        %error,
                        "cannot start the pool of an account"
                    ),
                }
            }
        }
        futures::future::join_all(stopping.into_iter().map(PoolEntry::stop)).await;
    }

    /// The first model `account` serves (a configured label).
    pub fn default_model(&self, account: &str) -> Option<String> {
        self.read_pools(|pools| {
            pools
                .get(account)
                .and_then(|e| e.pool.models.first().cloned())
        })
    }

    pub fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Run one chat turn. The events end with `Finished` or `Error`; dropping the receiver
    /// cancels the turn.
    pub fn prompt(&self, input: PromptInput) -> mpsc::Receiver<WorkerEvent> {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        // A follow-up for a live session this worker holds goes to it.
        let tx = match self.resume_live(&input, tx) {
            Ok(()) => return rx,
            Err(tx) => tx,
        };
        match self.choose_pool(&input) {
            Err(error) => {
                // The channel is fresh and has room: this cannot fail.
                let _ = tx.try_send(WorkerEvent::Error(error));
            }
            Ok(pool) => {
                let span = tracing::info_span!(
                    "turn",
                    request_id = %input.request_id,
                    account = %pool.id,
                );
                self.turns
                    .spawn(turn::run(pool, input, tx, self.turn_env.clone()).instrument(span));
            }
        }
        rx
    }

    /// Hand `input` to the live session it continues, if this worker holds it (for its
    /// account); otherwise give `tx` back: the request is served in a fresh session, from the
    /// whole conversation.
    fn resume_live(
        &self,
        input: &PromptInput,
        tx: mpsc::Sender<WorkerEvent>,
    ) -> Result<(), mpsc::Sender<WorkerEvent>> {
        let (Some(live), Some(account)) = (&input.live_session, &input.account) else {
            return Err(tx);
        };
        let PromptBody::Messages(messages) = &input.body else {
            return Err(tx);
        };
        // A live session holding tool calls takes the trailing tool messages; a warm session
        // the messages after its answer, if the answer is the one it gave.
        let (new_messages, answer) = match drawbridge_core::conversation::split_at_answer(messages)
        {
            Some((_, answer, after)) if live.len() != drawbridge_types::tools::LIVE_ID_LEN => {
                (after.to_vec(), Some(answer.text()))
            }
            _ => (
                messages
                    .iter()
                    .rev()
                    .take_while(|m| m.role == Role::Tool)
                    .cloned()
                    .collect(),
                None,
            ),
        };
        let resume = live::Resume {
            request_id: input.request_id.clone(),
            messages: new_messages,
            conversation: input.conversation.clone(),
            out: tx,
        };
        self.turn_env
            .live
            .resume(live, account, answer.as_deref(), resume)
            .map_err(|resume| {
                tracing::info!(
                    request_id = input.request_id,
                    account,
                    "the session is gone; answering from the whole conversation"
                );
                resume.out
            })
    }

    /// Live sessions parked on this worker (answers ended with tool calls, waiting for the
    /// client's results).
    pub fn live_sessions(&self) -> usize {
        self.turn_env.live.len()
    }

    fn choose_pool(&self, input: &PromptInput) -> Result<Arc<AccountPool>, ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable("This worker is draining."));
        }
        self.read_pools(|pools| choose(pools, input))
    }

    pub fn slots(&self) -> SlotsReport {
        SlotsReport {
            worker_id: self.id.clone(),
            draining: self.is_draining(),
            accounts: self.read_pools(|pools| pools.values().map(|e| e.pool.slots()).collect()),
        }
    }

    /// Overall status and the reasons for anything short of healthy.
    pub fn health(&self) -> (HealthStatus, Vec<String>) {
        let slots = self.slots();
        let reasons: Vec<String> = slots
            .accounts
            .iter()
            .filter(|a| a.status != AccountStatus::Healthy)
            .map(|a| {
                format!(
                    "account {} is {}: {}",
                    a.account,
                    a.status.as_str(),
                    a.last_error.as_deref().unwrap_or("no detail")
                )
            })
            .collect();
        if self.assignable && slots.accounts.is_empty() && !slots.draining {
            // Waiting for an assignment is healthy: it has room.
            return (
                HealthStatus::Healthy,
                vec!["no account assigned yet".to_owned()],
            );
        }
        let report = drawbridge_types::HealthReport::from_accounts(&slots.accounts, slots.draining);
        (report.status, reasons)
    }

    /// This worker as a registry entry. `grpc_url` and `http_url` are where others reach it.
    pub fn pod_record(
        &self,
        grpc_url: &str,
        http_url: &str,
        draining: bool,
    ) -> drawbridge_state::PodRecord {
        use drawbridge_state::PodStatus;
        let slots = self.slots();
        let mut models: Vec<String> = slots
            .accounts
            .iter()
            .flat_map(|a| a.models.iter().cloned())
            .collect();
        models.sort();
        models.dedup();
        let (health, _) = self.health();
        let status = if draining || slots.draining {
            PodStatus::Draining
        } else {
            match health {
                drawbridge_types::HealthStatus::Healthy => PodStatus::Healthy,
                drawbridge_types::HealthStatus::Degraded => PodStatus::Degraded,
                drawbridge_types::HealthStatus::Draining => PodStatus::Draining,
                drawbridge_types::HealthStatus::Unhealthy => PodStatus::Unhealthy,
            }
        };
        drawbridge_state::PodRecord {
            id: self.id.clone(),
            address: grpc_url.to_owned(),
            http_address: http_url.to_owned(),
            accounts: slots.accounts,
            models,
            status,
            assignable: self.assignable,
            updated_at_ms: 0,
        }
    }

    /// Ask the binary to drain (what `POST /drain` and the gRPC `Drain` do). Returns the number
    /// of turns in flight.
    pub fn request_drain(&self, keep_running: bool) -> u32 {
        self.keep_running
            .store(keep_running, std::sync::atomic::Ordering::SeqCst);
        self.drain_requested.cancel();
        self.slots().accounts.iter().map(|a| a.busy).sum()
    }

    /// Resolves once a drain has been requested; whether to stay up afterwards.
    pub async fn drain_requested(&self) -> bool {
        self.drain_requested.cancelled().await;
        self.keep_running.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stop admitting, wait up to `grace` for turns in flight, then stop every agent process.
    pub async fn drain(&self, grace: Duration) {
        self.shutdown.cancel();
        self.turns.close();
        if tokio::time::timeout(grace, self.turns.wait())
            .await
            .is_err()
        {
            tracing::warn!("turns still running after the drain deadline; stopping their agents");
        }
        // A change under way ends first; those after it see the drain and change nothing.
        let _changing = self.changes.lock().await;
        let pools: Vec<Arc<AccountPool>> =
            self.read_pools(|pools| pools.values().map(|e| Arc::clone(&e.pool)).collect());
        let closing = pools.iter().map(|p| p.close(POOL_STOP_GRACE));
        futures::future::join_all(closing).await;
    }
}

/// The pool to serve `input`: its account's, or the least loaded healthy one serving its model.
fn choose(
    pools: &BTreeMap<String, PoolEntry>,
    input: &PromptInput,
) -> Result<Arc<AccountPool>, ApiError> {
    if let Some(account) = &input.account {
        // Retryable: in a cluster an account moves between workers, and an engine may send
        // a turn here before it has seen the move.
        let pool = pools.get(account).map(|e| &e.pool).ok_or_else(|| {
            ApiError::unavailable(format!("This worker does not serve account '{account}'."))
        })?;
        if !pool.serves(&input.model) {
            return Err(ApiError::model_not_found(&input.model));
        }
        return Ok(Arc::clone(pool));
    }
    let serving: Vec<&Arc<AccountPool>> = pools
        .values()
        .map(|e| &e.pool)
        .filter(|p| p.serves(&input.model))
        .collect();
    if serving.is_empty() {
        return Err(ApiError::model_not_found(&input.model));
    }
    serving
        .into_iter()
        .map(|p| (p, p.slots()))
        .filter(|(_, s)| s.status != AccountStatus::Unhealthy)
        .max_by_key(|(_, s)| {
            (
                i64::from(s.idle) - i64::from(s.queue_depth),
                std::cmp::Reverse(s.busy),
            )
        })
        .map(|(p, _)| Arc::clone(p))
        .ok_or_else(|| ApiError::upstream(format!("No healthy account serves '{}'.", input.model)))
}

/// Start `account`'s pool in a scope of its own under `parent`.
fn start_entry(
    config: &PoolConfig,
    parent: &Shutdown,
    account: &AccountConfig,
) -> Result<PoolEntry, anyhow::Error> {
    let scope = parent.child();
    let pool = config.start(account, scope.clone())?;
    Ok(PoolEntry {
        pool,
        scope,
        settings: account.clone(),
    })
}
