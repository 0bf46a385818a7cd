//! One chat request on one leased agent process: a fresh ACP session, the prompt, and as many
//! continuation rounds on that same session as a truncated answer needs.
//!
//! Text streams to the consumer as it comes, through the splicer (a continuation must not
//! repeat what was already sent) and the sanitizer (leaked internal markup is dropped). Three
//! things end a request early:
//! - the consumer goes away: `session/cancel` is sent and the agent gets `cancel_grace` to
//!   answer; if it does, the process serves again, otherwise it is replaced;
//! - the agent stays silent longer than `idle_timeout`: the request fails (a silent agent is a
//!   failure, not a wait) and the process is replaced;
//! - the total deadline passes: the request fails and the process is replaced;
//! - the agent asks the client for something it cannot give (Kiro v3's access token): the
//!   request fails at once, the process is replaced and the account becomes unhealthy until
//!   its pool is rebuilt (only its operator can fix that).
//!
//! Any frame of the agent's resets the idle deadline. Reasoning (`agent_thought_chunk`) goes
//! out as [`WorkerEvent::Reasoning`] through a sanitizer of its own; every other non-text frame
//! as [`WorkerEvent::Activity`], at most one per [`ACTIVITY_EVERY`]. The request's `model`
//! picks the session's model (a configured label: the agent's default). When the turn has
//! ended (and its `Finished` or `Error` is sent), its session is deleted on agents that
//! persist sessions, before the process serves again.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use drawbridge_acp::kiro::{self, AccountLimit};
use drawbridge_acp::{
    AcpError, AgentProcess, GET_ACCESS_TOKEN_METHOD, PromptOutcome, Session, StopReason,
};
use drawbridge_core::continuation::{self, ContinuationOptions, Splicer, StopKind};
use drawbridge_core::sanitize::SanitizeOptions;
use drawbridge_core::{prompt, tokens, tool_tags};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::openai::FinishReason;
use drawbridge_types::worker::{PromptBody, PromptInput, TurnSummary, WorkerEvent};
use drawbridge_types::{ApiError, ErrorKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bridge::{Bridge, BridgeSession, HeldCall};
use crate::live::LiveSessions;
use crate::pool::{AccountPool, Lease};

mod calls;
mod output;
mod warm;

use calls::{Calls, GATHER, Parking};
use output::{Next, Output};

#[derive(Debug, Clone, Copy)]
pub struct TurnSettings {
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub cancel_grace: Duration,
    pub continuation: ContinuationOptions,
    pub sanitize: SanitizeOptions,
    /// How long a live session waits for the client's tool results.
    pub live_session_ttl: Duration,
    /// Warm sessions an account may keep (0: none), and how long each waits.
    pub warm_sessions: u32,
    pub warm_session_ttl: Duration,
}

/// What every turn of a worker shares: its settings, its live sessions, the MCP bridge that
/// serves client tools (started by the first turn that needs it), the worker's scope.
#[derive(Clone)]
pub(crate) struct TurnEnv {
    pub settings: TurnSettings,
    pub live: Arc<LiveSessions>,
    pub bridge: Arc<tokio::sync::OnceCell<Arc<Bridge>>>,
    pub shutdown: Shutdown,
}

impl TurnEnv {
    async fn bridge(&self) -> Result<Arc<Bridge>, ApiError> {
        self.bridge
            .get_or_try_init(|| Bridge::start(&self.shutdown))
            .await
            .cloned()
            .map_err(|error| {
                tracing::error!(%error, "cannot start the MCP tool bridge");
                ApiError::internal("The worker could not serve the request's tools.")
            })
    }
}

/// Lease a process, run the request, stream its events to `out`, ending with `Finished` or
/// `Error` (nothing when the consumer has gone). A turn whose answer ends with the client's
/// tool calls goes on as a live session (see [`crate::live`]) until its last answer.
pub(crate) async fn run(
    pool: Arc<AccountPool>,
    input: PromptInput,
    out: mpsc::Sender<WorkerEvent>,
    env: TurnEnv,
) {
    let settings = env.settings;
    let mut held = Held::default();
    let mut output = Output::new(out, settings.sanitize, resumed_text(&input.body));
    let event = match serve(&pool, &input, &mut output, &env, &mut held).await {
        Ok(Some(summary)) => WorkerEvent::Finished(summary),
        Ok(None) => {
            // The consumer left.
            held.close(settings.cancel_grace).await;
            return;
        }
        Err(error) => WorkerEvent::Error(error),
    };
    if let WorkerEvent::Error(error) = &event {
        tracing::warn!(request_id = input.request_id, account = pool.id, %error, "turn failed");
    }
    let _ = output.out.send(event).await;
    output.release();
    // The client has its answer; the session goes before the process serves again.
    held.close(settings.cancel_grace).await;
}

fn resumed_text(body: &PromptBody) -> Option<&str> {
    match body {
        PromptBody::Resume { partial, .. } => Some(partial.as_str()),
        _ => None,
    }
}

fn timed_out() -> ApiError {
    ApiError::new(
        ErrorKind::Timeout,
        "The answer took longer than the worker's request timeout.",
    )
}

/// What a turn holds that outlives its answer: the lease, the session to delete, the client
/// tools served to it.
#[derive(Default)]
struct Held {
    lease: Option<Lease>,
    session: Option<Session>,
    tools: Option<BridgeSession>,
}

impl Held {
    /// Delete the session (on agents that persist them) if the process is to serve again,
    /// then end the lease. A delete that fails or hangs costs the process its place.
    async fn close(self, grace: Duration) {
        let Held {
            lease,
            session,
            tools,
        } = self;
        // Calls still held are answered "ended" before the session goes.
        drop(tools);
        let Some(lease) = lease else {
            return;
        };
        if lease.is_kept()
            && let (Some(process), Some(session)) = (lease.process(), session.as_ref())
            && process.deletes_sessions()
            && process.is_alive()
        {
            match tokio::time::timeout(grace, process.delete_session(session)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(session_id = session.id(), %error, "could not delete the turn's session");
                }
                Err(_) => {
                    tracing::warn!(
                        session_id = session.id(),
                        "the agent did not delete the turn's session in time; replacing it"
                    );
                    lease.discard();
                }
            }
        }
    }
}

