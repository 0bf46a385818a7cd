//! Legacy completions (`POST /v1/completions`): a prompt in, `text_completion` objects out.
//!
//! The prompt becomes the one user message of the canonical request. A prompt is a string or a
//! list holding one string; a list of several (a batch, one choice per prompt) or of token ids
//! (Drawbridge has no tokenizer for the agents' models) is refused with a 400 naming `prompt`.
//! Reasoning is not part of this format and is left out; tools cannot be offered.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::openai::{
    ChatCompletionRequest, ChatMessage, FinishReason, MessageContent, Role, StreamOptions, Usage,
    parse_json,
};
use crate::sse;
use crate::stream::{CompletionEvent, CompletionMeta, Finish};

/// `POST /v1/completions` body. Fields Drawbridge does not act on go to `extra` and travel on
/// with the canonical request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Value,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub n: Option<u32>,
    /// Prepend the prompt to the answer's text.
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub best_of: Option<u32>,
    /// Text after the insertion point: not something an agent can do.
    #[serde(default)]
    pub suffix: Option<Value>,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What rendering the answer needs of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRendering {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// The prompt, when the client asked for it back (`echo`).
    pub echo: Option<String>,
}

impl CompletionRequest {
    /// Parse a body and check what this dialect cannot serve; the canonical request and what
    /// rendering needs.
    pub fn from_json(
        body: &[u8],
    ) -> Result<(ChatCompletionRequest, CompletionRendering), ApiError> {
        let request: CompletionRequest = parse_json(body)?;
        request.into_canonical()
    }

    /// The canonical request (one user message: the prompt), validated.
    pub fn into_canonical(self) -> Result<(ChatCompletionRequest, CompletionRendering), ApiError> {
        let prompt = prompt_text(&self.prompt)?;
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(
                ApiError::invalid_request("Only best_of=1 is supported").with_param("best_of")
            );
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_null()) {
            return Err(ApiError::invalid_request(
                "'suffix' (insertion) is not supported by this model",
            )
            .with_param("suffix"));
        }
        if self.logprobs.as_ref().is_some_and(|l| !l.is_null()) {
            return Err(
                ApiError::invalid_request("'logprobs' is not supported by this model")
                    .with_param("logprobs"),
            );
        }
        let rendering = CompletionRendering {
            model: self.model.clone(),
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            echo: self.echo.unwrap_or(false).then(|| prompt.clone()),
        };
        let chat = ChatCompletionRequest {
            model: self.model,
            messages: vec![ChatMessage {
                role: Role::User,
                content: Some(MessageContent::Text(prompt)),
                name: None,
                tool_calls: None,
                tool_call_id: None,
            }],
            stream: self.stream,
            stream_options: self.stream_options,
            max_tokens: self.max_tokens,
            max_completion_tokens: None,
            n: self.n,
            user: self.user,
            tools: None,
            tool_choice: None,
            parallel_tool_calls: None,
            extra: self.extra,
        };
        chat.validate()?;
        Ok((chat, rendering))
    }
}

/// The one prompt of `prompt`: a string, or a list holding one string.
fn prompt_text(prompt: &Value) -> Result<String, ApiError> {
    let refuse = |message: &str| Err(ApiError::invalid_request(message).with_param("prompt"));
    match prompt {
        Value::String(text) if !text.is_empty() => Ok(text.clone()),
        Value::String(_) => refuse("'prompt' must not be empty"),
        Value::Array(items) => match items.as_slice() {
            [Value::String(text)] if !text.is_empty() => Ok(text.clone()),
            [Value::String(_)] => refuse("'prompt' must not be empty"),
            [] => refuse("'prompt' must not be empty"),
            [Value::String(_), ..] => refuse(
                "Only one prompt per request is supported; send each prompt as its own request",
            ),
            _ => refuse(
                "'prompt' must be a string or a list of strings; token ids are not supported",
            ),
        },
        _ => refuse("'prompt' must be a string or a list of strings"),
    }
}

/// `text_completion` (whole) and its stream chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<TextChoice>,
    /// On the whole answer always; on a stream chunk only with `include_usage` (`null` on the
    /// ordinary ones, set on the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    pub text: String,
    pub index: u32,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<FinishReason>,
}

