//! The OpenAI chat-completions wire format, as the official SDKs and NEW-API send and read it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorObject};
use crate::tools::{Tool, ToolChoice};

/// `POST /v1/chat/completions` body. Fields Drawbridge does not act on are kept in `extra` so
/// that a layer forwarding the request passes them on unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Function tools the model may call (served to the agent over MCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Parse a JSON request body into `T`, as a 400 that names the offending field
/// (`param`) when it does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("We could not parse the JSON body of your request: {inner}")
        } else if path == "." {
            format!("Invalid request body: {inner}")
        } else {
            format!("Invalid value for '{path}': {inner}")
        };
        let error = ApiError::invalid_request(message);
        if path == "." {
            error
        } else {
            error.with_param(path)
        }
    })
}

impl ContentPart {
    /// An `image_url` part's URL, if it has a non-empty one.
    pub fn image_url(&self) -> Option<&str> {
        self.extra
            .get("image_url")?
            .get("url")?
            .as_str()
            .filter(|url| !url.trim().is_empty())
    }
}

impl ChatCompletionRequest {
    /// Whether a message carries an image (an `image_url` part).
    pub fn has_images(&self) -> bool {
        self.messages.iter().any(|m| {
            matches!(&m.content, Some(MessageContent::Parts(parts))
                if parts.iter().any(|p| p.kind == "image_url"))
        })
    }

    /// The tools offered to the model: none with `tool_choice: "none"`.
    pub fn offered_tools(&self) -> &[Tool] {
        match (&self.tools, &self.tool_choice) {
            (_, Some(ToolChoice::None)) | (None, _) => &[],
            (Some(tools), _) => tools,
        }
    }

    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The output limit the client asked for, whichever field it used.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Parse a request body, naming the offending field in the error.
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let request: Self = parse_json(body)?;
        request.validate()?;
        Ok(request)
    }

    /// The checks serde cannot express (OpenAI's, listed in `validate.rs`).
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.model.trim().is_empty() {
            return Err(ApiError::invalid_request("'model' must not be empty").with_param("model"));
        }
        if self.messages.is_empty() {
            return Err(
                ApiError::invalid_request("'messages' must contain at least one message")
                    .with_param("messages"),
            );
        }
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid_request("Only n=1 is supported").with_param("n"));
        }
        for (i, message) in self.messages.iter().enumerate() {
            message.validate(i)?;
        }
        crate::validate::conversation(&self.messages)?;
        crate::validate::tools(self.tools.as_deref())?;
        crate::validate::tool_choice(self.tools.as_deref(), self.tool_choice.as_ref())?;
        crate::validate::limits(self)?;
        crate::validate::extra(&self.extra)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    /// The deprecated function-result role; rendered like `tool`.
    Function,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: Some(MessageContent::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
        }
    }

    fn validate(&self, index: usize) -> Result<(), ApiError> {
        let param = || format!("messages[{index}].content");
        match &self.content {
            None => {
                let has_tool_calls = self.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
                if !(self.role == Role::Assistant && has_tool_calls) {
                    return Err(ApiError::invalid_request(format!(
                        "messages[{index}]: 'content' is required for a {} message",
                        role_name(self.role)
                    ))
                    .with_param(param()));
                }
            }
            Some(MessageContent::Parts(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    match part.kind.as_str() {
                        "text" if part.text.is_some() => {}
                        "text" => {
                            return Err(ApiError::invalid_request(format!(
                                "messages[{index}].content[{j}]: a text part needs 'text'"
                            ))
                            .with_param(format!("messages[{index}].content[{j}].text")));
                        }
                        "image_url" if self.role == Role::User && part.image_url().is_some() => {}
                        "image_url" if self.role == Role::User => {
                            return Err(ApiError::invalid_request(format!(
                                "messages[{index}].content[{j}]: an image part needs \
                                 'image_url.url' (an https:// or data: URL)"
                            ))
                            .with_param(format!("messages[{index}].content[{j}].image_url")));
                        }
                        other => {
                            return Err(ApiError::invalid_request(format!(
                                "messages[{index}].content[{j}]: content parts of type '{other}' \
                                 are not supported in a {} message; send text (images: \
                                 'image_url' parts of a user message)",
                                role_name(self.role)
                            ))
                            .with_param(format!("messages[{index}].content[{j}].type")));
                        }
                    }
                }
            }
            Some(MessageContent::Text(_)) => {}
        }
        Ok(())
    }

    /// The message's text: a string, or its text parts joined by blank lines.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(text)) => text.clone(),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Function => "function",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of an array `content`: `text`, or (in a user message) `image_url`, which only
/// provider accounts take (an ACP account never sees one: the engine passes it over). Other
/// types are rejected with a clear error rather than silently dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// Why a choice stopped. `error` is Drawbridge's: a stream that could not be completed ends
/// with it (plus an error object) instead of hanging or breaking off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ContentFilter,
    ToolCalls,
    Error,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::ContentFilter,
            FinishReason::ToolCalls,
            FinishReason::Error,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// OpenAI's breakdown of the prompt tokens: how many the upstream read from its prompt
    /// cache. Only when the upstream said (an HTTP provider account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Drawbridge's extension: where the token counts come from and what the provider
    /// reported (Kiro's credits and context use). Clients that do not know it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drawbridge: Option<UsageDetails>,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
            drawbridge: None,
        }
    }

    /// With `cached` of the prompt tokens read from the upstream's cache (`None`: not said).
    pub fn with_cached(mut self, cached: Option<u64>) -> Self {
        self.prompt_tokens_details =
            cached.map(|cached_tokens| PromptTokensDetails { cached_tokens });
        self
    }

    pub fn with_details(mut self, details: UsageDetails) -> Self {
        self.drawbridge = Some(details);
        self
    }
}

