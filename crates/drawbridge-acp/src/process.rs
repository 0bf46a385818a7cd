//! One agent child process and the ACP connection over its stdio.
//!
//! Three tasks run per process, all on the process's own [`TaskTracker`] and all ending when
//! the process ends or the [`AgentProcess`] is dropped:
//!
//! - the waiter owns the `Child`: it reaps it, sweeps the rest of its process group, and
//!   publishes the exit status;
//! - the stderr drain keeps the last few KiB of stderr so the child never blocks on it;
//! - the connection runs the ACP client (dispatch loop, handlers, transport) until the child's
//!   stdout closes or we stop it. A broken stdin does not end it (see [`AgentStdin`]): what the
//!   child wrote before dying is still read and dispatched.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    ClientCapabilities, FileSystemCapabilities, Implementation, InitializeRequest,
};
use agent_client_protocol::{
    Agent, ByteStreams, Client, JsonRpcRequest, JsonRpcResponse, is_connection_terminated,
    is_incoming_transport_closed,
};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{Shared, lock, run_connection};
use crate::engine::{AgentFacts, Engine, ModelCatalogue};
use crate::error::AcpError;
use crate::permission::PermissionPolicy;
use crate::spec::{AgentSpec, resolve_command};
use crate::stdin::AgentStdin;

/// How long an error report waits for the exit status and the end of stderr once the
/// connection is gone, so the report says why the child died.
const DEATH_REPORT_WAIT: Duration = Duration::from_secs(2);
/// How long `shutdown` waits for the reaping after SIGKILL.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// The exit of the child.
#[derive(Debug, Clone, Copy)]
struct Exit {
    code: Option<i32>,
}

/// Everything but the connection handle; dropping it kills the process group.
pub(crate) struct Core {
    pub(crate) shared: Arc<Shared>,
    pid: Option<u32>,
    pgid: Option<Pid>,
    exit: watch::Receiver<Option<Exit>>,
    stderr_done: CancellationToken,
    connection_done: CancellationToken,
    /// A write to the child's stdin met a broken pipe: nothing we send reaches it any more.
    stdin_broken: CancellationToken,
    stop_connection: CancellationToken,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Core {
    fn kill_group(&self) {
        if self.shared.reaped.load(Ordering::Acquire) {
            return;
        }
        kill_group(self.pgid);
    }

    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Why the process is unusable: its exit status (waited for, briefly) and stderr tail.
    pub(crate) async fn death_report(&self) -> AcpError {
        let deadline = Instant::now() + DEATH_REPORT_WAIT;
        let mut exit = self.exit.clone();
        let status = tokio::time::timeout_at(deadline, exit_code(&mut exit))
            .await
            .ok()
            .flatten();
        // The child's last words may still be in the pipe.
        let _ = tokio::time::timeout_at(deadline, self.stderr_done.cancelled()).await;
        // And so may its last ACP messages: let the connection dispatch everything it read
        // before EOF, so a prompt that fails here has delivered every chunk the agent sent.
        let _ = tokio::time::timeout_at(deadline, self.connection_done.cancelled()).await;
        AcpError::Exited {
            status,
            stderr_tail: self.stderr_tail(),
        }
    }

    fn stderr_tail(&self) -> String {
        lock(&self.shared.stderr).text()
    }

    fn spawn_waiter(&self, mut child: Child, exit_tx: watch::Sender<Option<Exit>>) {
        let cancel = self.cancel.clone();
        let shared = self.shared.clone();
        let pgid = self.pgid;
        let pid = self.pid;
        self.tracker.spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                () = cancel.cancelled() => {
                    if let Err(error) = child.start_kill() {
                        tracing::debug!(%error, "could not kill the agent");
                    }
                    child.wait().await
                }
            };
            // The leader is gone; what it leaves in its group (kiro-cli-chat) must go too. The
            // group id stays reserved while any member lives, so this cannot hit a stranger.
            kill_group(pgid);
            shared.reaped.store(true, Ordering::Release);
            let code = match &status {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt as _;
                    tracing::info!(?pid, code = ?status.code(), signal = ?status.signal(), "agent process exited");
                    status.code()
                }
                Err(error) => {
                    tracing::warn!(?pid, %error, "could not wait for the agent process");
                    None
                }
            };
            exit_tx.send_replace(Some(Exit { code }));
        });
    }

    fn spawn_stderr_drain(&self, mut stderr: ChildStderr) {
        let cancel = self.cancel.clone();
        let shared = self.shared.clone();
        let done = self.stderr_done.clone();
        self.tracker.spawn(async move {
            let mut buf = vec![0_u8; 4096];
            loop {
                let read = tokio::select! {
                    read = stderr.read(&mut buf) => read,
                    () = cancel.cancelled() => break,
                };
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = buf.get(..n).unwrap_or_default();
                        tracing::debug!(
                            target: "drawbridge_acp::agent_stderr",
                            "{}",
                            String::from_utf8_lossy(chunk).trim_end()
                        );
                        lock(&shared.stderr).push(chunk);
                    }
                }
            }
            done.cancel();
        });
    }

    fn spawn_connection<T>(
        &self,
        transport: T,
        policy: PermissionPolicy,
        cx_tx: oneshot::Sender<ConnectionTo<Agent>>,
    ) where
        T: agent_client_protocol::ConnectTo<Client> + 'static,
    {
        let shared = self.shared.clone();
        let stop = self.stop_connection.clone();
        let done = self.connection_done.clone();
        self.tracker.spawn(async move {
            let connection = Box::pin(run_connection(transport, shared, policy, cx_tx));
            tokio::select! {
                result = connection => match result {
                    Ok(()) => tracing::debug!("agent closed its stdout"),
                    Err(error) => tracing::warn!(%error, "agent connection failed"),
                },
                () = stop.cancelled() => tracing::debug!("agent connection stopped"),
            }
            done.cancel();
        });
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.kill_group();
        self.cancel.cancel();
        self.tracker.close();
    }
}

