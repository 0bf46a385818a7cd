//! Golden files of the OpenAI chat dialect. Its wire request is the canonical request, so the
//! request files show what validation keeps (fields Drawbridge does not act on travel on in
//! `extra`) or the 400 it gives; the event files are the chunk stream and the whole answer.

mod common;

use common::{check, finish, meta, pretty, text};
use drawbridge_types::openai::{FinishReason, FunctionCall, ToolCall};
use drawbridge_types::{ApiError, ChatCompletionRequest, ChunkEncoder, Collector, CompletionEvent};
use serde_json::json;

const DIALECT: &str = "openai";

fn requests() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "text_with_unknown_fields",
            json!({"model": "kiro", "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                "max_completion_tokens": 64, "stream": true,
                "stream_options": {"include_usage": true},
                "seed": 7, "logit_bias": {}, "metadata": {"trace": "x"}}),
        ),
        (
            "tools_round_trip",
            json!({"model": "kiro", "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"}],
                "tools": [{"type": "function", "function": {"name": "get_weather",
                    "description": "Weather of a city",
                    "parameters": {"type": "object",
                        "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
                "tool_choice": "auto"}),
        ),
        (
            "tool_message_without_id",
            json!({"model": "kiro", "messages": [
                {"role": "user", "content": "x"},
                {"role": "tool", "content": "18C"}]}),
        ),
        (
            "top_p_range",
            json!({"model": "kiro", "messages": [
            {"role": "user", "content": "x"}], "top_p": 1.5}),
        ),
    ]
}

#[test]
fn requests_validate_or_are_a_400_naming_the_field() {
    for (name, body) in requests() {
        let out = match ChatCompletionRequest::from_json(body.to_string().as_bytes()) {
            Ok(chat) => pretty(&chat),
            Err(error) => pretty(&json!({"status": error.status(), "error": error.to_body()})),
        };
        check(DIALECT, &format!("{name}.request.json"), &out);
    }
}

fn call() -> ToolCall {
    ToolCall {
        id: "call_0123_0".to_owned(),
        kind: "function".to_owned(),
        function: FunctionCall {
            name: "get_weather".to_owned(),
            arguments: "{\"city\":\"Paris\"}".to_owned(),
        },
    }
}

fn answers() -> Vec<(&'static str, Vec<Result<CompletionEvent, ApiError>>)> {
    vec![
        (
            "text_and_reasoning",
            vec![
                Ok(CompletionEvent::Reasoning("Thinking.".into())),
                Ok(CompletionEvent::KeepAlive),
                Ok(text("Hello")),
                Ok(text(" there.")),
                Ok(finish(FinishReason::Stop, 9, 3)),
            ],
        ),
        (
            "tool_call",
            vec![
                Ok(CompletionEvent::ToolCall {
                    index: 0,
                    call: call(),
                }),
                Ok(finish(FinishReason::ToolCalls, 20, 8)),
            ],
        ),
        (
            "cached_prompt",
            vec![
                Ok(text("Hello again.")),
                Ok(match finish(FinishReason::Stop, 1200, 3) {
                    CompletionEvent::Finish(mut done) => {
                        done.usage = done.usage.with_cached(Some(1024));
                        CompletionEvent::Finish(done)
                    }
                    other => other,
                }),
            ],
        ),
        (
            "broken_mid_way",
            vec![
                Ok(text("partial")),
                Err(ApiError::upstream("The agent stopped answering.")),
            ],
        ),
    ]
}

#[test]
fn event_sequences_render_as_chunks_and_as_one_answer() {
    for (name, events) in answers() {
        let mut encoder = ChunkEncoder::new(meta("chatcmpl-golden"), true);
        let mut collector = Collector::new(meta("chatcmpl-golden"));
        let mut sse = Vec::new();
        let mut whole = None;
        for event in &events {
            match event {
                Ok(CompletionEvent::Delta(t)) => sse.extend_from_slice(&encoder.delta(t)),
                Ok(CompletionEvent::Reasoning(t)) => sse.extend_from_slice(&encoder.reasoning(t)),
                Ok(CompletionEvent::KeepAlive) => sse.extend_from_slice(&encoder.keep_alive()),
                Ok(CompletionEvent::ToolCall { index, call }) => {
                    sse.extend_from_slice(&encoder.tool_call(*index, call));
                }
                Ok(CompletionEvent::Finish(done)) => {
                    sse.extend_from_slice(&encoder.finish(done));
                }
                Err(error) => sse.extend_from_slice(&encoder.error(error)),
            }
            match event {
                Ok(CompletionEvent::Finish(done)) => {
                    whole = Some(collector.finish(done));
                    break;
                }
                Ok(event) => collector.push_event(event),
                Err(_) => break,
            }
        }
        check(
            DIALECT,
            &format!("{name}.sse"),
            &String::from_utf8_lossy(&sse),
        );
        if let Some(whole) = whole {
            check(DIALECT, &format!("{name}.json"), &pretty(&whole));
        }
    }
}
