//! One answer as the client sees it, across accounts: text from the account serving it, and,
//! when that account fails after the first byte, the rest from the next-best account, which
//! is given the conversation and the partial answer and asked to continue it (the worker
//! splices its output so nothing is repeated). Only when no account can resume does the
//! answer end with the error.

use std::sync::Arc;

use tokio::time::Instant;

use drawbridge_core::breaker::Outcome;
use drawbridge_core::tokens;
use drawbridge_http::{ChatContext, EventStream};
use drawbridge_types::worker::{PromptBody, WorkerEvent};
use drawbridge_types::{
    ApiError, ChatCompletionRequest, CompletionEvent, ErrorKind, Finish, Metering, Usage,
};
use futures::StreamExt;

use crate::errors;
use crate::turn::{Attempts, Turn, Turns};

struct Answer {
    turns: Arc<Turns>,
    request: ChatCompletionRequest,
    ctx: ChatContext,
    attempts: Attempts,
    turn: Turn,
    /// Everything the client has received.
    text: String,
    /// The accounts that have served this answer, in order.
    served: Vec<String>,
    done: bool,
}

pub(crate) fn stream(
    turns: Arc<Turns>,
    request: ChatCompletionRequest,
    ctx: ChatContext,
    attempts: Attempts,
    turn: Turn,
) -> EventStream {
    let answer = Answer {
        turns,
        request,
        ctx,
        attempts,
        served: vec![turn.account.clone()],
        turn,
        text: String::new(),
        done: false,
    };
    futures::stream::unfold(answer, |mut answer| async move {
        let item = answer.next().await?;
        Some((item, answer))
    })
    .boxed()
}

impl Answer {
    async fn next(&mut self) -> Option<Result<CompletionEvent, ApiError>> {
        if self.done {
            return None;
        }
        loop {
            let event = match self.turn.first.take() {
                Some(event) => event,
                None => self.next_event().await,
            };
            match event {
                WorkerEvent::Started { .. } | WorkerEvent::Activity => continue,
                WorkerEvent::Reasoning(text) => {
                    return Some(Ok(CompletionEvent::Reasoning(text)));
                }
                WorkerEvent::Text(text) => {
                    self.text.push_str(&text);
                    return Some(Ok(CompletionEvent::Delta(text)));
                }
                WorkerEvent::Finished(summary) => {
                    self.done = true;
                    if let Some(ticket) = self.turn.ticket.take() {
                        ticket.record(Outcome::Success);
                    }
                    // The one charge of this turn: only a turn that finished reaches here.
                    self.turns.finished(&self.turn.account, summary.credits);
                    // Spliced from more than one turn: the last turn's count covers only its
                    // part. (Accounts that failed before the first byte wrote nothing.)
                    let resumed = self.served.len() > 1;
                    let completion_tokens = if resumed {
                        tokens::estimate_tokens(&self.text)
                    } else {
                        summary.completion_tokens
                    };
                    return Some(Ok(CompletionEvent::Finish(Finish {
                        finish_reason: summary.finish_reason,
                        usage: Usage::new(summary.prompt_tokens, completion_tokens),
                        metering: Metering {
                            accounts: std::mem::take(&mut self.served),
                            credits: summary.credits,
                            tokens_estimated: summary.tokens_estimated || resumed,
                        },
                    })));
                }
                WorkerEvent::Error(error) => match self.resume(error).await {
                    Ok(turn) => {
                        self.served.push(turn.account.clone());
                        self.turn = turn;
                    }
                    Err(error) => {
                        self.done = true;
                        return Some(Err(error));
                    }
                },
            }
        }
    }

    /// The turn's next event, within `engine.idle_timeout` of the last one and before the
    /// request's deadline: a silent agent is a failure (the answer resumes elsewhere), not a
    /// wait.
    async fn next_event(&mut self) -> WorkerEvent {
        let idle = self.turns.settings().idle_timeout;
        let until = (Instant::now() + idle).min(self.attempts.deadline);
        match tokio::time::timeout_at(until, self.turn.rest.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => WorkerEvent::Error(ApiError::upstream(
                "The worker ended the answer before it was complete.",
            )),
            Err(_) if self.attempts.expired() => WorkerEvent::Error(errors::deadline_passed()),
            Err(_) => WorkerEvent::Error(ApiError::new(
                ErrorKind::Timeout,
                format!("The agent sent nothing for {idle:?}."),
            )),
        }
    }

    /// The turn failed after its first byte: continue the answer on another account, or give
    /// back the error when none can.
    async fn resume(&mut self, error: ApiError) -> Result<Turn, ApiError> {
        // The request's own deadline says nothing about the account that happened to be
        // answering when it passed.
        let expired = self.attempts.expired();
        match self.turn.ticket.take() {
            Some(ticket) => self
                .turns
                .settle(ticket, &self.turn.account, &error, expired),
            None if !expired => self.turns.failed(&self.turn.account, &error),
            None => {}
        }
        tracing::warn!(
            request_id = self.ctx.request_id,
            account = self.turn.account,
            sent_chars = self.text.len(),
            %error,
            "answer broke off after its first byte"
        );
        let settings = self.turns.settings();
        let model = self.request.model.clone();
        if !settings.resume_after_first_byte || !error.retryable() || !self.attempts.left() {
            return Err(errors::for_client(error, &model));
        }
        let body = PromptBody::Resume {
            messages: self.request.messages.clone(),
            partial: self.text.clone(),
        };
        let turns = Arc::clone(&self.turns);
        match turns
            .start(&self.request, &self.ctx, &mut self.attempts, body)
            .await
        {
            Ok(turn) => {
                tracing::info!(
                    request_id = self.ctx.request_id,
                    from = self.turn.account,
                    to = turn.account,
                    "answer resumed on another account"
                );
                self.turns.resumed();
                Ok(turn)
            }
            Err(resume_error) => {
                tracing::warn!(request_id = self.ctx.request_id, %resume_error, "no account could resume the answer");
                Err(errors::for_client(error, &model))
            }
        }
    }
}
