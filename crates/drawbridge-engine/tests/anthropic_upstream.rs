//! Golden files of the Anthropic upstream adapter (`providers::anthropic`): a turn in → the
//! Messages request body out (`*.request.json`); a Messages SSE stream in (`*.sse`, as
//! Anthropic sends it) → the worker events out (`*.events.txt`); error answers → the error
//! class the engine acts on (`errors.txt`). `UPDATE_GOLDEN=1` rewrites the outputs (then
//! review the diff).

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "tests")]

mod common;

use std::path::PathBuf;

use common::{
    check_errors, check_resumed_overlap, check_streams, image_message, input, pangram_resume,
    params, sse, tool_conversation, tools,
};
use drawbridge_engine::providers::anthropic::{
    DEFAULT_MAX_TOKENS, EventReader, error_from_status, request_body, thinking,
};
use drawbridge_types::ErrorKind;
use drawbridge_types::openai::{ChatMessage, FinishReason, Role};
use drawbridge_types::tools::ToolChoice;
use drawbridge_types::worker::{PromptBody, PromptInput, WorkerEvent};
use serde_json::json;
use test_support::golden::pretty;

fn dir() -> PathBuf {
    common::dir("anthropic_upstream")
}

fn check(name: &str, actual: &str) {
    common::check(&dir(), name, actual);
}

fn claude(body: PromptBody) -> PromptInput {
    input("claude-sonnet-4-5", "claude-1", body)
}

#[test]
fn requests_map_to_the_messages_body() {
    let text = claude(PromptBody::Text("Say hi.".into()));
    let body = request_body(&text);
    assert_eq!(
        body["max_tokens"], DEFAULT_MAX_TOKENS,
        "required: a default"
    );
    check("text.request.json", &pretty(&body));

    // Images: inline from a `data:` URL, by reference from an `https://` one.
    let images = claude(PromptBody::Messages(vec![image_message()]));
    check("images.request.json", &pretty(&request_body(&images)));

    // Sampling: what Anthropic takes is passed (stop as stop_sequences, user as metadata),
    // what it would refuse is not.
    let sampling = PromptInput {
        max_output_tokens: Some(256),
        params: params(json!({
            "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop": "\n\n", "seed": 7,
            "response_format": {"type": "json_object"}, "user": "u-42",
        })),
        ..claude(PromptBody::Messages(vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Hello"),
            ChatMessage::new(Role::User, "Anyone there?"),
        ]))
    };
    let body = request_body(&sampling);
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "merged");
    check("sampling.request.json", &pretty(&body));

    // Reasoning asked for: extended thinking within the limit, and the sampling thinking
    // refuses left out.
    let reasoning = PromptInput {
        max_output_tokens: Some(10_000),
        params: params(json!({
            "reasoning_effort": "high", "temperature": 0.2, "top_k": 40, "top_p": 0.97,
        })),
        ..claude(PromptBody::Text("Think first.".into()))
    };
    let body = request_body(&reasoning);
    assert_eq!(body["thinking"]["budget_tokens"], 5000, "half the limit");
    check("reasoning.request.json", &pretty(&body));
    assert_eq!(
        thinking(&PromptInput {
            max_output_tokens: None,
            ..reasoning.clone()
        }),
        Some((16_384 + DEFAULT_MAX_TOKENS, 16_384)),
        "without a limit the answer keeps the default beside the budget"
    );
    assert_eq!(
        thinking(&PromptInput {
            max_output_tokens: Some(2000),
            ..reasoning.clone()
        }),
        None,
        "no room for the smallest budget and an answer"
    );
    let forced = PromptInput {
        tools: tools(ToolChoice::Required, true),
        ..reasoning.clone()
    };
    assert_eq!(thinking(&forced), None, "a forced tool wins over thinking");
    let free = PromptInput {
        tools: tools(ToolChoice::Auto, true),
        ..reasoning.clone()
    };
    assert!(
        thinking(&free).is_some(),
        "auto leaves the choice to the model"
    );
    assert_eq!(thinking(&claude(PromptBody::Text("x".into()))), None);

    // Tools, calls and results; each tool_choice.
    let mut conversation = tool_conversation();
    for (name, choice, parallel) in [
        ("tools_auto", ToolChoice::Auto, true),
        ("tools_any_serial", ToolChoice::Required, false),
        (
            "tools_named",
            ToolChoice::Function("get_weather".into()),
            true,
        ),
        ("tools_none", ToolChoice::None, true),
    ] {
        let turn = PromptInput {
            tools: tools(choice, parallel),
            ..claude(PromptBody::Messages(conversation.clone()))
        };
        check(
            &format!("{name}.request.json"),
            &pretty(&request_body(&turn)),
        );
    }
    // Without tools in the request, the calls and results are told as text (Anthropic
    // refuses tool blocks then).
    let untooled = claude(PromptBody::Messages(conversation.clone()));
    check(
        "history_without_tools.request.json",
        &pretty(&request_body(&untooled)),
    );
    // Arguments that are not a JSON object are passed, not dropped; ids Anthropic would
    // refuse are made safe, the same in the call and its result.
    conversation[3].tool_calls.as_mut().unwrap()[0]
        .function
        .arguments = "Paris".into();
    conversation[3].tool_calls.as_mut().unwrap()[0].id = "fc:1.a".into();
    conversation[4].tool_call_id = Some("fc:1.a".into());
    let body = request_body(&PromptInput {
        tools: tools(ToolChoice::Auto, true),
        ..claude(PromptBody::Messages(conversation))
    });
    assert_eq!(
        body["messages"][1]["content"][1]["input"],
        json!({"arguments": "Paris"})
    );
    assert_eq!(body["messages"][1]["content"][1]["id"], "fc_1_a");
    assert_eq!(body["messages"][2]["content"][0]["tool_use_id"], "fc_1_a");

    let resume = claude(pangram_resume());
    check("resume.request.json", &pretty(&request_body(&resume)));
}

