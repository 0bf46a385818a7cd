//! Golden files of the Anthropic Messages translation, under `tests/golden/anthropic/`:
//!
//! - `requests/NAME.json` (a `/v1/messages` body) → `requests/NAME.canonical.json`: the
//!   canonical request, or `{"status", "error"}` for a refusal in Anthropic's shape;
//!   `requests/count_tokens_*.json` are read as `count_tokens` bodies (no `max_tokens`).
//! - `streams/NAME.events.json` (canonical events, as below) → `streams/NAME.sse` (the SSE
//!   body) and `streams/NAME.message.json` (the non-streamed `message`, or the error body and
//!   status of an answer that failed).
//!
//! An event is `{"delta": TEXT}`, `{"reasoning": TEXT}`, `{"keep_alive": true}`,
//! `{"tool_call": {"index", "id", "name", "arguments"}}`, `{"finish": {"reason",
//! "prompt_tokens", "completion_tokens"}}` or `{"error": {"kind", "message"}}`; a file whose
//! events end without a finish or an error is a stream that broke off.
//!
//! `UPDATE_GOLDEN=1 cargo test -p drawbridge-types --test golden_anthropic` rewrites the
//! expected files from what the code produces now; review the diff before committing it.
#![expect(
    clippy::unwrap_used,
    reason = "the helpers fail the test loudly on a golden file they cannot read or write"
)]

mod common;

use std::path::{Path, PathBuf};

use common::{sorted, sorted_frames};

use drawbridge_types::dialects::anthropic::{
    self as wire, Endpoint, MessageCollector, MessageMeta, StreamEncoder,
};
use drawbridge_types::openai::{FunctionCall, ToolCall};
use drawbridge_types::{ApiError, CompletionEvent, ErrorKind, Finish, FinishReason, Usage};
use serde::Deserialize;
use serde_json::{Value, json};

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/anthropic")
        .join(kind)
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// The inputs of `kind` ending in `suffix`, sorted.
fn inputs(kind: &str, suffix: &str, skip: &[&str]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir(kind))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(suffix) && !skip.iter().any(|s| name.ends_with(s))
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no golden inputs in {kind}");
    paths
}

/// Compare `actual` with the file at `path` (or write it with `UPDATE_GOLDEN=1`); the
/// mismatches are collected so one run shows them all.
fn check(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if updating() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(_) => failures.push(format!(
            "{} is missing (run with UPDATE_GOLDEN=1)",
            path.display()
        )),
    }
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(value.clone())).unwrap();
    text.push('\n');
    text
}

fn refusal(error: &ApiError) -> Value {
    json!({"status": wire::error_status(error.kind).1, "error": wire::error_body(error)})
}

