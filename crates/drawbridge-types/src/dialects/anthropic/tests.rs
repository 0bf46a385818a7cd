use serde_json::json;

use crate::error::{ApiError, ErrorKind};
use crate::openai::FinishReason;

use super::answer::tool_input;
use super::*;

#[test]
fn every_error_kind_has_an_anthropic_type_and_status() {
    for kind in ErrorKind::ALL {
        let (kind_name, status) = error_status(kind);
        // 401 only for a key problem, as on the OpenAI side; 529 only for "try later".
        assert_eq!(status == 401, kind == ErrorKind::InvalidApiKey, "{kind}");
        assert_eq!(
            status == 529,
            matches!(kind, ErrorKind::NoCapacity | ErrorKind::Unavailable),
            "{kind}"
        );
        let body = error_body(&ApiError::new(kind, "m"));
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], kind_name);
        assert_eq!(body["error"]["message"], "m");
    }
}

#[test]
fn finish_reasons_are_anthropic_stop_reasons() {
    assert_eq!(stop_reason(FinishReason::Stop), "end_turn");
    assert_eq!(stop_reason(FinishReason::Length), "max_tokens");
    assert_eq!(stop_reason(FinishReason::ToolCalls), "tool_use");
    assert_eq!(stop_reason(FinishReason::ContentFilter), "refusal");
}

#[test]
fn message_ids_are_fresh() {
    let (a, b) = (message_id(), message_id());
    assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
    assert_ne!(a, b);
}

#[test]
fn tool_input_is_always_an_object() {
    assert_eq!(tool_input(r#"{"a":1}"#), json!({"a": 1}));
    for odd in ["", "[1]", "3", "{broken"] {
        assert_eq!(tool_input(odd), json!({}), "{odd}");
    }
}

#[test]
fn garbage_is_a_400_not_a_panic() {
    for body in [
        &b""[..],
        b"null",
        b"[]",
        b"{\"model\": 3}",
        b"{\"model\": \"m\", \"max_tokens\": -1, \"messages\": []}",
        b"{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": 5}]}",
        b"{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\"}]}]}",
        b"{\"model\": \"m\", \"max_tokens\": 1, \"messages\": [{\"role\": \"assistant\", \"content\": [{\"type\": \"tool_result\", \"tool_use_id\": \"x\"}]}]}",
        b"{\"model\": \"m\", \"max_tokens\": 1, \"system\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
        b"{\"model\": \"m\", \"max_tokens\": 1, \"tool_choice\": {\"type\": \"sometimes\"}, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
    ] {
        let error = parse_request(body, Endpoint::Messages)
            .expect_err(&String::from_utf8_lossy(body));
        assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error}");
    }
}
