//! The Gemini API, mocked: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`
//! (each SSE `data` a `GenerateContentResponse`, the last with `finishReason` and
//! `usageMetadata`) and `:generateContent` (one response), in Gemini's wire format written
//! with plain JSON. With `--api-key` it wants `x-goog-api-key` (or `?key=`) and answers a
//! wrong key as Gemini does: 400 `INVALID_ARGUMENT` with reason `API_KEY_INVALID`. It echoes
//! the last user text and honours the directives of the crate docs.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{
    Answer, Script, Settings, error_response, parse, scripted_failure, sse_response, words,
};

/// A Gemini error answer (`{"error": {"code", "message", "status"}}`).
pub fn error(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    error_response(
        status,
        json!({ "error": { "code": status, "message": message, "status": name } }),
        retry_after,
    )
}

/// The text parts of a `contents` entry.
fn text_of(content: &Value) -> String {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The plan for a `generateContent` body of `model`, or the reason for the 400 it deserves.
pub fn plan(model: &str, body: &Value) -> Result<(Answer, Script), String> {
    let refuse = |message: &str| message.to_owned();
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| refuse("* GenerateContentRequest.contents: contents is not specified"))?;
    if let Some(bad) = contents.iter().find_map(|c| {
        let role = c.get("role").and_then(Value::as_str).unwrap_or("user");
        (role != "user" && role != "model").then(|| role.to_owned())
    }) {
        return Err(refuse(&format!(
            "Please use a valid role: user, model (not {bad})."
        )));
    }
    // A function response answers a call of the turn just before.
    for (i, content) in contents.iter().enumerate() {
        let names = |c: &Value, key: &str| -> Vec<String> {
            c.get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get(key)?.get("name")?.as_str().map(str::to_owned))
                .collect()
        };
        let called = i
            .checked_sub(1)
            .map(|p| names(&contents[p], "functionCall"))
            .unwrap_or_default();
        if let Some(name) = names(content, "functionResponse")
            .into_iter()
            .find(|n| !called.contains(n))
        {
            return Err(refuse(&format!(
                "contents[{i}]: the function response '{name}' answers no function call of the turn before"
            )));
        }
    }
    let last_user = contents
        .iter()
        .rev()
        .filter(|c| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user")
        .map(text_of)
        .find(|t| !t.trim().is_empty())
        .unwrap_or_default();
    let (script, text) = parse(&last_user).map_err(|p| refuse(&format!("mock directive: {p}")))?;
    let system = body
        .get("systemInstruction")
        .map(|s| words(&text_of(s)))
        .unwrap_or(0);
    let prompt_tokens = system + contents.iter().map(|c| words(&text_of(c))).sum::<u64>();
    let first_tool = body
        .pointer("/tools/0/functionDeclarations/0/name")
        .and_then(Value::as_str);
    let answer = Answer::new(
        model.to_owned(),
        prompt_tokens,
        first_tool,
        body,
        "contents",
        &script,
        &text,
    )
    .map_err(|p| refuse(&p))?;
    Ok((answer, script))
}

fn usage(answer: &Answer) -> Value {
    json!({
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": answer.completion_tokens,
        "totalTokenCount": answer.prompt_tokens + answer.completion_tokens,
    })
}

fn response(answer: &Answer, parts: Vec<Value>, last: bool) -> Value {
    let mut candidate = json!({ "content": { "parts": parts, "role": "model" }, "index": 0 });
    let mut out = json!({ "candidates": [], "modelVersion": answer.model, "responseId": "mock" });
    if last {
        candidate["finishReason"] = json!("STOP");
        out["usageMetadata"] = usage(answer);
    }
    out["candidates"] = json!([candidate]);
    out
}

fn call_part(answer: &Answer) -> Option<Value> {
    let (name, args) = answer.tool_call.as_ref()?;
    let args: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
    Some(json!({ "functionCall": { "name": name, "args": args } }))
}

/// The whole answer (`:generateContent`).
pub fn whole(answer: &Answer) -> Value {
    let mut parts = Vec::new();
    if let Some(reasoning) = &answer.reasoning {
        parts.push(json!({ "text": reasoning, "thought": true }));
    }
    if !answer.chunks.is_empty() {
        parts.push(json!({ "text": answer.chunks.concat() }));
    }
    parts.extend(call_part(answer));
    response(answer, parts, true)
}

