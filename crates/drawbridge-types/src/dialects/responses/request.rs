//! The request: its body read ([`ResponsesRequest::from_json`]) and translated into the
//! canonical request with the stored conversation before it ([`ResponsesRequest::translate`]).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::openai::{ChatCompletionRequest, ChatMessage, Role, parse_json};
use crate::tools::{FunctionDef, Tool, ToolChoice};

use super::items::{CallIds, read_item, rename_param};
use super::stored::StoredResponse;

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

pub(super) fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

/// The error for `value`, which is not one of the field's `supported` values.
pub(super) fn unsupported(param: impl Into<String>, value: &str, supported: &str) -> ApiError {
    invalid(
        param,
        format!("Invalid value: '{value}'. Supported values are: {supported}."),
    )
}

pub(super) fn missing(param: &str) -> ApiError {
    invalid(param, format!("Missing required parameter: '{param}'."))
}

/// A string field of an item, required.
pub(super) fn required_str<'a>(
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
                    return Err(unsupported(
                        "tool_choice",
                        other,
                        "'none', 'auto' and 'required'",
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
            other => Err(unsupported(
                "text.format.type",
                other,
                "'text', 'json_object', and 'json_schema'",
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
