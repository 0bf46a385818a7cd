//! One chat turn on one leased agent process.

use std::sync::Arc;

use drawbridge_acp::{AcpError, AgentEvent, StopReason};
use drawbridge_core::{prompt, tokens};
use drawbridge_types::openai::FinishReason;
use drawbridge_types::worker::{PromptBody, PromptInput, TurnSummary, WorkerEvent};
use drawbridge_types::{ApiError, ErrorKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::pool::AccountPool;

/// Lease a process, run the turn, stream its events to `out`. Ends early, cancelling the ACP
/// turn, when `out` is dropped (the client went away) or the deadline passes.
pub async fn run(
    pool: Arc<AccountPool>,
    input: PromptInput,
    out: mpsc::Sender<WorkerEvent>,
    deadline: Instant,
) {
    let result = tokio::select! {
        () = out.closed() => return,
        result = tokio::time::timeout_at(deadline, serve(&pool, &input, &out)) => result,
    };
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
) -> Result<Option<TurnSummary>, ApiError> {
    let text = match &input.body {
        PromptBody::Messages(messages) => prompt::render(messages),
        PromptBody::Text(text) => text.clone(),
    };
    let mut lease = pool.lease().await?;
    // Until the turn ends normally, the process is not fit to serve again: if this future is
    // dropped (deadline, client gone) mid-turn, the agent may still be working on it.
    lease.discard();
    if out
        .send(WorkerEvent::Started {
            account: pool.id.clone(),
        })
        .await
        .is_err()
    {
        return Ok(None);
    }

    let mut answer = String::new();
    let outcome = {
        let Some(process) = lease.process() else {
            return Err(ApiError::internal("leased a slot without a process"));
        };
        let (agent_tx, mut agent_rx) = mpsc::channel(32);
        let turn = process.prompt(text.clone(), agent_tx);
        tokio::pin!(turn);
        let outcome = loop {
            tokio::select! {
                biased;
                event = agent_rx.recv() => {
                    if let Some(AgentEvent::Text(chunk)) = event
                        && !forward(out, &mut answer, chunk).await
                    {
                        return Ok(None);
                    }
                }
                outcome = &mut turn => break outcome,
            }
        };
        // The turn is over: forward what the agent sent just before answering.
        while let Ok(event) = agent_rx.try_recv() {
            if let AgentEvent::Text(chunk) = event
                && !forward(out, &mut answer, chunk).await
            {
                return Ok(None);
            }
        }
        outcome
    };
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

/// Send one chunk on; false when the consumer is gone.
async fn forward(out: &mpsc::Sender<WorkerEvent>, answer: &mut String, chunk: String) -> bool {
    answer.push_str(&chunk);
    out.send(WorkerEvent::Text(chunk)).await.is_ok()
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
