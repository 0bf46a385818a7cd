//! The Anthropic upstream (`kind: anthropic`): a turn as a `POST {base_url}/messages` body
//! ([`request_body`]), the Messages stream's events back as worker events ([`EventReader`]),
//! and Anthropic's error answers as the error class the engine acts on
//! ([`error_from_status`]). No I/O here, as for [`super::openai`]: golden files in
//! `tests/golden/anthropic_upstream` check both directions on bytes alone.
//!
//! The gateway's own Anthropic dialect (`drawbridge_types::dialects::anthropic`) reads this
//! wire from the client's side (requests in, events out); the upstream side needs the
//! opposite directions, so its private serde types do not fit and the JSON is built here.
//!
//! Choices where the two APIs differ:
//! - `max_tokens` is required by Anthropic: the request's limit, else [`DEFAULT_MAX_TOKENS`].
//! - System and developer messages become `system`; consecutive turns of one role are merged
//!   (Anthropic wants user and assistant to alternate); tool results are `tool_result` blocks
//!   of a user turn.
//! - Reasoning a client sends back is never replayed: the canonical messages carry no
//!   thinking blocks, and Anthropic checks the signature of every one it receives.
//! - Only the parameters Anthropic takes are passed (`temperature`, `top_p`, `top_k`,
//!   `stop` as `stop_sequences`, `user` as `metadata.user_id`): it refuses unknown fields.
//!   `response_format` has no Anthropic counterpart and is left out.
//! - `reasoning_effort` asks for extended thinking ([`thinking`]): a budget by effort, within
//!   the request's limit, which (as OpenAI's does for reasoning models) counts the thinking
//!   too. Anthropic takes thinking only with `temperature` and `top_k` unset and `top_p` at
//!   least 0.95, and without a forced tool: those sampling parameters are then left out, and a
//!   forced tool choice (`required`, a named function) wins over thinking.

use std::collections::BTreeMap;
use std::time::Duration;

use drawbridge_core::continuation::{Splicer, continuation_prompt};
use drawbridge_types::openai::{
    ChatMessage, FinishReason, FunctionCall, MessageContent, Role, ToolCall,
};
use drawbridge_types::sse::SseDecoder;
use drawbridge_types::tools::ToolChoice;
use drawbridge_types::worker::{PromptBody, PromptInput, TurnSummary, WorkerEvent};
use drawbridge_types::{ApiError, ErrorKind};
use serde_json::{Map, Value, json};

/// The `anthropic-version` header every call carries.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the request sets no limit (Anthropic requires one): the largest output
/// every current Claude model accepts.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The smallest thinking budget Anthropic takes.
pub const MIN_THINKING_BUDGET: u32 = 1024;

/// The thinking budget `reasoning_effort` asks for.
fn thinking_budget(effort: &str) -> Option<u32> {
    match effort {
        "minimal" | "low" => Some(MIN_THINKING_BUDGET),
        "medium" => Some(4096),
        "high" => Some(16_384),
        _ => None,
    }
}

/// Extended thinking for `input`: its `max_tokens` and thinking budget, when the request asks
/// for reasoning (`reasoning_effort`), no tool is forced, and its limit leaves room for a
/// budget of at least [`MIN_THINKING_BUDGET`] and as much again for the answer. Without a
/// limit, the answer keeps [`DEFAULT_MAX_TOKENS`] beside the budget.
pub fn thinking(input: &PromptInput) -> Option<(u32, u32)> {
    let effort = input.params.get("reasoning_effort")?.as_str()?;
    let wanted = thinking_budget(effort)?;
    let forced = !input.tools.is_empty()
        && matches!(
            input.tools.choice,
            ToolChoice::Required | ToolChoice::Function(_)
        );
    if forced {
        return None;
    }
    match input.max_output_tokens {
        None => Some((wanted + DEFAULT_MAX_TOKENS, wanted)),
        Some(limit) => {
            let budget = wanted.min(limit / 2);
            (budget >= MIN_THINKING_BUDGET).then_some((limit, budget))
        }
    }
}

