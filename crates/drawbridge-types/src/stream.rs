//! The completion event stream between layers, and its two OpenAI renderings: the SSE chunk
//! stream ([`ChunkEncoder`]) and the single JSON answer ([`Collector`]). [`ChunkReader`] turns
//! an OpenAI chunk stream back into events, for a layer that consumes another one's stream.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorObject};
use crate::openai::{
    ChatCompletion, ChatCompletionChunk, Choice, FinishReason, FunctionCall, FunctionCallDelta,
    ResponseMessage, Role, ToolCall, ToolCallDelta, Usage,
};
use crate::sse;

/// What a layer produces while answering: text in order, then exactly one `Finish`. Failures
/// travel beside it as `Err(ApiError)` items of the same stream.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionEvent {
    Delta(String),
    /// Reasoning text (`delta.reasoning_content`); never the answer's first byte.
    Reasoning(String),
    /// Nothing to show yet, but the answer is being worked on: SSE renders an SSE comment
    /// (which keeps connections and proxies alive), a JSON answer ignores it.
    KeepAlive,
    /// A call of one of the client's tools, whole; `index` counts the answer's calls from 0.
    /// An answer with calls finishes with `tool_calls`.
    ToolCall {
        index: u32,
        call: ToolCall,
    },
    Finish(Finish),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// Who served the answer and what it cost, for the gateway's ledger.
    pub metering: Metering,
}

/// Where an answer was served and what it cost: what the gateway charges and records. It
/// travels between Drawbridge's own layers (the engine's internal API puts it on the usage
/// chunk as `drawbridge`); the public API never shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metering {
    /// The accounts that served the answer, in order: more than one when it was resumed on
    /// another account.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Provider credits the answer cost (Kiro credits), over every account that served it.
    #[serde(default)]
    pub credits: f64,
    /// Whether the token counts are estimates (Kiro reports none).
    #[serde(default)]
    pub tokens_estimated: bool,
}

/// The identity shared by every chunk of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl CompletionMeta {
    /// A fresh `chatcmpl-…` id stamped with the current time.
    pub fn new(model: impl Into<String>) -> Self {
        CompletionMeta {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: unix_now(),
            model: model.into(),
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    /// Absent without `include_usage`; `null` on ordinary chunks with it; set on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorObject>,
    /// Only on the usage chunk of a layer that exposes metering (the engine's internal API).
    #[serde(skip_serializing_if = "Option::is_none")]
    drawbridge: Option<&'a Metering>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<FinishReason>,
}

#[derive(Serialize)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCallDelta]>,
}

/// Writes one answer as OpenAI SSE: the same `id`/`created` on every chunk, `role` in the first
/// delta, `finish_reason` on the last choice chunk, the usage chunk (`choices: []`) when asked
/// for, then `[DONE]`.
#[derive(Debug)]
pub struct ChunkEncoder {
    meta: CompletionMeta,
    include_usage: bool,
    expose_metering: bool,
    role_sent: bool,
}

impl ChunkEncoder {
    pub fn new(meta: CompletionMeta, include_usage: bool) -> Self {
        ChunkEncoder {
            meta,
            include_usage,
            expose_metering: false,
            role_sent: false,
        }
    }

    /// Put the answer's [`Metering`] on the usage chunk (as `drawbridge`), for a Drawbridge
    /// layer that reads this stream back (the engine's internal API, read by the gateway).
    pub fn exposing_metering(mut self) -> Self {
        self.expose_metering = true;
        self
    }

    pub fn meta(&self) -> &CompletionMeta {
        &self.meta
    }

    fn frame(
        &self,
        choices: &[ChoiceOut<'_>],
        usage: Option<&Usage>,
        error: Option<&ErrorObject>,
        metering: Option<&Metering>,
    ) -> Bytes {
        let chunk = ChunkOut {
            id: &self.meta.id,
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: &self.meta.model,
            choices,
            usage: self.include_usage.then_some(usage),
            error,
            drawbridge: metering.filter(|_| self.expose_metering),
        };
        // Serializing these plain structs cannot fail; an empty object keeps the stream valid
        // if it ever did.
        let json = serde_json::to_vec(&chunk).unwrap_or_else(|_| b"{}".to_vec());
        sse::data_frame(&json)
    }

    fn role(&mut self) -> Option<&'static str> {
        (!std::mem::replace(&mut self.role_sent, true)).then_some("assistant")
    }

