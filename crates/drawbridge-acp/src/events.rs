//! What a prompt turn streams to the caller, and how it ends.

/// Something the agent streamed during a prompt turn.
///
/// Every frame of the session becomes an event, so a caller can count any of them as a sign
/// of life (a Kiro v3 turn sends tool, progress and metadata frames long before any text);
/// only [`AgentEvent::Text`] is the answer, and [`AgentEvent::Thought`] is reasoning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// An `agent_message_chunk` with text content.
    Text(String),
    /// An `agent_thought_chunk` with text content: the model's reasoning.
    Thought(String),
    /// Any other frame of the session: the agent is working.
    Activity(Activity),
    /// The agent asked permission to run a tool and the
    /// [`PermissionPolicy`](crate::PermissionPolicy) refused it (the agent goes on without).
    ToolRefused {
        /// The tool call's title, e.g. `Running: ls`.
        title: Option<String>,
        /// Its ACP kind (`execute`, `edit`, ...) in wire spelling.
        kind: Option<String>,
    },
    /// While the turn ran, the agent sent the client a request it cannot serve (e.g. Kiro v3's
    /// `_kiro/auth/getAccessToken`); it was answered with a JSON-RPC error. An agent waiting on
    /// such a request may never finish the turn: treat this as a failure of the agent's setup.
    Unserved {
        /// The request's method (never its params: they may hold secrets).
        method: String,
    },
}

impl AgentEvent {
    /// Whether this is answer text.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text(_))
    }
}

/// A non-text frame of a session, as [`AgentEvent::Activity`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activity {
    /// `tool_call`: the agent starts (or announces) a tool call.
    ToolCall {
        /// The tool call's id.
        id: String,
        /// What the agent says it does, e.g. `Running: ls`.
        title: String,
        /// The ACP tool kind (`read`, `edit`, `execute`, ...) in its wire spelling.
        kind: Option<String>,
        /// The ACP status (`pending`, `in_progress`, `completed`, `failed`).
        status: Option<String>,
    },
    /// `tool_call_update`: progress or the end of a tool call.
    ToolCallUpdate {
        /// The tool call's id.
        id: String,
        /// The new status, when it changed.
        status: Option<String>,
    },
    /// `plan`: the agent's plan of work.
    Plan,
    /// `usage_update`: `used` of `size` tokens of the context window (also kept in the
    /// turn's [`UsageReport`](crate::UsageReport)).
    Usage {
        /// Tokens in context.
        used: u64,
        /// The context window.
        size: u64,
    },
    /// `session_info_update` (Kiro v3: `_meta.kiro.kind` such as `turn_start`,
    /// `context_usage`, `turn_completion`, `turn_end`).
    SessionInfo {
        /// `_meta.kiro.kind`, when there is one.
        kind: Option<String>,
    },
    /// Kiro v2's `_kiro.dev/metadata` (context use, credits).
    Metering,
    /// Another `session/update` kind (`available_commands_update`, `current_mode_update`,
    /// `config_option_update`, `user_message_chunk`, non-text chunks, kinds this crate does
    /// not know), by its wire name.
    Update(String),
    /// An extension notification naming the session (e.g. Kiro v2's
    /// `_kiro.dev/session/update` `tool_call_chunk`), by method.
    Extension(String),
}

/// Why the agent ended a prompt turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model finished its answer.
    EndTurn,
    /// The model hit its output token limit.
    MaxTokens,
    /// The agent hit its limit of model requests in one turn.
    MaxTurnRequests,
    /// The agent refused to continue (content filtered).
    Refusal,
    /// The turn was cancelled (`session/cancel`).
    Cancelled,
}

impl StopReason {
    /// The stop reason for an ACP `stopReason` string; unknown values are `EndTurn`, and Kiro's
    /// `CONTENT_FILTERED` (any case) is `Refusal`.
    pub fn from_wire(stop_reason: &str) -> Self {
        match stop_reason {
            "end_turn" => Self::EndTurn,
            "max_tokens" => Self::MaxTokens,
            "max_turn_requests" => Self::MaxTurnRequests,
            "refusal" => Self::Refusal,
            "cancelled" => Self::Cancelled,
            other if other.eq_ignore_ascii_case("content_filtered") => Self::Refusal,
            other => {
                tracing::debug!(
                    stop_reason = other,
                    "unknown ACP stop reason, taken as end_turn"
                );
                Self::EndTurn
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map() {
        assert_eq!(StopReason::from_wire("end_turn"), StopReason::EndTurn);
        assert_eq!(StopReason::from_wire("max_tokens"), StopReason::MaxTokens);
        assert_eq!(
            StopReason::from_wire("max_turn_requests"),
            StopReason::MaxTurnRequests
        );
        assert_eq!(StopReason::from_wire("refusal"), StopReason::Refusal);
        assert_eq!(StopReason::from_wire("cancelled"), StopReason::Cancelled);
        assert_eq!(
            StopReason::from_wire("CONTENT_FILTERED"),
            StopReason::Refusal
        );
        assert_eq!(StopReason::from_wire("something_new"), StopReason::EndTurn);
        assert_eq!(StopReason::from_wire(""), StopReason::EndTurn);
    }
}
