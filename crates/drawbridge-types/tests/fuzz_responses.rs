//! The Responses dialect's translation fed arbitrary input: it never panics, and whatever it
//! accepts becomes a canonical request that survives the hop to the engine (serialized, parsed
//! and validated again, unchanged). Failing cases proptest finds are kept in
//! `tests/fuzz_responses.proptest-regressions` and replayed first.

#![expect(clippy::unwrap_used, reason = "a test")]

use drawbridge_types::ChatCompletionRequest;
use drawbridge_types::dialects::responses::{ResponsesRequest, StoredResponse};
mod common;

use proptest::prelude::*;
use serde_json::{Value, json};

/// JSON made of the Responses request's own vocabulary, nested, with values of every type.
fn responses_like() -> impl Strategy<Value = Value> {
    common::json_of(
        vec![
            "model",
            "input",
            "instructions",
            "role",
            "content",
            "type",
            "text",
            "call_id",
            "name",
            "arguments",
            "output",
            "tools",
            "tool_choice",
            "parameters",
            "strict",
            "format",
            "schema",
            "max_output_tokens",
            "temperature",
            "top_p",
            "metadata",
            "reasoning",
            "effort",
            "store",
            "stream",
            "previous_response_id",
        ],
        vec![
            "user",
            "assistant",
            "system",
            "developer",
            "message",
            "function_call",
            "function_call_output",
            "reasoning",
            "input_text",
            "output_text",
            "input_image",
            "function",
            "json_schema",
            "json_object",
            "auto",
            "none",
            "required",
            "kiro",
            "c1",
            "f",
            "",
            "{}",
        ],
    )
}

/// Translate `body` (after `previous`); what is accepted must survive a JSON round trip.
fn translates(body: &[u8], previous: Option<&StoredResponse>) {
    let Ok(request) = ResponsesRequest::from_json(body) else {
        return;
    };
    if let Ok(translated) = request.translate(previous) {
        let wire = serde_json::to_vec(&translated.chat).unwrap();
        let reread = ChatCompletionRequest::from_json(&wire).unwrap();
        assert_eq!(reread, translated.chat);
    }
}

proptest! {
    // At least 512 cases; more when PROPTEST_CASES asks (`make fuzz`).
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(512), ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_answered(body in prop::collection::vec(any::<u8>(), 0..256)) {
        translates(&body, None);
    }

    #[test]
    fn any_request_shaped_json_is_answered(value in responses_like()) {
        translates(value.to_string().as_bytes(), None);
    }

    #[test]
    fn mutated_valid_requests_and_stored_responses_are_answered(
        value in responses_like(),
        stored in responses_like(),
        at in 0usize..7,
    ) {
        let mut request = json!({"model": "kiro", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
            "tools": [{"type": "function", "name": "f"}]});
        let field = ["model", "input", "tools", "tool_choice", "text", "instructions",
            "max_output_tokens"][at];
        request[field] = value;
        // A stored response is ours, but read back it is whatever the store holds.
        let previous = StoredResponse {
            input: vec![stored.clone()],
            response: json!({"output": stored}),
        };
        translates(request.to_string().as_bytes(), None);
        translates(request.to_string().as_bytes(), Some(&previous));
    }
}
