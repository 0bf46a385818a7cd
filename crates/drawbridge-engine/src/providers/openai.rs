//! The OpenAI-compatible upstream: a turn as a `POST {base_url}/chat/completions` body
//! ([`request_body`]), the answer's SSE back as worker events ([`EventReader`]), and the
//! upstream's error statuses as the error class the engine acts on ([`error_from_status`]).
//! No I/O here: the connection ([`super::ProviderConn`]) sends and reads, so both directions
//! are tested on bytes alone (golden files in `tests/golden/openai_upstream`).

use std::time::Duration;

use drawbridge_core::continuation::{Splicer, continuation_prompt};
use drawbridge_types::openai::{ChatMessage, Role};
use drawbridge_types::sse::SseDecoder;
use drawbridge_types::worker::{PromptBody, PromptInput, TurnSummary, WorkerEvent};
use drawbridge_types::{ApiError, ChunkReader, CompletionEvent, ErrorKind};
use serde_json::{Map, Value, json};

/// The fields of the body Drawbridge sets itself; a request's `params` never replace them.
const OWN_FIELDS: [&str; 8] = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
];

/// The JSON body of the upstream request for `input`: its messages (a resumed answer adds the
/// part already sent and asks for the rest), tools, output limit and the request's other
/// parameters, streamed with usage. The model id is sent as the account lists it.
pub fn request_body(input: &PromptInput) -> Value {
    let mut body = Map::new();
    body.insert("model".to_owned(), Value::String(input.model.clone()));
    body.insert("messages".to_owned(), Value::Array(messages(&input.body)));
    body.insert("stream".to_owned(), Value::Bool(true));
    body.insert(
        "stream_options".to_owned(),
        json!({ "include_usage": true }),
    );
    if let Some(max) = input.max_output_tokens {
        // `max_tokens`: the name every OpenAI-compatible server knows.
        body.insert("max_tokens".to_owned(), Value::from(max));
    }
    if !input.tools.is_empty() {
        body.insert("tools".to_owned(), json!(input.tools.tools));
        body.insert("tool_choice".to_owned(), json!(input.tools.choice));
        if !input.tools.parallel {
            body.insert("parallel_tool_calls".to_owned(), Value::Bool(false));
        }
    }
    for (key, value) in &input.params {
        if !OWN_FIELDS.contains(&key.as_str()) {
            body.insert(key.clone(), value.clone());
        }
    }
    Value::Object(body)
}

/// The conversation as OpenAI messages.
fn messages(body: &PromptBody) -> Vec<Value> {
    let messages = match body {
        PromptBody::Messages(messages) => messages.clone(),
        PromptBody::Text(text) => vec![ChatMessage::new(Role::User, text.clone())],
        PromptBody::Resume { messages, partial } => {
            let mut messages = messages.clone();
            messages.push(ChatMessage::new(Role::Assistant, partial.clone()));
            messages.push(ChatMessage::new(Role::User, continuation_prompt(partial)));
            messages
        }
    };
    messages.iter().map(|m| json!(m)).collect()
}

/// Reads one upstream answer's SSE bytes into worker events: text, reasoning
/// (`reasoning_content`), whole tool calls, and `Finished` with the usage the upstream
/// reported. A resumed answer's start is spliced against the part the client already has.
#[derive(Debug)]
pub struct EventReader {
    decoder: SseDecoder,
    chunks: ChunkReader,
    splicer: Option<Splicer>,
    finished: bool,
}

impl EventReader {
    /// A reader for the answer to `input`.
    pub fn new(input: &PromptInput) -> Self {
        let splicer = match &input.body {
            PromptBody::Resume { partial, .. } => Some(Splicer::new(partial)),
            _ => None,
        };
        EventReader {
            decoder: SseDecoder::new(),
            chunks: ChunkReader::new(),
            splicer,
            finished: false,
        }
    }

