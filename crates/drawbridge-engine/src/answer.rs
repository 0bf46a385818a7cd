//! One answer as the client sees it, across accounts: text from the account serving it, and,
//! when that account fails after the first byte, the rest from the next-best account, which
//! is given the conversation and the partial answer and asked to continue it (the worker
//! splices its output so nothing is repeated). Only when no account can resume does the
//! answer end with the error.
//!
//! The first byte is the first text: a turn that fails after activity or reasoning only is
//! started again from scratch on the next account (a retry, not a resumption). Reasoning is
//! shown per `engine.reasoning`: `on` as reasoning events, `off` not at all, `fold` as text
//! (`<think>…</think>` and a blank line before the text that follows); only folded reasoning
//! is part of the text a resumption continues.
//!
//! The finish carries `usage.drawbridge`: whether the token counts were reported or estimated
//! (any estimate, or a resumption, makes them estimated), the credits of the accounts that
//! served it and the last context use reported.

use std::sync::Arc;

use tokio::time::Instant;

use drawbridge_core::breaker::Outcome;
use drawbridge_core::tokens;
use drawbridge_http::{ChatContext, EventStream};
use drawbridge_types::openai::{FinishReason, UsageDetails};
use drawbridge_types::worker::{PromptBody, WorkerEvent};
use drawbridge_types::{
    ApiError, ChatCompletionRequest, CompletionEvent, ErrorKind, Finish, Metering, Usage,
};

use crate::settings::ReasoningMode;
use futures::StreamExt;

use crate::errors;
use crate::turn::{Attempts, Turn, Turns};

struct Answer {
    turns: Arc<Turns>,
    request: ChatCompletionRequest,
    ctx: ChatContext,
    attempts: Attempts,
    turn: Turn,
    /// The text the client has received (folded reasoning included); for an answer another
    /// engine began, what it had sent too.
    text: String,
    /// The answer continues one another engine began: its token counts cover only a part.
    continued: bool,
    /// The accounts that have served this answer, in order (an account that failed before
    /// the first text served nothing).
    served: Vec<String>,
    /// `fold`: a `<think>` block is open (closed before the next text or the finish).
    thinking: bool,
    /// The tool calls the client has received; the live session that holds them.
    tool_calls: u32,
    live_session: Option<String>,
    done: bool,
}

/// What closes a folded reasoning block before the text.
const THINK_END: &str = "</think>\n\n";