/// How one round on the session ended.
enum Round {
    Answered(PromptOutcome),
    /// The agent answered the prompt with an error: it is still fit to serve.
    Refused(ApiError),
    ConsumerGone {
        agent_answered: bool,
    },
}

async fn serve(
    pool: &Arc<AccountPool>,
    input: &PromptInput,
    output: &mut Output,
    env: &TurnEnv,
    held: &mut Held,
) -> Result<Option<TurnSummary>, ApiError> {
    let settings = env.settings;
    let mut deadline = Instant::now() + settings.request_timeout;
    let model = pool.model_choice(&input.model)?;
    let mut text = match &input.body {
        PromptBody::Messages(messages) => prompt::render(messages),
        PromptBody::Text(text) => text.clone(),
        PromptBody::Resume { messages, partial } => prompt::render_resume(messages, partial),
    };
    let lease = tokio::select! {
        lease = tokio::time::timeout_at(deadline, pool.lease()) => lease.map_err(|_| timed_out())??,
        () = output.out.closed() => return Ok(None),
    };
    let lease = held.lease.insert(lease);
    let started = WorkerEvent::Started {
        account: pool.id.clone(),
    };
    if output.out.send(started).await.is_err() {
        return Ok(None); // nothing was sent to the agent: the process is still fit
    }
    // Until the request ends with an answer from the agent, the process is not fit to serve
    // again: if this future is dropped mid-turn, the agent may still be working.
    lease.discard();
    let Some(process) = lease.process() else {
        return Err(ApiError::internal("leased a slot without a process"));
    };
    // The client's tools, served to this session over MCP.
    let mut servers = Vec::new();
    if input.tools.is_empty() {
        // No tools.
    } else if pool.tools_over_mcp(process) {
        let bridge = env.bridge().await?;
        let tools = bridge.open(input.tools.tools.clone());
        servers.push(tools.server());
        held.tools = Some(tools);
        if let Some(instruction) = tool_tags::choice_instruction(&input.tools.choice) {
            text.push_str("\n\n");
            text.push_str(&instruction);
        }
    } else {
        // Emulated: the tools are described in the prompt, calls come back tagged.
        let tools = &input.tools;
        text.push_str("\n\n");
        text.push_str(&tool_tags::tools_prompt(
            &tools.tools,
            &tools.choice,
            tools.parallel,
        ));
        output.emulate_tools();
    }
    let setup = async {
        let session = process
            .new_session_with(&servers)
            .await
            .map_err(|e| acp_error(&pool.id, &e))?;
        pool.note_catalogue(session.models());
        pool.prepare_session(process, &session)
            .await
            .map_err(|e| acp_error(&pool.id, &e))?;
        if let Some(model) = &model {
            process
                .set_model(&session, model)
                .await
                .map_err(|e| acp_error(&pool.id, &e))?;
        }
        Ok::<_, ApiError>(session)
    };
    let session = tokio::time::timeout_at(deadline, setup)
        .await
        .map_err(|_| timed_out())??;
    held.session = Some(session.clone());
    // Kiro v3 may ask for its token while it opens the session, before the turn listens.
    if let Some(method) = process.unserved_request()
        && method == GET_ACCESS_TOKEN_METHOD
    {
        return Err(unserved(pool, &method));
    }

    let mut prompt_tokens = tokens::estimate_tokens(&text);
    let mut next_prompt = text;
    let calls = held
        .tools
        .as_mut()
        .map(|tools| Calls::new(tools, input.tools.parallel));
    let mut live = Live {
        pool,
        env,
        calls,
        deadline: &mut deadline,
        prompt_tokens: &mut prompt_tokens,
        conversation: input.conversation.clone(),
    };
    // One answer per pass: the first, then one per follow-up a warm session takes.
    loop {
        // Token counts the agent reported, summed over rounds; `None` once a round reported
        // none.
        let mut reported = Some((0_u64, 0_u64));
        let mut credits = 0.0;
        let mut context = None;
        let mut rounds = 0;
        let stop = loop {
            let round = run_round(process, &session, next_prompt, output, &mut live)
                .instrument(tracing::info_span!("round", round = rounds))
                .await?;
            let outcome = match round {
                Round::Answered(outcome) => outcome,
                Round::Refused(error) => {
                    // The agent answered (with an error, e.g. its account's limit): the
                    // process can serve the next request.
                    lease.keep();
                    return Err(error);
                }
                Round::ConsumerGone { agent_answered } => {
                    if agent_answered {
                        // The agent answered the cancel: the process can serve the next
                        // request.
                        lease.keep();
                    }
                    return Ok(None);
                }
            };
            credits += outcome.usage.credits.unwrap_or(0.0);
            reported = match (reported, outcome.usage.tokens) {
                (Some((input, output)), Some(tokens)) => Some((
                    input.saturating_add(tokens.input_tokens),
                    output.saturating_add(tokens.output_tokens),
                )),
                _ => None,
            };
            context = outcome.usage.context_usage_percent.or(context);
            if !output.end_round().await {
                return Ok(None);
            }
            let stop_kind = match outcome.stop_reason {
                StopReason::EndTurn => StopKind::EndTurn,
                StopReason::MaxTokens | StopReason::MaxTurnRequests => StopKind::MaxTokens,
                _ => StopKind::Other,
            };
            let truncated = continuation::looks_truncated(
                &settings.continuation,
                rounds,
                output.answer_raw(),
                stop_kind,
                outcome.usage.context_usage_percent,
            );
            match truncated {
                Some(reason) => {
                    rounds += 1;
                    tracing::info!(
                        request_id = input.request_id,
                        account = pool.id,
                        round = rounds,
                        reason = reason.as_str(),
                        "answer looks truncated; continuing on the same session"
                    );
                    next_prompt = continuation::continuation_prompt(output.answer_raw());
                    *live.prompt_tokens += tokens::estimate_tokens(&next_prompt);
                    output.splicer = Some(Splicer::new(output.answer_raw()));
                }
                None => break outcome.stop_reason,
            }
        };
        let parked = live.calls.as_ref().is_some_and(|calls| calls.answers > 0);
        if !output.end().await {
            return Ok(None);
        }
        let emulated_calls = output.emulated_calls();
        let finish_reason = match stop {
            StopReason::EndTurn if emulated_calls > 0 => FinishReason::ToolCalls,
            StopReason::EndTurn => FinishReason::Stop,
            StopReason::MaxTokens | StopReason::MaxTurnRequests => FinishReason::Length,
            StopReason::Refusal => FinishReason::ContentFilter,
            StopReason::Cancelled => {
                return Err(ApiError::upstream("The agent cancelled the turn."));
            }
        };
        let calls_made = live.calls.as_ref().map_or(0, |c| c.issued) + emulated_calls;
        let tool_choice_unmet =
            !input.tools.is_empty() && input.tools.choice.forces_call() && calls_made == 0;
        if tool_choice_unmet {
            tracing::warn!(
                request_id = input.request_id,
                account = pool.id,
                "tool_choice demanded a tool call; the agent answered in text"
            );
        }
        pool.add_credits(credits);
        // The agent answered: the process is idle again and may serve the next request.
        lease.keep();
        let (prompt_tokens, completion_tokens, tokens_estimated) = match reported {
            // A live session's earlier answers were counted when they ended: the agent's
            // report covers the whole turn, so this answer is estimated.
            Some((input, output)) if !parked => (input, output, false),
            _ => (*live.prompt_tokens, output.answer_tokens(), true),
        };
        // Keep the session warm for a follow-up that extends the conversation: an answer
        // that ended normally, while the account has room for another warm session.
        let warm_key = live
            .conversation
            .take()
            .filter(|_| finish_reason == FinishReason::Stop && emulated_calls == 0)
            .filter(|_| warm::has_room(pool, env, process));
        let summary = TurnSummary {
            finish_reason,
            prompt_tokens,
            completion_tokens,
            cached_prompt_tokens: None,
            tokens_estimated,
            credits,
            context_usage_percent: context,
            continuation_rounds: rounds,
            tool_choice_unmet,
            warm: warm_key.is_some(),
        };
        let Some(key) = warm_key else {
            return Ok(Some(summary));
        };
        if output
            .out
            .send(WorkerEvent::Finished(summary))
            .await
            .is_err()
        {
            return Ok(None);
        }
        output.release();
        let Some(follow_up) = warm::wait(pool, env, &key, output.answer_text()).await else {
            return Ok(None);
        };
        // The follow-up extends the conversation: only its new messages go to the session.
        lease.discard();
        *live.deadline = Instant::now() + settings.request_timeout;
        next_prompt = prompt::render(&follow_up.messages);
        *live.prompt_tokens = tokens::estimate_tokens(&next_prompt);
        live.conversation = follow_up.conversation;
        output.begin_answer(follow_up.out);
        let started = WorkerEvent::Started {
            account: pool.id.clone(),
        };
        if output.out.send(started).await.is_err() {
            return Ok(None);
        }
    }
}

