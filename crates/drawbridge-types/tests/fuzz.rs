//! The decoders fed arbitrary input: the request decoder (OpenAI chat JSON), the SSE decoder
//! and the chunk reader must never panic, whatever the bytes, and must not depend on how the
//! bytes were cut into chunks. proptest keeps any failing case it finds in
//! `tests/fuzz.proptest-regressions` (the corpus, committed), replayed first on every run.

#![expect(clippy::unwrap_used, reason = "a test")]

use drawbridge_types::sse::SseDecoder;
use drawbridge_types::{ChatCompletionRequest, ChunkReader};
mod common;

use proptest::prelude::*;
use serde_json::{Value, json};

/// JSON made of the request's own vocabulary, nested, with values of every type: what gets
/// past the parser into the checks.
fn request_like() -> impl Strategy<Value = Value> {
    common::json_of(
        vec![
            "model",
            "messages",
            "role",
            "content",
            "tools",
            "tool_choice",
            "tool_calls",
            "tool_call_id",
            "function",
            "name",
            "arguments",
            "parameters",
            "type",
            "text",
            "stream",
            "stream_options",
            "include_usage",
            "max_tokens",
            "temperature",
            "top_p",
            "n",
            "stop",
            "response_format",
            "json_schema",
            "schema",
            "parallel_tool_calls",
            "user",
        ],
        vec![
            "user",
            "assistant",
            "system",
            "tool",
            "developer",
            "function",
            "auto",
            "none",
            "required",
            "text",
            "json_object",
            "json_schema",
            "kiro",
            "",
            "call_1",
            "{}",
            "x",
        ],
    )
}

/// A request that parses and validates round-trips through its own serialization.
fn round_trips(body: &[u8]) {
    if let Ok(request) = ChatCompletionRequest::from_json(body) {
        let again = serde_json::to_vec(&request).unwrap();
        let reread = ChatCompletionRequest::from_json(&again).unwrap();
        assert_eq!(reread, request);
    }
}

proptest! {
    // At least 512 cases; more when PROPTEST_CASES asks (`make fuzz`).
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(512), ..ProptestConfig::default() })]

    #[test]
    fn the_request_decoder_takes_any_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        round_trips(&body);
    }

    #[test]
    fn the_request_decoder_takes_any_request_shaped_json(value in request_like()) {
        round_trips(value.to_string().as_bytes());
    }

    #[test]
    fn the_request_decoder_takes_mutated_valid_requests(
        value in request_like(),
        at in 0usize..6,
    ) {
        // A valid request with one field replaced by anything.
        let mut request = json!({"model": "kiro", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]});
        let field = ["model", "messages", "tools", "tool_choice", "temperature", "response_format"][at];
        request[field] = value;
        round_trips(request.to_string().as_bytes());
    }

    #[test]
    fn sse_decoding_does_not_depend_on_the_chunking(
        body in prop::collection::vec(
            prop_oneof![
                Just(b"data: ".to_vec()), Just(b"\n".to_vec()), Just(b"\r\n".to_vec()),
                Just(b": keep-alive\n\n".to_vec()), Just(b"[DONE]".to_vec()),
                Just(b"{\"a\":1}".to_vec()), prop::collection::vec(any::<u8>(), 0..8),
            ],
            0..24,
        ),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let bytes: Vec<u8> = body.concat();
        let whole = SseDecoder::new().push(&bytes);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut decoder = SseDecoder::new();
        let mut pieces = Vec::new();
        let mut from = 0;
        for to in points.into_iter().chain([bytes.len()]) {
            pieces.extend(decoder.push(&bytes[from..to]));
            from = to;
        }
        prop_assert_eq!(pieces, whole);
    }

    #[test]
    fn the_chunk_reader_takes_any_payload(payloads in prop::collection::vec(
        prop_oneof![request_like().prop_map(|v| v.to_string()), ".{0,40}", Just("[DONE]".to_owned())],
        0..8,
    )) {
        let mut reader = ChunkReader::new();
        for payload in payloads {
            // Errors are fine; a panic is not.
            let _ = reader.push(&payload);
        }
    }
}
