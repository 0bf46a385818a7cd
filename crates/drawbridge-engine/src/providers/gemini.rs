//! The Gemini upstream (`kind: gemini`): a turn as a `POST
//! {base_url}/models/{model}:streamGenerateContent?alt=sse` body ([`request_body`], the URL
//! from [`path`]), the stream's `GenerateContentResponse`s back as worker events
//! ([`EventReader`]), and Gemini's error answers as the error class the engine acts on
//! ([`error_from_status`]). No I/O here: golden files in `tests/golden/gemini_upstream`.
//!
//! Choices where the two APIs differ:
//! - System and developer messages become `systemInstruction`; assistant turns are `model`
//!   turns; consecutive turns of one role are merged.
//! - A tool result becomes a `functionResponse` part named after the call it answers (found
//!   by its id in the conversation), its text as `response.content` unless it is a JSON
//!   object.
//! - Tool schemas go as `parametersJsonSchema` (plain JSON Schema, as OpenAI tools carry).
//! - `response_format` `json_object` / `json_schema` set `responseMimeType:
//!   application/json` (and `responseJsonSchema`); `reasoning_effort` (other than `none`)
//!   sets `thinkingConfig.includeThoughts`, without which Gemini sends no thoughts.
//! - Gemini gives function calls no usable id: each gets `call_gemini_<request id>_<n>`
//!   (the request id with anything but letters, digits and `-` as `-`; unique as long as
//!   clients do not reuse an `x-request-id`).
//! - The stream has no end event: the answer is complete when the body ends after a
//!   `finishReason`.

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

/// The request's path under `base_url`: `/models/{model}:streamGenerateContent?alt=sse`,
/// with the model id percent-encoded where it is not URL-safe.
pub fn path(model: &str) -> String {
    let mut encoded = String::new();
    for byte in model.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("/models/{encoded}:streamGenerateContent?alt=sse")
}

