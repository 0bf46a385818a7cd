//! Anthropic's Messages API (`POST /v1/messages`, what Claude Code and the Anthropic SDKs
//! speak), translated both ways: a request body into the canonical request
//! ([`parse_request`]), the canonical events into Anthropic's SSE events ([`StreamEncoder`])
//! or one `message` object ([`MessageCollector`]), and an [`ApiError`] into Anthropic's error
//! shape and status ([`error_status`], [`error_body`]). Pure: no I/O, so every translation is
//! checked by golden files.
//!
//! What does not cross: `thinking` and `redacted_thinking` blocks a client sends back are
//! dropped (their signatures are Anthropic's and must never reach an agent as if signed; the
//! agent never needs its own reasoning back); server tools (`web_search_…`, tool search) are
//! left out of the tools, and blocks other than text and images out of tool results. Unknown
//! fields (`thinking`, `context_management`, `output_config`, `cache_control` on blocks and
//! tools, ...) are accepted and ignored.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ErrorKind};
use crate::openai::{
    ChatCompletionRequest, ChatMessage, ContentPart, FinishReason, FunctionCall, MessageContent,
    Role, ToolCall, parse_json,
};
use crate::stream::{CompletionEvent, Finish};
use crate::tools::{FunctionDef, Tool, ToolChoice};

/// What the Anthropic renderers need of the request: the model as the client named it and
/// whether it asked for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The model as the client named it (the answer names it so too).
    pub model: String,
    /// Whether the answer is streamed as SSE events (`"stream": true`).
    pub stream: bool,
}

/// Whether the body is a `POST /v1/messages` (which requires `max_tokens`) or a
/// `POST /v1/messages/count_tokens` (which has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
}

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    messages: Option<Vec<InMessage>>,
    #[serde(default)]
    system: Option<System>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Blocks(Vec<TextBlock>),
}

#[derive(Debug, Deserialize)]
struct TextBlock {
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InRole {
    User,
    Assistant,
    /// Not in Anthropic's documentation, but Claude Code 2.1 sends it.
    System,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: InRole,
    content: Value,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<Value>,
        #[serde(default)]
        is_error: Option<bool>,
    },
    Thinking {},
    RedactedThinking {},
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Deserialize)]
struct InTool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct InToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<String>,
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    let param = param.into();
    ApiError::invalid_request(format!("{param}: {}", message.into())).with_param(param)
}

/// `value` read as `T`, or a 400 naming `param` (and the field inside it at fault).
fn read<T: DeserializeOwned>(value: Value, param: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            param.to_owned()
        } else {
            format!("{param}.{path}")
        };
        invalid(field, err.into_inner().to_string())
    })
}

