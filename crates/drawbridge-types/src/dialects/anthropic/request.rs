//! The request: an Anthropic Messages body translated into the canonical request
//! ([`parse_request`]), its refusals named in Anthropic's terms.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::openai::{
    ChatCompletionRequest, ChatMessage, ContentPart, FunctionCall, MessageContent, Role, ToolCall,
    parse_json,
};
use crate::tools::{FunctionDef, Tool, ToolChoice};

use super::input::{Block, ImageSource, InMessage, InRole, InTool, Request, System};

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
