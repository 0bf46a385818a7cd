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

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    CancelNotification, ClientCapabilities, ContentBlock, ContentChunk, FileSystemCapabilities,
    Implementation, InitializeRequest, NewSessionRequest, PromptRequest, RequestPermissionRequest,
    SessionId, SessionNotification, SessionUpdate, TextContent,
};
use agent_client_protocol::{
    Agent, ByteStreams, Client, JsonRpcRequest, JsonRpcResponse, UntypedMessage,
    is_connection_terminated, is_incoming_transport_closed,
};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::AcpError;
use crate::kiro::KiroMetadata;
use crate::permission::PermissionPolicy;
use crate::spec::{AgentSpec, resolve_command};
use crate::stderr::StderrTail;
use crate::stdin::AgentStdin;
use crate::usage::UsageReport;

/// How long an error report waits for the exit status and the end of stderr once the
/// connection is gone, so the report says why the child died.
const DEATH_REPORT_WAIT: Duration = Duration::from_secs(2);
/// How long `shutdown` waits for the reaping after SIGKILL.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// Something the agent streamed during a prompt turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// An `agent_message_chunk` with text content.
    Text(String),
    /// An `agent_thought_chunk` with text content.
    Thought(String),
}

/// Why the agent ended a prompt turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model finished its answer.
    EndTurn,
    /// The model hit its output token limit.
    MaxTokens,
    /// The agent hit its limit of model requests in one turn.
    MaxTurnRequests,
    /// The agent refused to continue (content filtered).
    Refusal,
    /// The turn was cancelled (`session/cancel`).
    Cancelled,
}

impl StopReason {
    /// The stop reason for an ACP `stopReason` string; unknown values are `EndTurn`, and Kiro's
    /// `CONTENT_FILTERED` (any case) is `Refusal`.
    pub fn from_wire(stop_reason: &str) -> Self {
        match stop_reason {
            "end_turn" => Self::EndTurn,
            "max_tokens" => Self::MaxTokens,
            "max_turn_requests" => Self::MaxTurnRequests,
            "refusal" => Self::Refusal,
            "cancelled" => Self::Cancelled,
            other if other.eq_ignore_ascii_case("content_filtered") => Self::Refusal,
            other => {
                tracing::debug!(
                    stop_reason = other,
                    "unknown ACP stop reason, taken as end_turn"
                );
                Self::EndTurn
            }
        }
    }
}

/// An ACP session opened on one agent process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session(SessionId);

/// How a prompt turn ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptOutcome {
    /// The agent's stop reason.
    pub stop_reason: StopReason,
    /// What the agent reported about the turn's cost and context.
    pub usage: UsageReport,
}

/// `session/prompt` with a lenient answer: an unknown stop reason must not fail the turn.
#[derive(Debug, Clone, Serialize, Deserialize, agent_client_protocol::JsonRpcRequest)]
#[request(method = "session/prompt", response = PromptReply)]
#[serde(transparent)]
struct PromptCall(PromptRequest);

#[derive(Debug, Clone, Serialize, Deserialize, agent_client_protocol::JsonRpcResponse)]
#[serde(rename_all = "camelCase")]
struct PromptReply {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// The exit of the child.
#[derive(Debug, Clone, Copy)]
struct Exit {
    code: Option<i32>,
}

/// Where a session's updates go while its prompt runs.
struct SessionRoute {
    events: mpsc::Sender<AgentEvent>,
    usage: UsageReport,
    /// Cancelled when the prompt ends or is dropped, to abandon a send blocked on a full
    /// channel nobody reads any more.
    closed: CancellationToken,
}

/// State shared between the `AgentProcess` and its tasks.
#[derive(Default)]
struct Shared {
    sessions: Mutex<HashMap<SessionId, SessionRoute>>,
    stderr: Mutex<StderrTail>,
    /// The child has been reaped: its pid (and group id) may belong to someone else now.
    reaped: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn with_route(&self, session_id: &SessionId, update: impl FnOnce(&mut SessionRoute)) {
        if let Some(route) = lock(&self.sessions).get_mut(session_id) {
            update(route);
        }
    }