/// What a round needs beyond the prompt: the pool and worker, the client's tool calls (when
/// tools are served), the answer's deadline and prompt size (a live session's next answer
/// starts both again).
struct Live<'a> {
    pool: &'a Arc<AccountPool>,
    env: &'a TurnEnv,
    calls: Option<Calls<'a>>,
    deadline: &'a mut Instant,
    prompt_tokens: &'a mut u64,
    /// The key of the conversation the session holds once the answer ends (the last
    /// request's): a warm session is parked under it.
    conversation: Option<String>,
}

/// One prompt on the session, streaming its text to `output`. Tool calls the agent makes are
/// passed on; once it has made them (within [`GATHER`] of each other), the answer finishes
/// with `tool_calls` and the turn parks as a live session until the client's results come.
async fn run_round(
    process: &AgentProcess,
    session: &Session,
    text: String,
    output: &mut Output,
    live: &mut Live<'_>,
) -> Result<Round, ApiError> {
    let settings = live.env.settings;
    let pool = live.pool;
    let cancel = CancellationToken::new();
    let (agent_tx, mut agent_rx) = mpsc::channel(32);
    let turn = process.prompt_in(session, text, agent_tx, cancel.clone().cancelled_owned());
    tokio::pin!(turn);
    let silence = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(silence);
    let gather = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(gather);
    let mut gathering = false;
    let mut consumer_gone = false;
    let outcome = loop {
        let deadline = *live.deadline;
        tokio::select! {
            biased;
            event = agent_rx.recv() => {
                let Some(event) = event else { continue };
                if consumer_gone {
                    continue; // drain until the agent answers the cancel
                }
                silence.as_mut().reset(Instant::now() + settings.idle_timeout);
                match output.on_event(pool, event).await {
                    Next::Go => {}
                    Next::ConsumerGone => {
                        consumer_gone = true;
                        cancel.cancel();
                        silence.as_mut().reset(Instant::now() + settings.cancel_grace);
                    }
                    Next::Fail(error) => return Err(error),
                }
            }
            outcome = &mut turn => break outcome,
            call = next_call(&mut live.calls), if !consumer_gone => {
                let Some(calls) = live.calls.as_mut() else { continue };
                let Some(call) = call else {
                    calls.open = false;
                    continue;
                };
                if !calls.issue(call, output).await {
                    consumer_gone = true;
                    cancel.cancel();
                    silence.as_mut().reset(Instant::now() + settings.cancel_grace);
                    continue;
                }
                gathering = true;
                // Without parallel calls the first call ends the answer.
                let wait = if calls.parallel { GATHER } else { Duration::ZERO };
                gather.as_mut().reset(Instant::now() + wait);
            }
            () = &mut gather, if gathering && !consumer_gone => {
                gathering = false;
                let Some(calls) = live.calls.as_mut() else { continue };
                match calls::park(calls, output, pool, live.env, &mut agent_rx).await {
                    Parking::Resumed { prompt_tokens, conversation } => {
                        live.conversation = conversation;
                        *live.deadline = Instant::now() + settings.request_timeout;
                        *live.prompt_tokens = prompt_tokens;
                        silence.as_mut().reset(Instant::now() + settings.idle_timeout);
                    }
                    Parking::Expired => {
                        // Nobody came back: cancel the turn as for a client that left.
                        calls.drop_held();
                        consumer_gone = true;
                        cancel.cancel();
                        silence.as_mut().reset(Instant::now() + settings.cancel_grace);
                    }
                }
            }
            () = output.out.closed(), if !consumer_gone => {
                consumer_gone = true;
                cancel.cancel();
                silence.as_mut().reset(Instant::now() + settings.cancel_grace);
            }
            () = tokio::time::sleep_until(deadline), if !consumer_gone => {
                return Err(timed_out());
            }
            () = &mut silence => {
                if consumer_gone {
                    tracing::info!("agent did not answer the cancel in time; replacing it");
                    return Ok(Round::ConsumerGone { agent_answered: false });
                }
                return Err(ApiError::new(
                    ErrorKind::Timeout,
                    format!("The agent sent nothing for {:?}.", settings.idle_timeout),
                ));
            }
        }
    };
    // The round is over: pass on what the agent sent just before answering.
    while let Ok(event) = agent_rx.try_recv() {
        if consumer_gone {
            continue;
        }
        match output.on_event(pool, event).await {
            Next::Go => {}
            Next::ConsumerGone => consumer_gone = true,
            Next::Fail(error) => return Err(error),
        }
    }
    if consumer_gone {
        return Ok(Round::ConsumerGone {
            agent_answered: outcome.is_ok(),
        });
    }
    match outcome {
        Ok(outcome) => Ok(Round::Answered(outcome)),
        Err(error @ AcpError::Agent { .. }) => Ok(Round::Refused(acp_error("", &error))),
        Err(error) => Err(acp_error("", &error)),
    }
}

