//! Golden files of the Gemini upstream adapter (`providers::gemini`): a turn in → the
//! `streamGenerateContent` request body out (`*.request.json`); a stream in (`*.sse`, as
//! Gemini sends it with `alt=sse`) → the worker events out (`*.events.txt`); error answers →
//! the error class the engine acts on (`errors.txt`). `UPDATE_GOLDEN=1` rewrites the outputs
//! (then review the diff).

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

mod common;

use std::path::PathBuf;

use common::{
    check_errors, check_resumed_overlap, check_streams, image_message, input, pangram_resume,
    params, sse, tool_conversation, tools,
};
use drawbridge_engine::providers::gemini::{EventReader, error_from_status, path, request_body};
use drawbridge_types::ErrorKind;
use drawbridge_types::openai::{ChatMessage, FinishReason, Role};
use drawbridge_types::tools::ToolChoice;
use drawbridge_types::worker::{PromptBody, PromptInput, WorkerEvent};
use serde_json::json;
use test_support::golden::pretty;

fn dir() -> PathBuf {
    common::dir("gemini_upstream")
}

fn check(name: &str, actual: &str) {
    common::check(&dir(), name, actual);
}

fn gemini(body: PromptBody) -> PromptInput {
    input("gemini-2.5-flash", "gemini-1", body)
}

#[test]
fn requests_map_to_the_generate_content_body() {
    assert_eq!(
        path("gemini-2.5-flash"),
        "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        path("tuned/x y"),
        "/models/tuned%2Fx%20y:streamGenerateContent?alt=sse"
    );
    let text = gemini(PromptBody::Text("Say hi.".into()));
    check("text.request.json", &pretty(&request_body(&text)));

    // Images: inline from a `data:` URL, by reference from an `https://` one.
    let images = gemini(PromptBody::Messages(vec![image_message()]));
    check("images.request.json", &pretty(&request_body(&images)));

    let sampling = PromptInput {
        max_output_tokens: Some(256),
        params: params(json!({
            "temperature": 0.2, "top_p": 0.9, "stop": ["\n\n", "END"], "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer",
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}},
            "user": "u-42", "reasoning_effort": "low",
        })),
        ..gemini(PromptBody::Messages(vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Hello"),
            ChatMessage::new(Role::User, "Anyone there?"),
        ]))
    };
    let body = request_body(&sampling);
    assert_eq!(body["contents"].as_array().unwrap().len(), 1, "merged");
    check("sampling.request.json", &pretty(&body));
    let json_mode = PromptInput {
        params: params(json!({"response_format": {"type": "json_object"}})),
        ..gemini(PromptBody::Text("JSON please".into()))
    };
    assert_eq!(
        request_body(&json_mode)["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );

    for (name, choice) in [
        ("tools_auto", ToolChoice::Auto),
        ("tools_any", ToolChoice::Required),
        ("tools_named", ToolChoice::Function("get_weather".into())),
        ("tools_none", ToolChoice::None),
    ] {
        let turn = PromptInput {
            tools: tools(choice, true),
            ..gemini(PromptBody::Messages(tool_conversation()))
        };
        check(
            &format!("{name}.request.json"),
            &pretty(&request_body(&turn)),
        );
    }

    let resume = gemini(pangram_resume());
    check("resume.request.json", &pretty(&request_body(&resume)));
}

fn read(input: &PromptInput, sse: &[u8]) -> Vec<WorkerEvent> {
    common::read::<EventReader>(input, sse)
}

#[test]
fn gemini_streams_map_to_worker_events() {
    let plain = gemini(PromptBody::Text("x".into()));
    check_streams::<EventReader>(
        &dir(),
        &plain,
        &[
            "text_with_usage",
            "function_calls",
            "reasoning_crlf_length",
            "safety",
            "error_mid_stream",
            "broken_off",
        ],
    );
    let events = read(&plain, &sse(&dir(), "function_calls"));
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::ToolCall(call) => Some(call.id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["call_gemini_req-1_0", "call_gemini_req-1_1"]);
    assert!(
        ids.iter()
            .all(|id| drawbridge_types::tools::live_session_of(id).is_none()),
        "never taken for a live session's call"
    );
    assert!(matches!(
        events.last(),
        Some(WorkerEvent::Finished(s)) if s.finish_reason == FinishReason::ToolCalls
    ));

    check_resumed_overlap::<EventReader>(&dir(), &gemini(pangram_resume()));
}

#[test]
fn gemini_errors_map_to_their_class() {
    let error = |code: u16, status: &str, message: &str, details: serde_json::Value| {
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string()
    };
    let cases: Vec<common::ErrorCase> = vec![
        (
            429,
            vec![],
            error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded",
                json!([
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
                ]),
            ),
        ),
        (
            429,
            vec![("retry-after", "4")],
            error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", json!([])),
        ),
        (
            400,
            vec![],
            error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                json!([
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
                ]),
            ),
        ),
        (
            400,
            vec![],
            error(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'generation_config.temperature'",
                json!([]),
            ),
        ),
        (
            403,
            vec![],
            error(403, "PERMISSION_DENIED", "Permission denied", json!([])),
        ),
        (
            404,
            vec![],
            error(404, "NOT_FOUND", "models/x is not found", json!([])),
        ),
        (
            500,
            vec![],
            error(500, "INTERNAL", "Internal error", json!([])),
        ),
        (
            503,
            vec![],
            error(503, "UNAVAILABLE", "The model is overloaded.", json!([])),
        ),
    ];
    check_errors(&dir(), cases, error_from_status, false);
    let bad_key = error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid.",
        json!([
            {"reason": "API_KEY_INVALID"}
        ]),
    );
    let refused = error_from_status(400, None, bad_key.as_bytes());
    assert_ne!(
        refused.kind,
        ErrorKind::InvalidRequest,
        "the account's failure"
    );
    let quota = error(
        429,
        "RESOURCE_EXHAUSTED",
        "q",
        json!([{"retryDelay": "2.5s"}]),
    );
    let limited = error_from_status(429, None, quota.as_bytes());
    assert_eq!(limited.kind, ErrorKind::AccountRateLimited);
    assert_eq!(
        limited.retry_after,
        Some(std::time::Duration::from_millis(2500))
    );
}

/// `cachedContentTokenCount` reaches the turn's summary as its cached prompt tokens.
#[test]
fn cached_content_reaches_the_summary() {
    let plain = gemini(PromptBody::Text("x".into()));
    match read(&plain, &sse(&dir(), "text_with_usage")).last() {
        Some(WorkerEvent::Finished(summary)) => {
            assert_eq!(
                (summary.prompt_tokens, summary.cached_prompt_tokens),
                (12, Some(8))
            );
        }
        other => panic!("{other:?}"),
    }
    // A usage without it says nothing.
    match read(&plain, &sse(&dir(), "function_calls")).last() {
        Some(WorkerEvent::Finished(summary)) => assert_eq!(summary.cached_prompt_tokens, None),
        other => panic!("{other:?}"),
    }
}
