//! One account's pool of warm agent processes.
//!
//! The pool has `size` slots. A slot is always in exactly one place: starting (a task is
//! spawning its process, retrying with backoff), idle (its process waits in the idle queue),
//! or leased (serving one request). So there are never more than `size` processes, and a
//! process that dies is replaced by a starting slot. Requests wait for an idle process in
//! arrival order (a fair mutex around the queue's receiver), up to `queue_timeout`, and at most
//! `max_queue` wait at once.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drawbridge_acp::{AcpError, AgentProcess, AgentSpec, Engine, ModelCatalogue, Session};
use drawbridge_config::AgentTools;
use drawbridge_telemetry::Shutdown;
use drawbridge_types::worker::{AccountSlots, AccountStatus};
use drawbridge_types::{ApiError, ErrorKind};
use tokio::sync::mpsc;

/// Consecutive start failures after which an account with no live process is unhealthy.
const UNHEALTHY_AFTER: u32 = 3;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: u32,
    pub handshake_timeout: Duration,
    pub queue_timeout: Duration,
    pub max_queue: usize,
    /// How the account's agents' permission requests are answered.
    pub permissions: drawbridge_acp::PermissionPolicy,
    /// Whether the agents keep their built-in tools (see [`crate::profile`]).
    pub tools: AgentTools,
    /// How a request's own tools reach the agents.
    pub client_tools: drawbridge_config::ClientTools,
}

/// How long a stale process (a Kiro v2 agent restarted with the tool-less profile) gets to
/// exit.
const RESTART_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Counters {
    idle: AtomicU32,
    busy: AtomicU32,
    starting: AtomicU32,
    waiting: AtomicU32,
    /// Consecutive failed starts (reset by a successful one).
    failures: AtomicU32,
    /// Leased processes that hold a warm session (given back when a request needs one).
    warm: AtomicU32,
}

pub struct AccountPool {
    pub id: String,
    /// The configured model labels (`accounts[].models`): each runs the agent's default model.
    pub models: Vec<String>,
    spec: AgentSpec,
    settings: PoolSettings,
    idle_tx: mpsc::Sender<AgentProcess>,
    idle_rx: tokio::sync::Mutex<mpsc::Receiver<AgentProcess>>,
    counters: Counters,
    /// Woken (once per waiting request) when no cold process is idle: see [`Self::pressed`].
    pressure: tokio::sync::Notify,
    last_error: Mutex<Option<String>>,
    credits_used: Mutex<f64>,
    /// The agent's model catalogue: read when the first process starts, refreshed by every
    /// session a turn opens. `None`: the agent announced none (yet).
    catalogue: Mutex<Option<ModelCatalogue>>,
    /// Permission requests refused so far.
    tools_refused: AtomicU64,
    /// Why the account cannot serve until its pool is rebuilt (an agent asked for something
    /// only its operator can fix, such as a token): it stays unhealthy meanwhile.
    blocked: Mutex<Option<String>>,
    /// Launch with `--agent` and the tool-less profile: learned from the first Kiro v2 start.
    launch_with_profile: AtomicBool,
    shutdown: Shutdown,
}

impl AccountPool {
    /// Create the pool and start warming every slot.
    pub fn start(
        id: String,
        models: Vec<String>,
        spec: AgentSpec,
        settings: PoolSettings,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        let (idle_tx, idle_rx) = mpsc::channel(settings.size.max(1) as usize);
        let pool = Arc::new(AccountPool {
            id,
            models,
            spec,
            idle_tx,
            idle_rx: tokio::sync::Mutex::new(idle_rx),
            counters: Counters::default(),
            pressure: tokio::sync::Notify::new(),
            last_error: Mutex::new(None),
            credits_used: Mutex::new(0.0),
            catalogue: Mutex::new(None),
            tools_refused: AtomicU64::new(0),
            blocked: Mutex::new(None),
            launch_with_profile: AtomicBool::new(false),
            shutdown,
            settings,
        });
        for _ in 0..pool.settings.size {
            pool.start_slot(Duration::ZERO);
        }
        pool
    }