    /// Handle a `session/update` notification: runs in the dispatch loop, and awaits the
    /// consumer so that a slow consumer slows the agent down.
    async fn on_session_update(&self, notification: SessionNotification) {
        let session_id = &notification.session_id;
        let event = match notification.update {
            SessionUpdate::AgentMessageChunk(chunk) => text_of(chunk).map(AgentEvent::Text),
            SessionUpdate::AgentThoughtChunk(chunk) => text_of(chunk).map(AgentEvent::Thought),
            SessionUpdate::UsageUpdate(update) => {
                self.with_route(session_id, |route| {
                    route.usage.apply_usage_update(update.used, update.size);
                });
                None
            }
            SessionUpdate::SessionInfoUpdate(info) => {
                if let Some(meta) = info.meta.as_ref().or(notification.meta.as_ref()) {
                    self.with_route(session_id, |route| {
                        route.usage.apply_session_info_meta(meta)
                    });
                }
                None
            }
            _ => None,
        };
        let Some(event) = event else {
            return;
        };
        let target = lock(&self.sessions)
            .get(session_id)
            .map(|route| (route.events.clone(), route.closed.clone()));
        let Some((events, closed)) = target else {
            tracing::trace!(%session_id, "update for a session without a prompt, ignored");
            return;
        };
        tokio::select! {
            sent = events.send(event) => {
                if sent.is_err() {
                    tracing::trace!(%session_id, "event receiver dropped");
                }
            }
            () = closed.cancelled() => {}
        }
    }

    fn on_kiro_metadata(&self, metadata: &KiroMetadata) {
        let session_id = SessionId::new(metadata.session_id.as_str());
        self.with_route(&session_id, |route| {
            route.usage.apply_kiro_metadata(metadata)
        });
    }
}

fn text_of(chunk: ContentChunk) -> Option<String> {
    match chunk.content {
        ContentBlock::Text(text) => Some(text.text),
        _ => None,
    }
}

/// A registered prompt turn: routes the session's updates, and cancels the turn on the agent
/// when dropped before [`Turn::finish`] (the caller gave up on the prompt).
struct Turn<'a> {
    shared: &'a Shared,
    cx: &'a ConnectionTo<Agent>,
    session_id: SessionId,
    closed: CancellationToken,
    finished: bool,
    cancel_sent: bool,
}

impl<'a> Turn<'a> {
    fn register(
        shared: &'a Shared,
        cx: &'a ConnectionTo<Agent>,
        session_id: SessionId,
        events: mpsc::Sender<AgentEvent>,
    ) -> Self {
        let closed = CancellationToken::new();
        let route = SessionRoute {
            events,
            usage: UsageReport::default(),
            closed: closed.clone(),
        };
        lock(&shared.sessions).insert(session_id.clone(), route);
        Self {
            shared,
            cx,
            session_id,
            closed,
            finished: false,
            cancel_sent: false,
        }
    }

    /// Ask the agent to stop the turn (`session/cancel`). The turn stays registered: the agent
    /// still answers the prompt (with `cancelled`) and may send updates until then.
    fn cancel(&mut self) {
        if self.cancel_sent {
            return;
        }
        self.cancel_sent = true;
        tracing::debug!(session_id = %self.session_id, "cancelling the turn");
        if let Err(error) = self
            .cx
            .send_notification(CancelNotification::new(self.session_id.clone()))
        {
            tracing::debug!(%error, "could not send session/cancel");
        }
    }

