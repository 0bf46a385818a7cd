//! The OpenAI Responses API (`POST /v1/responses`), as Codex and the official SDKs speak it:
//! the request read into the canonical request, and the canonical events written back as a
//! `response` object or its stream of typed events.
//!
//! A request is read in two steps: [`ResponsesRequest::from_json`] (the body's shape), then
//! [`ResponsesRequest::translate`] with the stored response its `previous_response_id` names,
//! if any (loading it is the caller's I/O). The conversation sent upstream is the
//! `instructions` (a system message), the previous response's input and output items, then
//! this request's input items. `reasoning` items are kept in the stored conversation but never
//! sent upstream. Tools other than `function` tools (hosted tools Drawbridge cannot run) are
//! ignored: they are echoed on the response but not offered to the model.
//!
//! [`ResponseEncoder`] writes one answer: the stream's events (each with its
//! `sequence_number`), and the final `response` object, which the caller stores before the
//! last event leaves so that a client chaining at once finds it.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ErrorKind};
use crate::openai::{
    ChatCompletionRequest, ChatMessage, ContentPart, FinishReason, FunctionCall, MessageContent,
    Role, ToolCall, parse_json,
};
use crate::stream::{CompletionEvent, Finish};
use crate::tools::{FunctionDef, Tool, ToolChoice};

/// The body of `POST /v1/responses`. Only the fields Drawbridge acts on or echoes are read;
/// every other field (`include`, `prompt_cache_key`, `service_tier`, ...) is accepted and
/// ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    /// A string (one user message) or a list of items.
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<Value>,
    #[serde(default)]
    pub top_p: Option<Value>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    #[serde(default)]
    pub text: Option<Value>,
    /// `{"effort", "summary"}`: the effort is passed on as `reasoning_effort`.
    #[serde(default)]
    pub reasoning: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub user: Option<String>,
    /// Whether the response is kept for `previous_response_id` and `GET` (default true).
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
}

/// What a stored response keeps: the whole conversation's input items up to it (the previous
/// responses' inputs and outputs, then its own request's input), and the `response` object
/// itself (whose `output` continues the conversation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub input: Vec<Value>,
    pub response: Value,
}

impl StoredResponse {
    /// Read a stored response back; a stored value that does not fit is an internal error.
    pub fn from_json(text: &str) -> Result<Self, ApiError> {
        serde_json::from_str(text)
            .map_err(|err| ApiError::internal(format!("A stored response is unreadable: {err}")))
    }

    /// The stored JSON text.
    pub fn to_json(&self) -> String {
        // Plain values: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The conversation after this response: its input items, then its output items.
    fn conversation(&self) -> Vec<Value> {
        let mut items = self.input.clone();
        if let Some(Value::Array(output)) = self.response.get("output") {
            items.extend(output.iter().cloned());
        }
        items
    }
}

/// A request read and translated: the canonical request, and what answering it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub chat: ChatCompletionRequest,
    /// The response object's fields echoed from the request (`instructions`, `tools`,
    /// `tool_choice`, `temperature`, ...), without `id`, `status`, `output` or `usage`.
    pub template: Map<String, Value>,
    /// The conversation's input items so far (the previous response's, then this request's),
    /// for storing this response.
    pub input: Vec<Value>,
    pub stream: bool,
    pub store: bool,
}

/// The error for a `previous_response_id` that names no stored response of this caller.
pub fn previous_not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("Previous response with id '{id}' not found."),
    )
    .with_param("previous_response_id")
}

/// The error for `GET /v1/responses/{id}` of a response that is not stored for this caller.
pub fn response_not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("No response found with id '{id}'."),
    )
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

fn missing(param: &str) -> ApiError {
    invalid(param, format!("Missing required parameter: '{param}'."))
}

/// A string field of an item, required.
fn required_str<'a>(
    item: &'a Map<String, Value>,
    path: &str,
    field: &str,
) -> Result<&'a str, ApiError> {
    match item.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(missing(&format!("{path}.{field}"))),
        Some(_) => Err(invalid(
            format!("{path}.{field}"),
            format!("Invalid type for '{path}.{field}': expected a string."),
        )),
    }
}

