//! The contract between the engine and a worker, independent of the wire (gRPC between
//! processes, a direct call inside `drawbridge`).

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::openai::FinishReason;

/// One chat turn for a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptInput {
    pub request_id: String,
    pub model: String,
    /// The account to use; `None` lets the worker pick.
    pub account: Option<String>,
    pub body: PromptBody,
    pub max_output_tokens: Option<u32>,
    /// The client's tools for this turn (none by default).
    pub tools: TurnTools,
    /// The live session this request continues (it answers the tool calls that session
    /// holds), when the request's tool results name one. A worker that no longer holds it
    /// serves the request in a fresh session from `body`.
    pub live_session: Option<String>,
    /// The key of this request's conversation (`drawbridge_core::conversation::key`): after
    /// the answer, the worker may keep the session open ("warm") under it, for a follow-up
    /// that extends the conversation. `None`: the session ends with the answer.
    pub conversation: Option<String>,
    /// The request's fields the engine does not act on (`temperature`, `top_p`, `stop`,
    /// `seed`, `response_format`, ...), for an upstream that can use them (a provider
    /// account). In process only: an ACP agent cannot, and the gRPC contract drops them.
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// The tools a turn offers its agent, and how it may use them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnTools {
    /// Offered to the agent (empty with `tool_choice: "none"`).
    pub tools: Vec<crate::tools::Tool>,
    pub choice: crate::tools::ToolChoice,
    /// `parallel_tool_calls` (default true): several calls may end one answer.
    pub parallel: bool,
}

impl TurnTools {
    /// The tools of `request` as a turn offers them.
    pub fn of(request: &crate::openai::ChatCompletionRequest) -> Self {
        TurnTools {
            tools: request.offered_tools().to_vec(),
            choice: request.tool_choice.clone().unwrap_or_default(),
            parallel: request.parallel_tool_calls.unwrap_or(true),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

/// What to say to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptBody {
    /// OpenAI messages; the worker renders them.
    Messages(Vec<crate::openai::ChatMessage>),
    /// A ready prompt text.
    Text(String),
    /// Finish an answer that broke off on another account: the conversation and the part of
    /// the answer the client already has. Only the rest is streamed back.
    Resume {
        messages: Vec<crate::openai::ChatMessage>,
        partial: String,
    },
}

/// What a worker streams back: `Started`, then `Text`, `Reasoning` and `Activity` in any
/// order, then exactly one `Finished` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Started {
        account: String,
    },
    Text(String),
    /// The model's reasoning (ACP `agent_thought_chunk`), sanitized like text. It never counts
    /// as the answer's first byte.
    Reasoning(String),
    /// The agent is working without text (a tool call or its progress, metadata, usage): it
    /// is alive. Resets idle deadlines and counts as first activity, never as the first byte.
    /// A worker sends at most one per [`ACTIVITY_EVERY`].
    Activity,
    /// The agent called one of the client's tools: the call is held open in the turn's live
    /// session (its id names the session, see [`crate::tools::live_call_id`]) and the answer
    /// will finish with `tool_calls`.
    ToolCall(crate::openai::ToolCall),
    Finished(TurnSummary),
    Error(ApiError),
}

/// The least time between two [`WorkerEvent::Activity`] of one turn: enough to keep every
/// deadline fed without a message per agent frame.
pub const ACTIVITY_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// How a turn ended and what it cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnSummary {
    pub finish_reason: FinishReason,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, those the upstream read from its prompt cache, when it said
    /// (HTTP provider accounts; an ACP agent reports none).
    pub cached_prompt_tokens: Option<u64>,
    /// False when the agent reported the token counts (ACP `usage_update`, a prompt result's
    /// `usage`); true when they are Drawbridge's estimate (Kiro reports none).
    pub tokens_estimated: bool,
    pub credits: f64,
    pub context_usage_percent: Option<f64>,
    /// Continuation prompts sent to complete a truncated answer (0: none needed).
    pub continuation_rounds: u32,
    /// `tool_choice` demanded a call (`required` or a named function) and the agent answered
    /// in text instead.
    pub tool_choice_unmet: bool,
    /// The worker keeps the session open after this answer, under the request's
    /// `conversation` key, for a follow-up that extends the conversation.
    pub warm: bool,
}

/// A pool's state, as `/slots` and the engine's registry see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountSlots {
    pub account: String,
    /// What the account serves: its configured labels, then the ids of its agent's model
    /// catalogue (when the agent announces one).
    pub models: Vec<String>,
    /// The agent's default model id (what a configured label runs on), when known.
    #[serde(default)]
    pub default_model: Option<String>,
    pub size: u32,
    pub busy: u32,
    pub idle: u32,
    pub starting: u32,
    pub failed: u32,
    pub queue_depth: u32,
    pub credits_used: f64,
    /// Tool permission requests of the account's agents that were refused.
    #[serde(default)]
    pub tools_refused: u64,
    pub last_error: Option<String>,
    pub status: AccountStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Healthy => "healthy",
            AccountStatus::Degraded => "degraded",
            AccountStatus::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "healthy" => AccountStatus::Healthy,
            "degraded" => AccountStatus::Degraded,
            _ => AccountStatus::Unhealthy,
        }
    }
}

/// Everything a worker serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotsReport {
    pub worker_id: String,
    pub draining: bool,
    pub accounts: Vec<AccountSlots>,
}