/// The JSON body of the `streamGenerateContent` request for `input`.
pub fn request_body(input: &PromptInput) -> Value {
    let (system, contents) = conversation(&input.body);
    let mut body = Map::new();
    if !system.is_empty() {
        body.insert(
            "systemInstruction".to_owned(),
            json!({ "parts": [{ "text": system.join("\n\n") }] }),
        );
    }
    body.insert("contents".to_owned(), Value::Array(contents));
    if !input.tools.is_empty() {
        let declarations: Vec<Value> = input
            .tools
            .tools
            .iter()
            .map(|tool| {
                let mut out = json!({ "name": tool.function.name });
                if let Some(description) = &tool.function.description {
                    out["description"] = json!(description);
                }
                if let Some(parameters) = &tool.function.parameters {
                    out["parametersJsonSchema"] = parameters.clone();
                }
                out
            })
            .collect();
        body.insert(
            "tools".to_owned(),
            json!([{ "functionDeclarations": declarations }]),
        );
        let config = match &input.tools.choice {
            ToolChoice::Auto => json!({ "mode": "AUTO" }),
            ToolChoice::Required => json!({ "mode": "ANY" }),
            ToolChoice::None => json!({ "mode": "NONE" }),
            ToolChoice::Function(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
        };
        body.insert(
            "toolConfig".to_owned(),
            json!({ "functionCallingConfig": config }),
        );
    }
    let generation = generation_config(input);
    if !generation.is_empty() {
        body.insert("generationConfig".to_owned(), Value::Object(generation));
    }
    Value::Object(body)
}

/// `generationConfig`: the output limit and the request's sampling and format parameters.
fn generation_config(input: &PromptInput) -> Map<String, Value> {
    let mut config = Map::new();
    let params = &input.params;
    if let Some(max) = input.max_output_tokens {
        config.insert("maxOutputTokens".to_owned(), Value::from(max));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(value) = params.get(from) {
            config.insert(to.to_owned(), value.clone());
        }
    }
    match params.get("stop") {
        Some(Value::String(stop)) => {
            config.insert("stopSequences".to_owned(), json!([stop]));
        }
        Some(Value::Array(stops)) if !stops.is_empty() => {
            config.insert("stopSequences".to_owned(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    // Gemini sends its thoughts only when asked; a request that asks for reasoning gets them.
    if params
        .get("reasoning_effort")
        .is_some_and(|effort| effort.as_str() != Some("none"))
    {
        config.insert(
            "thinkingConfig".to_owned(),
            json!({ "includeThoughts": true }),
        );
    }
    let format = params.get("response_format");
    match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_object") => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
        }
        Some("json_schema") => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
            if let Some(schema) = format.and_then(|f| f.pointer("/json_schema/schema")) {
                config.insert("responseJsonSchema".to_owned(), schema.clone());
            }
        }
        _ => {}
    }
    config
}

/// The system texts and the `contents` of `body` (a resumed answer adds the part already
/// sent and asks for the rest).
fn conversation(body: &PromptBody) -> (Vec<String>, Vec<Value>) {
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
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &messages {
        let (role, parts) = match message.role {
            Role::System | Role::Developer => {
                let text = message.text();
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            Role::User => ("user", parts(message)),
            Role::Assistant => {
                let mut parts = parts(message);
                for call in message.tool_calls.iter().flatten() {
                    parts.push(json!({ "functionCall": {
                        "name": call.function.name,
                        "args": super::anthropic::arguments(&call.function.arguments),
                    }}));
                }
                ("model", parts)
            }
            Role::Tool | Role::Function => {
                let id = message.tool_call_id.as_deref().unwrap_or_default();
                let name = call_name(&messages, id)
                    .or_else(|| message.name.clone())
                    .unwrap_or_default();
                let text = message.text();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(object @ Value::Object(_)) => object,
                    _ => json!({ "content": text }),
                };
                (
                    "user",
                    vec![json!({ "functionResponse": { "name": name, "response": response } })],
                )
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, previous)) if *last == role => previous.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect();
    (system, contents)
}

/// The function name of the tool call `id` in the conversation.
fn call_name(messages: &[ChatMessage], id: &str) -> Option<String> {
    messages
        .iter()
        .flat_map(|m| m.tool_calls.iter().flatten())
        .find(|call| call.id == id)
        .map(|call| call.function.name.clone())
}

/// A message's text and image parts as Gemini parts (empty texts left out).
fn parts(message: &ChatMessage) -> Vec<Value> {
    match &message.content {
        None => Vec::new(),
        Some(MessageContent::Text(text)) if text.is_empty() => Vec::new(),
        Some(MessageContent::Text(text)) => vec![json!({ "text": text })],
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|part| match (part.kind.as_str(), &part.text) {
                ("text", Some(text)) if !text.is_empty() => Some(json!({ "text": text })),
                ("image_url", _) => {
                    let url = part.extra.get("image_url")?.get("url")?.as_str()?;
                    Some(image_part(url))
                }
                _ => None,
            })
            .collect(),
    }
}

/// An image by URL as a Gemini part: a `data:` URL inline, any other as `fileData` (its MIME
/// type guessed from the file name, JPEG when it says nothing), which Gemini fetches.
fn image_part(url: &str) -> Value {
    if let Some((mime, data)) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
    {
        return json!({ "inlineData": { "mimeType": mime, "data": data } });
    }
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    let mime = [
        (".png", "image/png"),
        (".webp", "image/webp"),
        (".gif", "image/gif"),
        (".heic", "image/heic"),
    ]
    .iter()
    .find(|(ext, _)| path.ends_with(ext))
    .map_or("image/jpeg", |(_, mime)| mime);
    json!({ "fileData": { "mimeType": mime, "fileUri": url } })
}

/// Reads one `streamGenerateContent?alt=sse` body into worker events: text, reasoning
/// (parts with `thought: true`), function calls (each whole in one part), and `Finished`
/// when the body ends after a `finishReason`, with the last `usageMetadata` (thinking tokens
/// counted as completion tokens, as OpenAI counts reasoning tokens).
#[derive(Debug)]
pub struct EventReader {
    decoder: SseDecoder,
    splicer: Option<Splicer>,
    request_id: String,
    calls: usize,
    prompt_tokens: u64,
    /// `cachedContentTokenCount`, when the upstream reported it.
    cached_prompt_tokens: Option<u64>,
    completion_tokens: u64,
    finish_reason: Option<FinishReason>,
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
            splicer,
            // Letters, digits, `_` and `-` only: the ids may travel on to Anthropic.
            request_id: input
                .request_id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect(),
            calls: 0,
            prompt_tokens: 0,
            cached_prompt_tokens: None,
            completion_tokens: 0,
            finish_reason: None,
            finished: false,
        }
    }

    /// Whether the answer has ended (`Finished` or an error was returned).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feed the next bytes of the body; get the events they complete. After an `Error`
    /// nothing more is returned.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<WorkerEvent> {
        let mut out = Vec::new();
        for data in self.decoder.push(bytes) {
            if self.finished {
                break;
            }
            match serde_json::from_str::<Value>(&data) {
                Ok(response) => self.response(&response, &mut out),
                Err(_) => self.fail(
                    ApiError::upstream("The provider sent an event that is not JSON."),
                    &mut out,
                ),
            }
        }
        out
    }

    /// The body ended: `Finished` if a finish reason came, else the answer broke off.
    pub fn end(&mut self) -> Vec<WorkerEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match self.finish_reason {
            Some(reason) => {
                if let Some(held) = self.splicer.as_mut().map(Splicer::finish)
                    && !held.is_empty()
                {
                    out.push(WorkerEvent::Text(held));
                }
                let reason = if self.calls > 0 && reason == FinishReason::Stop {
                    FinishReason::ToolCalls
                } else {
                    reason
                };
                self.finished = true;
                out.push(WorkerEvent::Finished(TurnSummary {
                    finish_reason: reason,
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
            None => self.fail(
                ApiError::upstream("The provider's answer broke off before it was complete."),
                &mut out,
            ),
        }
        out
    }

    fn fail(&mut self, error: ApiError, out: &mut Vec<WorkerEvent>) {
        self.finished = true;
        out.push(WorkerEvent::Error(error));
    }

    fn response(&mut self, response: &Value, out: &mut Vec<WorkerEvent>) {
        if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            self.fail(
                ApiError::upstream(format!("The provider failed mid-answer: {message}")),
                out,
            );
            return;
        }
        if let Some(usage) = response.get("usageMetadata") {
            let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
            self.prompt_tokens = count("promptTokenCount");
            self.completion_tokens =
                count("candidatesTokenCount").saturating_add(count("thoughtsTokenCount"));
            self.cached_prompt_tokens =
                usage.get("cachedContentTokenCount").and_then(Value::as_u64);
        }
        let candidate = response.pointer("/candidates/0");
        let parts = candidate
            .and_then(|c| c.pointer("/content/parts"))
            .and_then(Value::as_array);
        for part in parts.into_iter().flatten() {
            if let Some(call) = part.get("functionCall") {
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                out.push(WorkerEvent::ToolCall(ToolCall {
                    id: format!("call_gemini_{}_{}", self.request_id, self.calls),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: name.to_owned(),
                        arguments: args.to_string(),
                    },
                }));
                self.calls += 1;
            } else if let Some(text) = part.get("text").and_then(Value::as_str) {
                if part.get("thought").and_then(Value::as_bool) == Some(true) {
                    if !text.is_empty() {
                        out.push(WorkerEvent::Reasoning(text.to_owned()));
                    }
                } else {
                    let text = match &mut self.splicer {
                        Some(splicer) => splicer.push(text).into_owned(),
                        None => text.to_owned(),
                    };
                    if !text.is_empty() {
                        out.push(WorkerEvent::Text(text));
                    }
                }
            }
        }
        if let Some(reason) = candidate
            .and_then(|c| c.get("finishReason"))
            .and_then(Value::as_str)
        {
            self.finish_reason = Some(finish_reason(reason));
        } else if response.pointer("/promptFeedback/blockReason").is_some() {
            // The prompt itself was blocked: no candidate comes.
            self.finish_reason = Some(FinishReason::ContentFilter);
        }
    }
}