impl ResponsesRequest {
    /// Parse a body, naming the offending field in the error.
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let request: Self = parse_json(body)?;
        if let Some(id) = &request.previous_response_id
            && id.is_empty()
        {
            return Err(invalid(
                "previous_response_id",
                "Invalid 'previous_response_id': empty string.",
            ));
        }
        Ok(request)
    }

    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the response is to be stored (the default).
    pub fn is_stored(&self) -> bool {
        self.store.unwrap_or(true)
    }

    /// This request's own input items: a string input is one user message.
    fn own_items(&self) -> Result<Vec<Value>, ApiError> {
        match &self.input {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(text)) => Ok(vec![json!({
                "type": "message",
                "role": "user",
                "content": text,
            })]),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(invalid(
                "input",
                "Invalid type for 'input': expected a string or an array of input items.",
            )),
        }
    }

    /// The canonical request, after `previous` (the stored response `previous_response_id`
    /// names; `None` without one). Each refusal names the Responses field.
    pub fn translate(&self, previous: Option<&StoredResponse>) -> Result<Translated, ApiError> {
        let own = self.own_items()?;
        if own.is_empty() && previous.is_none() {
            return Err(missing("input"));
        }
        let earlier = previous
            .map(StoredResponse::conversation)
            .unwrap_or_default();
        let mut messages = Vec::new();
        let mut origin: Vec<String> = Vec::new();
        if let Some(instructions) = self.instructions.as_deref().filter(|s| !s.is_empty()) {
            messages.push(ChatMessage::new(Role::System, instructions));
            origin.push("instructions".to_owned());
        }
        let mut calls = CallIds::default();
        for item in &earlier {
            read_item(
                item,
                "previous_response_id",
                &mut messages,
                &mut origin,
                &mut calls,
            )?;
        }
        for (i, item) in own.iter().enumerate() {
            read_item(
                item,
                &format!("input[{i}]"),
                &mut messages,
                &mut origin,
                &mut calls,
            )?;
        }
        if messages.is_empty() {
            return Err(invalid(
                "input",
                "Invalid 'input': it holds no message to answer.",
            ));
        }
        let (tools, tool_origin) = self.function_tools()?;
        let tool_choice = self.tool_choice(tools.as_deref())?;
        if self.max_output_tokens == Some(0) {
            return Err(invalid(
                "max_output_tokens",
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= \
                 1, but got 0 instead.",
            ));
        }
        let mut extra = Map::new();
        for (key, value) in [("temperature", &self.temperature), ("top_p", &self.top_p)] {
            if let Some(value) = value.as_ref().filter(|v| !v.is_null()) {
                extra.insert(key.to_owned(), value.clone());
            }
        }
        if let Some(format) = self.response_format()? {
            extra.insert("response_format".to_owned(), format);
        }
        if let Some(effort) = self
            .reasoning
            .as_ref()
            .and_then(|r| r.get("effort"))
            .filter(|e| e.is_string())
        {
            extra.insert("reasoning_effort".to_owned(), effort.clone());
        }
        match &self.metadata {
            None | Some(Value::Null) => {}
            Some(metadata @ Value::Object(_)) => {
                extra.insert("metadata".to_owned(), metadata.clone());
            }
            Some(_) => {
                return Err(invalid(
                    "metadata",
                    "Invalid type for 'metadata': expected an object.",
                ));
            }
        }
        let chat = ChatCompletionRequest {
            model: self.model.clone(),
            messages,
            stream: self.is_stream().then_some(true),
            stream_options: None,
            max_tokens: self.max_output_tokens,
            max_completion_tokens: None,
            n: None,
            user: self.user.clone(),
            tools,
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            extra,
        };
        chat.validate()
            .map_err(|error| rename_param(error, &origin, &tool_origin))?;
        let mut input = earlier;
        input.extend(own);
        Ok(Translated {
            chat,
            template: self.template(),
            input,
            stream: self.is_stream(),
            store: self.is_stored(),
        })
    }

    /// The `function` tools, with the index in `tools` of each; other tool types are ignored.
    fn function_tools(&self) -> Result<(Option<Vec<Tool>>, Vec<usize>), ApiError> {
        let mut tools = Vec::new();
        let mut origin = Vec::new();
        for (i, tool) in self.tools.iter().flatten().enumerate() {
            let path = format!("tools[{i}]");
            let Some(tool) = tool.as_object() else {
                return Err(invalid(
                    &path,
                    format!("Invalid type for '{path}': expected an object."),
                ));
            };
            if required_str(tool, &path, "type")? != "function" {
                continue;
            }
            let name = required_str(tool, &path, "name")?;
            let description = match tool.get("description") {
                None | Some(Value::Null) => None,
                Some(Value::String(d)) => Some(d.clone()),
                Some(_) => {
                    return Err(invalid(
                        format!("{path}.description"),
                        format!("Invalid type for '{path}.description': expected a string."),
                    ));
                }
            };
            let strict = match tool.get("strict") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => {
                    return Err(invalid(
                        format!("{path}.strict"),
                        format!("Invalid type for '{path}.strict': expected a boolean."),
                    ));
                }
            };
            tools.push(Tool {
                kind: "function".to_owned(),
                function: FunctionDef {
                    name: name.to_owned(),
                    description,
                    parameters: tool.get("parameters").filter(|p| !p.is_null()).cloned(),
                    strict,
                },
            });
            origin.push(i);
        }
        Ok(((!tools.is_empty()).then_some(tools), origin))
    }

    /// `tool_choice`: a mode, or `{"type": "function", "name"}`. Without function tools a
    /// mode means nothing and is dropped.
    fn tool_choice(&self, tools: Option<&[Tool]>) -> Result<Option<ToolChoice>, ApiError> {
        let choice = match &self.tool_choice {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(mode)) => match mode.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(invalid(
                        "tool_choice",
                        format!(
                            "Invalid value: '{other}'. Supported values are: 'none', 'auto' and \
                             'required'."
                        ),
                    ));
                }
            },
            Some(Value::Object(named)) => {
                let kind = required_str(named, "tool_choice", "type")?;
                if kind != "function" {
                    return Err(invalid(
                        "tool_choice.type",
                        format!("Invalid value: '{kind}'. Only function tools can be chosen here."),
                    ));
                }
                ToolChoice::Function(required_str(named, "tool_choice", "name")?.to_owned())
            }
            Some(_) => {
                return Err(invalid(
                    "tool_choice",
                    "Invalid type for 'tool_choice': expected a string or an object.",
                ));
            }
        };
        match (tools, choice) {
            (None, ToolChoice::Function(name)) => Err(invalid(
                "tool_choice",
                format!(
                    "Invalid value for 'tool_choice': no function named '{name}' was specified \
                     in the 'tools' parameter."
                ),
            )),
            (None, _) => Ok(None),
            (Some(_), choice) => Ok(Some(choice)),
        }
    }

    /// `text.format` as a chat `response_format`.
    fn response_format(&self) -> Result<Option<Value>, ApiError> {
        let format = match &self.text {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(text)) => match text.get("format") {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::Object(format)) => format,
                Some(_) => {
                    return Err(invalid(
                        "text.format",
                        "Invalid type for 'text.format': expected an object.",
                    ));
                }
            },
            Some(_) => {
                return Err(invalid(
                    "text",
                    "Invalid type for 'text': expected an object.",
                ));
            }
        };
        match required_str(format, "text.format", "type")? {
            "text" => Ok(None),
            "json_object" => Ok(Some(json!({"type": "json_object"}))),
            "json_schema" => {
                let mut schema = Map::new();
                for field in ["name", "schema", "description", "strict"] {
                    if let Some(value) = format.get(field) {
                        schema.insert(field.to_owned(), value.clone());
                    }
                }
                Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
            }
            other => Err(invalid(
                "text.format.type",
                format!(
                    "Invalid value: '{other}'. Supported values are: 'text', 'json_object', and \
                     'json_schema'."
                ),
            )),
        }
    }

    /// The response object's fields that echo the request, as OpenAI fills them.
    fn template(&self) -> Map<String, Value> {
        let or = |value: &Option<Value>, default: Value| {
            value.clone().filter(|v| !v.is_null()).unwrap_or(default)
        };
        let mut template = Map::new();
        let mut put = |key: &str, value: Value| {
            template.insert(key.to_owned(), value);
        };
        put("instructions", json!(self.instructions));
        put("max_output_tokens", json!(self.max_output_tokens));
        put("metadata", or(&self.metadata, json!({})));
        put("model", json!(self.model));
        put(
            "parallel_tool_calls",
            json!(self.parallel_tool_calls.unwrap_or(true)),
        );
        put("previous_response_id", json!(self.previous_response_id));
        put(
            "reasoning",
            or(&self.reasoning, json!({"effort": null, "summary": null})),
        );
        put("store", json!(self.is_stored()));
        put("temperature", or(&self.temperature, json!(1.0)));
        put("text", or(&self.text, json!({"format": {"type": "text"}})));
        put("tool_choice", or(&self.tool_choice, json!("auto")));
        put("tools", json!(self.tools.clone().unwrap_or_default()));
        put("top_p", or(&self.top_p, json!(1.0)));
        put("truncation", json!("disabled"));
        put("user", json!(self.user));
        template
    }
}

