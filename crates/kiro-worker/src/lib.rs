//! Layer 3: the worker. For each account it serves it keeps a pool of warm ACP agent
//! processes (`kiro-cli acp` by default), and runs each chat turn as a fresh ACP session on one
//! of them, streaming the answer back as [`WorkerEvent`]s. The same [`Worker`] is served over
//! gRPC to the engine ([`grpc`]), over HTTP for people and probes ([`http`]), and called
//! directly by the single-process `drawbridge` binary.

mod assignment;
pub mod grpc;
pub mod http;
mod pool;
pub mod registration;
mod turn;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use drawbridge_acp::AgentSpec;
use drawbridge_config::{AccountConfig, Config};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::worker::{AccountStatus, PromptInput, SlotsReport, WorkerEvent};
use drawbridge_types::{ApiError, HealthStatus};
use tokio::sync::mpsc;
use tracing::Instrument as _;

pub use pool::{AccountPool, PoolSettings};

/// Events buffered per request between the turn and its consumer.
const EVENT_BUFFER: usize = 64;

pub struct Worker {
    id: String,
    /// The account pools, by account id. Fixed in `cluster.assignment: config` mode; changed by
    /// [`Worker::assign`] in `registry` mode.
    pools: RwLock<BTreeMap<String, Arc<AccountPool>>>,
    /// Each pool's own scope, cancelled when the pool is unassigned.
    pool_scopes: Mutex<BTreeMap<String, Shutdown>>,
    /// The settings each pool was started with: a reload that changes them restarts the pool.
    started_with: Mutex<BTreeMap<String, AccountConfig>>,
    /// Every account of the config (what an assigned account's agent settings come from);
    /// replaced by a reload.
    catalogue: RwLock<Vec<AccountConfig>>,
    pool_config: PoolConfig,
    /// It serves the accounts the registry assigns it.
    assignable: bool,
    turn_settings: turn::TurnSettings,
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
        let pool_config = PoolConfig {
            data_dir: absolute(&config.worker.data_dir)?,
            handshake_timeout: config.worker.handshake_timeout,
            queue_timeout: config.worker.queue_timeout,
            max_queue: config.worker.max_queue,
        };
        let assignable = config.cluster.assignment == drawbridge_config::AssignmentMode::Registry;
        let mut pools = BTreeMap::new();
        let mut pool_scopes = BTreeMap::new();
        let mut started_with = BTreeMap::new();
        if !assignable {
            for account in config.worker_accounts() {
                let scope = shutdown.child();
                let pool = pool_config.start(account, scope.clone())?;
                pools.insert(account.id.clone(), pool);
                pool_scopes.insert(account.id.clone(), scope);
                started_with.insert(account.id.clone(), account.clone());
            }
        }
        Ok(Arc::new(Worker {
            id: config.node.id.clone(),
            pools: RwLock::new(pools),
            pool_scopes: Mutex::new(pool_scopes),
            started_with: Mutex::new(started_with),
            catalogue: RwLock::new(config.accounts.clone()),
            pool_config,
            assignable,
            turn_settings: turn::TurnSettings {
                request_timeout: config.worker.request_timeout,
                idle_timeout: config.worker.idle_timeout,
                cancel_grace: config.worker.cancel_grace,
                continuation: continuation_options(&config.continuation),
                sanitize: sanitize_options(&config.sanitize),
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

    fn pools(&self) -> BTreeMap<String, Arc<AccountPool>> {
        self.pools
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
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
        if let Ok(mut catalogue) = self.catalogue.write() {
            *catalogue = config.accounts.clone();
        }
        if self.assignable {
            let serving = self.pools();
            let keep: Vec<&AccountConfig> = config
                .accounts
                .iter()
                .filter(|a| serving.contains_key(&a.id))
                .collect();
            self.assign(&keep).await;
        } else {
            self.assign(&config.worker_accounts()).await;
        }
    }

    /// Serve exactly `accounts` (their agent settings from the config): start a pool for each
    /// new one, restart the pool of one whose settings changed, stop the pools of the others
    /// (their turns in flight finish; then their agent processes stop). A worker that is
    /// draining changes nothing.
    pub async fn assign(&self, accounts: &[&AccountConfig]) {
        if self.is_draining() {
            return;
        }
        let current = self.pools();
        let mut stopping = Vec::new();
        {
            let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
            let mut scopes = self
                .pool_scopes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut started_with = self
                .started_with
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for account in accounts {
                if current.contains_key(&account.id) {
                    if started_with.get(&account.id) == Some(*account) {
                        continue;
                    }
                    tracing::info!(
                        account = account.id,
                        "account settings changed; its pool restarts"
                    );
                    if let Some(pool) = pools.remove(&account.id) {
                        stopping.push(pool);
                    }
                    if let Some(scope) = scopes.remove(&account.id) {
                        scope.cancel();
                    }
                }
                let scope = self.shutdown.child();
                match self.pool_config.start(account, scope.clone()) {
                    Ok(pool) => {
                        tracing::info!(account = account.id, "serving account");
                        pools.insert(account.id.clone(), pool);
                        scopes.insert(account.id.clone(), scope);
                        started_with.insert(account.id.clone(), (*account).clone());
                    }
                    Err(error) => tracing::warn!(
                        account = account.id,
                        %error,
                        "cannot start the pool of an account"
                    ),
                }
            }
            for id in current.keys() {
                if accounts.iter().any(|a| &a.id == id) {
                    continue;
                }
                tracing::info!(account = id, "no longer serving account");
                if let Some(pool) = pools.remove(id) {
                    stopping.push(pool);
                }
                if let Some(scope) = scopes.remove(id) {
                    scope.cancel();
                }
                started_with.remove(id);
            }
        }
        let closing = stopping.iter().map(|p| p.close(Duration::from_secs(2)));
        futures::future::join_all(closing).await;
    }

    /// The first model `account` serves.
    pub fn default_model(&self, account: &str) -> Option<String> {
        self.pools()
            .get(account)
            .and_then(|p| p.models.first().cloned())
    }

    pub fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Run one chat turn. The events end with `Finished` or `Error`; dropping the receiver
    /// cancels the turn.
    pub fn prompt(&self, input: PromptInput) -> mpsc::Receiver<WorkerEvent> {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
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
                    .spawn(turn::run(pool, input, tx, self.turn_settings).instrument(span));
            }
        }
        rx
    }

    fn choose_pool(&self, input: &PromptInput) -> Result<Arc<AccountPool>, ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable("This worker is draining."));
        }
        let pools = self.pools();
        if let Some(account) = &input.account {
            // Retryable: in a cluster an account moves between workers, and an engine may send
            // a turn here before it has seen the move.
            let pool = pools.get(account).ok_or_else(|| {
                ApiError::unavailable(format!("This worker does not serve account '{account}'."))
            })?;
            if !pool.serves(&input.model) {
                return Err(ApiError::model_not_found(&input.model));
            }
            return Ok(Arc::clone(pool));
        }
        let serving: Vec<&Arc<AccountPool>> =
            pools.values().filter(|p| p.serves(&input.model)).collect();
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
            .ok_or_else(|| {
                ApiError::upstream(format!("No healthy account serves '{}'.", input.model))
            })
    }

    pub fn slots(&self) -> SlotsReport {
        SlotsReport {
            worker_id: self.id.clone(),
            draining: self.is_draining(),
            accounts: self.pools().values().map(|p| p.slots()).collect(),
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
        let pools = self.pools();
        let closing = pools.values().map(|p| p.close(Duration::from_secs(2)));
        futures::future::join_all(closing).await;
    }
}