    /// A chunk of the one choice: its text, or its finish (with the error object when it
    /// failed).
    fn choice(
        &mut self,
        content: Option<&str>,
        finish_reason: Option<FinishReason>,
        error: Option<&ErrorObject>,
    ) -> Bytes {
        self.choice_with(content, None, finish_reason, error)
    }

    fn choice_with(
        &mut self,
        content: Option<&str>,
        reasoning_content: Option<&str>,
        finish_reason: Option<FinishReason>,
        error: Option<&ErrorObject>,
    ) -> Bytes {
        self.choice_full(content, reasoning_content, None, finish_reason, error)
    }

    fn choice_full(
        &mut self,
        content: Option<&str>,
        reasoning_content: Option<&str>,
        tool_calls: Option<&[ToolCallDelta]>,
        finish_reason: Option<FinishReason>,
        error: Option<&ErrorObject>,
    ) -> Bytes {
        let role = self.role();
        self.frame(
            &[ChoiceOut {
                index: 0,
                delta: DeltaOut {
                    role,
                    content,
                    reasoning_content,
                    tool_calls,
                },
                logprobs: None,
                finish_reason,
            }],
            None,
            error,
            None,
        )
    }

    /// A content chunk.
    pub fn delta(&mut self, text: &str) -> Bytes {
        self.choice(Some(text), None, None)
    }

    /// A reasoning chunk: `delta.reasoning_content`.
    pub fn reasoning(&mut self, text: &str) -> Bytes {
        self.choice_with(None, Some(text), None, None)
    }

    /// A tool call, as the OpenAI SDKs read it: a chunk opening call `index` (its `id`, `type`
    /// and name, empty arguments), then one with its arguments.
    pub fn tool_call(&mut self, index: u32, call: &ToolCall) -> Bytes {
        let open = [ToolCallDelta {
            index,
            id: Some(call.id.clone()),
            kind: Some("function".to_owned()),
            function: Some(FunctionCallDelta {
                name: Some(call.function.name.clone()),
                arguments: Some(String::new()),
            }),
        }];
        let mut out = self
            .choice_full(None, None, Some(&open), None, None)
            .to_vec();
        let arguments = [ToolCallDelta {
            index,
            function: Some(FunctionCallDelta {
                name: None,
                arguments: Some(call.function.arguments.clone()),
            }),
            ..ToolCallDelta::default()
        }];
        out.extend_from_slice(&self.choice_full(None, None, Some(&arguments), None, None));
        Bytes::from(out)
    }

    /// An SSE comment that keeps the connection alive.
    pub fn keep_alive(&self) -> Bytes {
        sse::keepalive_frame()
    }

    /// The end of a successful answer: finish chunk, usage chunk if asked for, `[DONE]`.
    pub fn finish(&mut self, finish: &Finish) -> Bytes {
        let mut out = self.choice(None, Some(finish.finish_reason), None).to_vec();
        if self.include_usage {
            out.extend_from_slice(&self.frame(
                &[],
                Some(&finish.usage),
                None,
                Some(&finish.metering),
            ));
        }
        out.extend_from_slice(&sse::done_frame());
        Bytes::from(out)
    }

    /// The end of an answer that could not be completed: a last choice chunk with
    /// `finish_reason: "error"` carrying the error object (the SDKs raise it), then `[DONE]`.
    pub fn error(&mut self, error: &ApiError) -> Bytes {
        let object = error.to_object();
        let mut out = self
            .choice(None, Some(FinishReason::Error), Some(&object))
            .to_vec();
        out.extend_from_slice(&sse::done_frame());
        Bytes::from(out)
    }
}

/// Gathers a stream into one `chat.completion`.
#[derive(Debug)]
pub struct Collector {
    meta: CompletionMeta,
    text: String,
    reasoning: Option<String>,
    tool_calls: Vec<ToolCall>,
}

