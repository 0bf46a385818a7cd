//! The ACP agent: handlers for the client's requests and the scripted prompt turns.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    AgentCapabilities, AuthenticateRequest, AuthenticateResponse, CancelNotification, ContentBlock,
    ContentChunk, CreateTerminalRequest, Implementation, InitializeRequest, InitializeResponse,
    McpCapabilities, NewSessionRequest, NewSessionResponse, PermissionOption, PermissionOptionKind,
    PromptRequest, PromptResponse, ReadTextFileRequest, RequestPermissionOutcome,
    RequestPermissionRequest, SessionId, SessionInfoUpdate, SessionNotification, SessionUpdate,
    StopReason, TextContent, ToolCallUpdate, ToolCallUpdateFields, Usage, UsageUpdate,
};
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{
    Agent, Client, JsonRpcNotification, JsonRpcRequest, Lines, RequestCancellation, UntypedMessage,
};
use drawbridge_acp::kiro::{self, KiroMetadata, MeteringUsage};
use futures::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::custom_agent::CustomAgent;
use crate::directive::{self, Behavior, Directive};
use crate::kiro::{self as mock_kiro, KiroEngine, KiroSession};

mod auth;
mod busy;
mod call;
mod dialect;
mod kiro_turn;
mod turn;

use turn::Turn;

/// What the agent does when a prompt names no behaviour.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    /// The behaviour for prompts without a directive (`MOCK_ACP_BEHAVIOR`, else `echo`).
    pub default_directive: Directive,
    /// The delay between chunks when a directive sets none (`MOCK_ACP_DELAY_MS`).
    pub delay: Duration,
    /// The Kiro dialect to speak (`--kiro-engine`), `None` for the plain mock of old.
    pub kiro: Option<KiroEngine>,
    /// The model catalogue (`MOCK_ACP_MODELS`); empty means [`crate::DEFAULT_MODELS`].
    pub models: Vec<String>,
    /// The first `session/new` announces no model catalogue, like a cold Kiro start.
    pub cold_catalogue: bool,
    /// `echo` answers start with `[MODEL] `, the session's model (`--echo-model`).
    pub echo_model: bool,
    /// Where v3 sessions are persisted (`$HOME/.kiro/sessions`) and agent files are read
    /// (`$HOME/.kiro/agents`); none: neither.
    pub home: Option<PathBuf>,
    /// v3 launched with `--auth-method cli`: it never asks the client for an access token.
    /// Without it a v3 agent sends `_kiro/auth/getAccessToken` before its first answer and
    /// stalls the turn if the client cannot give one.
    pub auth_cli: bool,
    /// v2 `--agent NAME`: the custom agent every session runs.
    pub agent: Option<CustomAgent>,
    /// v2 `--model ID`: the sessions' initial model (else the catalogue's first).
    pub model: Option<String>,
    /// `--no-mcp-http`: `initialize` announces no HTTP MCP servers and `session/new` ignores
    /// the `http` ones it is given.
    pub no_mcp_http: bool,
}

impl MockConfig {
    /// The model catalogue in force; the first is the default.
    pub fn models(&self) -> Vec<String> {
        if self.models.is_empty() {
            mock_kiro::DEFAULT_MODELS.map(str::to_owned).to_vec()
        } else {
            self.models.clone()
        }
    }

    /// The catalogue's first model, without copying the catalogue (every session needs it).
    pub fn default_model(&self) -> &str {
        self.models
            .first()
            .map_or(mock_kiro::DEFAULT_MODELS[0], String::as_str)
    }

    /// Whether `model` is in the catalogue.
    pub fn has_model(&self, model: &str) -> bool {
        if self.models.is_empty() {
            mock_kiro::DEFAULT_MODELS.contains(&model)
        } else {
            self.models.iter().any(|m| m == model)
        }
    }
}

const DEFAULT_CHUNKS: u64 = 3;
/// JSON-RPC "internal error": how agents report upstream trouble.
const INTERNAL_ERROR: i32 = -32603;
const DEFAULT_CREDITS: f64 = 0.01;
const CRASH_STATUS: i32 = 3;
const CRASH_MESSAGE: &str = "mock-acp-agent: crashing as asked\n";
const ARTIFACT_CHUNKS: [&str; 6] = [
    "Here is the answer.<thin",
    "king>internal reas",
    "oning</thinking> The result",
    " is 42.<tool_",
    "use>{\"name\":\"fs_read\"}</tool",
    "_use>",
];

/// Never sent to the client: the outgoing sink exits the process when it meets this
/// notification, which it does only after writing everything queued before it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonRpcNotification)]
#[notification(method = "_mock/crash")]
struct CrashNow {}

const CRASH_METHOD: &str = "_mock/crash";

fn is_crash_line(line: &str) -> bool {
    line.contains(CRASH_METHOD)
        && serde_json::from_str::<serde_json::Value>(line).is_ok_and(|message| {
            message.get("method").and_then(serde_json::Value::as_str) == Some(CRASH_METHOD)
        })
}

