//! Golden files of the OpenAI-compatible upstream adapter (`providers::openai`): a turn in →
//! the upstream request body out (`*.request.json`); an upstream SSE stream in (`*.sse`,
//! written as the providers send them) → the worker events out (`*.events.txt`); upstream
//! error answers → the error class the engine acts on (`errors.txt`). `UPDATE_GOLDEN=1`
//! rewrites the outputs (then review the diff).

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{check_errors, check_resumed_overlap, check_streams, pangram_resume, params, sse};
use drawbridge_engine::providers::openai::{
    EventReader, error_from_status, request_body, retry_after,
};
use drawbridge_types::openai::{ChatMessage, FunctionCall, Role, ToolCall};
use drawbridge_types::tools::{Tool, ToolChoice};
use drawbridge_types::worker::{PromptBody, PromptInput, TurnTools, WorkerEvent};
use serde_json::{Value, json};
use test_support::golden::pretty;

fn dir() -> PathBuf {
    common::dir("openai_upstream")
}

/// Compare `actual` with the golden file `name`, or write it with `UPDATE_GOLDEN=1`.
fn check(name: &str, actual: &str) {
    common::check(&dir(), name, actual);
}

fn input(body: PromptBody) -> PromptInput {
    common::input("gpt-4o-mini", "openai-1", body)
}

#[test]
fn requests_map_to_the_upstream_body() {
    let conversation = vec![
        ChatMessage::new(Role::System, "Be brief."),
        ChatMessage::new(Role::User, "What is the weather in Paris?"),
        ChatMessage {
            role: Role::Assistant,
            content: None,
            name: None,
            tool_calls: Some(vec![ToolCall {
                id: "call_abc".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into(),
                },
            }]),
            tool_call_id: None,
        },
        ChatMessage {
            tool_call_id: Some("call_abc".into()),
            ..ChatMessage::new(Role::Tool, "18°C, sunny")
        },
    ];
    // Sampling and format parameters travel as they came; the fields Drawbridge sets cannot
    // be replaced by them.
    let sampling = PromptInput {
        max_output_tokens: Some(256),
        params: params(json!({
            "temperature": 0.2, "top_p": 0.9, "stop": ["\n\n"], "seed": 7,
            "response_format": {"type": "json_object"}, "user": "u-42",
            "stream": false, "model": "other", "messages": [],
        })),
        ..input(PromptBody::Messages(conversation[..2].to_vec()))
    };
    check("sampling.request.json", &pretty(&request_body(&sampling)));

    let tools = PromptInput {
        tools: TurnTools {
            tools: vec![Tool::function(
                "get_weather",
                "The weather in a city",
                json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            )],
            choice: ToolChoice::Function("get_weather".into()),
            parallel: false,
        },
        ..input(PromptBody::Messages(conversation))
    };
    check("tools.request.json", &pretty(&request_body(&tools)));

    let text = input(PromptBody::Text("Say hi.".into()));
    check("text.request.json", &pretty(&request_body(&text)));

    let resume = input(pangram_resume());
    check("resume.request.json", &pretty(&request_body(&resume)));
}

/// Read `sse` whole, and again one byte at a time: both give the same events.
fn read(input: &PromptInput, sse: &[u8]) -> Vec<WorkerEvent> {
    common::read::<EventReader>(input, sse)
}

#[test]
fn upstream_streams_map_to_worker_events() {
    let plain = input(PromptBody::Text("x".into()));
    check_streams::<EventReader>(
        &dir(),
        &plain,
        &[
            "text_with_usage",
            "reasoning_crlf_length",
            "tool_calls",
            "error_mid_stream",
            "broken_off",
            "no_done",
        ],
    );
    // A resumed answer: what repeats the end of the part already sent is left out.
    check_resumed_overlap::<EventReader>(&dir(), &input(pangram_resume()));
}

#[test]
fn upstream_errors_map_to_their_class() {
    let openai_error = |message: &str, param: Value| {
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}})
            .to_string()
    };
    let cases: Vec<common::ErrorCase> = vec![
        (
            429,
            vec![("retry-after", "7")],
            openai_error("Rate limit reached", Value::Null),
        ),
        (
            429,
            vec![("retry-after-ms", "1500"), ("retry-after", "2")],
            String::new(),
        ),
        (429, vec![("retry-after", "soon")], String::new()),
        (
            401,
            vec![],
            openai_error("Incorrect API key provided: sk-abc***xyz.", Value::Null),
        ),
        (
            403,
            vec![],
            openai_error("Project does not have access", Value::Null),
        ),
        (
            400,
            vec![],
            openai_error(
                "Invalid value for 'temperature': must be at most 2.",
                json!("temperature"),
            ),
        ),
        (400, vec![], "<html>bad request</html>".to_owned()),
        (422, vec![], openai_error("Unprocessable", Value::Null)),
        (408, vec![], String::new()),
        (
            500,
            vec![],
            openai_error("The server had an error", Value::Null),
        ),
        (503, vec![("retry-after", "3")], "overloaded".to_owned()),
        (
            404,
            vec![],
            openai_error("The model 'x' does not exist", json!("model")),
        ),
    ];
    for error in check_errors(&dir(), cases, error_from_status, true) {
        assert!(
            !error.message.contains("sk-abc"),
            "a key never reaches an error"
        );
    }
    // Durations that do not fit are no rest rather than a panic.
    let mut huge = http::HeaderMap::new();
    huge.insert("retry-after", "1e300".parse().unwrap());
    assert_eq!(retry_after(&huge), None);
    huge.insert("retry-after", "-1".parse().unwrap());
    assert_eq!(retry_after(&huge), None);
    let mut ms = http::HeaderMap::new();
    ms.insert("retry-after-ms", "250".parse().unwrap());
    assert_eq!(retry_after(&ms), Some(Duration::from_millis(250)));
}

/// Cached prompt tokens (`usage.prompt_tokens_details.cached_tokens`) reach the turn's
/// summary, a reported 0 as 0; a usage without the breakdown says nothing.
#[test]
fn cached_prompt_tokens_reach_the_summary() {
    let plain = input(PromptBody::Text("x".into()));
    let cached = |case: &str| match read(&plain, &sse(&dir(), case)).last() {
        Some(WorkerEvent::Finished(summary)) => {
            (summary.prompt_tokens, summary.cached_prompt_tokens)
        }
        other => panic!("{case}: {other:?}"),
    };
    assert_eq!(cached("text_cached"), (12, Some(8)));
    assert_eq!(cached("text_with_usage"), (12, Some(0)));
    check_streams::<EventReader>(&dir(), &plain, &["text_cached"]);
    let with_usage = std::fs::read_to_string(dir().join("text_with_usage.sse")).unwrap();
    let without = with_usage.replace(r#","prompt_tokens_details":{"cached_tokens":0}"#, "");
    assert_ne!(without, with_usage);
    match read(&plain, without.as_bytes()).last() {
        Some(WorkerEvent::Finished(summary)) => assert_eq!(
            (summary.prompt_tokens, summary.cached_prompt_tokens),
            (12, None)
        ),
        other => panic!("{other:?}"),
    }
}
