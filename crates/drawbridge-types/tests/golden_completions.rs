//! Golden files of the legacy completions dialect: requests in → canonical requests (or the
//! 400) out, event sequences in → `text_completion` SSE and JSON out.

mod common;

use common::{check, finish, meta, pretty, text};
use drawbridge_types::dialects::completions::{CompletionRequest, TextCollector, TextEncoder};
use drawbridge_types::openai::FinishReason;
use drawbridge_types::{ApiError, CompletionEvent, ErrorKind};
use serde_json::json;

const DIALECT: &str = "completions";

/// Request cases: the body, and the golden file of its canonical request or its error.
fn requests() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "string_prompt",
            json!({"model": "kiro", "prompt": "Say this is a test", "max_tokens": 7,
                   "temperature": 0, "stop": ["\n"], "user": "u-1"}),
        ),
        (
            "list_of_one_streamed_with_usage_and_echo",
            json!({"model": "kiro", "prompt": ["Once upon"], "stream": true,
                   "stream_options": {"include_usage": true}, "echo": true}),
        ),
        (
            "batch_refused",
            json!({"model": "kiro", "prompt": ["one", "two"]}),
        ),
        (
            "token_ids_refused",
            json!({"model": "kiro", "prompt": [1, 2, 3]}),
        ),
        (
            "empty_prompt_refused",
            json!({"model": "kiro", "prompt": ""}),
        ),
        (
            "suffix_refused",
            json!({"model": "kiro", "prompt": "def f(", "suffix": "return 1"}),
        ),
        (
            "logprobs_refused",
            json!({"model": "kiro", "prompt": "x", "logprobs": 2}),
        ),
        ("missing_prompt", json!({"model": "kiro"})),
        (
            "temperature_range",
            json!({"model": "kiro", "prompt": "x", "temperature": 3}),
        ),
    ]
}

#[test]
fn requests_map_to_the_canonical_request_or_a_400_naming_the_field() {
    for (name, body) in requests() {
        let out = match CompletionRequest::from_json(body.to_string().as_bytes()) {
            Ok((chat, rendering)) => pretty(&json!({
                "canonical": chat,
                "stream": rendering.stream,
                "include_usage": rendering.include_usage,
                "echo": rendering.echo,
            })),
            Err(error) => {
                assert_eq!(error.kind, ErrorKind::InvalidRequest, "{name}");
                // Named as `param`, or (a missing field) in the message.
                let named = error.param.clone().unwrap_or_default();
                assert!(
                    !named.is_empty() || error.message.contains("`prompt`"),
                    "{name}: the field is named: {error:?}"
                );
                pretty(&json!({"status": error.status(), "error": error.to_body()}))
            }
        };
        check(DIALECT, &format!("{name}.request.json"), &out);
    }
}

/// Event sequences and how the stream ends.
fn answers() -> Vec<(&'static str, Vec<Result<CompletionEvent, ApiError>>)> {
    vec![
        (
            "text",
            vec![
                Ok(text("This is ")),
                Ok(CompletionEvent::KeepAlive),
                Ok(CompletionEvent::Reasoning("not shown".into())),
                Ok(text("a test.")),
                Ok(finish(FinishReason::Stop, 5, 4)),
            ],
        ),
        (
            "length",
            vec![Ok(text("cut")), Ok(finish(FinishReason::Length, 5, 1))],
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

fn sse_of(events: &[Result<CompletionEvent, ApiError>], usage: bool, echo: Option<&str>) -> String {
    let mut encoder = TextEncoder::new(meta("cmpl-golden"), usage, echo.map(str::to_owned));
    let mut out = Vec::new();
    out.extend_from_slice(&encoder.start().unwrap_or_default());
    for event in events {
        match event {
            Ok(event) => out.extend_from_slice(&encoder.event(event).unwrap_or_default()),
            Err(error) => out.extend_from_slice(&encoder.error(error)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn event_sequences_render_as_text_completion_chunks() {
    for (name, events) in answers() {
        check(
            DIALECT,
            &format!("{name}.sse"),
            &sse_of(&events, false, None),
        );
        check(
            DIALECT,
            &format!("{name}.usage_echo.sse"),
            &sse_of(&events, true, Some("Prompt: ")),
        );
    }
}

#[test]
fn a_whole_answer_is_one_text_completion() {
    for (name, events) in answers() {
        let mut collector = TextCollector::new(meta("cmpl-golden"), None);
        let mut whole = None;
        for event in events.into_iter().map_while(Result::ok) {
            match &event {
                CompletionEvent::Finish(done) => {
                    whole = Some(collector.finish(done));
                    break;
                }
                event => collector.push_event(event),
            }
        }
        // A failed answer has no body of its own: the client gets the error status instead.
        if let Some(whole) = whole {
            check(DIALECT, &format!("{name}.json"), &pretty(&whole));
        }
    }
}