/// The function calls seen so far, for checking that each output answers one.
#[derive(Debug, Default)]
struct CallIds(std::collections::HashSet<String>);

/// Append the message(s) of one input item at `path`.
fn read_item(
    item: &Value,
    path: &str,
    messages: &mut Vec<ChatMessage>,
    origin: &mut Vec<String>,
    calls: &mut CallIds,
) -> Result<(), ApiError> {
    let Some(item) = item.as_object() else {
        return Err(invalid(
            path,
            format!("Invalid type for '{path}': expected an object."),
        ));
    };
    let kind = match item.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        None | Some(Value::Null) if item.contains_key("role") => "message",
        None | Some(Value::Null) => return Err(missing(&format!("{path}.type"))),
        Some(_) => {
            return Err(invalid(
                format!("{path}.type"),
                format!("Invalid type for '{path}.type': expected a string."),
            ));
        }
    };
    match kind {
        "message" => {
            let role = match required_str(item, path, "role")? {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                "developer" => Role::Developer,
                other => {
                    return Err(invalid(
                        format!("{path}.role"),
                        format!(
                            "Invalid value: '{other}'. Supported values are: 'user', \
                             'assistant', 'system' and 'developer'."
                        ),
                    ));
                }
            };
            let content = message_content(item.get("content"), path)?;
            messages.push(ChatMessage {
                role,
                content: Some(content),
                name: None,
                tool_calls: None,
                tool_call_id: None,
            });
            origin.push(path.to_owned());
        }
        "function_call" => {
            let call_id = required_str(item, path, "call_id")?;
            let name = required_str(item, path, "name")?;
            let arguments = match item.get("arguments") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(a)) => a.clone(),
                Some(other) => other.to_string(),
            };
            calls.0.insert(call_id.to_owned());
            let call = ToolCall {
                id: call_id.to_owned(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: name.to_owned(),
                    arguments,
                },
            };
            // Calls right after an assistant message (or each other) are that message's.
            match messages.last_mut() {
                Some(last) if last.role == Role::Assistant => {
                    last.tool_calls.get_or_insert_default().push(call);
                }
                _ => {
                    messages.push(ChatMessage {
                        role: Role::Assistant,
                        content: None,
                        name: None,
                        tool_calls: Some(vec![call]),
                        tool_call_id: None,
                    });
                    origin.push(path.to_owned());
                }
            }
        }
        "function_call_output" => {
            let call_id = required_str(item, path, "call_id")?;
            if !calls.0.contains(call_id) {
                return Err(invalid(
                    format!("{path}.call_id"),
                    format!("No tool call found for function call output with call_id {call_id}."),
                ));
            }
            let output = match item.get("output") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
                None | Some(Value::Null) => return Err(missing(&format!("{path}.output"))),
                Some(other) => other.to_string(),
            };
            messages.push(ChatMessage {
                role: Role::Tool,
                content: Some(MessageContent::Text(output)),
                name: None,
                tool_calls: None,
                tool_call_id: Some(call_id.to_owned()),
            });
            origin.push(path.to_owned());
        }
        // The model's reasoning is the client's transcript, not something to send back.
        "reasoning" => {}
        other => {
            return Err(invalid(
                format!("{path}.type"),
                format!(
                    "Invalid value: '{other}'. Supported values are: 'message', \
                     'function_call', 'function_call_output' and 'reasoning'."
                ),
            ));
        }
    }
    Ok(())
}