fn crash_now() -> ! {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(CRASH_MESSAGE.as_bytes());
    let _ = stderr.flush();
    std::process::exit(CRASH_STATUS)
}

struct SessionState {
    cwd: PathBuf,
    /// The turn in progress: its id and its cancel token.
    turn: Option<(u64, CancellationToken)>,
    /// A `max_tokens ... rounds=R` answer still to be continued on this session.
    truncated: Option<Truncated>,
    /// The model, mode and autopilot of the session.
    kiro: KiroSession,
    /// The HTTP MCP servers `session/new` gave (the `call` directive uses the first).
    mcp_servers: Arc<[crate::mcp::HttpServer]>,
}

/// An answer cut by `max_tokens rounds=R`: where the next turn resumes it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Truncated {
    next: u64,
    n: u64,
    rounds_left: u64,
}

#[derive(Default)]
struct State {
    config: MockConfig,
    sessions: Mutex<HashMap<SessionId, SessionState>>,
    prompts: AtomicU64,
    /// The bytes (UTF-8) of prompt text received so far: every `session/prompt`'s text blocks,
    /// counted when it arrives (a `stats` prompt counts itself).
    prompt_bytes: AtomicU64,
    cancels: AtomicU64,
    turn_ids: AtomicU64,
    /// `session/new` requests answered so far.
    sessions_opened: AtomicU64,
    /// v3: the client gave an access token (`_kiro/auth/getAccessToken` answered), so turns
    /// stop asking.
    authorized: std::sync::atomic::AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn active_turns(&self) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|session| session.turn.is_some())
            .count()
    }

    fn end_turn(&self, session_id: &SessionId, turn_id: u64) {
        if let Some(session) = lock(&self.sessions).get_mut(session_id)
            && session.turn.as_ref().is_some_and(|(id, _)| *id == turn_id)
        {
            session.turn = None;
        }
    }
}