/// The JSON body of the `POST {base_url}/messages` request for `input`, streamed.
pub fn request_body(input: &PromptInput) -> Value {
    let (system, messages) = conversation(&input.body, !input.tools.is_empty());
    let thinking = thinking(input);
    let mut body = Map::new();
    body.insert("model".to_owned(), Value::String(input.model.clone()));
    let max_tokens = match thinking {
        Some((max_tokens, budget)) => {
            body.insert(
                "thinking".to_owned(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
            max_tokens
        }
        None => input.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
    };
    body.insert("max_tokens".to_owned(), Value::from(max_tokens));
    if !system.is_empty() {
        body.insert("system".to_owned(), Value::String(system.join("\n\n")));
    }
    body.insert("messages".to_owned(), Value::Array(messages));
    body.insert("stream".to_owned(), Value::Bool(true));
    if !input.tools.is_empty() {
        let tools: Vec<Value> = input
            .tools
            .tools
            .iter()
            .map(|tool| {
                let mut out = json!({
                    "name": tool.function.name,
                    "input_schema": tool.function.parameters.clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(description) = &tool.function.description {
                    out["description"] = json!(description);
                }
                out
            })
            .collect();
        body.insert("tools".to_owned(), Value::Array(tools));
        let mut choice = match &input.tools.choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
        };
        if !input.tools.parallel && input.tools.choice != ToolChoice::None {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        body.insert("tool_choice".to_owned(), choice);
    }
    let params = &input.params;
    for key in ["temperature", "top_p", "top_k"] {
        if let Some(value) = params.get(key) {
            // Thinking takes none of them but a `top_p` of at least 0.95.
            let allowed =
                thinking.is_none() || (key == "top_p" && value.as_f64().is_some_and(|p| p >= 0.95));
            if allowed {
                body.insert(key.to_owned(), value.clone());
            }
        }
    }
    match params.get("stop") {
        Some(Value::String(stop)) => {
            body.insert("stop_sequences".to_owned(), json!([stop]));
        }
        Some(Value::Array(stops)) if !stops.is_empty() => {
            body.insert("stop_sequences".to_owned(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    if let Some(Value::String(user)) = params.get("user") {
        body.insert("metadata".to_owned(), json!({ "user_id": user }));
    }
    Value::Object(body)
}

/// The system texts and the Messages turns of `body` (a resumed answer adds the part already
/// sent and asks for the rest, as [`super::openai`] does). Without `tools` in the request,
/// earlier tool calls and results are told as text: Anthropic refuses `tool_use` and
/// `tool_result` blocks in a request that defines no tools.
fn conversation(body: &PromptBody, tools: bool) -> (Vec<String>, Vec<Value>) {
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
    let mut system = Vec::new();
    // (role, blocks), merged as they are added.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &messages {
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                let text = message.text();
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            Role::User => ("user", content_blocks(message)),
            Role::Assistant => {
                let mut blocks = content_blocks(message);
                for call in message.tool_calls.iter().flatten() {
                    blocks.push(if tools {
                        json!({
                            "type": "tool_use",
                            "id": tool_id(&call.id),
                            "name": call.function.name,
                            "input": arguments(&call.function.arguments),
                        })
                    } else {
                        json!({"type": "text", "text": format!(
                            "(called the tool {} with {}; call id {})",
                            call.function.name,
                            arguments(&call.function.arguments),
                            call.id
                        )})
                    });
                }
                ("assistant", blocks)
            }
            Role::Tool | Role::Function => {
                let id = message.tool_call_id.clone().unwrap_or_default();
                let text = message.text();
                let block = if tools {
                    let mut block = json!({"type": "tool_result", "tool_use_id": tool_id(&id)});
                    if !text.is_empty() {
                        block["content"] = Value::String(text);
                    }
                    block
                } else {
                    json!({"type": "text", "text": format!("(result of the tool call {id}: {text})")})
                };
                ("user", vec![block])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, previous)) if *last == role => previous.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    (system, turns)
}

/// A tool call id as Anthropic takes it (letters, digits, `_` and `-`): other characters
/// become `_`, the same in the call and in its result.
fn tool_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A message's text and image parts as Anthropic blocks (empty texts left out: Anthropic
/// refuses them).
fn content_blocks(message: &ChatMessage) -> Vec<Value> {
    match &message.content {
        None => Vec::new(),
        Some(MessageContent::Text(text)) if text.is_empty() => Vec::new(),
        Some(MessageContent::Text(text)) => vec![json!({"type": "text", "text": text})],
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|part| match (part.kind.as_str(), &part.text) {
                ("text", Some(text)) if !text.is_empty() => {
                    Some(json!({"type": "text", "text": text}))
                }
                ("image_url", _) => {
                    let url = part.extra.get("image_url")?.get("url")?.as_str()?;
                    Some(image_block(url))
                }
                _ => None,
            })
            .collect(),
    }
}

/// An image part's URL as an Anthropic image block (a `data:` URL inline, else by URL).
fn image_block(url: &str) -> Value {
    let inline = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"));
    match inline {
        Some((media_type, data)) => json!({"type": "image", "source": {
            "type": "base64", "media_type": media_type, "data": data}}),
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

/// A tool call's arguments as the `input` object Anthropic wants; arguments that are not a
/// JSON object are passed under `arguments` rather than dropped.
pub(crate) fn arguments(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({ "arguments": arguments }),
    }
}

/// One content block of the answer being streamed.
#[derive(Debug)]
enum Block {
    Text,
    Thinking,
    /// A tool call: its arguments assembled from `input_json_delta`s.
    ToolUse {
        id: String,
        name: String,
        json: String,
        /// The `input` of `content_block_start` (used when no delta came).
        start: Value,
    },
    Other,
}

/// Reads one Messages stream's SSE bytes into worker events: text, reasoning
/// (`thinking_delta`), whole tool calls (at their `content_block_stop`), and `Finished` at
/// `message_stop` with the usage reported (cache reads and writes counted as prompt tokens,
/// as OpenAI counts cached tokens). A resumed answer's start is spliced against the part the
/// client already has.
#[derive(Debug)]
pub struct EventReader {
    decoder: SseDecoder,
    blocks: BTreeMap<u64, Block>,
    splicer: Option<Splicer>,
    prompt_tokens: u64,
    /// `cache_read_input_tokens`, when the upstream reported it.
    cached_prompt_tokens: Option<u64>,
    completion_tokens: u64,
    stop_reason: Option<FinishReason>,
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
            blocks: BTreeMap::new(),
            splicer,
            prompt_tokens: 0,
            cached_prompt_tokens: None,
            completion_tokens: 0,
            stop_reason: None,
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
            match serde_json::from_str::<Value>(&data) {
                Ok(event) => self.event(&event, &mut out),
                Err(_) => self.fail(
                    ApiError::upstream("The provider sent an event that is not JSON."),
                    &mut out,
                ),
            }
        }
        out
    }

    /// The body ended. An answer whose stop reason came is complete even without
    /// `message_stop`; any other broke off (the upstream's failure).
    pub fn end(&mut self) -> Vec<WorkerEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if self.stop_reason.is_some() {
            self.finish(&mut out);
        } else {
            self.fail(
                ApiError::upstream("The provider's answer broke off before it was complete."),
                &mut out,
            );
        }
        out
    }

    fn fail(&mut self, error: ApiError, out: &mut Vec<WorkerEvent>) {
        self.finished = true;
        out.push(WorkerEvent::Error(error));
    }

    fn event(&mut self, event: &Value, out: &mut Vec<WorkerEvent>) {
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "message_start" => {
                if let Some(usage) = event.pointer("/message/usage") {
                    self.usage(usage);
                }
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                let text = |key: &str| {
                    block
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let started = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        self.text(text("text"), out);
                        Block::Text
                    }
                    Some("thinking") => {
                        let thinking = text("thinking");
                        if !thinking.is_empty() {
                            out.push(WorkerEvent::Reasoning(thinking));
                        }
                        Block::Thinking
                    }
                    Some("tool_use") => {
                        out.push(WorkerEvent::Activity);
                        Block::ToolUse {
                            id: text("id"),
                            name: text("name"),
                            json: String::new(),
                            start: block.get("input").cloned().unwrap_or(Value::Null),
                        }
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, started);
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                let text = |key: &str| {
                    delta
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.text(text("text"), out),
                    Some("thinking_delta") => {
                        let thinking = text("thinking");
                        if !thinking.is_empty() {
                            out.push(WorkerEvent::Reasoning(thinking));
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(Block::ToolUse { json, .. }) = self.blocks.get_mut(&index) {
                            json.push_str(&text("partial_json"));
                        }
                    }
                    // A thinking block's signature: nothing to pass on (it is never replayed).
                    _ => out.push(WorkerEvent::Activity),
                }
            }
            "content_block_stop" => {
                if let Some(Block::ToolUse {
                    id,
                    name,
                    json,
                    start,
                }) = self.blocks.remove(&index)
                {
                    let arguments = if !json.trim().is_empty() {
                        json
                    } else if start.is_object() {
                        start.to_string()
                    } else {
                        "{}".to_owned()
                    };
                    out.push(WorkerEvent::ToolCall(ToolCall {
                        id,
                        kind: "function".to_owned(),
                        function: FunctionCall { name, arguments },
                    }));
                }
            }
            "message_delta" => {
                if let Some(reason) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(finish_reason(reason));
                }
                if let Some(usage) = event.get("usage") {
                    self.usage(usage);
                }
            }
            "message_stop" => self.finish(out),
            "ping" => out.push(WorkerEvent::Activity),
            "error" => {
                let error = event.get("error").unwrap_or(&Value::Null);
                let kind = error
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let error = match kind {
                    "rate_limit_error" => ApiError::new(
                        ErrorKind::AccountRateLimited,
                        "The provider rate limited this account mid-answer.",
                    ),
                    _ => ApiError::upstream(format!(
                        "The provider failed mid-answer ({kind}): {message}"
                    )),
                };
                self.fail(error, out);
            }
            // Event types added later are skipped, as Anthropic asks of its clients.
            _ => {}
        }
    }

    fn text(&mut self, text: String, out: &mut Vec<WorkerEvent>) {
        let text = match &mut self.splicer {
            Some(splicer) => splicer.push(&text).into_owned(),
            None => text,
        };
        if !text.is_empty() {
            out.push(WorkerEvent::Text(text));
        }
    }

    /// A `usage` object (of `message_start` or `message_delta`: the counts are cumulative).
    fn usage(&mut self, usage: &Value) {
        let count = |key: &str| usage.get(key).and_then(Value::as_u64);
        let input = [
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ]
        .iter()
        .filter_map(|key| count(key))
        .reduce(|a, b| a.saturating_add(b));
        if let Some(input) = input
            && input > 0
        {
            self.prompt_tokens = input;
        }
        if let Some(output) = count("output_tokens") {
            self.completion_tokens = output;
        }
        if let Some(cached) = count("cache_read_input_tokens") {
            self.cached_prompt_tokens = Some(cached);
        }
    }

    fn finish(&mut self, out: &mut Vec<WorkerEvent>) {
        if let Some(held) = self.splicer.as_mut().map(Splicer::finish)
            && !held.is_empty()
        {
            out.push(WorkerEvent::Text(held));
        }
        self.finished = true;
        out.push(WorkerEvent::Finished(TurnSummary {
            finish_reason: self.stop_reason.unwrap_or(FinishReason::Stop),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_prompt_tokens: self.cached_prompt_tokens,
            tokens_estimated: false,
            credits: 0.0,
            context_usage_percent: None,
            continuation_rounds: 0,
            tool_choice_unmet: false,
            warm: false,
        }));
    }
}

/// Anthropic's `stop_reason` as a finish reason.
fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn, and reasons added later.
        _ => FinishReason::Stop,
    }
}

/// The error an Anthropic non-200 answer stands for: the classes of
/// [`super::openai::error_from_status`] (429 rests the account for `Retry-After`; 401 and 403
/// are the account's failure; 400, 413, 422 the client's, with Anthropic's message; 5xx
/// retryable elsewhere), with 529 named as Anthropic's overload.
pub fn error_from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ApiError {
    match status {
        529 => ApiError::upstream("The provider is overloaded (status 529)."),
        _ => super::openai::error_from_status(status, retry_after, body),
    }
}
