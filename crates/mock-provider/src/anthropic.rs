//! Anthropic's Messages API, mocked: `POST /v1/messages`, streamed (SSE with `event:` lines,
//! in Anthropic's order: `message_start`, `ping`, per block `content_block_start` / `_delta`
//! / `_stop`, `message_delta`, `message_stop`) or whole, in Anthropic's wire format written
//! with plain JSON. It wants `x-api-key` (with `--api-key`) and `anthropic-version`, echoes
//! the last user text and honours the directives of the crate docs.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{
    Answer, Script, Settings, error_response, parse, scripted_failure, sse_response, words,
};

/// An Anthropic error answer.
pub fn error(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let kind = match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    error_response(
        status,
        json!({ "type": "error", "error": { "type": kind, "message": message } }),
        retry_after,
    )
}

/// The text of a message's `content`: a string, or its text blocks (tool results and other
/// blocks left out).
fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The plan for a Messages body, or the reason for the 400 it deserves.
pub fn plan(body: &Value) -> Result<(Answer, Script, bool), String> {
    let refuse = |message: &str| message.to_owned();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("model: Field required"))?;
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err(refuse("max_tokens: Field required"));
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| refuse("messages: Field required"))?;
    // Anthropic's own rule: user and assistant alternate, starting with user.
    let roles: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.get("role").and_then(Value::as_str))
        .collect();
    let alternate = roles
        .iter()
        .enumerate()
        .all(|(i, r)| *r == if i % 2 == 0 { "user" } else { "assistant" });
    if roles.len() != messages.len() || !alternate {
        return Err(refuse(
            "messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\"",
        ));
    }
    // Anthropic's other rule: a tool result answers a tool_use of the turn just before.
    for (i, message) in messages.iter().enumerate() {
        let blocks = |m: &Value, kind: &str, key: &str| -> Vec<String> {
            m.get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some(kind))
                .filter_map(|b| b.get(key).and_then(Value::as_str).map(str::to_owned))
                .collect()
        };
        let asked = i
            .checked_sub(1)
            .map(|p| blocks(&messages[p], "tool_use", "id"))
            .unwrap_or_default();
        if let Some(id) = blocks(message, "tool_result", "tool_use_id")
            .into_iter()
            .find(|id| !asked.contains(id))
        {
            return Err(refuse(&format!(
                "messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: {id}"
            )));
        }
    }
    let last_user = messages
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(text_of)
        .find(|t| !t.trim().is_empty())
        .unwrap_or_default();
    let (script, text) = parse(&last_user).map_err(|p| refuse(&format!("mock directive: {p}")))?;
    let system = match body.get("system") {
        Some(Value::String(text)) => words(text),
        _ => 0,
    };
    let prompt_tokens = system + messages.iter().map(|m| words(&text_of(m))).sum::<u64>();
    let first_tool = body
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str);
    let answer = Answer::new(
        model.to_owned(),
        prompt_tokens,
        first_tool,
        body,
        "messages",
        &script,
        &text,
    )
    .map_err(|p| refuse(&p))?;
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    Ok((answer, script, stream))
}

fn stop_reason(answer: &Answer) -> &'static str {
    if answer.tool_call.is_some() {
        "tool_use"
    } else {
        "end_turn"
    }
}

const MESSAGE_ID: &str = "msg_mock";
const TOOL_ID: &str = "toolu_mock_0";

/// The whole answer (`stream` absent or false): one `message` object.
pub fn message(answer: &Answer) -> Value {
    let mut content = Vec::new();
    if let Some(reasoning) = &answer.reasoning {
        content.push(json!({"type": "thinking", "thinking": reasoning, "signature": "mock-sig"}));
    }
    if !answer.chunks.is_empty() {
        content.push(json!({"type": "text", "text": answer.chunks.concat()}));
    }
    if let Some((name, args)) = &answer.tool_call {
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": TOOL_ID, "name": name, "input": input}));
    }
    json!({
        "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": answer.model,
        "content": content, "stop_reason": stop_reason(answer), "stop_sequence": null,
        "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens},
    })
}

