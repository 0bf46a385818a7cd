//! The Anthropic request decoder fed arbitrary input: it never panics, and whatever it accepts
//! is a canonical request that survives the hop between Drawbridge's layers (serialized as
//! OpenAI JSON, read and validated again by the engine, unchanged). proptest keeps any failing
//! case it finds in `tests/fuzz_anthropic.proptest-regressions`, replayed first on every run.

#![expect(clippy::unwrap_used, reason = "a test")]

use drawbridge_types::ChatCompletionRequest;
use drawbridge_types::dialects::anthropic::{Endpoint, parse_request};
mod common;

use proptest::prelude::*;
use serde_json::{Value, json};

/// JSON made of the Messages API's own vocabulary, nested, with values of every type.
fn request_like() -> impl Strategy<Value = Value> {
    common::json_of(
        vec![
            "model",
            "max_tokens",
            "messages",
            "role",
            "content",
            "type",
            "text",
            "system",
            "tools",
            "name",
            "description",
            "input_schema",
            "tool_choice",
            "disable_parallel_tool_use",
            "id",
            "input",
            "tool_use_id",
            "is_error",
            "source",
            "media_type",
            "data",
            "url",
            "thinking",
            "signature",
            "stop_sequences",
            "temperature",
            "top_p",
            "top_k",
            "metadata",
            "user_id",
            "stream",
            "cache_control",
        ],
        vec![
            "user",
            "assistant",
            "system",
            "text",
            "image",
            "tool_use",
            "tool_result",
            "thinking",
            "redacted_thinking",
            "base64",
            "url",
            "auto",
            "any",
            "tool",
            "none",
            "custom",
            "web_search_20250305",
            "kiro",
            "toolu_1",
            "f",
            "",
            "x",
        ],
    )
}

/// Whatever `body` gives is a 400 or a canonical request the engine reads back unchanged.
fn crosses_the_hop(body: &[u8]) {
    for endpoint in [Endpoint::Messages, Endpoint::CountTokens] {
        if let Ok((chat, info)) = parse_request(body, endpoint) {
            assert_eq!(info.model, chat.model);
            let wire = serde_json::to_vec(&chat).unwrap();
            let reread = ChatCompletionRequest::from_json(&wire)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&wire)));
            assert_eq!(reread, chat);
        }
    }
}

proptest! {
    // At least 512 cases; more when PROPTEST_CASES asks (`make fuzz`).
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(512), ..ProptestConfig::default() })]

    #[test]
    fn the_decoder_takes_any_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        crosses_the_hop(&body);
    }

    #[test]
    fn the_decoder_takes_any_request_shaped_json(value in request_like()) {
        crosses_the_hop(value.to_string().as_bytes());
    }

    #[test]
    fn the_decoder_takes_mutated_valid_requests(value in request_like(), at in 0usize..8) {
        // A valid request with one field replaced by anything.
        let mut request = json!({
            "model": "kiro",
            "max_tokens": 64,
            "system": [{"type": "text", "text": "s"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
            ],
        });
        let field = [
            "model", "max_tokens", "system", "tools", "tool_choice", "messages", "stop_sequences",
            "metadata",
        ][at];
        request[field] = value;
        crosses_the_hop(request.to_string().as_bytes());
    }

    #[test]
    fn the_decoder_takes_any_block_in_a_turn(block in request_like(), turn in 0usize..3) {
        let mut request = json!({
            "model": "kiro",
            "max_tokens": 64,
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
            ],
        });
        request["messages"][turn]["content"].as_array_mut().unwrap().push(block);
        crosses_the_hop(request.to_string().as_bytes());
    }
}
