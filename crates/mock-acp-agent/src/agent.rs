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
    NewSessionRequest, NewSessionResponse, PermissionOption, PermissionOptionKind, PromptRequest,
    PromptResponse, ReadTextFileRequest, RequestPermissionOutcome, RequestPermissionRequest,
    SessionId, SessionInfoUpdate, SessionNotification, SessionUpdate, StopReason, TextContent,
    ToolCallUpdate, ToolCallUpdateFields, UsageUpdate,
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

use crate::directive::{self, Behavior, Directive};

/// What the agent does when a prompt names no behaviour.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    /// The behaviour for prompts without a directive (`MOCK_ACP_BEHAVIOR`, else `echo`).
    pub default_directive: Directive,
    /// The delay between chunks when a directive sets none (`MOCK_ACP_DELAY_MS`).
    pub delay: Duration,
}

const DEFAULT_CHUNKS: u64 = 3;
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
    cancels: AtomicU64,
    turn_ids: AtomicU64,
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
            output.write_all(line.as_bytes()).await?;
            output.write_all(b"\n").await?;
            output.flush().await?;
            Ok::<_, std::io::Error>(output)
        },
    ));
    let state = Arc::new(State {
        config,
        ..State::default()
    });
    let sessions = state.clone();
    let prompts = state.clone();
    let cancels = state;
    Agent
        .v1()
        .name("mock-acp-agent")
        .on_receive_request(
            async |request: InitializeRequest, responder: Responder<InitializeResponse>, _cx| {
                tracing::debug!(client = ?request.client_info, "initialize");
                responder.respond(
                    InitializeResponse::new(ProtocolVersion::V1)
                        .agent_capabilities(AgentCapabilities::new())
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
                lock(&sessions.sessions).insert(
                    session_id.clone(),
                    SessionState {
                        cwd: request.cwd,
                        turn: None,
                        truncated: None,
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
    let (explicit, directive, rest) = match directive::extract(&text) {
        Ok((directive, rest)) => (
            directive.is_some(),
            directive
                .unwrap_or_else(|| state.config.default_directive.clone())
                .in_force(),
            rest,
        ),
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
        (session.cwd.clone(), resume)
    };
    let (cwd, resume) = cwd;
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
        directive,
        resume,
        stop,
        request_cancel: responder.cancellation(),
        started: Instant::now(),
    };
    cx.spawn(turn.run(responder))
}

/// How a turn's script ended.
enum Finish {
    Stop(StopReason),
    /// Answer the prompt with this JSON-RPC error (code -32603, like Kiro's upstream errors).
    Fail(String),
    Crash,
    Hang,
}

/// What Kiro says when an account's monthly credits are spent.
const QUOTA_MESSAGE: &str = "The monthly usage limit has been reached (request_id: mock)";
/// What Kiro says when an account is rate limited.
const RATE_LIMIT_MESSAGE: &str = "Too many requests, please wait before trying again.";
/// JSON-RPC "internal error": how agents report upstream trouble.
const INTERNAL_ERROR: i32 = -32603;

/// Whether a stream of chunks ran to its end.
enum Flow {
    Done,
    Cancelled,
}

struct Turn {
    cx: ConnectionTo<Client>,
    state: Arc<State>,
    session_id: SessionId,
    turn_id: u64,
    cwd: PathBuf,
    directive: Directive,
    /// Part of a multi-round truncated answer, when set.
    resume: Option<Truncated>,
    text: String,
    prompt_chars: usize,
    delay: Duration,
    stop: CancellationToken,
    request_cancel: RequestCancellation,
    started: Instant,
}

impl Turn {
    async fn run(
        self,
        responder: Responder<PromptResponse>,
    ) -> Result<(), agent_client_protocol::Error> {
        // A failed send means the client is gone; the connection ends on its own, so the turn
        // just stops (an error here would shut the whole agent down).
        let finish = match self.script().await {
            Ok(finish) => finish,
            Err(error) => {
                tracing::debug!(%error, "turn aborted");
                self.state.end_turn(&self.session_id, self.turn_id);
                return Ok(());
            }
        };
        match finish {
            Finish::Stop(stop_reason) => {
                if let Err(error) = self.send_metering() {
                    tracing::debug!(%error, "could not send metering");
                }
                self.state.end_turn(&self.session_id, self.turn_id);
                if let Err(error) = responder.respond(PromptResponse::new(stop_reason)) {
                    tracing::debug!(%error, "could not answer the prompt");
                }
            }
            Finish::Fail(message) => {
                self.state.end_turn(&self.session_id, self.turn_id);
                let error = agent_client_protocol::Error::new(INTERNAL_ERROR, message);
                if let Err(error) = responder.respond_with_error(error) {
                    tracing::debug!(%error, "could not answer the prompt");
                }
            }
            Finish::Crash => {
                tracing::warn!("crashing as asked");
                self.cx.send_notification(CrashNow {})?;
                std::future::pending::<()>().await;
            }
            Finish::Hang => {
                tracing::warn!("hanging as asked");
                std::future::pending::<()>().await;
            }
        }
        Ok(())
    }

    async fn script(&self) -> Result<Finish, agent_client_protocol::Error> {
        let directive = &self.directive;
        let numbered = |count: Option<u64>| {
            (0..count.unwrap_or(DEFAULT_CHUNKS))
                .map(|i| format!("chunk {i} "))
                .collect::<Vec<_>>()
        };
        if let Some(resume) = self.resume {
            let chunks: Vec<String> = (resume.next..resume.next + resume.n)
                .map(|i| format!("chunk {i} "))
                .collect();
            let stop = if resume.rounds_left > 1 {
                StopReason::MaxTokens
            } else {
                StopReason::EndTurn
            };
            return self.stream_or_cancel(chunks, stop).await;
        }
        let finish = match directive.behavior {
            Behavior::Echo => {
                let chunks = directive::word_chunks(&self.text);
                self.stream_or_cancel(chunks, StopReason::EndTurn).await?
            }
            Behavior::Stream => {
                // Asked to finish an answer another agent began: carry on from its last chunk.
                let start = resume_offset(&self.text);
                let chunks: Vec<String> = (start..directive.n.unwrap_or(DEFAULT_CHUNKS))
                    .map(|i| format!("chunk {i} "))
                    .collect();
                self.stream_or_cancel(chunks, StopReason::EndTurn).await?
            }
            Behavior::MaxTokens => {
                self.stream_or_cancel(numbered(directive.n), StopReason::MaxTokens)
                    .await?
            }
            Behavior::Crash => {
                self.stream(numbered(directive.after), false).await?;
                Finish::Crash
            }
            Behavior::Hang => {
                self.stream(numbered(directive.after), false).await?;
                Finish::Hang
            }
            Behavior::Quota => {
                self.stream(numbered(directive.after.or(Some(0))), false)
                    .await?;
                Finish::Fail(QUOTA_MESSAGE.to_owned())
            }
            Behavior::RateLimit => {
                self.stream(numbered(directive.after.or(Some(0))), false)
                    .await?;
                Finish::Fail(match directive.retry_after {
                    Some(secs) => format!("{RATE_LIMIT_MESSAGE} Retry after {secs} seconds."),
                    None => RATE_LIMIT_MESSAGE.to_owned(),
                })
            }
            Behavior::Artifacts => {
                self.stream_or_cancel(ARTIFACT_CHUNKS, StopReason::EndTurn)
                    .await?
            }
            Behavior::Refusal => {
                self.message("I can't help with that.")?;
                Finish::Stop(StopReason::Refusal)
            }
            Behavior::Env => {
                self.message(&self.env_report())?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Permission => self.ask_permission().await?,
            Behavior::Thought => {
                self.update(SessionUpdate::AgentThoughtChunk(chunk("thinking...")))?;
                self.message("done")?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Fs => {
                self.try_client_capabilities().await?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Noise => {
                self.send_noise()?;
                self.message("ok")?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Stats => {
                let stats = json!({
                    "prompts": self.state.prompts.load(Ordering::Relaxed),
                    "cancels": self.state.cancels.load(Ordering::Relaxed),
                    "active_turns": self.state.active_turns(),
                });
                self.message(&stats.to_string())?;
                Finish::Stop(StopReason::EndTurn)
            }
        };
        Ok(finish)
    }

    fn update(&self, update: SessionUpdate) -> Result<(), agent_client_protocol::Error> {
        self.cx
            .send_notification(SessionNotification::new(self.session_id.clone(), update))
    }

    fn message(&self, text: &str) -> Result<(), agent_client_protocol::Error> {
        self.update(SessionUpdate::AgentMessageChunk(chunk(text)))
    }

    fn stopped(&self) -> bool {
        self.stop.is_cancelled() || self.request_cancel.is_cancelled()
    }

    async fn wait_stopped(&self) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = self.request_cancel.cancelled() => {}
        }
    }

    /// Stream `chunks`, then stop with `stop_reason`, or with `cancelled` if cancelled first.
    async fn stream_or_cancel<S: AsRef<str>>(
        &self,
        chunks: impl IntoIterator<Item = S>,
        stop_reason: StopReason,
    ) -> Result<Finish, agent_client_protocol::Error> {
        Ok(match self.stream(chunks, true).await? {
            Flow::Done => Finish::Stop(stop_reason),
            Flow::Cancelled => Finish::Stop(StopReason::Cancelled),
        })
    }

    /// Send `chunks` as message chunks with the turn's delay between them.
    async fn stream<S: AsRef<str>>(
        &self,
        chunks: impl IntoIterator<Item = S>,
        cancellable: bool,
    ) -> Result<Flow, agent_client_protocol::Error> {
        for (index, text) in chunks.into_iter().enumerate() {
            if index > 0 && !self.delay.is_zero() {
                if cancellable {
                    tokio::select! {
                        () = tokio::time::sleep(self.delay) => {}
                        () = self.wait_stopped() => return Ok(Flow::Cancelled),
                    }
                } else {
                    tokio::time::sleep(self.delay).await;
                }
            }
            if cancellable && self.stopped() {
                return Ok(Flow::Cancelled);
            }
            self.message(text.as_ref())?;
        }
        Ok(Flow::Done)
    }

    fn env_report(&self) -> String {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .map(|(key, value)| {
                (
                    key.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let cwd = std::env::current_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_default();
        json!({
            "cwd": cwd,
            "session_cwd": self.cwd.display().to_string(),
            "home": env.get("HOME"),
            "env": env,
        })
        .to_string()
    }

    async fn ask_permission(&self) -> Result<Finish, agent_client_protocol::Error> {
        let request = RequestPermissionRequest::new(
            self.session_id.clone(),
            ToolCallUpdate::new(
                "mock-tool-1",
                ToolCallUpdateFields::new()
                    .title("mock tool wants to run")
                    .kind(agent_client_protocol::v1::schema::ToolKind::Read),
            ),
            vec![
                PermissionOption::new("allow-once", "Allow once", PermissionOptionKind::AllowOnce),
                PermissionOption::new(
                    "reject-once",
                    "Reject once",
                    PermissionOptionKind::RejectOnce,
                ),
            ],
        );
        let answer = tokio::select! {
            answer = self.cx.send_request(request).block_task() => answer,
            () = self.wait_stopped() => return Ok(Finish::Stop(StopReason::Cancelled)),
        };
        let selected = match answer {
            Ok(response) => match response.outcome {
                RequestPermissionOutcome::Selected(selected) => selected.option_id.to_string(),
                _ => "cancelled".to_owned(),
            },
            Err(error) => format!("error {}", i32::from(error.code)),
        };
        self.message(&format!("permission: {selected}"))?;
        Ok(Finish::Stop(StopReason::EndTurn))
    }

    async fn try_client_capabilities(&self) -> Result<(), agent_client_protocol::Error> {
        let read = self
            .ask(ReadTextFileRequest::new(
                self.session_id.clone(),
                "/etc/hostname",
            ))
            .await;
        let terminal = self
            .ask(CreateTerminalRequest::new(self.session_id.clone(), "true"))
            .await;
        self.message(&format!(
            "fs/read_text_file: {read}; terminal/create: {terminal}"
        ))
    }

    /// Send a request to the client and describe the answer: `ok` or `error CODE`.
    async fn ask<R: JsonRpcRequest>(&self, request: R) -> String {
        match self.cx.send_request(request).block_task().await {
            Ok(_) => "ok".to_owned(),
            Err(error) => format!("error {}", i32::from(error.code)),
        }
    }

    fn send_noise(&self) -> Result<(), agent_client_protocol::Error> {
        let session_id = self.session_id.to_string();
        self.cx.send_notification(UntypedMessage::new(
            "_kiro.dev/commands/available",
            json!({ "sessionId": session_id, "commands": [] }),
        )?)?;
        self.cx.send_notification(UntypedMessage::new(
            "session/update",
            json!({
                "sessionId": session_id,
                "update": { "sessionUpdate": "mystery_update", "payload": 1 },
            }),
        )?)?;
        self.cx.send_notification(SessionNotification::new(
            "not-a-session-of-this-client",
            SessionUpdate::AgentMessageChunk(chunk("leaked from elsewhere")),
        ))?;
        self.update(SessionUpdate::UsageUpdate(UsageUpdate::new(50, 200)))
    }

    /// Report usage the way kiro-cli does, v2 or v3.
    fn send_metering(&self) -> Result<(), agent_client_protocol::Error> {
        #[expect(
            clippy::cast_precision_loss,
            reason = "prompt sizes are far below 2^52 characters"
        )]
        let default_context = (self.prompt_chars as f64 / 2000.0).min(100.0);
        let context = self.directive.context.unwrap_or(default_context);
        let credits = self.directive.credits.unwrap_or(DEFAULT_CREDITS);
        if self.directive.v3 {
            self.update(SessionUpdate::SessionInfoUpdate(
                SessionInfoUpdate::new().meta(kiro::turn_completion_meta(credits)),
            ))?;
            self.update(SessionUpdate::SessionInfoUpdate(
                SessionInfoUpdate::new().meta(kiro::context_usage_meta(context)),
            ))
        } else {
            let elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.cx.send_notification(KiroMetadata {
                session_id: self.session_id.to_string(),
                context_usage_percentage: Some(context),
                metering_usage: Some(vec![MeteringUsage::credits(credits)]),
                turn_duration_ms: Some(elapsed_ms),
            })
        }
    }
}

/// The header under which Drawbridge puts a partial answer it asks an agent to finish
/// (`drawbridge_core::prompt::CUT_OFF_HEADER`).
const CUT_OFF_HEADER: &str = "[Assistant (cut off)]\n";

/// How many `chunk N ` pieces the partial answer in a resume prompt already holds (0 when the
/// prompt is not a resume).
fn resume_offset(text: &str) -> u64 {
    let Some(start) = text.find(CUT_OFF_HEADER) else {
        return 0;
    };
    let block = &text[start + CUT_OFF_HEADER.len()..];
    let block = block.split("\n\n").next().unwrap_or_default();
    block.matches("chunk ").count() as u64
}

fn chunk(text: &str) -> ContentChunk {
    ContentChunk::new(ContentBlock::Text(TextContent::new(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_prompt_continues_the_numbering() {
        assert_eq!(resume_offset("plain prompt"), 0);
        let prompt = "[User]\ngo\n\n[Assistant (cut off)]\nchunk 0 chunk 1 \n\nYour previous reply...chunk 1";
        assert_eq!(resume_offset(prompt), 2);
    }

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

    #[test]
    fn artifacts_split_inside_tags() {
        let reply = ARTIFACT_CHUNKS.concat();
        assert_eq!(
            reply,
            r#"Here is the answer.<thinking>internal reasoning</thinking> The result is 42.<tool_use>{"name":"fs_read"}</tool_use>"#
        );
    }
}