    /// The turn is over (answered or failed): stop routing and return the usage it reported.
    fn finish(mut self) -> UsageReport {
        self.finished = true;
        lock(&self.shared.sessions)
            .remove(&self.session_id)
            .map(|route| route.usage)
            .unwrap_or_default()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.closed.cancel();
        if self.finished {
            return;
        }
        lock(&self.shared.sessions).remove(&self.session_id);
        tracing::debug!(session_id = %self.session_id, "prompt dropped");
        self.cancel();
    }
}

/// Everything but the connection handle; dropping it kills the process group.
struct Core {
    shared: Arc<Shared>,
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
    async fn death_report(&self) -> AcpError {
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

/// The ACP client: handlers for what the agent sends, then wait for the agent to hang up.
async fn run_connection(
    transport: impl agent_client_protocol::ConnectTo<Client> + 'static,
    shared: Arc<Shared>,
    policy: PermissionPolicy,
    cx_tx: oneshot::Sender<ConnectionTo<Agent>>,
) -> Result<(), agent_client_protocol::Error> {
    let updates = shared.clone();
    let metadata = shared;
    Client
        .v1()
        .name("drawbridge")
        .on_receive_notification(
            async move |notification: SessionNotification, _cx| {
                updates.on_session_update(notification).await;
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_notification(
            async move |notification: KiroMetadata, _cx| {
                metadata.on_kiro_metadata(&notification);
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_notification(
            // Unknown notifications (`_kiro.dev/commands/available`, ...) are ignored here
            // rather than left to the crate, which would park the ones naming a session in case
            // a session handler shows up (we never register one).
            async move |notification: UntypedMessage, _cx| {
                tracing::trace!(method = notification.method(), "ignoring notification");
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |request: RequestPermissionRequest, responder, _cx| {
                let answer = policy.decide(&request.tool_call, &request.options);
                tracing::debug!(session_id = %request.session_id, outcome = ?answer.outcome, "answered a permission request");
                responder.respond(answer)
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(transport, async move |cx: ConnectionTo<Agent>| {
            if cx_tx.send(cx.clone()).is_err() {
                return Ok(());
            }
            cx.incoming_closed().await;
            Ok(())
        })
        .await
}

/// One agent child process speaking ACP over its stdio.
///
/// Dropping it SIGKILLs the child's whole process group (synchronously) and ends its tasks;
/// [`AgentProcess::shutdown`] is the graceful way.
pub struct AgentProcess {
    core: Core,
    cx: ConnectionTo<Agent>,
    cwd: PathBuf,
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
        let process = Self {
            core,
            cx,
            cwd: spec.cwd.clone(),
        };
        process.handshake(deadline, handshake_timeout).await?;
        Ok(process)
    }

    async fn handshake(&self, deadline: Instant, timeout: Duration) -> Result<(), AcpError> {
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
                Ok(())
            }
        }
    }

    /// Send one request and wait for its answer, the child's death, the connection's end, or a
    /// broken stdin (the request may never have reached the child).
    async fn request<R: JsonRpcRequest>(
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

    /// Run one request as one fresh ACP session: `session/new` (the spec's cwd, no MCP
    /// servers), then `session/prompt` with `text` as one text block.
    ///
    /// Text and thought chunks of this session are sent to `events` as they arrive, each send
    /// awaited (backpressure): read `events` concurrently. Returns when the agent answers the
    /// prompt, with the usage it reported during the turn. Dropping the returned future before
    /// then sends `session/cancel` for the session. If the child dies, returns
    /// [`AcpError::Exited`] with its status and stderr tail.
    pub async fn prompt(
        &self,
        text: String,
        events: mpsc::Sender<AgentEvent>,
    ) -> Result<PromptOutcome, AcpError> {
        self.prompt_until(text, events, std::future::pending())
            .await
    }

    /// [`prompt`](Self::prompt), cancelled the ACP way when `cancel` resolves: `session/cancel`
    /// is sent and the prompt keeps waiting for the agent's answer (normally `stopReason:
    /// "cancelled"`), so the process can serve again once it has answered. Keep reading
    /// `events` until this returns; bound the wait with a timeout of your own.
    pub async fn prompt_until(
        &self,
        text: String,
        events: mpsc::Sender<AgentEvent>,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<PromptOutcome, AcpError> {
        let session = self.new_session().await?;
        self.prompt_in(&session, text, events, cancel).await
    }

    /// Open a fresh ACP session (`session/new` with the spec's cwd and no MCP servers).
    pub async fn new_session(&self) -> Result<Session, AcpError> {
        if !self.is_alive() {
            return Err(self.core.death_report().await);
        }
        let new_session = NewSessionRequest::new(self.cwd.clone()).mcp_servers(Vec::new());
        let session_id = self.request("session/new", new_session).await?.session_id;
        tracing::debug!(%session_id, "session created");
        Ok(Session(session_id))
    }

    /// One more turn on an existing session: the agent keeps the session's earlier turns in
    /// its context (how a truncated answer is continued). Events, usage and cancellation as
    /// in [`prompt_until`](Self::prompt_until).
    pub async fn prompt_in(
        &self,
        session: &Session,
        text: String,
        events: mpsc::Sender<AgentEvent>,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<PromptOutcome, AcpError> {
        if !self.is_alive() {
            return Err(self.core.death_report().await);
        }
        let session_id = session.0.clone();
        let mut turn = Turn::register(&self.core.shared, &self.cx, session_id.clone(), events);
        let prompt =
            PromptRequest::new(session_id, vec![ContentBlock::Text(TextContent::new(text))]);
        let reply = self.request("session/prompt", PromptCall(prompt));
        tokio::pin!(reply);
        tokio::pin!(cancel);
        let reply = tokio::select! {
            reply = &mut reply => reply,
            () = &mut cancel => {
                turn.cancel();
                reply.await
            }
        };
        let usage = turn.finish();
        let reply = reply?;
        Ok(PromptOutcome {
            stop_reason: StopReason::from_wire(reply.stop_reason.as_deref().unwrap_or_default()),
            usage,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use agent_client_protocol::JsonRpcMessage as _;

    #[test]
    fn stop_reasons_map() {
        assert_eq!(StopReason::from_wire("end_turn"), StopReason::EndTurn);
        assert_eq!(StopReason::from_wire("max_tokens"), StopReason::MaxTokens);
        assert_eq!(
            StopReason::from_wire("max_turn_requests"),
            StopReason::MaxTurnRequests
        );
        assert_eq!(StopReason::from_wire("refusal"), StopReason::Refusal);
        assert_eq!(StopReason::from_wire("cancelled"), StopReason::Cancelled);
        assert_eq!(
            StopReason::from_wire("CONTENT_FILTERED"),
            StopReason::Refusal
        );
        assert_eq!(StopReason::from_wire("something_new"), StopReason::EndTurn);
        assert_eq!(StopReason::from_wire(""), StopReason::EndTurn);
    }

    #[test]
    fn prompt_reply_is_lenient() {
        let reply = PromptReply::from_json(
            "session/prompt",
            serde_json::json!({ "stopReason": "brand_new", "extra": 1 }),
        )
        .unwrap();
        assert_eq!(reply.stop_reason.as_deref(), Some("brand_new"));
        let reply = PromptReply::from_json("session/prompt", serde_json::json!({})).unwrap();
        assert_eq!(reply.stop_reason, None);
    }

    #[test]
    fn prompt_call_serializes_as_a_prompt_request() {
        let call = PromptCall(PromptRequest::new(
            "s1",
            vec![ContentBlock::Text(TextContent::new("hi"))],
        ));
        let untyped = call.to_untyped_message().unwrap();
        assert_eq!(untyped.method(), "session/prompt");
        assert_eq!(
            untyped.params(),
            &serde_json::json!({
                "sessionId": "s1",
                "prompt": [{ "type": "text", "text": "hi" }],
            })
        );
    }
}