fn read(input: &PromptInput, sse: &[u8]) -> Vec<WorkerEvent> {
    common::read::<EventReader>(input, sse)
}

#[test]
fn messages_streams_map_to_worker_events() {
    let plain = claude(PromptBody::Text("x".into()));
    check_streams::<EventReader>(
        &dir(),
        &plain,
        &[
            "text_with_usage",
            "tool_use",
            "reasoning_crlf_length",
            "error_mid_stream",
            "broken_off",
            "no_message_stop",
        ],
    );
    // The classes the engine acts on, beyond the files' wording.
    let events = read(&plain, &sse(&dir(), "tool_use"));
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::ToolCall(call) => Some(call),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].function.arguments, "{\"city\": \"Paris\"}");
    assert_eq!(calls[1].function.arguments, "{}");
    assert!(matches!(
        events.last(),
        Some(WorkerEvent::Finished(s)) if s.finish_reason == FinishReason::ToolCalls
            && s.prompt_tokens == 80 && s.completion_tokens == 41
    ));
    assert!(matches!(
        read(&plain, &sse(&dir(), "error_mid_stream")).last(),
        Some(WorkerEvent::Error(e)) if e.kind == ErrorKind::Upstream && e.retryable()
    ));

    check_resumed_overlap::<EventReader>(&dir(), &claude(pangram_resume()));
}

#[test]
fn anthropic_errors_map_to_their_class() {
    let error = |kind: &str, message: &str| {
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
    };
    let cases: Vec<common::ErrorCase> = vec![
        (
            429,
            vec![("retry-after", "12")],
            error(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
        ),
        (429, vec![], error("rate_limit_error", "slow down")),
        (
            401,
            vec![],
            error("authentication_error", "invalid x-api-key sk-ant-api03-abc"),
        ),
        (
            403,
            vec![],
            error("permission_error", "Your API key does not have permission"),
        ),
        (
            400,
            vec![],
            error("invalid_request_error", "messages: roles must alternate"),
        ),
        (
            413,
            vec![],
            error("request_too_large", "Request exceeds the maximum size"),
        ),
        (404, vec![], error("not_found_error", "model: claude-x")),
        (500, vec![], error("api_error", "Internal server error")),
        (529, vec![], error("overloaded_error", "Overloaded")),
    ];
    for error in check_errors(&dir(), cases, error_from_status, false) {
        assert!(
            !error.message.contains("sk-ant"),
            "a key never reaches an error"
        );
    }
    let overloaded = error_from_status(529, None, b"");
    assert_eq!(overloaded.kind, ErrorKind::Upstream);
    assert!(overloaded.retryable());
    let limited = error_from_status(429, Some(std::time::Duration::from_secs(3)), b"");
    assert_eq!(limited.kind, ErrorKind::AccountRateLimited);
    let refused = error_from_status(400, None, error("invalid_request_error", "bad").as_bytes());
    assert_eq!(refused.kind, ErrorKind::InvalidRequest);
}

/// `cache_read_input_tokens` reaches the turn's summary as its cached prompt tokens (the
/// prompt tokens count them, as OpenAI's do).
#[test]
fn cache_reads_reach_the_summary() {
    let plain = claude(PromptBody::Text("x".into()));
    match read(&plain, &sse(&dir(), "text_with_usage")).last() {
        Some(WorkerEvent::Finished(summary)) => {
            assert_eq!(
                (summary.prompt_tokens, summary.cached_prompt_tokens),
                (42, Some(30))
            );
        }
        other => panic!("{other:?}"),
    }
}
