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
    /// False when the agent reported the token counts (ACP `usage_update`, a prompt result's
    /// `usage`); true when they are Drawbridge's estimate (Kiro reports none).
    pub tokens_estimated: bool,
    pub credits: f64,
    pub context_usage_percent: Option<f64>,
    /// Continuation prompts sent to complete a truncated answer (0: none needed).
    pub continuation_rounds: u32,
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