/// Parse an Anthropic Messages body (of `endpoint`) into the canonical request, validated as
/// every canonical request is; refusals are 400s naming the field in Anthropic's terms.
pub fn parse_request(
    body: &[u8],
    endpoint: Endpoint,
) -> Result<(ChatCompletionRequest, RequestInfo), ApiError> {
    let request: Request = parse_json(body)?;
    let model = match request.model {
        Some(model) if !model.trim().is_empty() => model,
        Some(_) => return Err(invalid("model", "must not be empty")),
        None => return Err(invalid("model", "Field required")),
    };
    let max_tokens = match (endpoint, request.max_tokens) {
        (Endpoint::Messages, None) => return Err(invalid("max_tokens", "Field required")),
        (Endpoint::Messages, Some(0)) => {
            return Err(invalid("max_tokens", "must be greater than or equal to 1"));
        }
        (Endpoint::Messages, max) => max,
        (Endpoint::CountTokens, _) => None,
    };
    let Some(in_messages) = request.messages else {
        return Err(invalid("messages", "Field required"));
    };
    if in_messages.is_empty() {
        return Err(invalid("messages", "must contain at least one message"));
    }

    let mut messages = Vec::new();
    // For each canonical message, the index of the Anthropic message it came from.
    let mut origins = Vec::new();
    if let Some(system) = request.system {
        let content = match system {
            System::Text(text) => MessageContent::Text(text),
            System::Blocks(blocks) => {
                MessageContent::Parts(blocks.into_iter().map(|b| text_part(b.text)).collect())
            }
        };
        messages.push(message(Role::System, Some(content)));
        origins.push(None);
    }
    for (i, in_message) in in_messages.into_iter().enumerate() {
        for out in translate_message(i, in_message)? {
            messages.push(out);
            origins.push(Some(i));
        }
    }

    // Server tools (typed, run by Anthropic: web search, code execution, tool search) are
    // left out: no agent has them, and refusing them would refuse Claude Code's requests.
    let mut tool_origins = Vec::new();
    let tools = request.tools.and_then(|tools| {
        let custom: Vec<Tool> = tools
            .into_iter()
            .enumerate()
            .filter_map(|(i, tool)| {
                let tool = custom_tool(tool)?;
                tool_origins.push(i);
                Some(tool)
            })
            .collect();
        (!custom.is_empty()).then_some(custom)
    });
    let (tool_choice, parallel_tool_calls) = match request.tool_choice {
        None => (None, None),
        Some(choice) => {
            let parallel = choice.disable_parallel_tool_use.map(|off| !off);
            let choice = match (choice.kind.as_str(), choice.name) {
                ("auto", _) => ToolChoice::Auto,
                ("any", _) => ToolChoice::Required,
                ("none", _) => ToolChoice::None,
                ("tool", Some(name)) => ToolChoice::Function(name),
                ("tool", None) => return Err(invalid("tool_choice.name", "Field required")),
                (other, _) => {
                    return Err(invalid(
                        "tool_choice.type",
                        format!("unknown type '{other}'; expected auto, any, tool or none"),
                    ));
                }
            };
            (Some(choice), parallel)
        }
    };

    let mut extra = Map::new();
    if let Some(stop) = request.stop_sequences {
        extra.insert("stop".to_owned(), json!(stop));
    }
    for (key, value) in [
        ("temperature", request.temperature),
        ("top_p", request.top_p),
    ] {
        if let Some(value) = value {
            extra.insert(key.to_owned(), json!(value));
        }
    }
    if let Some(top_k) = request.top_k {
        extra.insert("top_k".to_owned(), json!(top_k));
    }

    let stream = request.stream.unwrap_or(false);
    let chat = ChatCompletionRequest {
        model: model.clone(),
        messages,
        stream: Some(stream),
        stream_options: None,
        max_tokens,
        max_completion_tokens: None,
        n: None,
        user: request.metadata.and_then(|m| m.user_id),
        tools,
        tool_choice,
        parallel_tool_calls,
        extra,
    };
    chat.validate().map_err(|error| {
        let origins = Origins {
            messages: origins,
            tools: tool_origins,
        };
        in_anthropic_terms(error, &origins)
    })?;
    Ok((chat, RequestInfo { model, stream }))
}

fn message(role: Role, content: Option<MessageContent>) -> ChatMessage {
    ChatMessage {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
    }
}

fn text_part(text: String) -> ContentPart {
    ContentPart {
        kind: "text".to_owned(),
        text: Some(text),
        extra: Map::new(),
    }
}

fn image_part(source: ImageSource) -> ContentPart {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url,
    };
    let mut extra = Map::new();
    extra.insert("image_url".to_owned(), json!({ "url": url }));
    ContentPart {
        kind: "image_url".to_owned(),
        text: None,
        extra,
    }
}

/// The blocks of `content` (a string is one text block), each read with its path.
fn blocks(content: Value, param: &str) -> Result<Vec<Block>, ApiError> {
    match content {
        Value::String(text) => Ok(vec![Block::Text { text }]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(j, item)| read(item, &format!("{param}[{j}]")))
            .collect(),
        _ => Err(invalid(
            param,
            "expected a string or an array of content blocks",
        )),
    }
}