/// Serve ACP on `input`/`output` until `input` reaches EOF.
pub async fn serve<R, W>(
    input: R,
    output: W,
    config: MockConfig,
) -> Result<(), agent_client_protocol::Error>
where
    R: AsyncRead + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let incoming = Box::pin(futures::io::BufReader::new(input).lines());
    let outgoing = Box::pin(futures::sink::unfold(
        output,
        async |mut output, line: String| {
            if is_crash_line(&line) {
                output.flush().await?;
                crash_now();
            }
            // One write per line: on a pipe every write is a system call.
            let mut line = line;
            line.push('\n');
            output.write_all(line.as_bytes()).await?;
            output.flush().await?;
            Ok::<_, std::io::Error>(output)
        },
    ));
    let state = Arc::new(State {
        config,
        ..State::default()
    });
    let kiro_engine = state.config.kiro;
    let mcp_http = !state.config.no_mcp_http;
    let dialect = state.clone();
    let sessions = state.clone();
    let prompts = state.clone();
    let cancels = state;
    Agent
        .v1()
        .name("mock-acp-agent")
        .on_receive_request(
            async move |request: dialect::KiroRequest,
                        responder: Responder<serde_json::Value>,
                        cx: ConnectionTo<Client>| {
                dialect.on_kiro_request(request, responder, &cx)
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: InitializeRequest,
                        responder: Responder<InitializeResponse>,
                        _cx| {
                tracing::debug!(client = ?request.client_info, "initialize");
                // Kiro's result, parsed into the crate's type: the crate must see
                // `initialize` answered by its own handler to accept what follows.
                if let Some(engine) = kiro_engine {
                    let mut result = mock_kiro::initialize_result(engine);
                    result["agentCapabilities"]["mcpCapabilities"]["http"] = json!(mcp_http);
                    let result = serde_json::from_value(result)
                        .map_err(agent_client_protocol::Error::into_internal_error)?;
                    return responder.respond(result);
                }
                responder.respond(
                    InitializeResponse::new(ProtocolVersion::V1)
                        .agent_capabilities(
                            AgentCapabilities::new()
                                .mcp_capabilities(McpCapabilities::new().http(mcp_http).sse(false)),
                        )
                        .agent_info(Implementation::new(
                            "mock-acp-agent",
                            env!("CARGO_PKG_VERSION"),
                        )),
                )
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async |_request: AuthenticateRequest,
                   responder: Responder<AuthenticateResponse>,
                   _cx| { responder.respond(AuthenticateResponse::new()) },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: NewSessionRequest,
                        responder: Responder<NewSessionResponse>,
                        _cx| {
                let session_id = SessionId::new(uuid::Uuid::new_v4().to_string());
                tracing::debug!(%session_id, cwd = %request.cwd.display(), "session/new");
                sessions.sessions_opened.fetch_add(1, Ordering::Relaxed);
                let kiro = KiroSession::new(None, sessions.config.default_model());
                // Checked already (the dialect handler sees `session/new` first).
                let servers = serde_json::to_value(&request.mcp_servers)
                    .map_err(agent_client_protocol::Error::into_internal_error)?;
                let mcp_servers =
                    crate::mcp::http_servers(Some(&servers), mcp_http).map_err(|reason| {
                        agent_client_protocol::Error::invalid_params().data(reason)
                    })?;
                lock(&sessions.sessions).insert(
                    session_id.clone(),
                    SessionState {
                        cwd: request.cwd,
                        turn: None,
                        truncated: None,
                        kiro,
                        mcp_servers: mcp_servers.into(),
                    },
                );
                responder.respond(NewSessionResponse::new(session_id))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: PromptRequest,
                        responder: Responder<PromptResponse>,
                        cx: ConnectionTo<Client>| {
                start_turn(&prompts, request, responder, cx)
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            async move |notification: CancelNotification, _cx| {
                cancels.cancels.fetch_add(1, Ordering::Relaxed);
                let session_id = &notification.session_id;
                tracing::info!(%session_id, "session/cancel");
                if let Some(SessionState {
                    turn: Some((_, stop)),
                    ..
                }) = lock(&cancels.sessions).get(session_id)
                {
                    stop.cancel();
                }
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .connect_to(Lines::new(outgoing, incoming))
        .await
}

/// Handle `session/prompt` in the dispatch loop: check it, register the turn, and run the turn
/// in its own task.
fn start_turn(
    state: &Arc<State>,
    request: PromptRequest,
    responder: Responder<PromptResponse>,
    cx: ConnectionTo<Client>,
) -> Result<(), agent_client_protocol::Error> {
    state.prompts.fetch_add(1, Ordering::Relaxed);
    let text: String = request
        .prompt
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(text) => Some(text.text.as_str()),
            _ => None,
        })
        .collect();
    state.prompt_bytes.fetch_add(
        u64::try_from(text.len()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    let (explicit, directive, directive_at, rest) = match directive::extract_at(&text) {
        Ok((directive, rest)) => {
            let at = directive.as_ref().map_or(0, |(_, at)| *at);
            (
                directive.is_some(),
                directive
                    .map(|(directive, _)| directive)
                    .unwrap_or_else(|| state.config.default_directive.clone())
                    .in_force(),
                at,
                rest,
            )
        }
        Err(error) => {
            return responder.respond_with_error(
                agent_client_protocol::Error::invalid_params().data(error.to_string()),
            );
        }
    };
    let turn_id = state.turn_ids.fetch_add(1, Ordering::Relaxed);
    let stop = CancellationToken::new();
    let cwd = {
        let mut sessions = lock(&state.sessions);
        let Some(session) = sessions.get_mut(&request.session_id) else {
            drop(sessions);
            return responder.respond_with_error(
                agent_client_protocol::Error::invalid_params().data("unknown session"),
            );
        };
        // Kiro v2 takes any model id and fails the prompt on one it does not have.
        if state.config.kiro == Some(KiroEngine::V2) && !state.config.has_model(&session.kiro.model)
        {
            let model = session.kiro.model.clone();
            drop(sessions);
            return responder.respond_with_error(agent_client_protocol::Error::new(
                INTERNAL_ERROR,
                format!("Model '{model}' not found"),
            ));
        }
        session.turn = Some((turn_id, stop.clone()));
        // A multi-round truncated answer: a new one starts, or a plain prompt continues it.
        let resume = match (&directive, explicit) {
            (d, true) if d.behavior == Behavior::MaxTokens && d.rounds.is_some() => {
                Some(Truncated {
                    next: 0,
                    n: d.n.unwrap_or(DEFAULT_CHUNKS),
                    rounds_left: d.rounds.unwrap_or(1).max(1),
                })
            }
            (_, true) => None,
            (_, false) => session.truncated,
        };
        session.truncated = resume
            .map(|t| Truncated {
                next: t.next + t.n,
                rounds_left: t.rounds_left - 1,
                ..t
            })
            .filter(|t| t.rounds_left > 0);
        (
            session.cwd.clone(),
            resume,
            session.kiro.clone(),
            session.mcp_servers.clone(),
        )
    };
    let (cwd, resume, kiro, mcp_servers) = cwd;
    tracing::debug!(session_id = %request.session_id, ?directive, "session/prompt");
    let turn = Turn {
        delay: directive
            .delay_ms
            .map_or(state.config.delay, Duration::from_millis),
        cx: cx.clone(),
        state: state.clone(),
        session_id: request.session_id,
        turn_id,
        cwd,
        prompt_chars: text.chars().count(),
        text: rest,
        directive_at,
        directive,
        resume,
        stop,
        request_cancel: responder.cancellation(),
        started: Instant::now(),
        engine: state.config.kiro,
        kiro,
        mcp_servers,
    };
    cx.spawn(turn.run(responder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_sentinel_method_matches_the_type() {
        use agent_client_protocol::JsonRpcMessage as _;
        assert_eq!(CrashNow {}.method(), CRASH_METHOD);
    }

    #[test]
    fn crash_sentinel_is_recognised_exactly() {
        assert!(is_crash_line(
            r#"{"jsonrpc":"2.0","method":"_mock/crash","params":{}}"#
        ));
        assert!(!is_crash_line(
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"text":"\"_mock/crash\""}}"#
        ));
    }
}
