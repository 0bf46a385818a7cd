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
use drawbridge_core::{prompt, tokens};
use drawbridge_types::openai::FinishReason;
use drawbridge_types::worker::{PromptBody, PromptInput, TurnSummary, WorkerEvent};
use drawbridge_types::{ApiError, ErrorKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::pool::{AccountPool, Lease};

mod output;

use output::{Next, Output};

#[derive(Debug, Clone, Copy)]
pub struct TurnSettings {
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub cancel_grace: Duration,
    pub continuation: ContinuationOptions,
    pub sanitize: SanitizeOptions,
}

/// Lease a process, run the request, stream its events to `out`, ending with `Finished` or
/// `Error` (nothing when the consumer has gone).
pub async fn run(
    pool: Arc<AccountPool>,
    input: PromptInput,
    out: mpsc::Sender<WorkerEvent>,
    settings: TurnSettings,
) {
    let deadline = Instant::now() + settings.request_timeout;
    let mut held = Held::default();
    let result =
        tokio::time::timeout_at(deadline, serve(&pool, &input, &out, settings, &mut held)).await;
    let event = match result {
        Ok(Ok(Some(summary))) => WorkerEvent::Finished(summary),
        Ok(Ok(None)) => {
            // The consumer left.
            held.close(settings.cancel_grace).await;
            return;
        }
        Ok(Err(error)) => WorkerEvent::Error(error),
        Err(_) => WorkerEvent::Error(ApiError::new(
            ErrorKind::Timeout,
            "The answer took longer than the worker's request timeout.",
        )),
    };
    if let WorkerEvent::Error(error) = &event {
        tracing::warn!(request_id = input.request_id, account = pool.id, %error, "turn failed");
    }
    let _ = out.send(event).await;
    // The client has its answer; the session goes before the process serves again.
    held.close(settings.cancel_grace).await;
}

/// What a turn holds that outlives its answer: the lease, and the session to delete.
#[derive(Default)]
struct Held {
    lease: Option<Lease>,
    session: Option<Session>,
}

impl Held {
    /// Delete the session (on agents that persist them) if the process is to serve again,
    /// then end the lease. A delete that fails or hangs costs the process its place.
    async fn close(self, grace: Duration) {
        let Held { lease, session } = self;
        let Some(mut lease) = lease else {
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
    out: &mpsc::Sender<WorkerEvent>,
    settings: TurnSettings,
    held: &mut Held,
) -> Result<Option<TurnSummary>, ApiError> {
    let model = pool.model_choice(&input.model)?;
    let (text, resumed) = match &input.body {
        PromptBody::Messages(messages) => (prompt::render(messages), None),
        PromptBody::Text(text) => (text.clone(), None),
        PromptBody::Resume { messages, partial } => (
            prompt::render_resume(messages, partial),
            Some(partial.as_str()),
        ),
    };
    let lease = tokio::select! {
        lease = pool.lease() => lease?,
        () = out.closed() => return Ok(None),
    };
    let lease = held.lease.insert(lease);
    let started = WorkerEvent::Started {
        account: pool.id.clone(),
    };
    if out.send(started).await.is_err() {
        return Ok(None); // nothing was sent to the agent: the process is still fit
    }
    // Until the request ends with an answer from the agent, the process is not fit to serve
    // again: if this future is dropped mid-turn, the agent may still be working.
    lease.discard();
    let Some(process) = lease.process() else {
        return Err(ApiError::internal("leased a slot without a process"));
    };
    let session = process
        .new_session()
        .await
        .map_err(|e| acp_error(&pool.id, &e))?;
    held.session = Some(session.clone());
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
    // Kiro v3 may ask for its token while it opens the session, before the turn listens.
    if let Some(method) = process.unserved_request()
        && method == GET_ACCESS_TOKEN_METHOD
    {
        return Err(unserved(pool, &method));
    }

    let mut output = Output::new(out, settings.sanitize, resumed);
    // Token counts the agent reported, summed over rounds; `None` once a round reported none.
    let mut reported = Some((0_u64, 0_u64));
    let mut prompt_tokens = tokens::estimate_tokens(&text);
    let mut credits = 0.0;
    let mut context = None;
    let mut rounds = 0;
    let mut next_prompt = text;
    let stop = loop {
        let round = run_round(pool, process, &session, next_prompt, &mut output, settings)
            .instrument(tracing::info_span!("round", round = rounds))
            .await?;
        let outcome = match round {
            Round::Answered(outcome) => outcome,
            Round::Refused(error) => {
                // The agent answered (with an error, e.g. its account's limit): the process
                // can serve the next request.
                lease.keep();
                return Err(error);
            }
            Round::ConsumerGone { agent_answered } => {
                if agent_answered {
                    // The agent answered the cancel: the process can serve the next request.
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
            &output.raw,
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
                next_prompt = continuation::continuation_prompt(&output.raw);
                prompt_tokens += tokens::estimate_tokens(&next_prompt);
                output.splicer = Some(Splicer::new(&output.raw));
            }
            None => break outcome.stop_reason,
        }
    };
    if !output.end().await {
        return Ok(None);
    }
    let finish_reason = match stop {
        StopReason::EndTurn => FinishReason::Stop,
        StopReason::MaxTokens | StopReason::MaxTurnRequests => FinishReason::Length,
        StopReason::Refusal => FinishReason::ContentFilter,
        StopReason::Cancelled => {
            return Err(ApiError::upstream("The agent cancelled the turn."));
        }
    };
    pool.add_credits(credits);
    // The agent answered: the process is idle again and may serve the next request.
    lease.keep();
    let (prompt_tokens, completion_tokens, tokens_estimated) = match reported {
        Some((input, output)) => (input, output, false),
        None => (
            prompt_tokens,
            tokens::estimate_tokens(&output.raw) + tokens::estimate_tokens(&output.thought),
            true,
        ),
    };
    Ok(Some(TurnSummary {
        finish_reason,
        prompt_tokens,
        completion_tokens,
        tokens_estimated,
        credits,
        context_usage_percent: context,
        continuation_rounds: rounds,
    }))
}

/// One prompt on the session, streaming its text to `output`.
async fn run_round(
    pool: &AccountPool,
    process: &AgentProcess,
    session: &Session,
    text: String,
    output: &mut Output<'_>,
    settings: TurnSettings,
) -> Result<Round, ApiError> {
    let cancel = CancellationToken::new();
    let (agent_tx, mut agent_rx) = mpsc::channel(32);
    let turn = process.prompt_in(session, text, agent_tx, cancel.clone().cancelled_owned());
    tokio::pin!(turn);
    let silence = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(silence);
    let mut consumer_gone = false;
    let outcome = loop {
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
            () = output.out.closed(), if !consumer_gone => {
                consumer_gone = true;
                cancel.cancel();
                silence.as_mut().reset(Instant::now() + settings.cancel_grace);
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