/// One Anthropic message as canonical messages: a user turn's tool results become `tool`
/// messages (first, in order), its text and images one `user` message; an assistant turn's
/// text and tool calls one `assistant` message; thinking blocks are dropped.
fn translate_message(i: usize, in_message: InMessage) -> Result<Vec<ChatMessage>, ApiError> {
    let param = format!("messages[{i}].content");
    let string = in_message.content.is_string();
    let blocks = blocks(in_message.content, &param)?;
    let mut out = Vec::new();
    match in_message.role {
        InRole::User | InRole::System => {
            let role = match in_message.role {
                InRole::System => Role::System,
                _ => Role::User,
            };
            let mut parts = Vec::new();
            for (j, block) in blocks.into_iter().enumerate() {
                match block {
                    Block::Text { text } => parts.push(text_part(text)),
                    Block::Image { source } => parts.push(image_part(source)),
                    Block::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } if role == Role::User => {
                        let content =
                            tool_result_content(content, is_error, &format!("{param}[{j}]"))?;
                        out.push(ChatMessage {
                            tool_call_id: Some(tool_use_id),
                            ..message(Role::Tool, Some(content))
                        });
                    }
                    Block::Thinking {} | Block::RedactedThinking {} => {}
                    Block::ToolUse { .. } | Block::ToolResult { .. } => {
                        return Err(invalid(
                            format!("{param}[{j}].type"),
                            format!(
                                "this block is not allowed in a {} message",
                                role_name(&in_message.role)
                            ),
                        ));
                    }
                }
            }
            if string {
                if let Some(ContentPart {
                    text: Some(text), ..
                }) = parts.pop()
                {
                    out.push(message(role, Some(MessageContent::Text(text))));
                }
            } else if !parts.is_empty() || out.is_empty() {
                out.push(message(role, Some(MessageContent::Parts(parts))));
            }
        }
        InRole::Assistant => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for (j, block) in blocks.into_iter().enumerate() {
                match block {
                    Block::Text { text: t } => text.push_str(&t),
                    Block::ToolUse { id, name, input } => {
                        let input = if input.is_null() { json!({}) } else { input };
                        calls.push(ToolCall {
                            id,
                            kind: "function".to_owned(),
                            function: FunctionCall {
                                name,
                                arguments: input.to_string(),
                            },
                        });
                    }
                    Block::Thinking {} | Block::RedactedThinking {} => {}
                    Block::Image { .. } | Block::ToolResult { .. } => {
                        return Err(invalid(
                            format!("{param}[{j}].type"),
                            "this block is not allowed in an assistant message",
                        ));
                    }
                }
            }
            let content = (!text.is_empty() || calls.is_empty()).then_some(text);
            out.push(ChatMessage {
                tool_calls: (!calls.is_empty()).then_some(calls),
                ..message(Role::Assistant, content.map(MessageContent::Text))
            });
        }
    }
    Ok(out)
}

fn role_name(role: &InRole) -> &'static str {
    match role {
        InRole::User => "user",
        InRole::Assistant => "assistant",
        InRole::System => "system",
    }
}

/// A tool result's content (a string, or text and image blocks); an error result is marked
/// `Error: ` in front, since a tool message has no error flag.
fn tool_result_content(
    content: Option<Value>,
    is_error: Option<bool>,
    param: &str,
) -> Result<MessageContent, ApiError> {
    let param = format!("{param}.content");
    let content = match content.unwrap_or_else(|| json!("")) {
        // Only text and images reach the agent; other blocks (Claude Code's `tool_reference`s
        // of its tool search, documents) are left out.
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .filter(|item| {
                    matches!(
                        item.get("type").and_then(Value::as_str),
                        Some("text" | "image")
                    )
                })
                .collect(),
        ),
        other => other,
    };
    let mut parts = Vec::new();
    for block in blocks(content, &param)? {
        match block {
            Block::Text { text } => parts.push(text_part(text)),
            Block::Image { source } => parts.push(image_part(source)),
            _ => {}
        }
    }
    let error = is_error.unwrap_or(false);
    if parts.iter().all(|p| p.kind == "text") {
        let text: Vec<String> = parts.into_iter().filter_map(|p| p.text).collect();
        let text = text.join("\n\n");
        Ok(MessageContent::Text(if error {
            format!("Error: {text}")
        } else {
            text
        }))
    } else {
        if error {
            parts.insert(0, text_part("Error:".to_owned()));
        }
        Ok(MessageContent::Parts(parts))
    }
}