/// `usage.prompt_tokens_details`, as OpenAI sends it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens read from the upstream's prompt cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

/// `usage.drawbridge`: how the answer was counted and what the provider reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageDetails {
    /// Where `prompt_tokens` and `completion_tokens` come from.
    pub tokens: TokenSource,
    /// Provider credits the answer cost (Kiro credits), when the agent reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<f64>,
    /// The agent's context window use after the answer, 0–100, when it reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_usage_percent: Option<f64>,
    /// `tool_choice` demanded a tool call and the model answered in text instead (OpenAI
    /// would have forced the call; an agent can only be asked).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tool_choice_unmet: bool,
}

impl UsageDetails {
    /// The details of an answer: its token counts `estimated` or reported, the `credits` its
    /// agent reported (0: none reported, so none shown), the last context use reported.
    pub fn of(estimated: bool, credits: f64, context_usage_percent: Option<f64>) -> Self {
        UsageDetails {
            tokens: if estimated {
                TokenSource::Estimated
            } else {
                TokenSource::Reported
            },
            credits: (credits.is_finite() && credits > 0.0).then_some(credits),
            context_usage_percent,
            tool_choice_unmet: false,
        }
    }
}

/// Whether token counts were reported by the agent or estimated by Drawbridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    Reported,
    #[default]
    Estimated,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::Reported => "reported",
            TokenSource::Estimated => "estimated",
        }
    }
}

/// A non-streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    pub finish_reason: FinishReason,
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    pub role: Role,
    pub content: Option<String>,
    pub refusal: Option<String>,
    /// The model's reasoning (`engine.reasoning: on`), as DeepSeek-style APIs name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The tools the model called (`finish_reason: "tool_calls"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// One streamed chunk as read back (the writer is [`crate::stream::ChunkEncoder`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
    /// Drawbridge's own metering, on the usage chunk of the engine's internal API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drawbridge: Option<crate::stream::Metering>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// One tool call's piece in a streamed delta: the first for an `index` carries `id`, `type`
/// and the function's name; later ones only argument fragments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(ids: impl IntoIterator<Item = String>, created: u64) -> Self {
        ModelList {
            object: "list".to_owned(),
            data: ids
                .into_iter()
                .map(|id| Model {
                    id,
                    object: "model".to_owned(),
                    created,
                    owned_by: "drawbridge".to_owned(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn parse(body: &str) -> Result<ChatCompletionRequest, ApiError> {
        ChatCompletionRequest::from_json(body.as_bytes())
    }

    #[test]
    fn accepts_what_the_sdks_send() {
        let req = parse(
            r#"{"model":"kiro","messages":[
                {"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"hi"}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"42"}],
              "stream":true,"stream_options":{"include_usage":true},
              "max_completion_tokens":16,"temperature":0.2,"seed":7}"#,
        )
        .unwrap();
        assert!(req.is_stream());
        assert!(req.include_usage());
        assert_eq!(req.max_output_tokens(), Some(16));
        assert_eq!(req.messages[0].role, Role::Developer);
        assert_eq!(req.messages[1].text(), "hi");
        // Unknown fields survive a round trip, for layers that forward the request.
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["seed"], 7);
        assert_eq!(json["temperature"], 0.2);
    }

    #[test]
    fn max_tokens_is_the_fallback_limit() {
        let req =
            parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5}"#)
                .unwrap();
        assert_eq!(req.max_output_tokens(), Some(5));
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse("{not json").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        assert!(err.message.contains("parse the JSON"), "{}", err.message);

        let err = parse(r#"{"model":"m"}"#).unwrap_err();
        assert!(err.message.contains("messages"), "{}", err.message);

        let err = parse(r#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));

        let err =
            parse(r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].role"));
        assert!(err.message.contains("wizard"), "{}", err.message);

        let err = parse(r#"{"model":"m","messages":[{"role":"user"}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].content"));

        let err = parse(r#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("model"));

        // Images: in a user message, with a URL; anywhere else, or without one, a 400.
        let image = |role: &str, part: &str| {
            format!(r#"{{"model":"m","messages":[{{"role":"{role}","content":[{part}]}}]}}"#)
        };
        let ok = parse(&image(
            "user",
            r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}"#,
        ))
        .unwrap();
        assert!(ok.has_images());
        let err = parse(&image("user", r#"{"type":"image_url","image_url":{}}"#)).unwrap_err();
        assert_eq!(
            err.param.as_deref(),
            Some("messages[0].content[0].image_url")
        );
        let err = parse(&image(
            "system",
            r#"{"type":"image_url","image_url":{"url":"https://x/y.png"}}"#,
        ))
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].content[0].type"));
        let err = parse(&image("user", r#"{"type":"input_audio"}"#)).unwrap_err();
        assert!(err.message.contains("input_audio"), "{}", err.message);

        let err =
            parse(r#"{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("n"));
    }

    #[test]
    fn finish_reasons_serialize_as_openai_does() {
        for (reason, text) in [
            (FinishReason::Stop, "stop"),
            (FinishReason::Length, "length"),
            (FinishReason::ContentFilter, "content_filter"),
            (FinishReason::Error, "error"),
        ] {
            assert_eq!(serde_json::to_value(reason).unwrap(), text);
            assert_eq!(FinishReason::parse(text), Some(reason));
        }
    }
}
