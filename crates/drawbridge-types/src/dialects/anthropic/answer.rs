//! What every answer shape shares: the message's identity, stop reasons, the error shape, the
//! usage object and a tool call's `input`.

use serde_json::{Value, json};

use crate::error::{ApiError, ErrorKind};
use crate::openai::FinishReason;

/// A fresh message id, `msg_` and 32 hex digits.
pub fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// The identity of one answer: its id, the model as the client named it, and the prompt's
/// estimated size (for `message_start`, before any usage is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// `msg_` and 32 hex digits ([`message_id`]).
    pub id: String,
    /// The model as the client named it.
    pub model: String,
    /// The estimated prompt tokens `message_start` reports.
    pub input_tokens: u64,
}

impl MessageMeta {
    /// The identity of a new answer with a fresh id.
    pub fn new(model: impl Into<String>, input_tokens: u64) -> Self {
        MessageMeta {
            id: message_id(),
            model: model.into(),
            input_tokens,
        }
    }
}

/// The Anthropic `stop_reason` of a finish reason.
pub fn stop_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Error => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// The Anthropic error `type` and HTTP status of an error kind.
pub fn error_status(kind: ErrorKind) -> (&'static str, u16) {
    match kind {
        ErrorKind::InvalidRequest => ("invalid_request_error", 400),
        ErrorKind::InvalidApiKey => ("authentication_error", 401),
        ErrorKind::PermissionDenied => ("permission_error", 403),
        ErrorKind::NotFound | ErrorKind::ModelNotFound => ("not_found_error", 404),
        ErrorKind::PayloadTooLarge => ("request_too_large", 413),
        ErrorKind::RateLimited
        | ErrorKind::InsufficientQuota
        | ErrorKind::AccountQuotaExhausted
        | ErrorKind::AccountRateLimited => ("rate_limit_error", 429),
        ErrorKind::NoCapacity | ErrorKind::Unavailable => ("overloaded_error", 529),
        ErrorKind::Timeout => ("timeout_error", 504),
        ErrorKind::Upstream | ErrorKind::Internal => ("api_error", 500),
    }
}

/// `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(error: &ApiError) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_status(error.kind).0, "message": error.message},
    })
}

/// Anthropic's usage object. `input_tokens` counts the prompt as OpenAI does (cache reads
/// included); Anthropic counts `cache_read_input_tokens` apart from `input_tokens`, so the
/// `cached` part moves there.
pub(super) fn usage(input_tokens: u64, output_tokens: u64, cached: u64) -> Value {
    json!({
        "input_tokens": input_tokens.saturating_sub(cached),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

/// Of `usage`'s prompt tokens, those read from the upstream's cache (0: none said).
pub(super) fn cached(usage: &crate::openai::Usage) -> u64 {
    usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
}

/// A tool call's arguments as the `input` object of a `tool_use` block (`{}` when they are
/// empty or not an object).
pub(super) fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({}),
    }
}
