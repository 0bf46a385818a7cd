//! One answer as the client sees it, across accounts: text from the account serving it, and,
//! when that account fails after the first byte, the rest from the next-best account, which
//! is given the conversation and the partial answer and asked to continue it (the worker
//! splices its output so nothing is repeated). Only when no account can resume does the
//! answer end with the error.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use drawbridge_core::breaker::{Outcome, classify};
use drawbridge_core::tokens;
use drawbridge_http::{ChatContext, EventStream};
use drawbridge_types::worker::{PromptBody, WorkerEvent};
use drawbridge_types::{
    ApiError, ChatCompletionRequest, CompletionEvent, ErrorKind, Finish, Metering, Usage,
};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::{Engine, InflightGuard, RouteKey};

/// The accounts one request has used, how many more it may use, and its deadline.
pub struct Attempts {
    pub tried: HashSet<RouteKey>,
    max: usize,
    /// When the whole request must be over (`engine.request_timeout` after it began).
    pub deadline: Instant,
    /// The conversation key (session affinity), and the account it is bound to.
    pub conversation: Option<String>,
    pub bound: Option<String>,
}

impl Attempts {
    pub fn new(max: usize, deadline: Instant) -> Self {
        Attempts {
            tried: HashSet::new(),
            max: max.max(1),
            deadline,
            conversation: None,
            bound: None,
        }
    }

    /// Whether another account may be tried: the rotation budget is not spent and the
    /// deadline has not passed.
    pub fn left(&self) -> bool {
        self.tried.len() < self.max && !self.expired()
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub fn used(&self) -> usize {
        self.tried.len()
    }

    pub fn record(&mut self, key: RouteKey) {
        self.tried.insert(key);
    }
}

/// A started turn: its first content event, the rest, and its place in the in-flight count.
pub struct Turn {
    pub account: String,
    pub first: Option<WorkerEvent>,
    pub rest: BoxStream<'static, WorkerEvent>,
    /// The account's circuit-breaker ticket, resolved when the turn ends.
    pub ticket: Option<crate::breakers::Ticket>,
    pub _guard: InflightGuard,
}

struct Answer {
    engine: Arc<Engine>,
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

pub fn stream(
    engine: Arc<Engine>,
    request: ChatCompletionRequest,
    ctx: ChatContext,
    attempts: Attempts,
    turn: Turn,
) -> EventStream {
    let answer = Answer {
        engine,
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
                WorkerEvent::Started { .. } => continue,
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
                    self.engine.credits.charge(
                        &self.turn.account,
                        summary.credits,
                        &self.engine.shutdown,
                    );
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
        let idle = self.engine.settings().idle_timeout;
        let until = (Instant::now() + idle).min(self.attempts.deadline);
        match tokio::time::timeout_at(until, self.turn.rest.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => WorkerEvent::Error(ApiError::upstream(
                "The worker ended the answer before it was complete.",
            )),
            Err(_) if self.attempts.expired() => WorkerEvent::Error(crate::deadline_passed()),
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
        let deadline = self.attempts.expired();
        if let Some(ticket) = self.turn.ticket.take() {
            ticket.record(if deadline {
                Outcome::Ignored
            } else {
                classify(error.kind)
            });
        }
        if !deadline {
            self.engine.account_failed(&self.turn.account, &error);
        }
        tracing::warn!(
            request_id = self.ctx.request_id,
            account = self.turn.account,
            sent_chars = self.text.len(),
            %error,
            "answer broke off after its first byte"
        );
        let settings = self.engine.settings();
        let model = self.request.model.clone();
        if !settings.resume_after_first_byte || !error.retryable() || !self.attempts.left() {
            return Err(crate::for_client(error, &model));
        }
        let body = PromptBody::Resume {
            messages: self.request.messages.clone(),
            partial: self.text.clone(),
        };
        let engine = Arc::clone(&self.engine);
        match engine
            .start_turn(&self.request, &self.ctx, &mut self.attempts, body)
            .await
        {
            Ok(turn) => {
                tracing::info!(
                    request_id = self.ctx.request_id,
                    from = self.turn.account,
                    to = turn.account,
                    "answer resumed on another account"
                );
                self.engine.metrics.record_failover("resume");
                Ok(turn)
            }
            Err(resume_error) => {
                tracing::warn!(request_id = self.ctx.request_id, %resume_error, "no account could resume the answer");
                Err(crate::for_client(error, &model))
            }
        }
    }
}
