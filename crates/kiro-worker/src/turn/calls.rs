//! The client's tool calls in a turn: each call the agent makes over MCP is held open and
//! passed to the client under an id that names the turn's live session; when the agent has
//! made its calls, the answer finishes with `tool_calls` and the turn parks until the client's
//! results come back (or the live-session TTL passes).

use std::time::Duration;

use drawbridge_acp::AgentEvent;
use drawbridge_types::openai::{FinishReason, FunctionCall, ToolCall};
use drawbridge_types::tools::{live_call_id, new_live_id};
use drawbridge_types::worker::{TurnSummary, WorkerEvent};
use tokio::sync::mpsc;

use super::TurnEnv;
use super::output::{Next, Output};
use crate::bridge::{BridgeSession, HeldCall};
use crate::live::Resume;
use crate::pool::AccountPool;

/// How long after a tool call the answer waits for the agent's next parallel call before it
/// finishes with the calls made so far. Agents issue parallel calls together; a call made
/// later is passed on in the next answer.
pub(super) const GATHER: Duration = Duration::from_millis(100);

/// Agent events kept while a session is parked (it waits on its calls and sends little);
/// beyond this, signs of life are dropped (text and reasoning never are).
const PARKED_EVENTS: usize = 256;

/// The turn's tool calls: the MCP session serving the client's tools, the calls held open.
pub(crate) struct Calls<'a> {
    pub tools: &'a mut BridgeSession,
    /// The live session's id: every call id issued names it.
    pub live_id: String,
    /// Calls issued so far over the whole turn (numbers the ids).
    pub issued: usize,
    /// Answers that ended with calls (the turn parked that many times).
    pub answers: u32,
    /// Held calls, with the ids the client knows them by.
    held: Vec<(String, HeldCall)>,
    pub parallel: bool,
    /// False once the bridge session stops delivering calls.
    pub open: bool,
}

/// How a parked session ended its wait.
pub(super) enum Parking {
    /// The client's results came: the agent has them and the next answer goes on.
    Resumed {
        prompt_tokens: u64,
        /// The follow-up's conversation key (what the session holds after its answer).
        conversation: Option<String>,
    },
    /// Nobody came back in time (or the worker is draining): cancel the turn.
    Expired,
}

impl<'a> Calls<'a> {
    pub fn new(tools: &'a mut BridgeSession, parallel: bool) -> Self {
        Calls {
            tools,
            live_id: new_live_id(),
            issued: 0,
            answers: 0,
            held: Vec::new(),
            parallel,
            open: true,
        }
    }

    /// Pass `call` on to the client and hold it; false when the consumer is gone.
    pub async fn issue(&mut self, call: HeldCall, output: &mut Output) -> bool {
        let id = live_call_id(&self.live_id, self.issued);
        self.issued += 1;
        let event = ToolCall {
            id: id.clone(),
            kind: "function".to_owned(),
            function: FunctionCall {
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            },
        };
        self.held.push((id, call));
        output.tool_call(event).await
    }

    /// Let go of the held calls: the agent's MCP calls end with an error.
    pub fn drop_held(&mut self) {
        self.held.clear();
    }

    /// Answer the held calls with the client's `results` (tool messages by `tool_call_id`);
    /// a call the client sent no result for is answered as an error. The prompt tokens the
    /// results amount to.
    fn answer(&mut self, results: &[drawbridge_types::ChatMessage]) -> u64 {
        let mut tokens = 0;
        for (id, call) in self.held.drain(..) {
            match results
                .iter()
                .find(|m| m.tool_call_id.as_deref() == Some(id.as_str()))
            {
                Some(result) => {
                    let text = result.text();
                    tokens += drawbridge_core::tokens::estimate_tokens(&text);
                    call.answer(text, false);
                }
                None => call.answer("The client sent no result for this call.".to_owned(), true),
            }
        }
        tokens
    }
}

/// The agent has made its calls: finish the answer with `tool_calls`, let its consumer go,
/// and wait (parked in the worker's live sessions) for the follow-up that brings the results,
/// up to `worker.live_session_ttl`. What the agent sends meanwhile is passed on in the next
/// answer.
pub(super) async fn park(
    calls: &mut Calls<'_>,
    output: &mut Output,
    pool: &AccountPool,
    env: &TurnEnv,
    agent_rx: &mut mpsc::Receiver<AgentEvent>,
) -> Parking {
    if !output.end().await {
        return Parking::Expired;
    }
    let summary = TurnSummary {
        finish_reason: FinishReason::ToolCalls,
        prompt_tokens: 0,
        completion_tokens: output.answer_tokens(),
        cached_prompt_tokens: None,
        tokens_estimated: true,
        credits: 0.0,
        context_usage_percent: None,
        continuation_rounds: 0,
        tool_choice_unmet: false,
        warm: false,
    };
    if output
        .out
        .send(WorkerEvent::Finished(summary))
        .await
        .is_err()
    {
        return Parking::Expired;
    }
    output.release();
    calls.answers += 1;
    let ticket = env.live.park(&calls.live_id, &pool.id);
    tracing::info!(
        account = pool.id,
        calls = calls.held.len(),
        "answer ended with tool calls; the session waits for their results"
    );
    let mut kept = Vec::new();
    let ttl = tokio::time::sleep(env.settings.live_session_ttl);
    tokio::pin!(ttl);
    let mut resume = ticket.resume;
    let follow_up: Option<Resume> = loop {
        tokio::select! {
            resumed = &mut resume => break resumed.ok(),
            event = agent_rx.recv() => {
                if let Some(event) = event
                    && (kept.len() < PARKED_EVENTS
                        || matches!(event, AgentEvent::Text(_) | AgentEvent::Thought(_)))
                {
                    kept.push(event);
                }
            }
            () = &mut ttl => {
                if env.live.unpark(&calls.live_id) {
                    tracing::info!(account = pool.id, "live session expired; cancelling it");
                    break None;
                }
                // A follow-up took it first: it is on its way.
                break resume.await.ok();
            }
            () = env.shutdown.cancelled() => {
                if env.live.unpark(&calls.live_id) {
                    tracing::info!(account = pool.id, "worker draining; cancelling a live session");
                    break None;
                }
                break resume.await.ok();
            }
        }
    };
    let Some(follow_up) = follow_up else {
        return Parking::Expired;
    };
    tracing::info!(
        request_id = follow_up.request_id,
        account = pool.id,
        "tool results arrived; the live session goes on"
    );
    let prompt_tokens = calls.answer(&follow_up.messages);
    let conversation = follow_up.conversation;
    output.begin_answer(follow_up.out);
    let started = WorkerEvent::Started {
        account: pool.id.clone(),
    };
    if output.out.send(started).await.is_err() {
        return Parking::Expired;
    }
    for event in kept {
        match output.on_event(pool, event).await {
            Next::Go => {}
            Next::ConsumerGone | Next::Fail(_) => return Parking::Expired,
        }
    }
    Parking::Resumed {
        prompt_tokens,
        conversation,
    }
}