#[test]
fn requests_translate_to_the_canonical_request() {
    let mut failures = Vec::new();
    for input in inputs("requests", ".json", &[".canonical.json"]) {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let endpoint = if name.starts_with("count_tokens") {
            Endpoint::CountTokens
        } else {
            Endpoint::Messages
        };
        let body = std::fs::read(&input).unwrap();
        let actual = match wire::parse_request(&body, endpoint) {
            Ok((chat, info)) => json!({
                "canonical": serde_json::to_value(&chat).unwrap(),
                "model": info.model,
                "stream": info.stream,
            }),
            Err(error) => refusal(&error),
        };
        let expected = input.with_file_name(name.replace(".json", ".canonical.json"));
        check(&expected, &pretty(&actual), &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Event {
    Delta(String),
    Reasoning(String),
    KeepAlive(serde::de::IgnoredAny),
    ToolCall {
        index: u32,
        id: String,
        name: String,
        arguments: String,
    },
    Finish {
        reason: String,
        prompt_tokens: u64,
        completion_tokens: u64,
        /// Of the prompt tokens, those the upstream read from its cache.
        #[serde(default)]
        cached_tokens: Option<u64>,
    },
    Error {
        kind: String,
        message: String,
    },
}

fn event(event: Event) -> Result<CompletionEvent, ApiError> {
    Ok(match event {
        Event::Delta(text) => CompletionEvent::Delta(text),
        Event::Reasoning(text) => CompletionEvent::Reasoning(text),
        Event::KeepAlive(_) => CompletionEvent::KeepAlive,
        Event::ToolCall {
            index,
            id,
            name,
            arguments,
        } => CompletionEvent::ToolCall {
            index,
            call: ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall { name, arguments },
            },
        },
        Event::Finish {
            reason,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
        } => CompletionEvent::Finish(Finish {
            finish_reason: FinishReason::parse(&reason).unwrap(),
            usage: Usage::new(prompt_tokens, completion_tokens).with_cached(cached_tokens),
            metering: Default::default(),
        }),
        Event::Error { kind, message } => {
            return Err(ApiError::new(ErrorKind::from_code(&kind).unwrap(), message));
        }
    })
}

fn meta() -> MessageMeta {
    MessageMeta {
        id: "msg_golden".into(),
        model: "claude-sonnet-4-5".into(),
        input_tokens: 12,
    }
}

/// The SSE body of `events`, as the HTTP layer writes it: a stream that ends without a
/// finish gets the error event it gets there.
fn sse(events: &[Result<CompletionEvent, ApiError>]) -> String {
    let mut encoder = StreamEncoder::new(meta());
    let mut out = encoder.start().to_vec();
    let mut ended = false;
    for item in events {
        match item {
            Ok(event) => {
                out.extend_from_slice(&encoder.event(event));
                ended = matches!(event, CompletionEvent::Finish(_));
            }
            Err(error) => {
                out.extend_from_slice(&encoder.error(error));
                ended = true;
            }
        }
        if ended {
            break;
        }
    }
    if !ended {
        out.extend_from_slice(&encoder.error(&ApiError::upstream(
            "The answer ended before it was complete.",
        )));
    }
    String::from_utf8(out).unwrap()
}

/// The non-streamed answer of `events`: the message, or the refusal.
fn message(events: &[Result<CompletionEvent, ApiError>]) -> Value {
    let mut collector = MessageCollector::new(meta());
    for item in events {
        match item {
            Ok(CompletionEvent::Finish(finish)) => return collector.finish(finish),
            Ok(event) => collector.push_event(event),
            Err(error) => return refusal(error),
        }
    }
    refusal(&ApiError::upstream(
        "The answer ended before it was complete.",
    ))
}

#[test]
fn event_sequences_render_as_anthropic_streams_and_messages() {
    let mut failures = Vec::new();
    for input in inputs("streams", ".events.json", &[]) {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let events: Vec<Event> =
            serde_json::from_str(&std::fs::read_to_string(&input).unwrap()).unwrap();
        let events: Vec<_> = events.into_iter().map(event).collect();
        let stem = name.trim_end_matches(".events.json");
        check(
            &input.with_file_name(format!("{stem}.sse")),
            &sorted_frames(&sse(&events)),
            &mut failures,
        );
        check(
            &input.with_file_name(format!("{stem}.message.json")),
            &pretty(&message(&events)),
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every golden stream is well formed: each event's name is its data's `type`, blocks start,
/// change and stop in order from index 0, and the stream ends in `message_stop` or `error`.
#[test]
fn golden_streams_keep_anthropics_event_order() {
    for input in inputs("streams", ".events.json", &[]) {
        let events: Vec<Event> =
            serde_json::from_str(&std::fs::read_to_string(&input).unwrap()).unwrap();
        let text = sse(&events.into_iter().map(event).collect::<Vec<_>>());
        let name = input.display();
        let mut open: Option<u64> = None;
        let mut next = 0;
        let mut last = String::new();
        for frame in text.split_terminator("\n\n") {
            let (event, data) = frame
                .strip_prefix("event: ")
                .and_then(|rest| rest.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("{name}: bad frame {frame:?}"));
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], event, "{name}");
            match event {
                "content_block_start" => {
                    assert_eq!(open, None, "{name}: a block started inside another");
                    assert_eq!(data["index"], next, "{name}");
                    open = Some(next);
                }
                "content_block_delta" => assert_eq!(data["index"].as_u64(), open, "{name}"),
                "content_block_stop" => {
                    assert_eq!(data["index"].as_u64(), open, "{name}");
                    open = None;
                    next += 1;
                }
                "message_delta" | "error" => assert_eq!(open, None, "{name}: a block left open"),
                _ => {}
            }
            last = event.to_owned();
        }
        assert!(
            text.starts_with("event: message_start\n"),
            "{name} starts with message_start"
        );
        assert!(
            last == "message_stop" || last == "error",
            "{name} ends with {last}"
        );
    }
}