    /// Whether `model` is one of the configured labels or of the agent's catalogue.
    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
            || lock(&self.catalogue)
                .as_ref()
                .is_some_and(|catalogue| catalogue.contains(model))
    }

    /// The model to choose on a turn's session for a request's `model`: `None` for a
    /// configured label (the agent's default runs), the id for one of the catalogue's, and
    /// `model_not_found` for anything else.
    pub fn model_choice(&self, model: &str) -> Result<Option<String>, ApiError> {
        if self.models.iter().any(|m| m == model) {
            return Ok(None);
        }
        let known = lock(&self.catalogue)
            .as_ref()
            .is_some_and(|catalogue| catalogue.contains(model));
        if known {
            Ok(Some(model.to_owned()))
        } else {
            Err(ApiError::model_not_found(model))
        }
    }

    /// What the account serves: its labels, then the catalogue's ids (without repeats).
    pub fn all_models(&self) -> Vec<String> {
        let mut models = self.models.clone();
        if let Some(catalogue) = lock(&self.catalogue).as_ref() {
            for id in catalogue.ids() {
                if !models.iter().any(|m| m == id) {
                    models.push(id.to_owned());
                }
            }
        }
        models
    }

    /// Keep the catalogue a session announced (a cold first session may have had none).
    pub fn note_catalogue(&self, catalogue: Option<&ModelCatalogue>) {
        if let Some(catalogue) = catalogue {
            let mut current = lock(&self.catalogue);
            if current.as_ref() != Some(catalogue) {
                tracing::info!(
                    account = self.id,
                    models = catalogue.models.len(),
                    default = catalogue.current.as_deref(),
                    "agent model catalogue"
                );
                *current = Some(catalogue.clone());
            }
        }
    }

    /// A permission request of the agent's was refused: log it, count it.
    pub fn note_refusal(&self, title: Option<&str>, kind: Option<&str>) {
        self.tools_refused.fetch_add(1, Ordering::SeqCst);
        tracing::warn!(
            account = self.id,
            tool = title.unwrap_or("(untitled)"),
            kind = kind.unwrap_or("(none)"),
            "refused a tool the agent asked to run"
        );
    }

    /// The account cannot serve until its pool is rebuilt (or the worker restarts): it is
    /// unhealthy with `reason`.
    pub fn block(&self, reason: String) {
        tracing::error!(account = self.id, reason, "account blocked");
        self.set_error(reason.clone());
        *lock(&self.blocked) = Some(reason);
    }

    /// Start one agent process and make it fit to serve the account: a Kiro agent without
    /// tools gets the tool-less profile (Kiro v2: restarted once with `--agent`, later starts
    /// launch with it), and a pool without a catalogue reads the agent's.
    async fn start_process(&self) -> Result<AgentProcess, anyhow::Error> {
        let launched_with_profile = self.launch_with_profile.load(Ordering::SeqCst);
        if launched_with_profile && let Some(home) = &self.spec.home {
            // `--agent` names a file that must exist (Kiro exits without it).
            write_profile(home)?;
        }
        let mut process = self.spawn(launched_with_profile).await?;
        if self.settings.tools == AgentTools::None && process.engine() != Engine::Other {
            if let Some(home) = &self.spec.home {
                write_profile(home)?;
                if process.engine() == Engine::KiroV2
                    && !launched_with_profile
                    && !crate::profile::names_agent(&self.spec.args)
                {
                    tracing::info!(
                        account = self.id,
                        "Kiro v2 agent: restarting it with the tool-less profile (--agent {})",
                        crate::profile::PROFILE_NAME
                    );
                    self.launch_with_profile.store(true, Ordering::SeqCst);
                    process.shutdown(RESTART_GRACE).await;
                    process = self.spawn(true).await?;
                }
            } else {
                tracing::warn!(
                    account = self.id,
                    "the agent has no home of its own: no tool-less profile; its tool requests are refused"
                );
            }
        }
        if lock(&self.catalogue).is_none() {
            self.read_catalogue(&process).await;
        }
        if let Some(method) = process.unserved_request()
            && method == drawbridge_acp::GET_ACCESS_TOKEN_METHOD
        {
            self.block(crate::turn::unserved_reason(&method));
        }
        Ok(process)
    }

    async fn spawn(&self, with_profile: bool) -> Result<AgentProcess, AcpError> {
        let mut spec = self.spec.clone();
        if with_profile {
            spec.args.extend([
                "--agent".to_owned(),
                crate::profile::PROFILE_NAME.to_owned(),
            ]);
        }
        AgentProcess::start_with_policy(
            &spec,
            self.settings.handshake_timeout,
            self.settings.permissions.clone(),
        )
        .await
    }

    /// Open a session to read the agent's catalogue, then delete it (on agents that do).
    async fn read_catalogue(&self, process: &AgentProcess) {
        let session = match process.new_session().await {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(account = self.id, %error, "could not open a session to read the agent's models");
                return;
            }
        };
        self.note_catalogue(session.models());
        if let Err(error) = process.delete_session(&session).await {
            tracing::warn!(account = self.id, %error, "could not delete the catalogue session");
        }
    }

    /// Configure a turn's session before its prompt. Kiro v3: a tool-less account's session
    /// runs the tool-less profile (a mode), and autopilot goes off either way, so built-in
    /// tools ask permission (which the policy answers) instead of running.
    /// Whether a request's tools reach `process` over MCP (else they are emulated in the
    /// prompt): `agent.client_tools`, or (`auto`) what the agent announced.
    pub fn tools_over_mcp(&self, process: &AgentProcess) -> bool {
        match self.settings.client_tools {
            drawbridge_config::ClientTools::Auto => process.takes_http_mcp(),
            drawbridge_config::ClientTools::Mcp => true,
            drawbridge_config::ClientTools::Emulated => false,
        }
    }

    pub async fn prepare_session(
        &self,
        process: &AgentProcess,
        session: &Session,
    ) -> Result<(), AcpError> {
        if process.engine() != Engine::KiroV3 {
            return Ok(());
        }
        if self.settings.tools == AgentTools::None
            && let Err(error) = process
                .set_mode(session, crate::profile::PROFILE_NAME)
                .await
        {
            tracing::warn!(
                account = self.id,
                %error,
                "could not run the session as the tool-less agent; its tool requests are refused"
            );
        }
        process.set_config_option(session, "autopilot", "off").await
    }

    /// Spawn a process for one slot, retrying with exponential backoff until it starts or the
    /// worker shuts down; then put it in the idle queue.
    fn start_slot(self: &Arc<Self>, first_delay: Duration) {
        let pool = Arc::clone(self);
        self.counters.starting.fetch_add(1, Ordering::SeqCst);
        self.shutdown.spawn(async move {
            let mut delay = first_delay;
            loop {
                if !delay.is_zero() {
                    tokio::select! {
                        () = pool.shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                if pool.shutdown.is_cancelled() {
                    break;
                }
                let started = tokio::select! {
                    () = pool.shutdown.cancelled() => break,
                    started = pool.start_process() => started,
                };
                match started {
                    Ok(process) => {
                        pool.counters.failures.store(0, Ordering::SeqCst);
                        tracing::debug!(account = pool.id, pid = process.pid(), "agent ready");
                        pool.put_idle(process);
                        break;
                    }
                    Err(error) => {
                        let failures = pool.counters.failures.fetch_add(1, Ordering::SeqCst) + 1;
                        tracing::warn!(account = pool.id, failures, %error, "agent failed to start");
                        pool.set_error(error.to_string());
                        delay = backoff(failures);
                    }
                }
            }
            pool.counters.starting.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn put_idle(&self, process: AgentProcess) {
        if self.shutdown.is_cancelled() {
            return; // dropped: the process group is killed
        }
        self.counters.idle.fetch_add(1, Ordering::SeqCst);
        if self.idle_tx.try_send(process).is_err() {
            // Cannot happen while slots are accounted for; never leak a process if it does.
            self.counters.idle.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(
                account = self.id,
                "idle queue full; dropping an agent process"
            );
        }
    }

    fn set_error(&self, message: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }

    fn last_error(&self) -> Option<String> {
        lock(&self.blocked)
            .clone()
            .or_else(|| self.last_error.lock().ok().and_then(|e| e.clone()))
    }

    pub fn add_credits(&self, credits: f64) {
        if let Ok(mut used) = self.credits_used.lock() {
            *used += credits;
        }
    }

    pub fn status(&self) -> AccountStatus {
        if lock(&self.blocked).is_some() {
            return AccountStatus::Unhealthy;
        }
        let failures = self.counters.failures.load(Ordering::SeqCst);
        let live =
            self.counters.idle.load(Ordering::SeqCst) + self.counters.busy.load(Ordering::SeqCst);
        if failures >= UNHEALTHY_AFTER && live == 0 {
            AccountStatus::Unhealthy
        } else if failures > 0 {
            AccountStatus::Degraded
        } else {
            AccountStatus::Healthy
        }
    }

    /// The pool's state. A process holding a warm session counts as idle: a request takes it
    /// back at once.
    pub fn slots(&self) -> AccountSlots {
        let c = &self.counters;
        let warm = c.warm.load(Ordering::SeqCst);
        AccountSlots {
            account: self.id.clone(),
            models: self.all_models(),
            default_model: lock(&self.catalogue)
                .as_ref()
                .and_then(|catalogue| catalogue.current.clone()),
            size: self.settings.size,
            busy: c.busy.load(Ordering::SeqCst).saturating_sub(warm),
            idle: c.idle.load(Ordering::SeqCst) + warm,
            starting: c.starting.load(Ordering::SeqCst),
            failed: c.failures.load(Ordering::SeqCst),
            queue_depth: c.waiting.load(Ordering::SeqCst),
            credits_used: self.credits_used.lock().map(|c| *c).unwrap_or(0.0),
            tools_refused: self.tools_refused.load(Ordering::SeqCst),
            last_error: self.last_error(),
            status: self.status(),
        }
    }

    /// Wait for an idle process, in arrival order.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::unavailable("This worker is draining."));
        }
        if self.status() == AccountStatus::Unhealthy {
            return Err(ApiError::upstream(format!(
                "Account '{}' has no working agent process: {}",
                self.id,
                self.last_error()
                    .unwrap_or_else(|| "unknown error".to_owned())
            )));
        }
        let waiting = self.counters.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Decrement(&self.counters.waiting);
        if waiting as usize >= self.settings.max_queue
            && self.counters.idle.load(Ordering::SeqCst) == 0
        {
            return Err(no_capacity(format!(
                "All {} slots of account '{}' are busy and its queue is full.",
                self.settings.size, self.id
            )));
        }
        if self.counters.idle.load(Ordering::SeqCst) == 0
            && self.counters.warm.load(Ordering::SeqCst) > 0
        {
            // No cold process: a warm session gives its own back.
            self.pressure.notify_one();
        }
        let wait = async {
            let mut idle = self.idle_rx.lock().await;
            loop {
                let process = idle.recv().await?;
                self.counters.idle.fetch_sub(1, Ordering::SeqCst);
                if process.is_alive() {
                    return Some(process);
                }
                tracing::warn!(
                    account = self.id,
                    stderr = process.stderr_tail(),
                    "idle agent died; replacing it"
                );
                drop(process);
                self.start_slot(BACKOFF_START);
            }
        };
        let process = tokio::select! {
            () = self.shutdown.cancelled() => None,
            leased = tokio::time::timeout(self.settings.queue_timeout, wait) => match leased {
                Ok(process) => process,
                Err(_) => return Err(no_capacity(format!(
                    "No slot of account '{}' became free within {:?}.",
                    self.id, self.settings.queue_timeout
                ))),
            },
        };
        let process = process.ok_or_else(|| ApiError::unavailable("This worker is draining."))?;
        self.counters.busy.fetch_add(1, Ordering::SeqCst);
        Ok(Lease {
            pool: Arc::clone(self),
            process: Some(process),
            reusable: std::cell::Cell::new(true),
        })
    }

    /// A leased process now holds a warm session, until the guard is dropped.
    pub fn warm_parked(&self) -> WarmGuard<'_> {
        self.counters.warm.fetch_add(1, Ordering::SeqCst);
        WarmGuard(self)
    }

    /// Resolves when a request waits for a process while warm sessions hold some: one warm
    /// session per waiting request gives its process back.
    pub async fn pressed(&self) {
        self.pressure.notified().await;
    }

    /// Stop the idle processes (leased ones stop when their lease ends).
    pub async fn close(&self, grace: Duration) {
        let mut idle = self.idle_rx.lock().await;
        idle.close();
        let mut stopping = Vec::new();
        while let Ok(process) = idle.try_recv() {
            self.counters.idle.fetch_sub(1, Ordering::SeqCst);
            stopping.push(process.shutdown(grace));
        }
        futures::future::join_all(stopping).await;
    }
}

/// Write the tool-less profile into the account's home.
fn write_profile(home: &std::path::Path) -> Result<(), anyhow::Error> {
    let path = crate::profile::write_profile(home).map_err(|error| {
        anyhow::anyhow!(
            "cannot write the tool-less agent profile into {}: {error}",
            home.display()
        )
    })?;
    tracing::debug!(path = %path.display(), "tool-less agent profile in place");
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn no_capacity(message: String) -> ApiError {
    ApiError::new(ErrorKind::NoCapacity, message).with_retry_after(Duration::from_secs(1))
}

fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX)
}