/// The streamed answer's SSE events (`event:` and `data:` lines each), or only those before
/// the `cut`th text delta.
pub fn events(answer: &Answer, cut: Option<usize>) -> Vec<String> {
    let event = |data: Value| {
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        format!("event: {kind}\ndata: {data}\n\n")
    };
    let mut out = vec![
        event(json!({"type": "message_start", "message": {
            "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": answer.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1},
        }})),
        event(json!({"type": "ping"})),
    ];
    let mut index = 0;
    if let Some(reasoning) = &answer.reasoning {
        out.push(event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "thinking", "thinking": ""}})));
        out.push(event(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "thinking_delta", "thinking": reasoning}})));
        out.push(event(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "signature_delta", "signature": "mock-sig"}})));
        out.push(event(json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    if !answer.chunks.is_empty() || cut.is_some() {
        out.push(event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}})));
        for (i, text) in answer.chunks.iter().enumerate() {
            if cut == Some(i) {
                return out;
            }
            out.push(event(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": text}})));
        }
        if cut.is_some() {
            return out;
        }
        out.push(event(json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    if let Some((name, args)) = &answer.tool_call {
        out.push(event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": TOOL_ID, "name": name, "input": {}}})));
        // The arguments in two fragments, as Anthropic streams them.
        let mid = args
            .char_indices()
            .map(|(i, _)| i)
            .nth(args.chars().count() / 2)
            .unwrap_or(args.len());
        for part in [
            args.get(..mid).unwrap_or_default(),
            args.get(mid..).unwrap_or_default(),
        ] {
            out.push(event(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
        out.push(event(json!({"type": "content_block_stop", "index": index})));
    }
    out.push(event(json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason(answer), "stop_sequence": null},
        "usage": {"output_tokens": answer.completion_tokens}})));
    out.push(event(json!({"type": "message_stop"})));
    out
}

/// `POST /v1/messages`.
pub async fn messages(settings: &Settings, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(key) = &settings.api_key {
        let sent = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        if sent != Some(key.as_str()) {
            return error(401, "invalid x-api-key", None);
        }
    }
    if headers.get("anthropic-version").is_none() {
        return error(400, "anthropic-version: header is required", None);
    }
    if let Some(status) = settings.fail_with {
        return error(
            status,
            "The mock provider fails every request.",
            settings.retry_after,
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return error(400, "The request body is not valid JSON.", None);
    };
    let (answer, script, stream) = match plan(&body) {
        Ok(plan) => plan,
        Err(problem) => return error(400, &problem, None),
    };
    if let Some((status, retry_after, message)) = scripted_failure(&script).await {
        return error(status, message, retry_after);
    }
    if !stream {
        return axum::Json(message(&answer)).into_response();
    }
    sse_response(
        events(&answer, script.cut_after),
        script.cut_after.is_some(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Value {
        json!({"model": "claude-x", "max_tokens": 100, "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}]})
    }

    fn data(frame: &str) -> Value {
        let line = frame.lines().nth(1).unwrap();
        serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap()
    }

    #[test]
    fn streams_follow_anthropics_event_order() {
        let (answer, script, _) = plan(&body("[[provider:reason]] hi there")).unwrap();
        assert_eq!((answer.prompt_tokens, answer.completion_tokens), (5, 4));
        let frames = events(&answer, script.cut_after);
        let kinds: Vec<String> = frames
            .iter()
            .map(|f| f.lines().next().unwrap().replace("event: ", ""))
            .collect();
        assert_eq!(kinds[..2], ["message_start", "ping"]);
        assert_eq!(kinds[kinds.len() - 2..], ["message_delta", "message_stop"]);
        for frame in &frames {
            let kind = frame.lines().next().unwrap().replace("event: ", "");
            assert_eq!(data(frame)["type"], kind.as_str(), "event names its data");
        }
        assert!(kinds.contains(&"content_block_delta".to_owned()));
        assert_eq!(data(&frames[2])["content_block"]["type"], "thinking");
        let delta = data(&frames[frames.len() - 2]);
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(delta["usage"]["output_tokens"], 4);
    }

    #[test]
    fn directives_script_the_messages_route() {
        let (answer, script, _) =
            plan(&body("[[provider:tool args={\"city\":\"Oslo\"}]] weather")).unwrap();
        assert_eq!(
            answer.tool_call,
            Some(("weather".to_owned(), "{\"city\":\"Oslo\"}".to_owned()))
        );
        let frames = events(&answer, script.cut_after);
        let json: String = frames
            .iter()
            .map(|f| data(f))
            .filter_map(|d| d["delta"]["partial_json"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(json, "{\"city\":\"Oslo\"}");
        assert_eq!(message(&answer)["content"][0]["input"]["city"], "Oslo");
        assert_eq!(message(&answer)["stop_reason"], "tool_use");

        let (answer, script, _) = plan(&body("[[provider:cut after=1]] a b c")).unwrap();
        let frames = events(&answer, script.cut_after);
        assert!(!frames.iter().any(|f| f.contains("message_stop")));
        assert_eq!(
            frames.iter().filter(|f| f.contains("text_delta")).count(),
            1
        );
        let (_, script, _) = plan(&body("[[provider:status code=429 retry_after=3]]")).unwrap();
        assert_eq!((script.status, script.retry_after), (Some(429), Some(3)));
    }

    #[test]
    fn malformed_requests_are_anthropics_400s() {
        let mut no_max = body("hi");
        no_max.as_object_mut().unwrap().remove("max_tokens");
        assert!(plan(&no_max).is_err());
        let mut twice = body("hi");
        twice["messages"] =
            json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]);
        assert!(plan(&twice).is_err(), "roles must alternate");
        assert!(plan(&body("[[provider:explode]]")).is_err());
        let mut orphan = body("hi");
        orphan["messages"] = json!([
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2"}]},
        ]);
        assert!(plan(&orphan).is_err(), "a result of no call");
        orphan["messages"][2]["content"][0]["tool_use_id"] = json!("t1");
        assert!(plan(&orphan).is_ok());
    }
}