/// A fresh `cmpl-…` identity.
pub fn meta(model: &str) -> CompletionMeta {
    let mut meta = CompletionMeta::new(model);
    meta.id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    meta
}

impl TextCompletion {
    fn new(meta: &CompletionMeta, text: String, finish_reason: Option<FinishReason>) -> Self {
        TextCompletion {
            id: meta.id.clone(),
            object: "text_completion".to_owned(),
            created: meta.created,
            model: meta.model.clone(),
            choices: vec![TextChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason,
            }],
            usage: None,
        }
    }
}

/// Gathers the answer into one `text_completion`.
#[derive(Debug)]
pub struct TextCollector {
    meta: CompletionMeta,
    text: String,
}

impl TextCollector {
    pub fn new(meta: CompletionMeta, echo: Option<String>) -> Self {
        TextCollector {
            meta,
            text: echo.unwrap_or_default(),
        }
    }

    /// Add one event; reasoning, keep-alives and the finish add no text.
    pub fn push_event(&mut self, event: &CompletionEvent) {
        if let CompletionEvent::Delta(text) = event {
            self.text.push_str(text);
        }
    }

    pub fn finish(self, finish: &Finish) -> TextCompletion {
        let mut whole = TextCompletion::new(&self.meta, self.text, Some(finish.finish_reason));
        whole.usage = Some(Some(finish.usage));
        whole
    }
}

/// Writes the answer as `text_completion` chunks: text chunks, a last chunk with the
/// `finish_reason`, the usage chunk (`choices: []`) when asked for, then `[DONE]`; a failure is
/// an `{"error": …}` chunk, then `[DONE]`, as the chat stream does.
#[derive(Debug)]
pub struct TextEncoder {
    meta: CompletionMeta,
    include_usage: bool,
    echo: Option<String>,
}

impl TextEncoder {
    pub fn new(meta: CompletionMeta, include_usage: bool, echo: Option<String>) -> Self {
        TextEncoder {
            meta,
            include_usage,
            echo,
        }
    }

    fn frame(&self, mut chunk: TextCompletion, usage: Option<Usage>) -> Bytes {
        if self.include_usage {
            chunk.usage = Some(usage);
        }
        let json = serde_json::to_vec(&chunk).unwrap_or_else(|_| b"{}".to_vec());
        sse::data_frame(&json)
    }

    /// The echoed prompt, once, before the first event.
    pub fn start(&mut self) -> Option<Bytes> {
        let echo = self.echo.take()?;
        Some(self.frame(TextCompletion::new(&self.meta, echo, None), None))
    }

    /// The frames of one event; `None` for what this format does not show (reasoning, tool
    /// calls).
    pub fn event(&mut self, event: &CompletionEvent) -> Option<Bytes> {
        match event {
            CompletionEvent::Delta(text) => {
                Some(self.frame(TextCompletion::new(&self.meta, text.clone(), None), None))
            }
            CompletionEvent::KeepAlive => Some(sse::keepalive_frame()),
            CompletionEvent::Finish(finish) => Some(self.finish(finish)),
            CompletionEvent::Reasoning(_) | CompletionEvent::ToolCall { .. } => None,
        }
    }

    fn finish(&self, finish: &Finish) -> Bytes {
        let mut out = self
            .frame(
                TextCompletion::new(&self.meta, String::new(), Some(finish.finish_reason)),
                None,
            )
            .to_vec();
        if self.include_usage {
            let mut usage = TextCompletion::new(&self.meta, String::new(), None);
            usage.choices.clear();
            out.extend_from_slice(&self.frame(usage, Some(finish.usage)));
        }
        out.extend_from_slice(&sse::done_frame());
        Bytes::from(out)
    }

    /// An error chunk (`{"error": …}`, the OpenAI SDKs raise it), then `[DONE]`.
    pub fn error(&self, error: &ApiError) -> Bytes {
        let body = serde_json::to_vec(&error.to_body()).unwrap_or_else(|_| b"{}".to_vec());
        let mut out = sse::data_frame(&body).to_vec();
        out.extend_from_slice(&sse::done_frame());
        Bytes::from(out)
    }
}