struct Decrement<'a>(&'a AtomicU32);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One leased process. Dropping the lease returns the process to the pool if it is still
/// fit to serve, and otherwise replaces it.
/// See [`AccountPool::warm_parked`].
pub struct WarmGuard<'a>(&'a AccountPool);

impl Drop for WarmGuard<'_> {
    fn drop(&mut self) {
        self.0.counters.warm.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Lease {
    pool: Arc<AccountPool>,
    process: Option<AgentProcess>,
    /// A flag, not a `&mut` state: a turn marks it while it still uses the process.
    reusable: std::cell::Cell<bool>,
}

impl Lease {
    pub fn process(&self) -> Option<&AgentProcess> {
        self.process.as_ref()
    }

    pub fn pool(&self) -> &Arc<AccountPool> {
        &self.pool
    }

    /// The process must not serve again (it hung, was cut off mid-turn, or misbehaved).
    pub fn discard(&self) {
        self.reusable.set(false);
    }

    /// The process finished its turn cleanly and may serve again.
    pub fn keep(&self) {
        self.reusable.set(true);
    }

    /// Whether the process goes back to the pool when the lease ends.
    pub fn is_kept(&self) -> bool {
        self.reusable.get()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.counters.busy.fetch_sub(1, Ordering::SeqCst);
        let Some(process) = self.process.take() else {
            return;
        };
        if self.reusable.get() && process.is_alive() {
            self.pool.put_idle(process);
        } else {
            if !process.is_alive() {
                tracing::warn!(
                    account = self.pool.id,
                    stderr = process.stderr_tail(),
                    "agent process died"
                );
            }
            drop(process);
            if !self.pool.shutdown.is_cancelled() {
                self.pool.start_slot(Duration::ZERO);
            }
        }
    }
}

#[cfg(test)]
mod tests;