/// What every account pool of this worker shares.
struct PoolConfig {
    data_dir: PathBuf,
    handshake_timeout: Duration,
    queue_timeout: Duration,
    max_queue: usize,
}

impl PoolConfig {
    fn start(
        &self,
        account: &AccountConfig,
        scope: Shutdown,
    ) -> Result<Arc<AccountPool>, anyhow::Error> {
        let spec = agent_spec(account, &self.data_dir)?;
        let settings = PoolSettings {
            size: account.pool_size,
            handshake_timeout: self.handshake_timeout,
            queue_timeout: self.queue_timeout,
            max_queue: self.max_queue,
            permissions: drawbridge_acp::PermissionPolicy {
                allow_tools: account.agent.allow_tools.clone(),
                ..drawbridge_acp::PermissionPolicy::default()
            },
        };
        tracing::info!(
            account = account.id,
            pool_size = account.pool_size,
            command = spec.command,
            "starting account pool"
        );
        Ok(AccountPool::start(
            account.id.clone(),
            account.models.clone(),
            spec,
            settings,
            scope,
        ))
    }
}

fn continuation_options(
    c: &drawbridge_config::ContinuationConfig,
) -> drawbridge_core::continuation::ContinuationOptions {
    drawbridge_core::continuation::ContinuationOptions {
        enabled: c.enabled,
        max_rounds: c.max_rounds,
        context_threshold: c.context_threshold,
        min_chars: c.min_chars,
    }
}

fn sanitize_options(
    s: &drawbridge_config::SanitizeConfig,
) -> drawbridge_core::sanitize::SanitizeOptions {
    use drawbridge_config::SanitizeModeConfig as C;
    use drawbridge_core::sanitize::SanitizeMode as M;
    drawbridge_core::sanitize::SanitizeOptions {
        mode: match s.mode {
            C::Identity => M::Identity,
            C::Xml => M::Xml,
            C::Full => M::Full,
        },
        strip_xml_tags: s.strip_xml_tags,
        strip_builtin_tools: s.strip_builtin_tools,
    }
}

/// The agent spec for `account`: its command resolved, its own HOME and working directory
/// under `data_dir` unless configured.
fn agent_spec(account: &AccountConfig, data_dir: &Path) -> Result<AgentSpec, anyhow::Error> {
    let base = data_dir.join(&account.id);
    let home = absolute(
        &account
            .agent
            .home
            .clone()
            .unwrap_or_else(|| base.join("home")),
    )?;
    let cwd = absolute(
        &account
            .agent
            .cwd
            .clone()
            .unwrap_or_else(|| base.join("work")),
    )?;
    std::fs::create_dir_all(&cwd).map_err(|e| {
        anyhow::anyhow!(
            "accounts[{}]: cannot create {}: {e}",
            account.id,
            cwd.display()
        )
    })?;
    Ok(AgentSpec {
        command: resolve_command(&account.agent.command),
        args: account.agent.args.clone(),
        cwd,
        env: account.agent.env.clone(),
        home: Some(home),
    })
}

/// A bare name that is not on `PATH` but sits beside the running binary (as `mock-acp-agent`
/// does next to `drawbridge` in `target/`) is taken from there; anything else is unchanged.
fn resolve_command(command: &str) -> String {
    if command.contains('/') {
        return absolute(Path::new(command))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| command.to_owned());
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()));
    if on_path {
        return command.to_owned();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(command)))
        .filter(|candidate| candidate.is_file())
        .map(|candidate| candidate.display().to_string())
        .unwrap_or_else(|| command.to_owned())
}

fn absolute(path: &Path) -> Result<PathBuf, anyhow::Error> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}