/// Gemini's `finishReason` as a finish reason.
fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => FinishReason::ContentFilter,
        // STOP, FINISH_REASON_UNSPECIFIED, OTHER, MALFORMED_FUNCTION_CALL, and reasons
        // added later.
        _ => FinishReason::Stop,
    }
}

/// The error a Gemini non-200 answer stands for (its body `{"error": {"code", "message",
/// "status", "details"}}`): the classes of [`super::openai::error_from_status`], except that
/// a 400 whose details name an invalid API key (`API_KEY_INVALID`, Gemini's answer to a bad
/// key) is the account's failure, not the client's.
pub fn error_from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ApiError {
    if status == 400 && key_refused(body) {
        return ApiError::upstream("The provider refused this account's key (status 400).");
    }
    let error = super::openai::error_from_status(status, retry_after, body);
    if status == 429 && retry_after.is_none() {
        // Gemini states the wait in the body (`RetryInfo.retryDelay`, e.g. "7s").
        if let Some(after) = retry_delay(body) {
            return ApiError::new(ErrorKind::AccountRateLimited, error.message)
                .with_retry_after(after);
        }
    }
    error
}

/// Whether a Gemini error body's details name an invalid key.
fn key_refused(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/details").cloned())
        .and_then(|d| d.as_array().cloned())
        .is_some_and(|details| {
            details
                .iter()
                .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
        })
}

/// The `retryDelay` of a Gemini error body's `RetryInfo` detail (`"<seconds>s"`).
fn retry_delay(body: &[u8]) -> Option<Duration> {
    let value = serde_json::from_slice::<Value>(body).ok()?;
    let details = value.pointer("/error/details")?.as_array()?;
    details.iter().find_map(|d| {
        let delay = d.get("retryDelay")?.as_str()?.strip_suffix('s')?;
        let seconds = delay.trim().parse::<f64>().ok()?;
        Duration::try_from_secs_f64(seconds).ok()
    })
}