impl Collector {
    pub fn new(meta: CompletionMeta) -> Self {
        Collector {
            meta,
            text: String::new(),
            reasoning: None,
            tool_calls: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Reasoning text, for `message.reasoning_content`.
    pub fn push_reasoning(&mut self, text: &str) {
        self.reasoning.get_or_insert_default().push_str(text);
    }

    /// Add one event of the answer; the finish (or an error) is the caller's to handle.
    pub fn push_event(&mut self, event: &CompletionEvent) {
        match event {
            CompletionEvent::Delta(text) => self.push(text),
            CompletionEvent::Reasoning(text) => self.push_reasoning(text),
            CompletionEvent::ToolCall { call, .. } => self.tool_calls.push(call.clone()),
            CompletionEvent::KeepAlive | CompletionEvent::Finish(_) => {}
        }
    }

    pub fn finish(self, finish: &Finish) -> ChatCompletion {
        // An answer made only of tool calls has `content: null`, as OpenAI's does.
        let calls = !self.tool_calls.is_empty();
        let content = (!calls || !self.text.is_empty()).then_some(self.text);
        ChatCompletion {
            id: self.meta.id,
            object: "chat.completion".to_owned(),
            created: self.meta.created,
            model: self.meta.model,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: Role::Assistant,
                    content,
                    refusal: None,
                    reasoning_content: self.reasoning,
                    tool_calls: calls.then_some(self.tool_calls),
                },
                finish_reason: finish.finish_reason,
                logprobs: None,
            }],
            usage: finish.usage,
        }
    }
}

/// Reads an OpenAI chunk stream (requested with `include_usage`) back into events. The finish
/// reason arrives before the usage chunk, so `Finish` is emitted at `[DONE]`.
#[derive(Debug, Default)]
pub struct ChunkReader {
    /// Tool calls being read (their argument fragments come in several chunks); each is
    /// emitted whole when the choice finishes.
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
    metering: Option<Metering>,
    done: bool,
}

