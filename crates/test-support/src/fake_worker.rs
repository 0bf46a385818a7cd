//! A scripted worker connection for in-process engine tests: one account, answering each turn
//! as scripted ([`Script`]), recording every turn it was sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use drawbridge_engine::WorkerConn;
use drawbridge_types::ApiError;
use drawbridge_types::openai::FinishReason;
use drawbridge_types::worker::{
    AccountSlots, AccountStatus, PromptBody, PromptInput, SlotsReport, TurnSummary, WorkerEvent,
};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};

/// How the account answers one turn.
#[derive(Debug, Clone)]
pub enum Script {
    /// These chunks, then the finish.
    Answer(Vec<String>),
    /// These chunks, then this error: a failure after the first byte.
    BreaksAfter(Vec<String>, ApiError),
    /// This error before any content: a failure before the first byte.
    Fails(ApiError),
    /// A resumed turn answers `[after <partial>]`, any other turn `whole`; then the finish.
    Continues,
    /// These chunks, then silence forever: an account gone quiet mid-answer.
    Stalls(Vec<String>),
    /// Nothing at all, ever.
    Mute,
    /// These steps in order (on the test's clock: paused time makes the waits instant); a
    /// turn whose steps end without a finish or an error goes silent forever.
    Steps(Vec<Step>),
}

/// One step of a [`Script::Steps`] turn.
#[derive(Debug, Clone)]
pub enum Step {
    Text(String),
    Reasoning(String),
    /// [`WorkerEvent::Activity`]: a tool call, progress or metadata frame.
    Activity,
    /// Send nothing for this long.
    Wait(std::time::Duration),
    /// Activity every `every` for `total` (the first after `every`), as a worker forwards a
    /// long tool phase.
    ActivityFor {
        every: std::time::Duration,
        total: std::time::Duration,
    },
    /// The finish, with this summary.
    Finish(TurnSummary),
    /// The finish of [`Script::Answer`] (estimated tokens, no credits).
    Finished,
    /// A call of one of the client's tools ([`tool_call`]).
    ToolCall(drawbridge_types::openai::ToolCall),
    Fail(ApiError),
}

/// The summary of a finished turn whose agent reported its usage: `prompt`/`completion`
/// tokens, `credits`, and its context use.
pub fn reported(prompt: u64, completion: u64, credits: f64, context: Option<f64>) -> TurnSummary {
    TurnSummary {
        finish_reason: FinishReason::Stop,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_prompt_tokens: None,
        tokens_estimated: false,
        credits,
        context_usage_percent: context,
        continuation_rounds: 0,
        tool_choice_unmet: false,
        warm: false,
    }
}

/// The summary of a turn whose answer ended with tool calls.
pub fn called_tools() -> TurnSummary {
    TurnSummary {
        finish_reason: FinishReason::ToolCalls,
        ..reported(5, 3, 0.0, None)
    }
}

/// A call of tool `name` with `arguments`, under `id`.
pub fn tool_call(id: &str, name: &str, arguments: &str) -> drawbridge_types::openai::ToolCall {
    drawbridge_types::openai::ToolCall {
        id: id.to_owned(),
        kind: "function".to_owned(),
        function: drawbridge_types::openai::FunctionCall {
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        },
    }
}

impl Script {
    /// [`Script::Answer`] of `chunks`.
    pub fn answer(chunks: &[&str]) -> Script {
        Script::Answer(chunks.iter().map(|c| (*c).to_owned()).collect())
    }
}

/// One worker serving one account of the model `kiro`.
pub struct FakeWorker {
    account: String,
    models: Vec<String>,
    slots: u32,
    draining: bool,
    /// Replies for the next turns, in order; then `otherwise`.
    script: Mutex<VecDeque<Script>>,
    otherwise: Script,
    prompts: Mutex<Vec<PromptInput>>,
    /// When each turn was sent (tokio's clock: paused time in the tests).
    sent_at: Mutex<Vec<tokio::time::Instant>>,
}

impl FakeWorker {
    /// `account`, with two slots, answering every turn `hello`.
    pub fn new(account: &str) -> FakeWorker {
        FakeWorker {
            account: account.to_owned(),
            models: vec!["kiro".to_owned()],
            slots: 2,
            draining: false,
            script: Mutex::new(VecDeque::new()),
            otherwise: Script::answer(&["hello"]),
            prompts: Mutex::new(Vec::new()),
            sent_at: Mutex::new(Vec::new()),
        }
    }

    /// Serve `models` (default: `kiro`).
    pub fn models(mut self, models: &[&str]) -> FakeWorker {
        self.models = models.iter().map(|m| (*m).to_owned()).collect();
        self
    }

    /// Report `slots` free slots (more slots: a better score).
    pub fn slots(mut self, slots: u32) -> FakeWorker {
        self.slots = slots;
        self
    }

    /// Report the worker as draining.
    pub fn draining(mut self) -> FakeWorker {
        self.draining = true;
        self
    }