fn kill_group(pgid: Option<Pid>) {
    let Some(pgid) = pgid else {
        return;
    };
    match killpg(pgid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => tracing::warn!(%pgid, %error, "could not kill the agent's process group"),
    }
}

/// One agent child process speaking ACP over its stdio.
///
/// Dropping it SIGKILLs the child's whole process group (synchronously) and ends its tasks;
/// [`AgentProcess::shutdown`] is the graceful way.
pub struct AgentProcess {
    pub(crate) core: Core,
    pub(crate) cx: ConnectionTo<Agent>,
    pub(crate) cwd: PathBuf,
    /// What `initialize` told us about the agent.
    pub(crate) facts: AgentFacts,
    /// The model catalogue of the last `session/new`.
    pub(crate) models: Mutex<Option<ModelCatalogue>>,
}

impl std::fmt::Debug for AgentProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentProcess")
            .field("pid", &self.pid())
            .field("alive", &self.is_alive())
            .field("cwd", &self.cwd)
            .finish_non_exhaustive()
    }
}

impl AgentProcess {
    /// Spawn the child in its own process group, connect, and send `initialize` (protocol v1,
    /// no fs or terminal capabilities) within `handshake_timeout`. Permission requests are all
    /// refused (see [`PermissionPolicy`]).
    pub async fn start(spec: &AgentSpec, handshake_timeout: Duration) -> Result<Self, AcpError> {
        Self::start_with_policy(spec, handshake_timeout, PermissionPolicy::default()).await
    }