/// The next call the agent made of the client's tools; never, without tools.
async fn next_call(calls: &mut Option<Calls<'_>>) -> Option<HeldCall> {
    match calls {
        Some(calls) if calls.open => calls.tools.next_call().await,
        _ => std::future::pending().await,
    }
}

/// The agent asked for something the client cannot give (it was answered with an error): the
/// account is blocked with a reason saying how to fix it, and the request fails so the engine
/// moves on.
fn unserved(pool: &AccountPool, method: &str) -> ApiError {
    pool.block(unserved_reason(method));
    ApiError::upstream("The account's agent is waiting for something the gateway cannot give.")
}

/// Why an account whose agent asked for `method` cannot serve, and the fix.
pub(crate) fn unserved_reason(method: &str) -> String {
    let fix = if method == GET_ACCESS_TOKEN_METHOD {
        "start kiro-cli with --auth-method cli (the agent asks the client for a token otherwise)"
    } else {
        "configure the agent so that it does not need this from its client"
    };
    format!("the agent asked the client for `{method}`, which Drawbridge cannot serve; {fix}")
}

/// An agent failure as the client sees it. The details (stderr tail, the agent's own words) go
/// to the log, not to the client: they may name files or accounts. An agent that says its
/// account's quota is spent, or that it is rate limited, gets the account-level kinds the engine
/// acts on (another account may serve the request).
fn acp_error(account: &str, error: &AcpError) -> ApiError {
    tracing::warn!(account, %error, "agent failed");
    if let AcpError::Agent { message, .. } = error {
        match kiro::account_limit(message) {
            Some(AccountLimit::QuotaExhausted) => {
                return ApiError::new(
                    ErrorKind::AccountQuotaExhausted,
                    "The account's usage quota is spent.",
                );
            }
            Some(AccountLimit::RateLimited { retry_after }) => {
                let error = ApiError::new(
                    ErrorKind::AccountRateLimited,
                    "The account is rate limited by its provider.",
                );
                return match retry_after {
                    Some(after) => error.with_retry_after(after),
                    None => error,
                };
            }
            None => {}
        }
    }
    match error {
        AcpError::Timeout(what) => ApiError::new(
            ErrorKind::Timeout,
            format!("The agent did not answer in time ({what})."),
        ),
        AcpError::Exited { .. } => {
            ApiError::upstream("The agent process exited during the answer.")
        }
        _ => ApiError::upstream("The agent failed while answering."),
    }
}