    /// Answer the next unscripted turn with `script_of_turn`.
    pub fn then(self, script_of_turn: Script) -> FakeWorker {
        self.script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(script_of_turn);
        self
    }

    /// Answer every turn past the scripted ones with `script_of_turn`.
    pub fn otherwise(mut self, script_of_turn: Script) -> FakeWorker {
        self.otherwise = script_of_turn;
        self
    }

    /// As a connection for the engine.
    pub fn conn(self: &Arc<Self>) -> Arc<dyn WorkerConn> {
        Arc::clone(self) as Arc<dyn WorkerConn>
    }

    /// Every turn this worker was sent, in order.
    pub fn prompts(&self) -> Vec<PromptInput> {
        self.prompts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// When each turn was sent, in order (tokio's clock).
    pub fn sent_at(&self) -> Vec<tokio::time::Instant> {
        self.sent_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn next_script(&self) -> Script {
        self.script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or_else(|| self.otherwise.clone())
    }
}

fn finished() -> WorkerEvent {
    WorkerEvent::Finished(TurnSummary {
        finish_reason: FinishReason::Stop,
        prompt_tokens: 1,
        completion_tokens: 1,
        cached_prompt_tokens: None,
        tokens_estimated: true,
        credits: 0.0,
        context_usage_percent: None,
        continuation_rounds: 0,
        tool_choice_unmet: false,
        warm: false,
    })
}

/// `started`, then `steps` played out in time.
fn steps_stream(started: WorkerEvent, steps: Vec<Step>) -> BoxStream<'static, WorkerEvent> {
    let mut expanded = VecDeque::new();
    for step in steps {
        match step {
            Step::ActivityFor { every, total } => {
                let mut elapsed = std::time::Duration::ZERO;
                while elapsed + every <= total {
                    expanded.push_back(Step::Wait(every));
                    expanded.push_back(Step::Activity);
                    elapsed += every;
                }
            }
            step => expanded.push_back(step),
        }
    }
    let played = stream::unfold(expanded, |mut steps| async move {
        loop {
            let event = match steps.pop_front()? {
                Step::Wait(pause) => {
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Step::Text(text) => WorkerEvent::Text(text),
                Step::Reasoning(text) => WorkerEvent::Reasoning(text),
                Step::Activity => WorkerEvent::Activity,
                Step::Finish(summary) => WorkerEvent::Finished(summary),
                Step::Finished => finished(),
                Step::ToolCall(call) => WorkerEvent::ToolCall(call),
                Step::Fail(error) => WorkerEvent::Error(error),
                Step::ActivityFor { .. } => continue, // expanded above
            };
            return Some((event, steps));
        }
    });
    stream::iter([started])
        .chain(played)
        .chain(stream::pending())
        .boxed()
}

impl WorkerConn for FakeWorker {
    fn name(&self) -> &str {
        &self.account
    }

    fn prompt(&self, input: PromptInput) -> BoxStream<'static, WorkerEvent> {
        let started = WorkerEvent::Started {
            account: self.account.clone(),
        };
        let body = input.body.clone();
        self.prompts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(input);
        self.sent_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tokio::time::Instant::now());
        let texts = |chunks: Vec<String>| chunks.into_iter().map(WorkerEvent::Text);
        let events: Vec<WorkerEvent> = match self.next_script() {
            Script::Answer(chunks) => std::iter::once(started)
                .chain(texts(chunks))
                .chain([finished()])
                .collect(),
            Script::BreaksAfter(chunks, error) => std::iter::once(started)
                .chain(texts(chunks))
                .chain([WorkerEvent::Error(error)])
                .collect(),
            Script::Fails(error) => vec![started, WorkerEvent::Error(error)],
            Script::Continues => {
                let text = match body {
                    PromptBody::Resume { partial, .. } => format!("[after {partial}]"),
                    _ => "whole".to_owned(),
                };
                vec![started, WorkerEvent::Text(text), finished()]
            }
            Script::Stalls(chunks) => {
                return stream::iter(
                    std::iter::once(started)
                        .chain(texts(chunks))
                        .collect::<Vec<_>>(),
                )
                .chain(stream::pending())
                .boxed();
            }
            Script::Mute => {
                return stream::iter([started]).chain(stream::pending()).boxed();
            }
            Script::Steps(steps) => return steps_stream(started, steps),
        };
        stream::iter(events).boxed()
    }

    fn slots(&self) -> BoxFuture<'_, Result<SlotsReport, ApiError>> {
        futures::future::ready(Ok(SlotsReport {
            worker_id: self.account.clone(),
            draining: self.draining,
            accounts: vec![AccountSlots {
                account: self.account.clone(),
                default_model: None,
                tools_refused: 0,
                models: self.models.clone(),
                size: self.slots,
                busy: 0,
                idle: self.slots,
                starting: 0,
                failed: 0,
                queue_depth: 0,
                credits_used: 0.0,
                last_error: None,
                status: AccountStatus::Healthy,
            }],
        }))
        .boxed()
    }
}