pub(crate) fn stream(
    turns: Arc<Turns>,
    request: ChatCompletionRequest,
    ctx: ChatContext,
    attempts: Attempts,
    turn: Turn,
    partial: Option<String>,
) -> EventStream {
    let answer = Answer {
        turns,
        request,
        ctx,
        attempts,
        served: vec![turn.account.clone()],
        turn,
        continued: partial.is_some(),
        text: partial.unwrap_or_default(),
        thinking: false,
        tool_calls: 0,
        live_session: None,
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
                WorkerEvent::Reasoning(text) => match self.turns.settings().reasoning {
                    ReasoningMode::On => return Some(Ok(CompletionEvent::Reasoning(text))),
                    ReasoningMode::Off => continue,
                    ReasoningMode::Fold => {
                        let folded = if std::mem::replace(&mut self.thinking, true) {
                            text
                        } else if self.text.is_empty() {
                            format!("<think>{text}")
                        } else {
                            format!("\n\n<think>{text}")
                        };
                        return Some(Ok(self.shown(folded)));
                    }
                },
                WorkerEvent::ToolCall(call) => {
                    // A call is part of the answer, like text: a turn that fails after it
                    // cannot be started again elsewhere (the client would get the call twice).
                    if let Some(live) = drawbridge_types::tools::live_session_of(&call.id) {
                        self.live_session = Some(live.to_owned());
                    }
                    let index = self.tool_calls;
                    self.tool_calls += 1;
                    return Some(Ok(CompletionEvent::ToolCall { index, call }));
                }
                WorkerEvent::Text(text) => {
                    let text = if std::mem::take(&mut self.thinking) {
                        format!("{THINK_END}{text}")
                    } else {
                        text
                    };
                    return Some(Ok(self.shown(text)));
                }
                WorkerEvent::Finished(summary) if self.thinking => {
                    // Close the folded block first; the finish comes next.
                    self.thinking = false;
                    self.turn.first = Some(WorkerEvent::Finished(summary));
                    return Some(Ok(self.shown(THINK_END.to_owned())));
                }
                WorkerEvent::Finished(summary) => {
                    self.done = true;
                    if let Some(ticket) = self.turn.ticket.take() {
                        ticket.record(Outcome::Success);
                    }
                    // The one charge of this turn: only a turn that finished reaches here.
                    self.turns.finished(&self.turn.account, summary.credits);
                    if let Some(live) = self.live_session.take()
                        && summary.finish_reason == FinishReason::ToolCalls
                    {
                        // The client's results come back in its next request: route it to
                        // the account (and so the worker) whose session holds the calls.
                        self.turns.bind_live(&live, &self.turn.account);
                    }
                    if summary.warm
                        && self.served.len() == 1
                        && !self.continued
                        && let Some(key) = &self.attempts.conversation_key
                    {
                        // The next request of this conversation can go to the session.
                        self.turns.bind_warm(key, &self.turn.account);
                    }
                    // Spliced from more than one turn: the last turn's count covers only its
                    // part. (Accounts that failed before the first text wrote nothing.)
                    let resumed = self.served.len() > 1 || self.continued;
                    let completion_tokens = if resumed {
                        tokens::estimate_tokens(&self.text)
                    } else {
                        summary.completion_tokens
                    };
                    let estimated = summary.tokens_estimated || resumed;
                    // Only a finished turn reports its cost: the credits of the accounts that
                    // served this answer are the finished turn's.
                    let details = UsageDetails {
                        tool_choice_unmet: summary.tool_choice_unmet,
                        ..UsageDetails::of(
                            estimated,
                            summary.credits,
                            summary.context_usage_percent,
                        )
                    };
                    return Some(Ok(CompletionEvent::Finish(Finish {
                        finish_reason: summary.finish_reason,
                        usage: Usage::new(summary.prompt_tokens, completion_tokens)
                            .with_cached(summary.cached_prompt_tokens)
                            .with_details(details),
                        metering: Metering {
                            accounts: std::mem::take(&mut self.served),
                            credits: summary.credits,
                            tokens_estimated: estimated,
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

    /// `text` goes to the client as text: it is part of what a resumption continues.
    fn shown(&mut self, text: String) -> CompletionEvent {
        self.text.push_str(&text);
        CompletionEvent::Delta(text)
    }

    /// The turn's next event, within `engine.idle_timeout` of the last one and before the
    /// request's deadline: a silent agent is a failure (the answer resumes elsewhere), not a
    /// wait.
    async fn next_event(&mut self) -> WorkerEvent {
        let idle = self.turns.settings().idle_timeout;
        let until = (Instant::now() + idle).min(self.attempts.deadline);
        match tokio::time::timeout_at(until, self.turn.rest.next()).await {
            Ok(Some(event)) => event,
            // The worker's stream broke off: the worker's failure, not the account's.
            Ok(None) => WorkerEvent::Error(ApiError::new(
                ErrorKind::Unavailable,
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
        let model = self.request.model.clone();
        if self.tool_calls > 0 {
            // The client has calls from this turn: another account cannot continue them.
            return Err(errors::for_client(error, &model));
        }
        if self.text.is_empty() {
            return self.restart(error).await;
        }
        tracing::warn!(
            request_id = self.ctx.request_id,
            account = self.turn.account,
            sent_chars = self.text.len(),
            %error,
            "answer broke off after its first byte"
        );
        let settings = self.turns.settings();
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

    /// The turn failed after activity or reasoning but before any text: nothing of the answer
    /// is with the client, so the next account starts it again from scratch, as a turn that
    /// failed before its first byte would be (the breaker was settled by the caller).
    async fn restart(&mut self, error: ApiError) -> Result<Turn, ApiError> {
        tracing::warn!(
            request_id = self.ctx.request_id,
            account = self.turn.account,
            %error,
            "turn failed before its first text; starting again on another account"
        );
        // The failed account served nothing of this answer.
        self.served.retain(|account| account != &self.turn.account);
        if !error.retryable() {
            return Err(errors::for_client(error, &self.request.model));
        }
        self.turns.metrics.record_failover("retry");
        let body = PromptBody::Messages(self.request.messages.clone());
        let turns = Arc::clone(&self.turns);
        turns
            .start(&self.request, &self.ctx, &mut self.attempts, body)
            .await
            .map_err(|retry_error| {
                tracing::warn!(request_id = self.ctx.request_id, %retry_error, "no account could start the answer again");
                match retry_error.kind {
                    // Nothing left to try: the turn's own failure says more.
                    ErrorKind::Unavailable => errors::for_client(error, &self.request.model),
                    _ => retry_error,
                }
            })
    }
}