/// The streamed answer's SSE events, or only those before the `cut`th text chunk.
pub fn events(answer: &Answer, cut: Option<usize>) -> Vec<String> {
    let frame = |value: Value| format!("data: {value}\r\n\r\n");
    let mut out = Vec::new();
    if let Some(reasoning) = &answer.reasoning {
        out.push(frame(response(
            answer,
            vec![json!({ "text": reasoning, "thought": true })],
            false,
        )));
    }
    let count = answer.chunks.len();
    for (i, text) in answer.chunks.iter().enumerate() {
        if cut == Some(i) {
            return out;
        }
        let last = i + 1 == count && answer.tool_call.is_none() && cut.is_none();
        out.push(frame(response(answer, vec![json!({ "text": text })], last)));
    }
    if cut.is_some() {
        return out;
    }
    if let Some(part) = call_part(answer) {
        out.push(frame(response(answer, vec![part], true)));
    } else if count == 0 {
        out.push(frame(response(answer, Vec::new(), true)));
    }
    out
}

/// `POST /v1beta/models/{model}:{method}` (`model_method` the last segment, `query` the
/// URL's query).
pub async fn models(
    settings: &Settings,
    model_method: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Some(key) = &settings.api_key {
        let in_query = query.and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("key="))
                .map(str::to_owned)
        });
        let sent = headers
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or(in_query);
        if sent.as_deref() != Some(key.as_str()) {
            return error_response(
                400,
                json!({ "error": { "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                    "details": [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID", "domain": "googleapis.com" }] } }),
                None,
            );
        }
    }
    let Some((model, method)) = model_method.rsplit_once(':') else {
        return error(404, "Unknown method.", None);
    };
    let stream = match method {
        "streamGenerateContent" => true,
        "generateContent" => false,
        _ => return error(404, &format!("Method {method} is not found."), None),
    };
    if stream && !query.is_some_and(|q| q.split('&').any(|p| p == "alt=sse")) {
        return error(400, "The mock streams only with alt=sse.", None);
    }
    if let Some(status) = settings.fail_with {
        return error(
            status,
            "The mock provider fails every request.",
            settings.retry_after,
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return error(400, "Invalid JSON payload received.", None);
    };
    let (answer, script) = match plan(model, &body) {
        Ok(plan) => plan,
        Err(problem) => return error(400, &problem, None),
    };
    if let Some((status, retry_after, message)) = scripted_failure(&script).await {
        return error(status, message, retry_after);
    }
    if !stream {
        return axum::Json(whole(&answer)).into_response();
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
        json!({"systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": text}]}],
            "tools": [{"functionDeclarations": [{"name": "weather"}]}]})
    }

    fn data(frame: &str) -> Value {
        serde_json::from_str(frame.trim().strip_prefix("data: ").unwrap()).unwrap()
    }

    #[test]
    fn streams_follow_geminis_shape() {
        let (answer, script) = plan("g-1", &body("[[provider:reason]] hi there")).unwrap();
        let frames = events(&answer, script.cut_after);
        assert_eq!(
            data(&frames[0])["candidates"][0]["content"]["parts"][0]["thought"],
            true
        );
        let last = data(frames.last().unwrap());
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["promptTokenCount"], 5);
        assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 4);
        let text: String = frames[1..]
            .iter()
            .filter_map(|f| {
                data(f)["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, "You said: hi there");
        assert!(
            frames[1..frames.len() - 1]
                .iter()
                .all(|f| data(f)["candidates"][0].get("finishReason").is_none())
        );
    }

    #[test]
    fn directives_script_the_gemini_routes() {
        let (answer, script) = plan(
            "g-1",
            &body("[[provider:tool args={\"city\":\"Oslo\"}]] weather"),
        )
        .unwrap();
        let frames = events(&answer, script.cut_after);
        assert_eq!(frames.len(), 1);
        let call = &data(&frames[0])["candidates"][0]["content"]["parts"][0]["functionCall"];
        assert_eq!(call["name"], "weather");
        assert_eq!(call["args"]["city"], "Oslo");
        assert_eq!(
            whole(&answer)["candidates"][0]["content"]["parts"][0],
            frames_part(&frames[0])
        );
        let (answer, script) = plan("g-1", &body("[[provider:cut after=2]] a b c")).unwrap();
        let frames = events(&answer, script.cut_after);
        assert_eq!(frames.len(), 2);
        assert!(!frames.iter().any(|f| f.contains("finishReason")));
        assert!(plan("g-1", &json!({"contents": []})).is_err());
        let mut orphan = json!({"contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "g", "response": {}}}]},
        ]});
        assert!(plan("g-1", &orphan).is_err(), "a response to no call");
        orphan["contents"][2]["parts"][0]["functionResponse"]["name"] = json!("f");
        assert!(plan("g-1", &orphan).is_ok());
        assert!(
            plan(
                "g-1",
                &json!({"contents": [{"role": "assistant", "parts": []}]})
            )
            .is_err()
        );
    }

    fn frames_part(frame: &str) -> Value {
        data(frame)["candidates"][0]["content"]["parts"][0].clone()
    }
}