impl ChunkReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `[DONE]` has been read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feed one SSE `data` payload; get the events it completes.
    pub fn push(&mut self, data: &str) -> Result<Vec<CompletionEvent>, ApiError> {
        if data.trim() == sse::DONE {
            self.done = true;
            let finish_reason = self.finish_reason.ok_or_else(|| {
                ApiError::upstream("the upstream stream ended without a finish_reason")
            })?;
            return Ok(vec![CompletionEvent::Finish(Finish {
                finish_reason,
                usage: self.usage.unwrap_or_default(),
                metering: self.metering.take().unwrap_or_default(),
            })]);
        }
        let chunk: ChatCompletionChunk = serde_json::from_str(data).map_err(|err| {
            ApiError::upstream(format!("the upstream sent a malformed chunk: {err}"))
        })?;
        if let Some(error) = chunk.error {
            return Err(ApiError::from_object(502, error));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        if let Some(metering) = chunk.drawbridge {
            self.metering = Some(metering);
        }
        let mut events = Vec::new();
        for choice in chunk.choices {
            if let Some(text) = choice.delta.reasoning_content
                && !text.is_empty()
            {
                events.push(CompletionEvent::Reasoning(text));
            }
            if let Some(text) = choice.delta.content
                && !text.is_empty()
            {
                events.push(CompletionEvent::Delta(text));
            }
            for delta in choice.delta.tool_calls.unwrap_or_default() {
                self.read_tool_call(delta)?;
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
                events.extend(self.tool_calls.drain(..).enumerate().map(|(i, call)| {
                    CompletionEvent::ToolCall {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        call,
                    }
                }));
            }
        }
        Ok(events)
    }

    /// Add one tool-call fragment: the first for an index opens the call, later ones extend
    /// its arguments.
    fn read_tool_call(&mut self, delta: ToolCallDelta) -> Result<(), ApiError> {
        let index = usize::try_from(delta.index).unwrap_or(usize::MAX);
        let function = delta.function.unwrap_or_default();
        if index == self.tool_calls.len() {
            self.tool_calls.push(ToolCall {
                id: delta.id.unwrap_or_default(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: function.name.unwrap_or_default(),
                    arguments: function.arguments.unwrap_or_default(),
                },
            });
            return Ok(());
        }
        let call = self.tool_calls.get_mut(index).ok_or_else(|| {
            ApiError::upstream(format!("the upstream sent tool call {index} out of order"))
        })?;
        if let Some(arguments) = function.arguments {
            call.function.arguments.push_str(&arguments);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::sse::SseDecoder;
    use serde_json::Value;

    fn meta() -> CompletionMeta {
        CompletionMeta {
            id: "chatcmpl-1".into(),
            created: 1_716_000_000,
            model: "kiro".into(),
        }
    }

    fn frames(bytes: &[u8]) -> Vec<String> {
        SseDecoder::new().push(bytes)
    }

    fn finish() -> Finish {
        Finish {
            finish_reason: FinishReason::Stop,
            usage: Usage::new(3, 2),
            metering: Metering {
                accounts: vec!["acct-1".into()],
                credits: 0.25,
                tokens_estimated: true,
            },
        }
    }

    #[test]
    fn stream_without_usage_follows_openai() {
        let mut enc = ChunkEncoder::new(meta(), false);
        let mut out = enc.delta("Hel").to_vec();
        out.extend_from_slice(&enc.delta("lo"));
        out.extend_from_slice(&enc.finish(&finish()));
        let events = frames(&out);
        assert_eq!(events.len(), 4);
        assert_eq!(events[3], "[DONE]");
        let chunks: Vec<Value> = events[..3]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        for c in &chunks {
            assert_eq!(c["id"], "chatcmpl-1");
            assert_eq!(c["created"], 1_716_000_000);
            assert_eq!(c["object"], "chat.completion.chunk");
            assert!(
                c.get("usage").is_none(),
                "no usage key without include_usage"
            );
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "Hel");
        assert!(chunks[1]["choices"][0]["delta"].get("role").is_none());
        assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[2]["choices"][0]["delta"], serde_json::json!({}));
    }

    #[test]
    fn include_usage_adds_a_usage_chunk_before_done() {
        let mut enc = ChunkEncoder::new(meta(), true);
        let mut out = enc.delta("x").to_vec();
        out.extend_from_slice(&enc.finish(&finish()));
        let events = frames(&out);
        assert_eq!(events.len(), 4);
        let first: Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(first["usage"], Value::Null);
        assert!(first.get("usage").is_some());
        let last: Value = serde_json::from_str(&events[2]).unwrap();
        assert_eq!(last["choices"], serde_json::json!([]));
        assert_eq!(last["usage"]["total_tokens"], 5);
        assert_eq!(events[3], "[DONE]");
    }

    #[test]
    fn an_error_ends_the_stream_cleanly() {
        let mut enc = ChunkEncoder::new(meta(), false);
        let out = enc.error(&ApiError::upstream("agent died"));
        let events = frames(&out);
        assert_eq!(events.len(), 2);
        let chunk: Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(chunk["choices"][0]["finish_reason"], "error");
        assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunk["error"]["code"], "upstream_error");
        assert_eq!(events[1], "[DONE]");
    }

    #[test]
    fn reader_inverts_encoder() {
        let mut enc = ChunkEncoder::new(meta(), true).exposing_metering();
        let mut out = enc.delta("a").to_vec();
        out.extend_from_slice(&enc.delta("b"));
        out.extend_from_slice(&enc.finish(&finish()));
        let mut reader = ChunkReader::new();
        let events: Vec<CompletionEvent> = frames(&out)
            .iter()
            .flat_map(|d| reader.push(d).unwrap())
            .collect();
        assert_eq!(
            events,
            vec![
                CompletionEvent::Delta("a".into()),
                CompletionEvent::Delta("b".into()),
                CompletionEvent::Finish(finish()),
            ]
        );
        assert!(reader.is_done());
    }

    #[test]
    fn metering_stays_off_the_public_stream() {
        let mut public = ChunkEncoder::new(meta(), true);
        let out = public.finish(&finish());
        assert!(
            frames(&out).iter().all(|d| !d.contains("drawbridge")),
            "the public usage chunk must not name accounts"
        );
        let mut reader = ChunkReader::new();
        let events: Vec<CompletionEvent> = frames(&out)
            .iter()
            .flat_map(|d| reader.push(d).unwrap())
            .collect();
        let Some(CompletionEvent::Finish(read)) = events.last() else {
            panic!("no finish: {events:?}");
        };
        assert_eq!(read.metering, Metering::default());

        let mut internal = ChunkEncoder::new(meta(), true).exposing_metering();
        let frames = frames(&internal.finish(&finish()));
        let usage: Value = serde_json::from_str(&frames[1]).unwrap();
        assert_eq!(usage["drawbridge"]["accounts"][0], "acct-1");
        assert_eq!(usage["drawbridge"]["credits"], 0.25);
        assert_eq!(usage["usage"]["total_tokens"], 5);
    }

    #[test]
    fn reader_surfaces_errors() {
        let mut enc = ChunkEncoder::new(meta(), true);
        let out = enc.error(&ApiError::new(ErrorKind::Timeout, "slow"));
        let mut reader = ChunkReader::new();
        let err = reader.push(&frames(&out)[0]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(ChunkReader::new().push("{oops").is_err());
        assert!(
            ChunkReader::new().push("[DONE]").is_err(),
            "no finish_reason"
        );
    }

    #[test]
    fn collector_builds_a_chat_completion() {
        let mut c = Collector::new(meta());
        c.push("Hello");
        c.push(" world");
        let completion = c.finish(&finish());
        let json = serde_json::to_value(&completion).unwrap();
        assert_eq!(json["object"], "chat.completion");
        assert_eq!(json["choices"][0]["message"]["role"], "assistant");
        assert_eq!(json["choices"][0]["message"]["content"], "Hello world");
        assert_eq!(json["choices"][0]["finish_reason"], "stop");
        assert_eq!(json["usage"]["prompt_tokens"], 3);
    }

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            kind: "function".into(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }

    fn tool_finish() -> Finish {
        Finish {
            finish_reason: FinishReason::ToolCalls,
            ..finish()
        }
    }

    #[test]
    fn tool_calls_stream_as_the_sdks_read_them() {
        let mut enc = ChunkEncoder::new(meta(), true).exposing_metering();
        let mut out = enc
            .tool_call(0, &call("call_a", "weather", r#"{"city":"Paris"}"#))
            .to_vec();
        out.extend_from_slice(&enc.tool_call(1, &call("call_b", "time", "{}")));
        out.extend_from_slice(&enc.finish(&tool_finish()));
        let events = frames(&out);
        assert_eq!(events.len(), 7, "4 call chunks, finish, usage, [DONE]");
        let chunks: Vec<Value> = events[..5]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let delta = |i: usize| chunks[i]["choices"][0]["delta"].clone();
        assert_eq!(delta(0)["role"], "assistant");
        assert_eq!(
            delta(0)["tool_calls"],
            serde_json::json!([{"index": 0, "id": "call_a", "type": "function",
                "function": {"name": "weather", "arguments": ""}}])
        );
        assert_eq!(
            delta(1)["tool_calls"],
            serde_json::json!([{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}])
        );
        assert_eq!(delta(2)["tool_calls"][0]["index"], 1);
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");

        let mut reader = ChunkReader::new();
        let read: Vec<CompletionEvent> = frames(&out)
            .iter()
            .flat_map(|d| reader.push(d).unwrap())
            .collect();
        assert_eq!(
            read,
            vec![
                CompletionEvent::ToolCall {
                    index: 0,
                    call: call("call_a", "weather", r#"{"city":"Paris"}"#)
                },
                CompletionEvent::ToolCall {
                    index: 1,
                    call: call("call_b", "time", "{}")
                },
                CompletionEvent::Finish(tool_finish()),
            ]
        );
    }

    #[test]
    fn reader_refuses_a_tool_call_fragment_out_of_order() {
        let mut reader = ChunkReader::new();
        let chunk = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":2,"function":{"arguments":"{}"}}]},"finish_reason":null}]}"#;
        assert!(reader.push(chunk).is_err());
    }

    #[test]
    fn collector_puts_tool_calls_on_the_message() {
        let mut c = Collector::new(meta());
        c.push_event(&CompletionEvent::ToolCall {
            index: 0,
            call: call("call_a", "weather", "{}"),
        });
        let json = serde_json::to_value(c.finish(&tool_finish())).unwrap();
        let message = &json["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["tool_calls"][0]["id"], "call_a");
        assert_eq!(message["tool_calls"][0]["type"], "function");
        assert_eq!(message["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(json["choices"][0]["finish_reason"], "tool_calls");

        let mut text = Collector::new(meta());
        text.push("hi");
        let json = serde_json::to_value(text.finish(&finish())).unwrap();
        assert!(json["choices"][0]["message"].get("tool_calls").is_none());
    }
}
