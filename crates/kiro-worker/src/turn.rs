//! One chat turn on one leased agent process.
//!
//! The turn streams the agent's text to the consumer as it comes. Three things end it early:
//! - the consumer goes away: `session/cancel` is sent and the agent gets `cancel_grace` to
//!   answer; if it does, the process serves again, otherwise it is replaced;
//! - the agent stays silent longer than `idle_timeout`: the turn fails (a silent agent is a
//!   failure, not a wait) and the process is replaced;
//! - the total deadline passes: the turn fails and the process is replaced.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_acp::{AcpError, AgentEvent, StopReason};
use drawbridge_core::{prompt, tokens};
use drawbridge_types::openai::FinishReason;
use drawbridge_types::worker::{PromptBody, PromptInput, TurnSummary, WorkerEvent};
use drawbridge_types::{ApiError, ErrorKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::pool::AccountPool;

#[derive(Debug, Clone, Copy)]
pub struct TurnSettings {
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub cancel_grace: Duration,
}

/// Lease a process, run the turn, stream its events to `out`, ending with `Finished` or
/// `Error` (nothing when the consumer has gone).
pub async fn run(
    pool: Arc<AccountPool>,
    input: PromptInput,
    out: mpsc::Sender<WorkerEvent>,
    settings: TurnSettings,
) {
    let deadline = Instant::now() + settings.request_timeout;
    let result = tokio::time::timeout_at(deadline, serve(&pool, &input, &out, settings)).await;
    let event = match result {
        Ok(Ok(Some(summary))) => WorkerEvent::Finished(summary),
        Ok(Ok(None)) => return, // the consumer left
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
}

async fn serve(
    pool: &Arc<AccountPool>,
    input: &PromptInput,
    out: &mpsc::Sender<WorkerEvent>,
    settings: TurnSettings,
) -> Result<Option<TurnSummary>, ApiError> {
    let text = match &input.body {
        PromptBody::Messages(messages) => prompt::render(messages),
        PromptBody::Text(text) => text.clone(),
    };
    let lease = tokio::select! {
        lease = pool.lease() => lease?,
        () = out.closed() => return Ok(None),
    };
    let mut lease = lease;
    let started = WorkerEvent::Started {
        account: pool.id.clone(),
    };
    if out.send(started).await.is_err() {
        return Ok(None); // nothing was sent to the agent: the process is still fit
    }
    // Until the turn ends with an answer from the agent, the process is not fit to serve
    // again: if this future is dropped mid-turn, the agent may still be working.
    lease.discard();

    let mut answer = String::new();
    let mut consumer_gone = false;
    let outcome = {
        let Some(process) = lease.process() else {
            return Err(ApiError::internal("leased a slot without a process"));
        };
        let cancel = CancellationToken::new();
        let (agent_tx, mut agent_rx) = mpsc::channel(32);
        let turn = process.prompt_until(text.clone(), agent_tx, cancel.clone().cancelled_owned());
        tokio::pin!(turn);
        let silence = tokio::time::sleep(settings.idle_timeout);
        tokio::pin!(silence);
        loop {
            tokio::select! {
                biased;
                event = agent_rx.recv() => {
                    let Some(event) = event else { continue };
                    if !consumer_gone {
                        silence.as_mut().reset(Instant::now() + settings.idle_timeout);
                    }
                    if let AgentEvent::Text(chunk) = event
                        && !consumer_gone
                    {
                        answer.push_str(&chunk);
                        if out.send(WorkerEvent::Text(chunk)).await.is_err() {
                            consumer_gone = true;
                            cancel.cancel();
                            silence.as_mut().reset(Instant::now() + settings.cancel_grace);
                        }
                    }
                }
                outcome = &mut turn => break outcome,
                () = out.closed(), if !consumer_gone => {
                    consumer_gone = true;
                    cancel.cancel();
                    silence.as_mut().reset(Instant::now() + settings.cancel_grace);
                }
                () = &mut silence => {
                    if consumer_gone {
                        tracing::info!(account = pool.id, "agent did not answer the cancel in time; replacing it");
                        return Ok(None);
                    }
                    return Err(ApiError::new(
                        ErrorKind::Timeout,
                        format!("The agent sent nothing for {:?}.", settings.idle_timeout),
                    ));
                }
            }
        }
    };
    if consumer_gone {
        if outcome.is_ok() {
            // The agent answered the cancel: the process can serve the next request.
            lease.keep();
        }
        return Ok(None);
    }
    let outcome = outcome.map_err(|error| acp_error(&pool.id, &error))?;
    let finish_reason = match outcome.stop_reason {
        StopReason::EndTurn => FinishReason::Stop,
        StopReason::MaxTokens | StopReason::MaxTurnRequests => FinishReason::Length,
        StopReason::Refusal => FinishReason::ContentFilter,
        StopReason::Cancelled => {
            return Err(ApiError::upstream("The agent cancelled the turn."));
        }
    };
    let credits = outcome.usage.credits.unwrap_or(0.0);
    pool.add_credits(credits);
    // The agent answered: the process is idle again and may serve the next request.
    lease.keep();
    Ok(Some(TurnSummary {
        finish_reason,
        prompt_tokens: tokens::estimate_tokens(&text),
        completion_tokens: tokens::estimate_tokens(&answer),
        tokens_estimated: true,
        credits,
        context_usage_percent: outcome.usage.context_usage_percent,
    }))
}

/// An agent failure as the client sees it. The details (stderr tail) go to the log, not to
/// the client: they may name files or accounts.
fn acp_error(account: &str, error: &AcpError) -> ApiError {
    tracing::warn!(account, %error, "agent failed");
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