/// A custom tool as a function tool; `None` for a server tool.
fn custom_tool(tool: InTool) -> Option<Tool> {
    if tool.kind.as_deref().is_some_and(|kind| kind != "custom") {
        return None;
    }
    Some(Tool {
        kind: "function".to_owned(),
        function: FunctionDef {
            name: tool.name,
            description: tool.description,
            parameters: tool.input_schema,
            strict: None,
        },
    })
}

/// Where each canonical message and tool came from in the Anthropic request.
struct Origins {
    /// The Anthropic message of each canonical message (`None`: the `system` field).
    messages: Vec<Option<usize>>,
    /// The index in `tools` of each canonical tool.
    tools: Vec<usize>,
}

/// A canonical validation error with its field named as the Anthropic request names it.
fn in_anthropic_terms(mut error: ApiError, origins: &Origins) -> ApiError {
    let Some(param) = error.param.take() else {
        return error;
    };
    let mapped = anthropic_param(&param, origins);
    // The canonical field's name in the message, as the client knows it.
    if mapped != param {
        error.message = error.message.replace(&param, &mapped);
        let (from, to) = (base(&param), base(&mapped));
        if from != to {
            error.message = error.message.replace(from, to);
        }
    }
    if !error.message.contains(base(&mapped)) {
        error.message = format!("{mapped}: {}", error.message);
    }
    error.with_param(mapped)
}

/// A field path without its last `.name`: `messages[0].content[1]` of
/// `messages[0].content[1].type`.
fn base(param: &str) -> &str {
    param.rsplit_once('.').map_or(param, |(head, _)| head)
}

fn anthropic_param(param: &str, origins: &Origins) -> String {
    if let Some(rest) = param.strip_prefix("messages[")
        && let Some((index, tail)) = rest.split_once(']')
        && let Ok(index) = index.parse::<usize>()
    {
        return match origins.messages.get(index).copied().flatten() {
            Some(origin) => format!("messages[{origin}]{tail}"),
            None => "system".to_owned(),
        };
    }
    if let Some(rest) = param.strip_prefix("tools[")
        && let Some((index, tail)) = rest.split_once(']')
        && let Ok(index) = index.parse::<usize>()
    {
        let index = origins.tools.get(index).copied().unwrap_or(index);
        let tail = match tail {
            ".function.parameters" => ".input_schema",
            ".function.name" => ".name",
            ".function" => "",
            other => other,
        };
        return format!("tools[{index}]{tail}");
    }
    match param {
        "stop" => "stop_sequences".to_owned(),
        "user" => "metadata.user_id".to_owned(),
        other => other.to_owned(),
    }
}

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

