//! Golden files of the Responses dialect (`tests/golden/responses/`):
//!
//! - `requests/NAME.json`: `{"request": <a Responses body>, "previous": <a stored response,
//!   optional>}` → `requests/NAME.out.json`: the canonical request and the conversation items
//!   stored with the answer, or the refusal (status, code, param, message).
//! - `events/NAME.json`: `{"request": <a Responses body>, "events": [...]}` →
//!   `events/NAME.sse`: the stream exactly as sent. Events are `{"delta": text}`,
//!   `{"reasoning": text}`, `{"keep_alive": true}`, `{"tool_call": {"index", "id", "name",
//!   "arguments"}}`, `{"finish": {"reason", "prompt_tokens", "completion_tokens", "cached_tokens"?}}` and
//!   `{"error": {"code", "message"}}`; a list without a finish or an error is a stream that
//!   broke off.
//!
//! `UPDATE_GOLDEN=1 cargo test -p drawbridge-types --test golden_responses` rewrites the
//! outputs; review the diff before committing it.

#![expect(clippy::unwrap_used, reason = "a test: a panic is a failure")]

mod common;

use std::path::{Path, PathBuf};

use drawbridge_types::dialects::responses::{ResponseEncoder, ResponsesRequest, StoredResponse};
use drawbridge_types::openai::{FunctionCall, ToolCall};
use drawbridge_types::{
    ApiError, CompletionEvent, ErrorKind, Finish, FinishReason, Metering, Usage,
};
use serde_json::{Value, json};

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/responses")
        .join(kind)
}

/// The cases of `kind`: each input file and its golden output's path.
fn cases(kind: &str, out_ext: &str) -> Vec<(PathBuf, PathBuf)> {
    let mut cases: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(dir(kind))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.to_string_lossy().ends_with(".out.json")
        })
        .map(|p| {
            let out = p.with_extension(out_ext);
            (p, out)
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases in {kind}");
    cases
}

/// Compare `actual` with the golden file (or write it with `UPDATE_GOLDEN=1`); the mismatches.
fn check(out: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(out, actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(out).unwrap_or_default();
    (expected != actual).then(|| {
        format!(
            "{} differs (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
            out.display()
        )
    })
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn error_json(error: &ApiError) -> Value {
    json!({
        "status": error.status(),
        "code": error.kind.code(),
        "param": error.param,
        "message": error.message,
    })
}

#[test]
fn requests_become_canonical_requests() {
    let mut failures = Vec::new();
    for (input, out) in cases("requests", "out.json") {
        let case = read(&input);
        let body = serde_json::to_vec(&case["request"]).unwrap();
        let previous: Option<StoredResponse> = case
            .get("previous")
            .map(|p| serde_json::from_value(p.clone()).unwrap());
        let result = ResponsesRequest::from_json(&body)
            .and_then(|request| request.translate(previous.as_ref()));
        let actual = match result {
            Ok(translated) => json!({
                "canonical": translated.chat,
                "stream": translated.stream,
                "store": translated.store,
                "stored_input": translated.input,
            }),
            Err(error) => json!({ "error": error_json(&error) }),
        };
        let actual = common::pretty(&actual);
        failures.extend(check(&out, &actual));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn event(value: &Value) -> Result<CompletionEvent, ApiError> {
    let (kind, body) = value.as_object().unwrap().iter().next().unwrap();
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    Ok(match kind.as_str() {
        "delta" => CompletionEvent::Delta(text(body)),
        "reasoning" => CompletionEvent::Reasoning(text(body)),
        "keep_alive" => CompletionEvent::KeepAlive,
        "tool_call" => CompletionEvent::ToolCall {
            index: u32::try_from(body["index"].as_u64().unwrap()).unwrap(),
            call: ToolCall {
                id: text(&body["id"]),
                kind: "function".into(),
                function: FunctionCall {
                    name: text(&body["name"]),
                    arguments: text(&body["arguments"]),
                },
            },
        },
        "finish" => CompletionEvent::Finish(Finish {
            finish_reason: FinishReason::parse(body["reason"].as_str().unwrap()).unwrap(),
            usage: Usage::new(
                body["prompt_tokens"].as_u64().unwrap(),
                body["completion_tokens"].as_u64().unwrap(),
            )
            .with_cached(body["cached_tokens"].as_u64()),
            metering: Metering {
                accounts: vec!["acct-secret".into()],
                credits: 0.5,
                tokens_estimated: true,
            },
        }),
        "error" => {
            return Err(ApiError::new(
                ErrorKind::from_code(body["code"].as_str().unwrap()).unwrap(),
                text(&body["message"]),
            ));
        }
        other => panic!("unknown event {other}"),
    })
}

#[test]
fn events_become_the_responses_stream() {
    let mut failures = Vec::new();
    for (input, out) in cases("events", "sse") {
        let case = read(&input);
        let body = serde_json::to_vec(&case["request"]).unwrap();
        let translated = ResponsesRequest::from_json(&body)
            .unwrap()
            .translate(None)
            .unwrap();
        let mut encoder = ResponseEncoder::new(
            translated.template,
            "resp_0123456789abcdef0123456789abcdef",
            1_750_000_000,
        );
        let mut sse = encoder.start().to_vec();
        let mut ended = false;
        for item in case["events"].as_array().unwrap() {
            assert!(!ended, "{}: events after the end", input.display());
            match event(item) {
                Ok(CompletionEvent::Finish(finish)) => {
                    sse.extend_from_slice(&encoder.finish(&finish));
                    ended = true;
                }
                Ok(event) => sse.extend_from_slice(&encoder.push(&event)),
                Err(error) => {
                    sse.extend_from_slice(&encoder.fail(&error));
                    ended = true;
                }
            }
        }
        if !ended {
            sse.extend_from_slice(&encoder.broken_off());
        }
        let actual = String::from_utf8(sse).unwrap();
        assert!(
            !actual.contains("acct-secret"),
            "{}: metering leaked",
            input.display()
        );
        check_sequence(&input, &actual);
        failures.extend(check(&out, &common::sorted_frames(&actual)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every frame is `event: T` + `data: {"type": T, "sequence_number": n, ...}` with n counting
/// from 0, or the keep-alive comment.
fn check_sequence(input: &Path, sse: &str) {
    let mut next = 0;
    for frame in sse.split_terminator("\n\n") {
        if frame == ": keep-alive" {
            continue;
        }
        let (head, data) = frame.split_once('\n').unwrap();
        let kind = head.strip_prefix("event: ").unwrap();
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], kind, "{}", input.display());
        assert_eq!(data["sequence_number"], next, "{}", input.display());
        next += 1;
    }
}
