//! Where one answer's events go: text through the splicer (a continuation must not repeat what
//! was sent) and the sanitizer to the consumer; reasoning through a sanitizer of its own; every
//! other frame as a throttled sign of life.

use drawbridge_acp::AgentEvent;
use drawbridge_core::continuation::Splicer;
use drawbridge_core::sanitize::{SanitizeOptions, Sanitizer};
use drawbridge_core::tool_tags::{Piece, ToolTagScanner};
use drawbridge_types::ApiError;
use drawbridge_types::worker::{ACTIVITY_EVERY, WorkerEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::unserved;
use crate::pool::AccountPool;

/// Where text goes: splicer → sanitizer → consumer; and where reasoning, tool calls and signs
/// of life go. A live session's turn gives several answers (one per follow-up): each starts
/// with [`Output::begin_answer`] on the follow-up's consumer.
pub(super) struct Output {
    pub(super) out: mpsc::Sender<WorkerEvent>,
    sanitizer: Sanitizer,
    pub(super) splicer: Option<Splicer>,
    /// Everything the agent said, as it said it (what continuation reasons about).
    pub(super) raw: String,
    /// Reasoning has a sanitizer of its own: it is a stream of its own.
    reasoning: Sanitizer,
    /// Every reasoning chunk, as the agent sent it: the model generated it, so an estimated
    /// `completion_tokens` counts it (as OpenAI counts reasoning tokens).
    pub(super) thought: String,
    /// When the last `Activity` went out.
    last_activity: Option<Instant>,
    /// Where this answer began in `raw` and `thought`, and the characters of its tool calls.
    answer_raw: usize,
    answer_thought: usize,
    call_chars: usize,
    /// Emulated tool calling: the tagged calls parsed out of the text.
    tags: Option<Tags>,
    /// The text of this answer as the consumer got it (what a client sends back when it
    /// continues the conversation).
    sent: String,
}

/// The tagged tool calls of an answer whose tools were described in the prompt.
struct Tags {
    scanner: ToolTagScanner,
    /// Call ids name a session, as over MCP; none is held (the agent's turn ends with its
    /// answer), so the follow-up is answered from the whole conversation.
    live_id: String,
    issued: usize,
}

/// What to do after one agent event.
pub(super) enum Next {
    Go,
    ConsumerGone,
    Fail(ApiError),
}

impl Output {
    /// The output of one answer to `out`; a `resumed` answer's text is spliced after it.
    pub(super) fn new(
        out: mpsc::Sender<WorkerEvent>,
        sanitize: SanitizeOptions,
        resumed: Option<&str>,
    ) -> Self {
        Output {
            out,
            sanitizer: Sanitizer::new(sanitize),
            // A resumed answer must not repeat what the client already has.
            splicer: resumed.map(Splicer::new),
            raw: String::new(),
            reasoning: Sanitizer::new(sanitize),
            thought: String::new(),
            last_activity: None,
            answer_raw: 0,
            answer_thought: 0,
            call_chars: 0,
            tags: None,
            sent: String::new(),
        }
    }

    /// This answer's text as the agent said it (what continuation reasons about).
    pub(super) fn answer_raw(&self) -> &str {
        self.raw.get(self.answer_raw..).unwrap_or_default()
    }

    /// This answer's text as the consumer got it.
    pub(super) fn answer_text(&self) -> String {
        self.sent.clone()
    }

    /// Parse tagged tool calls out of the text (the tools were described in the prompt).
    pub(super) fn emulate_tools(&mut self) {
        self.tags = Some(Tags {
            scanner: ToolTagScanner::new(),
            live_id: drawbridge_types::tools::new_live_id(),
            issued: 0,
        });
    }

    /// The tagged calls passed on so far.
    pub(super) fn emulated_calls(&self) -> usize {
        self.tags.as_ref().map_or(0, |tags| tags.issued)
    }

    /// The client's next answer goes to `out` (a follow-up resumed a live session). The
    /// consumer of the last one is let go: its stream ends.
    pub(super) fn begin_answer(&mut self, out: mpsc::Sender<WorkerEvent>) {
        self.out = out;
        self.answer_raw = self.raw.len();
        self.answer_thought = self.thought.len();
        self.call_chars = 0;
        self.sent.clear();
    }

    /// Let the consumer go (its answer is finished) without a next one yet.
    pub(super) fn release(&mut self) {
        let (closed, _) = mpsc::channel(1);
        self.out = closed;
    }

    /// The estimated output tokens of the current answer: its text, reasoning and tool calls.
    pub(super) fn answer_tokens(&self) -> u64 {
        let text = self.raw.get(self.answer_raw..).unwrap_or_default();
        let thought = self.thought.get(self.answer_thought..).unwrap_or_default();
        drawbridge_core::tokens::estimate_tokens(text)
            + drawbridge_core::tokens::estimate_tokens(thought)
            + u64::try_from(self.call_chars.div_ceil(4)).unwrap_or(u64::MAX)
    }

    /// Pass on a call of one of the client's tools, after the text before it (what the
    /// sanitizers held back); false when the consumer is gone.
    pub(super) async fn tool_call(&mut self, call: drawbridge_types::openai::ToolCall) -> bool {
        if !self.flush().await {
            return false;
        }
        self.call_chars +=
            call.function.name.chars().count() + call.function.arguments.chars().count();
        self.out.send(WorkerEvent::ToolCall(call)).await.is_ok()
    }

    /// Pass one reasoning chunk on; false when the consumer is gone.
    async fn reasoning(&mut self, chunk: String) -> bool {
        self.thought.push_str(&chunk);
        let clean = if self.reasoning.is_identity() {
            chunk
        } else {
            self.reasoning.push(&chunk).into_owned()
        };
        clean.is_empty() || self.out.send(WorkerEvent::Reasoning(clean)).await.is_ok()
    }

    /// The agent is working: say so, at most once per [`ACTIVITY_EVERY`].
    async fn activity(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last_activity
            .is_some_and(|last| now < last + ACTIVITY_EVERY)
        {
            return true;
        }
        self.last_activity = Some(now);
        self.out.send(WorkerEvent::Activity).await.is_ok()
    }

    /// Handle one event of the agent's.
    pub(super) async fn on_event(&mut self, pool: &AccountPool, event: AgentEvent) -> Next {
        let alive = match event {
            AgentEvent::Text(chunk) => self.text(chunk).await,
            AgentEvent::Thought(chunk) => self.reasoning(chunk).await,
            AgentEvent::ToolRefused { title, kind } => {
                pool.note_refusal(title.as_deref(), kind.as_deref());
                self.activity().await
            }
            AgentEvent::Unserved { method } => return Next::Fail(unserved(pool, &method)),
            AgentEvent::Activity(_) => self.activity().await,
        };
        if alive { Next::Go } else { Next::ConsumerGone }
    }

    /// Pass one agent chunk on; false when the consumer is gone.
    pub(super) async fn text(&mut self, chunk: String) -> bool {
        let chunk = match &mut self.splicer {
            Some(splicer) => splicer.push(&chunk).into_owned(),
            None => chunk,
        };
        self.raw.push_str(&chunk);
        match self.tags.as_mut() {
            Some(tags) => {
                let pieces = tags.scanner.push(&chunk);
                self.pieces(pieces).await
            }
            None => self.emit(chunk).await,
        }
    }

    /// Pass on what the tag scanner found: text as text, calls as tool calls.
    async fn pieces(&mut self, pieces: Vec<Piece>) -> bool {
        for piece in pieces {
            let alive = match piece {
                Piece::Text(text) => self.emit(text).await,
                Piece::Call { name, arguments } => {
                    let Some(tags) = self.tags.as_mut() else {
                        return true;
                    };
                    let id = drawbridge_types::tools::live_call_id(&tags.live_id, tags.issued);
                    tags.issued += 1;
                    self.tool_call(drawbridge_types::openai::ToolCall {
                        id,
                        kind: "function".to_owned(),
                        function: drawbridge_types::openai::FunctionCall { name, arguments },
                    })
                    .await
                }
                Piece::Malformed(raw) => {
                    tracing::warn!(
                        chars = raw.chars().count(),
                        "dropped a malformed tagged tool call"
                    );
                    true
                }
            };
            if !alive {
                return false;
            }
        }
        true
    }

    async fn emit(&mut self, chunk: String) -> bool {
        let clean = if self.sanitizer.is_identity() {
            chunk // no copy, no delay
        } else {
            self.sanitizer.push(&chunk).into_owned()
        };
        self.sent.push_str(&clean);
        clean.is_empty() || self.out.send(WorkerEvent::Text(clean)).await.is_ok()
    }

    /// The round is over: release what the splicer still held.
    pub(super) async fn end_round(&mut self) -> bool {
        match self.splicer.take() {
            Some(mut splicer) => {
                let rest = splicer.finish();
                self.raw.push_str(&rest);
                self.emit(rest).await
            }
            None => true,
        }
    }

    /// The answer is over: release what the tag scanner and the sanitizers still held.
    pub(super) async fn end(&mut self) -> bool {
        if let Some(tags) = self.tags.as_mut() {
            let scanner = std::mem::take(&mut tags.scanner);
            if !self.pieces(scanner.finish()).await {
                return false;
            }
        }
        self.flush().await
    }

    /// Release what the sanitizers still held (the text before a tool call).
    async fn flush(&mut self) -> bool {
        let thought = self.reasoning.finish();
        if !thought.is_empty()
            && self
                .out
                .send(WorkerEvent::Reasoning(thought))
                .await
                .is_err()
        {
            return false;
        }
        let rest = self.sanitizer.finish();
        self.sent.push_str(&rest);
        rest.is_empty() || self.out.send(WorkerEvent::Text(rest)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use drawbridge_acp::GET_ACCESS_TOKEN_METHOD;
    use drawbridge_types::ErrorKind;

    use super::*;
    use drawbridge_acp::Activity;

    fn pool() -> Arc<AccountPool> {
        // No slot: nothing is ever started.
        crate::pool::AccountPool::start(
            "acct".to_owned(),
            vec!["kiro".to_owned()],
            drawbridge_acp::AgentSpec::default(),
            crate::pool::PoolSettings {
                size: 0,
                handshake_timeout: Duration::from_secs(1),
                queue_timeout: Duration::from_secs(1),
                max_queue: 1,
                permissions: drawbridge_acp::PermissionPolicy::reject_all(),
                tools: drawbridge_config::AgentTools::None,
                client_tools: drawbridge_config::ClientTools::Auto,
            },
            drawbridge_telemetry::Shutdown::new(),
        )
    }

    fn output(out: &mpsc::Sender<WorkerEvent>) -> Output {
        Output::new(out.clone(), SanitizeOptions::default(), None)
    }

    fn tool_frame() -> AgentEvent {
        AgentEvent::Activity(Activity::Plan)
    }

    #[tokio::test(start_paused = true)]
    async fn activity_goes_out_at_once_then_at_most_once_per_period() {
        let pool = pool();
        let (tx, mut rx) = mpsc::channel(64);
        let mut output = output(&tx);
        for _ in 0..5 {
            assert!(matches!(
                output.on_event(&pool, tool_frame()).await,
                Next::Go
            ));
        }
        assert_eq!(
            rx.try_recv().ok(),
            Some(WorkerEvent::Activity),
            "the first at once"
        );
        assert!(rx.try_recv().is_err(), "the rest of the burst is folded");
        tokio::time::advance(ACTIVITY_EVERY - Duration::from_millis(1)).await;
        output.on_event(&pool, tool_frame()).await;
        assert!(rx.try_recv().is_err(), "not before the period is over");
        tokio::time::advance(Duration::from_millis(1)).await;
        output.on_event(&pool, tool_frame()).await;
        assert_eq!(rx.try_recv().ok(), Some(WorkerEvent::Activity));
        // Text is the answer, never activity.
        output
            .on_event(&pool, AgentEvent::Text("hi".to_owned()))
            .await;
        assert_eq!(rx.try_recv().ok(), Some(WorkerEvent::Text("hi".to_owned())));
        assert_eq!(output.raw, "hi");
    }

    #[tokio::test(start_paused = true)]
    async fn thoughts_are_reasoning_not_answer() {
        let pool = pool();
        let (tx, mut rx) = mpsc::channel(64);
        let mut output = output(&tx);
        output
            .on_event(&pool, AgentEvent::Thought("hmm".to_owned()))
            .await;
        assert_eq!(
            rx.try_recv().ok(),
            Some(WorkerEvent::Reasoning("hmm".to_owned()))
        );
        assert_eq!(output.raw, "", "continuation never sees reasoning");
        assert_eq!(output.thought, "hmm", "the estimate counts it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_tool_is_counted_and_is_activity() {
        let pool = pool();
        let (tx, mut rx) = mpsc::channel(64);
        let mut output = output(&tx);
        let refused = AgentEvent::ToolRefused {
            title: Some("Running: ls".to_owned()),
            kind: Some("execute".to_owned()),
        };
        output.on_event(&pool, refused).await;
        assert_eq!(pool.slots().tools_refused, 1);
        assert_eq!(rx.try_recv().ok(), Some(WorkerEvent::Activity));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unserved_request_fails_the_turn_and_blocks_the_account() {
        let pool = pool();
        let (tx, _rx) = mpsc::channel(64);
        let mut output = output(&tx);
        let event = AgentEvent::Unserved {
            method: GET_ACCESS_TOKEN_METHOD.to_owned(),
        };
        let Next::Fail(error) = output.on_event(&pool, event).await else {
            panic!("the turn goes on");
        };
        assert_eq!(error.kind, ErrorKind::Upstream);
        let slots = pool.slots();
        assert_eq!(
            slots.status,
            drawbridge_types::worker::AccountStatus::Unhealthy
        );
        assert!(
            slots
                .last_error
                .unwrap_or_default()
                .contains("--auth-method cli")
        );
        assert!(
            pool.lease().await.is_err(),
            "a blocked account serves nothing"
        );
    }
}