/// One SSE event: `event: <type>\ndata: <json>\n\n`.
fn frame(out: &mut BytesMut, event: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

/// Anthropic's usage object. `input_tokens` counts the prompt as OpenAI does (cache reads
/// included); Anthropic counts `cache_read_input_tokens` apart from `input_tokens`, so the
/// `cached` part moves there.
fn usage(input_tokens: u64, output_tokens: u64, cached: u64) -> Value {
    json!({
        "input_tokens": input_tokens.saturating_sub(cached),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

/// Of `usage`'s prompt tokens, those read from the upstream's cache (0: none said).
fn cached(usage: &crate::openai::Usage) -> u64 {
    usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
}

/// A tool call's arguments as the `input` object of a `tool_use` block (`{}` when they are
/// empty or not an object).
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({}),
    }
}

/// The kind of the content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
}

/// Writes one answer as Anthropic's SSE events: `message_start` and a `ping` first
/// ([`StreamEncoder::start`]), then per event its content blocks, numbered from 0 in order (a
/// text or thinking block stays open while the same kind goes on; each tool call is a block of
/// its own), then `message_delta` and `message_stop`, or an `error` event.
#[derive(Debug)]
pub struct StreamEncoder {
    meta: MessageMeta,
    open: Option<Open>,
    next_index: u32,
}

impl StreamEncoder {
    /// The encoder of the answer `meta` names; nothing is written yet.
    pub fn new(meta: MessageMeta) -> Self {
        StreamEncoder {
            meta,
            open: None,
            next_index: 0,
        }
    }

    /// The identity of the answer being written.
    pub fn meta(&self) -> &MessageMeta {
        &self.meta
    }

    /// `message_start` (the message with no content yet) and a `ping`.
    pub fn start(&self) -> Bytes {
        let mut out = BytesMut::new();
        let message = json!({
            "id": self.meta.id,
            "type": "message",
            "role": "assistant",
            "model": self.meta.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage(self.meta.input_tokens, 0, 0),
        });
        frame(
            &mut out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        frame(&mut out, "ping", &json!({"type": "ping"}));
        out.freeze()
    }

    /// Close the open text or thinking block, if any.
    fn close(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            self.stop_block(out);
        }
    }

    /// `content_block_stop` for the current block; the next block gets the next index.
    fn stop_block(&mut self, out: &mut BytesMut) {
        frame(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": self.next_index}),
        );
        self.next_index += 1;
    }

    /// Stream `text` in a block of `kind`, opening it (and closing another) first.
    fn text(&mut self, out: &mut BytesMut, kind: Open, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.open != Some(kind) {
            self.close(out);
            let block = match kind {
                Open::Text => json!({"type": "text", "text": ""}),
                Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            };
            frame(
                out,
                "content_block_start",
                &json!({"type": "content_block_start", "index": self.next_index, "content_block": block}),
            );
            self.open = Some(kind);
        }
        let delta = match kind {
            Open::Text => json!({"type": "text_delta", "text": text}),
            Open::Thinking => json!({"type": "thinking_delta", "thinking": text}),
        };
        frame(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.next_index, "delta": delta}),
        );
    }

    /// The frames of one event of the answer.
    pub fn event(&mut self, event: &CompletionEvent) -> Bytes {
        let mut out = BytesMut::new();
        match event {
            CompletionEvent::Delta(text) => self.text(&mut out, Open::Text, text),
            CompletionEvent::Reasoning(text) => self.text(&mut out, Open::Thinking, text),
            CompletionEvent::KeepAlive => frame(&mut out, "ping", &json!({"type": "ping"})),
            CompletionEvent::ToolCall { call, .. } => self.tool_call(&mut out, call),
            CompletionEvent::Finish(finish) => self.finish(&mut out, finish),
        }
        out.freeze()
    }

    fn tool_call(&mut self, out: &mut BytesMut, call: &ToolCall) {
        self.close(out);
        let index = self.next_index;
        frame(
            out,
            "content_block_start",
            &json!({
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": call.id, "name": call.function.name, "input": {}},
            }),
        );
        let arguments = call.function.arguments.trim();
        if !arguments.is_empty() {
            frame(
                out,
                "content_block_delta",
                &json!({
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": arguments},
                }),
            );
        }
        self.stop_block(out);
    }

    fn finish(&mut self, out: &mut BytesMut, finish: &Finish) {
        self.close(out);
        let mut usage = json!({
            "input_tokens": finish.usage.prompt_tokens,
            "output_tokens": finish.usage.completion_tokens,
        });
        if let Some(details) = finish.usage.prompt_tokens_details {
            usage["input_tokens"] = json!(
                finish
                    .usage
                    .prompt_tokens
                    .saturating_sub(details.cached_tokens)
            );
            usage["cache_read_input_tokens"] = json!(details.cached_tokens);
        }
        frame(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(finish.finish_reason), "stop_sequence": null},
                "usage": usage,
            }),
        );
        frame(out, "message_stop", &json!({"type": "message_stop"}));
    }

    /// The end of an answer that could not be completed: the open block closed, then an
    /// `error` event.
    pub fn error(&mut self, error: &ApiError) -> Bytes {
        let mut out = BytesMut::new();
        self.close(&mut out);
        frame(&mut out, "error", &error_body(error));
        out.freeze()
    }
}

/// One content block of a gathered answer.
#[derive(Debug)]
enum OutBlock {
    Text(String),
    Thinking(String),
    ToolUse(ToolCall),
}

/// Gathers an answer into one Anthropic `message` object.
#[derive(Debug)]
pub struct MessageCollector {
    meta: MessageMeta,
    blocks: Vec<OutBlock>,
}