/// A message item's `content`: a string, or text parts (`input_text`, `output_text`,
/// `refusal`) and `input_image` parts with an `image_url` (a canonical `image_url` part, which
/// only provider accounts take). Files and images by `file_id` are a 400.
fn message_content(content: Option<&Value>, path: &str) -> Result<MessageContent, ApiError> {
    let parts = match content {
        Some(Value::String(text)) => return Ok(MessageContent::Text(text.clone())),
        Some(Value::Array(parts)) => parts,
        None | Some(Value::Null) => return Err(missing(&format!("{path}.content"))),
        Some(_) => {
            return Err(invalid(
                format!("{path}.content"),
                format!("Invalid type for '{path}.content': expected a string or an array."),
            ));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part_path = format!("{path}.content[{j}]");
        let Some(part) = part.as_object() else {
            return Err(invalid(
                &part_path,
                format!("Invalid type for '{part_path}': expected an object."),
            ));
        };
        let kind = required_str(part, &part_path, "type")?;
        if kind == "input_image" {
            let url = required_str(part, &part_path, "image_url")?;
            let mut extra = Map::new();
            extra.insert("image_url".to_owned(), serde_json::json!({ "url": url }));
            out.push(ContentPart {
                kind: "image_url".to_owned(),
                text: None,
                extra,
            });
            continue;
        }
        let field = match kind {
            "input_text" | "output_text" | "text" => "text",
            "refusal" => "refusal",
            other => {
                return Err(invalid(
                    format!("{part_path}.type"),
                    format!(
                        "Content of type '{other}' is not supported here; send 'input_text' \
                         parts."
                    ),
                ));
            }
        };
        out.push(ContentPart {
            kind: "text".to_owned(),
            text: Some(required_str(part, &part_path, field)?.to_owned()),
            extra: Map::new(),
        });
    }
    Ok(MessageContent::Parts(out))
}

/// A refusal of the canonical checks, its `param` in the Responses request's terms:
/// `messages[k]` becomes the item it came from, `tools[k].function.x` becomes `tools[i].x`,
/// `response_format.json_schema.x` becomes `text.format.x`.
fn rename_param(mut error: ApiError, origin: &[String], tool_origin: &[usize]) -> ApiError {
    let Some(param) = error.param.take() else {
        return error;
    };
    let indexed = |rest: &str| -> Option<(usize, String)> {
        let (index, tail) = rest.split_once(']')?;
        Some((index.parse().ok()?, tail.to_owned()))
    };
    let renamed = if let Some((k, tail)) = param.strip_prefix("messages[").and_then(indexed) {
        let tail = tail.replace(".tool_call_id", ".call_id");
        origin.get(k).map(|path| format!("{path}{tail}"))
    } else if let Some((k, tail)) = param.strip_prefix("tools[").and_then(indexed) {
        let tail = tail.replacen(".function", "", 1);
        tool_origin.get(k).map(|i| format!("tools[{i}]{tail}"))
    } else if let Some(tail) = param.strip_prefix("response_format.json_schema") {
        Some(format!("text.format{tail}"))
    } else {
        param
            .strip_prefix("response_format")
            .map(|tail| format!("text.format{tail}"))
    };
    error.param = Some(renamed.unwrap_or(param));
    error
}

/// A fresh response id, `resp_` and 32 hex digits.
pub fn new_response_id() -> String {
    format!("resp_{}", uuid::Uuid::new_v4().simple())
}

/// The item being written: text or reasoning grows while its events arrive.
#[derive(Debug)]
enum Open {
    Message { id: String, text: String },
    Reasoning { id: String, text: String },
}

/// Writes one answer as the Responses API does: [`ResponseEncoder::start`], then each event
/// ([`ResponseEncoder::push`]), then [`ResponseEncoder::finish`] or [`ResponseEncoder::fail`];
/// [`ResponseEncoder::response`] is the `response` object at any point (whole after the end).
/// Every event carries a `sequence_number` counted from 0.
#[derive(Debug)]
pub struct ResponseEncoder {
    response: Map<String, Value>,
    /// The id's hex part: item ids are made from it.
    stem: String,
    sequence: u64,
    output: Vec<Value>,
    open: Option<Open>,
}

impl ResponseEncoder {
    /// An answer with id `id` created at `created_at` (Unix seconds), echoing `template`.
    pub fn new(template: Map<String, Value>, id: &str, created_at: u64) -> Self {
        let mut response = Map::new();
        response.insert("id".to_owned(), json!(id));
        response.insert("object".to_owned(), json!("response"));
        response.insert("created_at".to_owned(), json!(created_at));
        response.insert("status".to_owned(), json!("in_progress"));
        response.insert("error".to_owned(), Value::Null);
        response.insert("incomplete_details".to_owned(), Value::Null);
        response.extend(template);
        response.insert("output".to_owned(), json!([]));
        response.insert("usage".to_owned(), Value::Null);
        ResponseEncoder {
            response,
            stem: id.strip_prefix("resp_").unwrap_or(id).to_owned(),
            sequence: 0,
            output: Vec::new(),
            open: None,
        }
    }

    /// The response object as it stands (complete once the answer has ended).
    pub fn response(&self) -> Value {
        let mut response = self.response.clone();
        response.insert("output".to_owned(), Value::Array(self.output.clone()));
        Value::Object(response)
    }

    fn item_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}{:03}", self.stem, self.output.len())
    }

    fn output_index(&self) -> usize {
        self.output.len()
    }

    /// One event frame: `event: <type>` and its JSON with `type` and `sequence_number`.
    fn event(&mut self, out: &mut BytesMut, kind: &str, fields: Value) {
        let mut event = Map::new();
        event.insert("type".to_owned(), json!(kind));
        event.insert("sequence_number".to_owned(), json!(self.sequence));
        if let Value::Object(fields) = fields {
            event.extend(fields);
        }
        self.sequence += 1;
        // Plain values: serializing cannot fail.
        let json = serde_json::to_vec(&Value::Object(event)).unwrap_or_default();
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(&json);
        out.put_slice(b"\n\n");
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        let response = self.response();
        self.event(
            &mut out,
            "response.created",
            json!({ "response": response }),
        );
        self.event(
            &mut out,
            "response.in_progress",
            json!({ "response": response }),
        );
        out.freeze()
    }

    /// The frames of one event of the answer (`Finish` is [`ResponseEncoder::finish`]'s).
    pub fn push(&mut self, event: &CompletionEvent) -> Bytes {
        let mut out = BytesMut::new();
        match event {
            CompletionEvent::Delta(text) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.close(&mut out, "completed");
                    self.open_message(&mut out);
                }
                let output_index = self.output_index();
                if let Some(Open::Message { id, text: all }) = &mut self.open {
                    all.push_str(text);
                    let id = id.clone();
                    self.event(
                        &mut out,
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": output_index, "content_index": 0,
                               "delta": text, "logprobs": []}),
                    );
                }
            }
            CompletionEvent::Reasoning(text) => {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    self.close(&mut out, "completed");
                    self.open_reasoning(&mut out);
                }
                let output_index = self.output_index();
                if let Some(Open::Reasoning { id, text: all }) = &mut self.open {
                    all.push_str(text);
                    let id = id.clone();
                    self.event(
                        &mut out,
                        "response.reasoning_summary_text.delta",
                        json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                               "delta": text}),
                    );
                }
            }
            CompletionEvent::ToolCall { call, .. } => {
                self.close(&mut out, "completed");
                self.function_call(&mut out, call);
            }
            CompletionEvent::KeepAlive => out.put_slice(&crate::sse::keepalive_frame()),
            CompletionEvent::Finish(finish) => out.put_slice(&self.finish(finish)),
        }
        out.freeze()
    }

    fn open_message(&mut self, out: &mut BytesMut) {
        let id = self.item_id("msg");
        let output_index = self.output_index();
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": {"id": id, "type": "message",
                   "status": "in_progress", "content": [], "role": "assistant"}}),
        );
        self.event(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": output_index, "content_index": 0,
                   "part": {"type": "output_text", "annotations": [], "text": ""}}),
        );
        self.open = Some(Open::Message {
            id,
            text: String::new(),
        });
    }

    fn open_reasoning(&mut self, out: &mut BytesMut) {
        let id = self.item_id("rs");
        let output_index = self.output_index();
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": {"id": id, "type": "reasoning",
                   "summary": []}}),
        );
        self.event(
            out,
            "response.reasoning_summary_part.added",
            json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                   "part": {"type": "summary_text", "text": ""}}),
        );
        self.open = Some(Open::Reasoning {
            id,
            text: String::new(),
        });
    }

    /// End the open item (if any) with `status`, and add it to the output.
    fn close(&mut self, out: &mut BytesMut, status: &str) {
        let output_index = self.output_index();
        let item = match self.open.take() {
            None => return,
            Some(Open::Message { id, text }) => {
                let part = json!({"type": "output_text", "annotations": [], "text": text});
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0,
                           "part": part}),
                );
                json!({"id": id, "type": "message", "status": status, "content": [part],
                       "role": "assistant"})
            }
            Some(Open::Reasoning { id, text }) => {
                let part = json!({"type": "summary_text", "text": text});
                self.event(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                           "text": text}),
                );
                self.event(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                           "part": part}),
                );
                json!({"id": id, "type": "reasoning", "summary": [part]})
            }
        };
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
    }

    fn function_call(&mut self, out: &mut BytesMut, call: &ToolCall) {
        let id = self.item_id("fc");
        let output_index = self.output_index();
        let item = |status: &str, arguments: &str| {
            json!({"id": id, "type": "function_call", "status": status,
                   "arguments": arguments, "call_id": call.id, "name": call.function.name})
        };
        let added = item("in_progress", "");
        let done = item("completed", &call.function.arguments);
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": added}),
        );
        self.event(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": output_index,
                   "delta": call.function.arguments}),
        );
        self.event(
            out,
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": output_index, "name": call.function.name,
                   "arguments": call.function.arguments}),
        );
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": done}),
        );
        self.output.push(done);
    }

    /// The end of an answer: the open item's end, then `response.completed`, or
    /// `response.incomplete` when the answer was cut off (by the output limit or a filter).
    /// The response object is whole before the frames are returned: store it, then send them.
    pub fn finish(&mut self, finish: &Finish) -> Bytes {
        let mut out = BytesMut::new();
        let (status, reason) = match finish.finish_reason {
            FinishReason::Stop | FinishReason::ToolCalls => ("completed", None),
            FinishReason::Length => ("incomplete", Some("max_output_tokens")),
            FinishReason::ContentFilter => ("incomplete", Some("content_filter")),
            FinishReason::Error => {
                return self.fail(&ApiError::upstream("The answer ended with an error."));
            }
        };
        self.close(
            &mut out,
            if reason.is_some() {
                "incomplete"
            } else {
                "completed"
            },
        );
        let usage = &finish.usage;
        self.response.insert("status".to_owned(), json!(status));
        self.response.insert(
            "incomplete_details".to_owned(),
            reason.map_or(Value::Null, |reason| json!({ "reason": reason })),
        );
        self.response.insert(
            "usage".to_owned(),
            json!({
                "input_tokens": usage.prompt_tokens,
                "input_tokens_details": {
                    "cached_tokens": usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
                },
                "output_tokens": usage.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.total_tokens,
            }),
        );
        let response = self.response();
        self.event(
            &mut out,
            &format!("response.{status}"),
            json!({ "response": response }),
        );
        out.freeze()
    }

    /// The end of an answer that failed (an error, or a stream that broke off): the open
    /// item ends `incomplete`, then `response.failed` with the error.
    pub fn fail(&mut self, error: &ApiError) -> Bytes {
        let mut out = BytesMut::new();
        self.close(&mut out, "incomplete");
        let code = match error.kind {
            ErrorKind::RateLimited | ErrorKind::AccountRateLimited => "rate_limit_exceeded",
            _ => "server_error",
        };
        self.response.insert("status".to_owned(), json!("failed"));
        self.response.insert(
            "error".to_owned(),
            json!({"code": code, "message": error.message}),
        );
        let response = self.response();
        self.event(&mut out, "response.failed", json!({ "response": response }));
        out.freeze()
    }

    /// The end of a stream that broke off before its finish.
    pub fn broken_off(&mut self) -> Bytes {
        self.fail(&ApiError::upstream(
            "The answer ended before it was complete.",
        ))
    }

    /// Whether the answer ended `completed` or `incomplete` (not failed, not still going).
    pub fn ended_well(&self) -> bool {
        matches!(
            self.response.get("status").and_then(Value::as_str),
            Some("completed" | "incomplete")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Translated, ApiError> {
        ResponsesRequest::from_json(body.as_bytes())?.translate(None)
    }

    #[test]
    fn refusals_name_the_responses_field() {
        for (body, param) in [
            (r#"{"model":"m"}"#, "input"),
            (r#"{"model":"m","input":3}"#, "input"),
            (r#"{"model":"m","input":[{"type":"wat"}]}"#, "input[0].type"),
            (
                r#"{"model":"m","input":[{"role":"tool","content":"x"}]}"#,
                "input[0].role",
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"x"}]}]}"#,
                "input[0].content[0].type",
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"x"}]}]}"#,
                "input[0].content[0].image_url",
            ),
            (
                r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c9","output":"x"}]}"#,
                "input[0].call_id",
            ),
            (
                r#"{"model":"m","input":[{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"role":"user","content":"hi"}]}"#,
                "input[0]",
            ),
            (
                r#"{"model":"m","input":"hi","tools":[{"type":"web_search"},{"type":"function","name":"bad name"}]}"#,
                "tools[1].name",
            ),
            (
                r#"{"model":"m","input":"hi","tool_choice":{"type":"function","name":"f"}}"#,
                "tool_choice",
            ),
            (
                r#"{"model":"m","input":"hi","temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","input":"hi","max_output_tokens":0}"#,
                "max_output_tokens",
            ),
            (
                r#"{"model":"m","input":"hi","text":{"format":{"type":"json_schema","name":"a b"}}}"#,
                "text.format.name",
            ),
            (
                r#"{"model":"m","input":"hi","previous_response_id":""}"#,
                "previous_response_id",
            ),
            (r#"{"model":5,"input":"hi"}"#, "model"),
        ] {
            let error = parse(body).expect_err(body);
            assert_eq!(error.kind, ErrorKind::InvalidRequest, "{body}");
            assert_eq!(
                error.param.as_deref(),
                Some(param),
                "{body}: {}",
                error.message
            );
        }
    }

    #[test]
    fn hosted_tools_are_ignored_and_a_mode_without_function_tools_dropped() {
        let t = parse(
            r#"{"model":"m","input":"hi","tools":[{"type":"web_search_preview"}],"tool_choice":"auto"}"#,
        )
        .unwrap();
        assert_eq!(t.chat.tools, None);
        assert_eq!(t.chat.tool_choice, None);
        assert_eq!(t.template["tools"][0]["type"], "web_search_preview");
    }
}