    /// Whether the answer has ended (`Finished` or an error was returned).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feed the next bytes of the body; get the events they complete. After an `Error` or
    /// `Finished` nothing more is returned.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<WorkerEvent> {
        let mut out = Vec::new();
        for data in self.decoder.push(bytes) {
            if self.finished {
                break;
            }
            if let Some(error) = stream_error(&data) {
                self.finished = true;
                out.push(WorkerEvent::Error(error));
                break;
            }
            match self.chunks.push(&data) {
                Ok(events) => {
                    for event in events {
                        self.event(event, &mut out);
                    }
                }
                Err(error) => {
                    self.finished = true;
                    out.push(WorkerEvent::Error(error));
                }
            }
        }
        out
    }

    /// The body ended. An answer that gave its finish reason is complete even without
    /// `[DONE]` (some compatible servers leave it out); any other broke off (the upstream's
    /// failure).
    pub fn end(&mut self) -> Vec<WorkerEvent> {
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Ok(events) = self.chunks.push(drawbridge_types::sse::DONE) {
            for event in events {
                self.event(event, &mut out);
            }
        }
        if !self.finished {
            self.finished = true;
            out.push(WorkerEvent::Error(ApiError::upstream(
                "The provider's answer broke off before it was complete.",
            )));
        }
        out
    }

    fn event(&mut self, event: CompletionEvent, out: &mut Vec<WorkerEvent>) {
        match event {
            CompletionEvent::Delta(text) => {
                let text = match &mut self.splicer {
                    Some(splicer) => splicer.push(&text).into_owned(),
                    None => text,
                };
                if !text.is_empty() {
                    out.push(WorkerEvent::Text(text));
                }
            }
            CompletionEvent::Reasoning(text) => out.push(WorkerEvent::Reasoning(text)),
            CompletionEvent::KeepAlive => out.push(WorkerEvent::Activity),
            CompletionEvent::ToolCall { call, .. } => out.push(WorkerEvent::ToolCall(call)),
            CompletionEvent::Finish(finish) => {
                if let Some(held) = self.splicer.as_mut().map(Splicer::finish)
                    && !held.is_empty()
                {
                    out.push(WorkerEvent::Text(held));
                }
                self.finished = true;
                out.push(WorkerEvent::Finished(TurnSummary {
                    finish_reason: finish.finish_reason,
                    prompt_tokens: finish.usage.prompt_tokens,
                    completion_tokens: finish.usage.completion_tokens,
                    cached_prompt_tokens: finish
                        .usage
                        .prompt_tokens_details
                        .map(|details| details.cached_tokens),
                    tokens_estimated: false,
                    credits: 0.0,
                    context_usage_percent: None,
                    continuation_rounds: 0,
                    tool_choice_unmet: false,
                    warm: false,
                }));
            }
        }
    }
}

/// An error the upstream sent in place of a chunk (`{"error": {...}}` after a 200): the
/// upstream failed mid-answer.
fn stream_error(data: &str) -> Option<ApiError> {
    if !data.contains("\"error\"") {
        return None;
    }
    let value = serde_json::from_str::<Value>(data).ok()?;
    let error = value.get("error").filter(|e| !e.is_null())?;
    let message = error_fields(error).0.unwrap_or_default();
    Some(ApiError::upstream(format!(
        "The provider failed mid-answer: {message}"
    )))
}

/// The `message` and `param` of an OpenAI-style error object, when they are strings (other
/// providers leave out `type` or send numeric codes: nothing else is relied on).
fn error_fields(error: &Value) -> (Option<String>, Option<String>) {
    let text = |key: &str| {
        error
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    (text("message"), text("param"))
}

/// The error an upstream's non-200 answer stands for, from its status, its `Retry-After`
/// (`retry_after`, already read from the headers) and its body:
/// - 429: the account is rate limited (the engine rests it for `Retry-After`, else its
///   default), and another account serves the request;
/// - 401, 403: the account's key is refused: the account's failure (its breaker counts it),
///   never the client's 401, and the upstream's message (which may quote the key) is dropped;
/// - 400, 413, 422: the client's request is wrong: its 400, with the upstream's message;
/// - 408: a timeout; 5xx and anything else: the upstream failed (retryable elsewhere).
pub fn error_from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ApiError {
    match status {
        429 => {
            let error = ApiError::new(
                ErrorKind::AccountRateLimited,
                "The provider rate limited this account.",
            );
            match retry_after {
                Some(after) => error.with_retry_after(after),
                None => error,
            }
        }
        401 | 403 => ApiError::upstream(format!(
            "The provider refused this account's key (status {status})."
        )),
        400 | 413 | 422 => {
            let (message, param) = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("error").map(error_fields))
                .unwrap_or_default();
            let message = message.map_or_else(
                || "The provider refused the request as invalid.".to_owned(),
                |m| format!("The provider refused the request: {m}"),
            );
            let error = ApiError::invalid_request(message);
            match param {
                Some(param) => error.with_param(param),
                None => error,
            }
        }
        408 => ApiError::new(ErrorKind::Timeout, "The provider timed out."),
        _ => ApiError::upstream(format!("The provider answered with status {status}.")),
    }
}

/// `Retry-After` (seconds) or `retry-after-ms`, as a duration.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let seconds = |v: &str| {
        v.trim()
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    };
    value("retry-after-ms")
        .and_then(seconds)
        .map(|d| d / 1000)
        .or_else(|| value("retry-after").and_then(seconds))
}