impl MessageCollector {
    /// A collector of the answer `meta` names, with no content yet.
    pub fn new(meta: MessageMeta) -> Self {
        MessageCollector {
            meta,
            blocks: Vec::new(),
        }
    }

    /// Add one event of the answer; the finish (or an error) is the caller's to handle.
    pub fn push_event(&mut self, event: &CompletionEvent) {
        match event {
            CompletionEvent::Delta(text) if !text.is_empty() => match self.blocks.last_mut() {
                Some(OutBlock::Text(open)) => open.push_str(text),
                _ => self.blocks.push(OutBlock::Text(text.clone())),
            },
            CompletionEvent::Reasoning(text) if !text.is_empty() => match self.blocks.last_mut() {
                Some(OutBlock::Thinking(open)) => open.push_str(text),
                _ => self.blocks.push(OutBlock::Thinking(text.clone())),
            },
            CompletionEvent::ToolCall { call, .. } => {
                self.blocks.push(OutBlock::ToolUse(call.clone()));
            }
            _ => {}
        }
    }

    /// The `message` object of the finished answer.
    pub fn finish(self, finish: &Finish) -> Value {
        let content: Vec<Value> = self
            .blocks
            .into_iter()
            .map(|block| match block {
                OutBlock::Text(text) => json!({"type": "text", "text": text}),
                OutBlock::Thinking(thinking) => {
                    json!({"type": "thinking", "thinking": thinking, "signature": ""})
                }
                OutBlock::ToolUse(call) => json!({
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.function.name,
                    "input": tool_input(&call.function.arguments),
                }),
            })
            .collect();
        json!({
            "id": self.meta.id,
            "type": "message",
            "role": "assistant",
            "model": self.meta.model,
            "content": content,
            "stop_reason": stop_reason(finish.finish_reason),
            "stop_sequence": null,
            "usage": usage(
                finish.usage.prompt_tokens,
                finish.usage.completion_tokens,
                cached(&finish.usage),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_an_anthropic_type_and_status() {
        for kind in ErrorKind::ALL {
            let (kind_name, status) = error_status(kind);
            // 401 only for a key problem, as on the OpenAI side; 529 only for "try later".
            assert_eq!(status == 401, kind == ErrorKind::InvalidApiKey, "{kind}");
            assert_eq!(
                status == 529,
                matches!(kind, ErrorKind::NoCapacity | ErrorKind::Unavailable),
                "{kind}"
            );
            let body = error_body(&ApiError::new(kind, "m"));
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], kind_name);
            assert_eq!(body["error"]["message"], "m");
        }
    }

    #[test]
    fn finish_reasons_are_anthropic_stop_reasons() {
        assert_eq!(stop_reason(FinishReason::Stop), "end_turn");
        assert_eq!(stop_reason(FinishReason::Length), "max_tokens");
        assert_eq!(stop_reason(FinishReason::ToolCalls), "tool_use");
        assert_eq!(stop_reason(FinishReason::ContentFilter), "refusal");
    }

    #[test]
    fn message_ids_are_fresh() {
        let (a, b) = (message_id(), message_id());
        assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn tool_input_is_always_an_object() {
        assert_eq!(tool_input(r#"{"a":1}"#), json!({"a": 1}));
        for odd in ["", "[1]", "3", "{broken"] {
            assert_eq!(tool_input(odd), json!({}), "{odd}");
        }
    }

    #[test]
    fn garbage_is_a_400_not_a_panic() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"model\": 3}",
            b"{\"model\": \"m\", \"max_tokens\": -1, \"messages\": []}",
            b"{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": 5}]}",
            b"{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\"}]}]}",
            b"{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"assistant\", \"content\": [{\"type\": \"tool_result\", \"tool_use_id\": \"x\"}]}]}",
            b"{\"model\": \"m\", \"max_tokens\": 1, \"system\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
            b"{\"model\": \"m\", \"max_tokens\": 1, \"tool_choice\": {\"type\": \"sometimes\"}, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
        ] {
            let error = parse_request(body, Endpoint::Messages)
                .expect_err(&String::from_utf8_lossy(body));
            assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error}");
        }
    }
}