    /// [`AgentProcess::start`] with a permission policy other than "refuse everything".
    pub async fn start_with_policy(
        spec: &AgentSpec,
        handshake_timeout: Duration,
        policy: PermissionPolicy,
    ) -> Result<Self, AcpError> {
        let deadline = Instant::now() + handshake_timeout;
        let spawn_error = |source| AcpError::Spawn {
            command: spec.command.clone(),
            source,
        };
        spec.prepare_home().map_err(spawn_error)?;
        let env = spec.child_env(|key| std::env::var(key).ok());
        let program = resolve_command(&spec.command, env.get("PATH").map(OsStr::new))
            .and_then(std::path::absolute)
            .map_err(spawn_error)?;
        let mut child = Command::new(&program)
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let pid = child.id();
        let stdio = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (exit_tx, exit_rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let core = Core {
            shared: Arc::default(),
            pid,
            pgid: pid
                .and_then(|pid| i32::try_from(pid).ok())
                .map(Pid::from_raw),
            exit: exit_rx,
            stderr_done: CancellationToken::new(),
            connection_done: CancellationToken::new(),
            stdin_broken: CancellationToken::new(),
            stop_connection: cancel.child_token(),
            cancel,
            tracker: TaskTracker::new(),
        };
        // From here on, every early return drops `core`, which kills the group.
        core.spawn_waiter(child, exit_tx);
        let (Some(stdin), Some(stdout), Some(stderr)) = stdio else {
            return Err(AcpError::Protocol(
                "the child's stdio pipes are missing".to_owned(),
            ));
        };
        tracing::info!(?pid, program = %program.display(), cwd = %spec.cwd.display(), "agent process spawned");
        core.spawn_stderr_drain(stderr);
        let (cx_tx, cx_rx) = oneshot::channel();
        let stdin = AgentStdin::new(stdin, core.stdin_broken.clone());
        let transport = ByteStreams::new(stdin.compat_write(), stdout.compat());
        core.spawn_connection(transport, policy, cx_tx);
        let cx = match tokio::time::timeout_at(deadline, cx_rx).await {
            Ok(Ok(cx)) => cx,
            Ok(Err(_)) => return Err(core.death_report().await),
            Err(_) => return Err(handshake_timeout_error(&core, handshake_timeout)),
        };
        let mut process = Self {
            core,
            cx,
            cwd: spec.cwd.clone(),
            facts: AgentFacts {
                engine: Engine::Other,
                extension_methods: Vec::new(),
                mcp_http: false,
            },
            models: Mutex::new(None),
        };
        process.facts = process.handshake(deadline, handshake_timeout).await?;
        tracing::info!(pid = ?process.pid(), engine = ?process.facts.engine, "agent ready");
        Ok(process)
    }

    async fn handshake(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<AgentFacts, AcpError> {
        let capabilities = ClientCapabilities::new()
            .fs(FileSystemCapabilities::new()
                .read_text_file(false)
                .write_text_file(false))
            .terminal(false);
        let request = InitializeRequest::new(ProtocolVersion::V1)
            .client_capabilities(capabilities)
            .client_info(Implementation::new("drawbridge", env!("CARGO_PKG_VERSION")));
        match tokio::time::timeout_at(deadline, self.request("initialize", request)).await {
            Err(_) => Err(handshake_timeout_error(&self.core, timeout)),
            Ok(Err(error @ AcpError::Exited { .. })) => Err(error),
            Ok(Err(error)) => Err(AcpError::Handshake(error.to_string())),
            Ok(Ok(response)) if response.protocol_version != ProtocolVersion::V1 => {
                Err(AcpError::Handshake(format!(
                    "the agent chose protocol version {:?}, we speak 1",
                    response.protocol_version
                )))
            }
            Ok(Ok(response)) => {
                tracing::debug!(agent = ?response.agent_info, "ACP handshake done");
                Ok(AgentFacts::from_initialize(&response))
            }
        }
    }

    /// Send one request and wait for its answer, the child's death, the connection's end, or a
    /// broken stdin (the request may never have reached the child).
    pub(crate) async fn request<R: JsonRpcRequest>(
        &self,
        method: &'static str,
        request: R,
    ) -> Result<R::Response, AcpError>
    where
        R::Response: JsonRpcResponse,
    {
        let answer = self.cx.send_request(request).block_task();
        let mut exit = self.core.exit.clone();
        tokio::select! {
            biased;
            answer = answer => match answer {
                Ok(response) => Ok(response),
                Err(error) if is_incoming_transport_closed(&error) || is_connection_terminated(&error) => {
                    Err(self.core.death_report().await)
                }
                Err(error) => Err(AcpError::Agent {
                    method,
                    code: error.code.into(),
                    message: error.message,
                }),
            },
            _ = exit_code(&mut exit) => Err(self.core.death_report().await),
            () = self.core.connection_done.cancelled() => Err(self.core.death_report().await),
            () = self.core.stdin_broken.cancelled() => Err(self.core.death_report().await),
        }
    }

    /// Which engine answered `initialize` (Kiro v2, Kiro v3, or another ACP agent).
    pub fn engine(&self) -> Engine {
        self.facts.engine
    }

    /// The models the last `session/new` announced, `None` when it announced none (agents
    /// without a catalogue, or a cold Kiro start). Refreshed by every
    /// [`new_session`](Self::new_session).
    pub fn models(&self) -> Option<ModelCatalogue> {
        lock(&self.models).clone()
    }

    /// Whether the agent takes HTTP MCP servers in `session/new` (it announced
    /// `mcpCapabilities.http`): the client's tools can be served to it over MCP.
    pub fn takes_http_mcp(&self) -> bool {
        self.facts.mcp_http
    }

    /// Whether [`delete_session`](Self::delete_session) deletes anything on this agent.
    pub fn deletes_sessions(&self) -> bool {
        self.facts.deletes_sessions()
    }

    /// The method of the last request the agent sent that the client could not serve (for
    /// example Kiro v3's `_kiro/auth/getAccessToken` when it is not started with
    /// `--auth-method cli`); every such request was answered with a JSON-RPC error. An agent
    /// stuck on one may never answer its prompt: report it as the reason it is unhealthy.
    pub fn unserved_request(&self) -> Option<String> {
        lock(&self.core.shared.unserved).clone()
    }

    /// Whether the child is running and its connection open both ways.
    pub fn is_alive(&self) -> bool {
        !self.core.exited()
            && !self.core.connection_done.is_cancelled()
            && !self.core.stdin_broken.is_cancelled()
    }

    /// The child's pid (also its process group id), `None` once it has been reaped.
    pub fn pid(&self) -> Option<u32> {
        if self.core.shared.reaped.load(Ordering::Acquire) {
            None
        } else {
            self.core.pid
        }
    }

    /// The last ~4 KiB of the child's stderr.
    pub fn stderr_tail(&self) -> String {
        self.core.stderr_tail()
    }

    /// Close the child's stdin, give it `grace` to exit, then SIGKILL its process group; wait
    /// (bounded) for the reaping and for this process's tasks to end.
    pub async fn shutdown(self, grace: Duration) {
        let Self { core, cx, .. } = self;
        drop(cx);
        // Dropping the connection drops the transport, which closes the child's stdin.
        core.stop_connection.cancel();
        let mut exit = core.exit.clone();
        if tokio::time::timeout(grace, exit_code(&mut exit))
            .await
            .is_err()
        {
            tracing::info!(pid = ?core.pid, "agent did not exit within the grace period, killing it");
            core.kill_group();
        }
        let _ = tokio::time::timeout(REAP_WAIT, exit_code(&mut exit)).await;
        core.cancel.cancel();
        core.tracker.close();
        let _ = tokio::time::timeout(REAP_WAIT, core.tracker.wait()).await;
    }
}

fn handshake_timeout_error(core: &Core, timeout: Duration) -> AcpError {
    AcpError::Handshake(format!(
        "no answer to initialize within {timeout:?}; stderr tail: {}",
        core.stderr_tail().trim()
    ))
}

/// Wait until the child has exited; its exit code, if it had one. The watch guard is dropped
/// before this returns, so the futures that await it stay `Send`.
async fn exit_code(exit: &mut tokio::sync::watch::Receiver<Option<Exit>>) -> Option<i32> {
    exit.wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|exit| exit.as_ref().and_then(|exit| exit.code))
}
