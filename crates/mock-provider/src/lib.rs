//! A scripted upstream for the provider-account tests, speaking three providers' wire
//! formats, written here with plain JSON (not Drawbridge's types, so the tests check the
//! adapters against an independent rendering):
//! - OpenAI: `POST /v1/chat/completions`, streamed (SSE chunks, the usage chunk with
//!   `stream_options.include_usage`, `[DONE]`) or not;
//! - Anthropic: `POST /v1/messages`, streamed or not ([`anthropic`]);
//! - Gemini: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` and
//!   `:generateContent` ([`gemini`]);
//! - OpenAI's `POST /v1/embeddings` and `POST /v1/images/generations` ([`embeddings`]).
//!
//! By default it echoes: the answer is `You said: <the last user message>` (an image part told
//! as `[image]`), one word per
//! chunk. Usage is counted in words: `prompt_tokens` the words of every message's text,
//! `completion_tokens` the words of the answer.
//!
//! Behaviour is scripted by directives in the last user message, `[[provider:NAME key=value
//! ...]]` (removed from the echoed text; several may be combined):
//! - `status code=N [retry_after=S]`: answer status N with an OpenAI error body (and
//!   `Retry-After: S`);
//! - `slow_first_byte ms=N`: wait N ms before the answer's head;
//! - `cut after=N`: break the stream off after N text chunks (no finish, no `[DONE]`);
//! - `tool [name=F] [args=JSON]`: call the function F (default: the request's first tool)
//!   with the arguments JSON (default `{}`; no spaces), finishing with `tool_calls`;
//! - `reason`: stream a reasoning chunk (`reasoning_content`) before the text;
//! - `echo_request`: answer with the request body minus `messages`, as JSON text (one
//!   chunk), for tests of what an adapter sends;
//! - `cached n=N`: report N of the prompt tokens as read from the provider's cache
//!   (OpenAI's `usage.prompt_tokens_details.cached_tokens`).
//!
//! Per process (flags of the binary): `--fail-with N [--retry-after S]` answers every request
//! with status N (in the route's error shape; with `--fail-times K` only the first K
//! requests, as an upstream that recovers), and `--api-key K` refuses a request without
//! the key in its provider's header: `Authorization: Bearer K` (401), `x-api-key: K` (401),
//! `x-goog-api-key: K` (400 `API_KEY_INVALID`, as Gemini answers).

pub mod anthropic;
pub mod embeddings;
pub mod gemini;

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Map, Value, json};

/// The per-process settings every route honours (the binary's flags).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Answer every request with this status.
    pub fail_with: Option<u16>,
    /// With `fail_with`: the `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// The key each route wants in its provider's auth header.
    pub api_key: Option<String>,
}

/// A JSON error answer of `status` with `body` (and `Retry-After: S`).
pub fn error_response(status: u16, body: Value, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (code, axum::Json(body)).into_response();
    if let Some(after) = retry_after
        && let Ok(value) = after.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// An SSE answer of `frames` (each a whole event, blank line included); `cut` breaks the
/// connection off after them, as a failing upstream does, once they have gone out.
pub fn sse_response(frames: Vec<String>, cut: bool) -> Response {
    let items: Vec<Result<Bytes, std::io::Error>> =
        frames.into_iter().map(|f| Ok(Bytes::from(f))).collect();
    let cut_off = futures::stream::iter(cut.then_some(())).then(|()| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(std::io::Error::other("cut"))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(
            futures::stream::iter(items).chain(cut_off),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// What a request's script asks before any answer: the status to fail with (and its
/// `Retry-After`), after waiting the slow first byte.
pub async fn scripted_failure(script: &Script) -> Option<(u16, Option<u64>, &'static str)> {
    if let Some(ms) = script.slow_first_byte_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = script.status?;
    let message = match status {
        400 => "Invalid value for 'temperature': the mock was told to refuse this request.",
        _ => "The mock provider was told to fail this request.",
    };
    Some((status, script.retry_after, message))
}

/// What the last user message asks of the mock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Script {
    pub status: Option<u16>,
    pub retry_after: Option<u64>,
    pub slow_first_byte_ms: Option<u64>,
    pub cut_after: Option<usize>,
    /// `Some(name)`: call a tool (`None` inside: the request's first tool).
    pub tool: Option<Option<String>>,
    pub tool_args: Option<String>,
    pub reason: bool,
    pub echo_request: bool,
    /// Prompt tokens reported as cached.
    pub cached: Option<u64>,
}

/// A directive the mock does not understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveError(pub String);

impl std::fmt::Display for DirectiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const OPEN: &str = "[[provider:";
const CLOSE: &str = "]]";

/// The directives in `text`, and the text without them (trimmed).
pub fn parse(text: &str) -> Result<(Script, String), DirectiveError> {
    let mut script = Script::default();
    let mut rest = String::new();
    let mut tail = text;
    while let Some(start) = tail.find(OPEN) {
        rest.push_str(&tail[..start]);
        let inner = &tail[start + OPEN.len()..];
        let end = inner
            .find(CLOSE)
            .ok_or_else(|| DirectiveError("a directive is not closed with ]]".to_owned()))?;
        apply(&mut script, &inner[..end])?;
        tail = &inner[end + CLOSE.len()..];
    }
    rest.push_str(tail);
    Ok((script, rest.trim().to_owned()))
}

fn apply(script: &mut Script, directive: &str) -> Result<(), DirectiveError> {
    let mut words = directive.split_whitespace();
    let name = words.next().unwrap_or_default();
    let mut args = Map::new();
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| DirectiveError(format!("'{word}' is not key=value")))?;
        args.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    let text = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_owned);
    let number = |key: &str| -> Result<Option<u64>, DirectiveError> {
        text(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| DirectiveError(format!("{key}={v} is not a number")))
            })
            .transpose()
    };
    match name {
        "status" => {
            let code =
                number("code")?.ok_or_else(|| DirectiveError("status needs code=N".into()))?;
            let code = u16::try_from(code)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| DirectiveError(format!("{code} is not an HTTP status")))?;
            script.status = Some(code);
            script.retry_after = number("retry_after")?;
        }
        "slow_first_byte" => script.slow_first_byte_ms = Some(number("ms")?.unwrap_or(1000)),
        "cut" => {
            let after = number("after")?.unwrap_or(0);
            script.cut_after = Some(usize::try_from(after).unwrap_or(usize::MAX));
        }
        "tool" => {
            script.tool = Some(text("name"));
            script.tool_args = text("args");
        }
        "reason" => script.reason = true,
        "echo_request" => script.echo_request = true,
        "cached" => {
            script.cached =
                Some(number("n")?.ok_or_else(|| DirectiveError("cached needs n=N".into()))?);
        }
        other => return Err(DirectiveError(format!("unknown directive '{other}'"))),
    }
    Ok(())
}

/// The text of a message's `content` (a string, or the text parts of a list).
pub fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                // An image is told as `[image]`, so a test sees it arrived.
                Some("image_url") => p["image_url"]["url"].as_str().map(|_| "[image]"),
                _ => p.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Words, the mock's token unit.
pub fn words(text: &str) -> u64 {
    u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX)
}

/// What the mock answers to a request body: the plan the server renders.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub model: String,
    pub reasoning: Option<String>,
    /// The text in chunks (one word and its following space each).
    pub chunks: Vec<String>,
    pub tool_call: Option<(String, String)>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens reported as read from the cache.
    pub cached_tokens: Option<u64>,
}

impl Answer {
    /// The answer to `body` under `script` (`text`: the last user message without
    /// directives). An error names what the request lacks.
    pub fn plan(body: &Value, script: &Script, text: &str) -> Result<Answer, String> {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .ok_or("model is required")?
            .to_owned();
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .ok_or("messages is required")?;
        let prompt_tokens = messages.iter().map(|m| words(&content_text(m))).sum();
        let first = body
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|t| t.first())
            .and_then(|t| t.pointer("/function/name"))
            .and_then(Value::as_str);
        Answer::new(model, prompt_tokens, first, body, "messages", script, text)
    }

    /// The answer of any wire format: `model`, the prompt's word count, the request's first
    /// tool, and its `body` (echoed without its `conversation` field by `echo_request`).
    pub fn new(
        model: String,
        prompt_tokens: u64,
        first_tool: Option<&str>,
        body: &Value,
        conversation: &str,
        script: &Script,
        text: &str,
    ) -> Result<Answer, String> {
        let reply = if script.echo_request {
            let mut echoed = body.as_object().cloned().unwrap_or_default();
            echoed.remove(conversation);
            Value::Object(echoed).to_string()
        } else {
            format!("You said: {text}")
        };
        let chunks = if script.echo_request {
            vec![reply.clone()]
        } else {
            split_words(&reply)
        };
        let tool_call = match &script.tool {
            None => None,
            Some(name) => {
                let name = name
                    .clone()
                    .or_else(|| first_tool.map(str::to_owned))
                    .ok_or("the tool directive needs tools in the request")?;
                Some((
                    name,
                    script.tool_args.clone().unwrap_or_else(|| "{}".into()),
                ))
            }
        };
        let chunks = if tool_call.is_some() {
            Vec::new()
        } else {
            chunks
        };
        let completion_tokens = chunks.iter().map(|c| words(c)).sum();
        Ok(Answer {
            model,
            reasoning: script.reason.then(|| format!("Thinking about: {text}")),
            chunks,
            tool_call,
            prompt_tokens,
            completion_tokens,
            cached_tokens: script.cached,
        })
    }

    fn finish_reason(&self) -> &'static str {
        if self.tool_call.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    fn usage(&self) -> Value {
        let mut usage = json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        });
        if let Some(cached) = self.cached_tokens {
            usage["prompt_tokens_details"] = json!({ "cached_tokens": cached });
        }
        usage
    }

    /// The whole answer (`stream: false`).
    pub fn completion(&self, id: &str, created: u64) -> Value {
        let mut message = json!({ "role": "assistant", "content": self.chunks.concat() });
        if let Some(reasoning) = &self.reasoning {
            message["reasoning_content"] = json!(reasoning);
        }
        if let Some((name, args)) = &self.tool_call {
            message["content"] = Value::Null;
            message["tool_calls"] = json!([{
                "id": "call_mock_0", "type": "function",
                "function": { "name": name, "arguments": args },
            }]);
        }
        json!({
            "id": id, "object": "chat.completion", "created": created, "model": self.model,
            "choices": [{ "index": 0, "message": message, "finish_reason": self.finish_reason() }],
            "usage": self.usage(),
        })
    }

    /// The SSE `data` payloads of the streamed answer, `[DONE]` last (unless cut: then only
    /// the first `cut` text chunks). `include_usage` adds the usage chunk.
    pub fn stream(
        &self,
        id: &str,
        created: u64,
        include_usage: bool,
        cut: Option<usize>,
    ) -> Vec<String> {
        let chunk = |delta: Value, finish: Value| {
            let mut chunk = json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": self.model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            });
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            chunk.to_string()
        };
        let mut out = vec![chunk(
            json!({ "role": "assistant", "content": "" }),
            Value::Null,
        )];
        if let Some(reasoning) = &self.reasoning {
            out.push(chunk(
                json!({ "reasoning_content": reasoning }),
                Value::Null,
            ));
        }
        for (i, text) in self.chunks.iter().enumerate() {
            if cut == Some(i) {
                return out;
            }
            out.push(chunk(json!({ "content": text }), Value::Null));
        }
        if cut.is_some() {
            return out;
        }
        if let Some((name, args)) = &self.tool_call {
            out.push(chunk(
                json!({ "tool_calls": [{ "index": 0, "id": "call_mock_0", "type": "function",
                    "function": { "name": name, "arguments": "" } }] }),
                Value::Null,
            ));
            // The arguments in two fragments, as OpenAI streams them.
            let mid = args
                .char_indices()
                .map(|(i, _)| i)
                .nth(args.chars().count() / 2)
                .unwrap_or(args.len());
            let parts = [
                args.get(..mid).unwrap_or_default(),
                args.get(mid..).unwrap_or_default(),
            ];
            for part in parts {
                if !part.is_empty() {
                    out.push(chunk(
                        json!({ "tool_calls": [{ "index": 0, "function": { "arguments": part } }] }),
                        Value::Null,
                    ));
                }
            }
        }
        out.push(chunk(json!({}), json!(self.finish_reason())));
        if include_usage {
            out.push(
                json!({
                    "id": id, "object": "chat.completion.chunk", "created": created,
                    "model": self.model, "choices": [], "usage": self.usage(),
                })
                .to_string(),
            );
        }
        out.push("[DONE]".to_owned());
        out
    }
}

/// `text` in chunks of one word and the whitespace after it.
pub fn split_words(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut in_space = false;
    for c in text.chars() {
        if !c.is_whitespace() && in_space {
            chunks.push(std::mem::take(&mut current));
        }
        in_space = c.is_whitespace();
        current.push(c);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// An OpenAI error body.
pub fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_parsed_and_removed() {
        let (script, text) = parse(
            "hello [[provider:status code=429 retry_after=2]] world [[provider:slow_first_byte ms=50]]",
        )
        .unwrap();
        assert_eq!(text, "hello  world");
        assert_eq!(script.status, Some(429));
        assert_eq!(script.retry_after, Some(2));
        assert_eq!(script.slow_first_byte_ms, Some(50));
        let (script, text) =
            parse("[[provider:cut after=3]][[provider:tool name=f args={\"a\":1}]]x").unwrap();
        assert_eq!(text, "x");
        assert_eq!(script.cut_after, Some(3));
        assert_eq!(script.tool, Some(Some("f".to_owned())));
        assert_eq!(script.tool_args.as_deref(), Some("{\"a\":1}"));
        let (script, _) =
            parse("[[provider:tool]] [[provider:reason]] [[provider:echo_request]]").unwrap();
        assert_eq!(script.tool, Some(None));
        assert!(script.reason && script.echo_request);
        assert_eq!(parse("[[provider:cached n=5]]").unwrap().0.cached, Some(5));
        assert_eq!(
            parse("plain").unwrap(),
            (Script::default(), "plain".to_owned())
        );
    }

    #[test]
    fn bad_directives_are_errors() {
        for bad in [
            "[[provider:status]]",
            "[[provider:status code=abc]]",
            "[[provider:status code=99]]",
            "[[provider:cut after]]",
            "[[provider:cached]]",
            "[[provider:explode]]",
            "[[provider:cut after=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn streams_follow_the_openai_shape() {
        let body = json!({ "model": "m", "messages": [{ "role": "user", "content": "hi there" }] });
        let answer = Answer::plan(&body, &Script::default(), "hi there").unwrap();
        assert_eq!(answer.chunks, ["You ", "said: ", "hi ", "there"]);
        assert_eq!((answer.prompt_tokens, answer.completion_tokens), (2, 4));
        let frames = answer.stream("c1", 7, true, None);
        assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
        let usage: Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 6);
        assert!(usage["usage"].get("prompt_tokens_details").is_none());
        let cached = Script {
            cached: Some(1),
            ..Script::default()
        };
        let answer_cached = Answer::plan(&body, &cached, "hi there").unwrap();
        let whole = answer_cached.completion("c1", 7);
        assert_eq!(whole["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
        let first: Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        let cut = answer.stream("c1", 7, true, Some(2));
        assert_eq!(cut.len(), 3, "the role chunk and two text chunks");
        let whole = answer.completion("c1", 7);
        assert_eq!(
            whole["choices"][0]["message"]["content"],
            "You said: hi there"
        );
    }

    #[test]
    fn tool_calls_need_tools() {
        let script = parse("[[provider:tool]]").unwrap().0;
        let body = json!({ "model": "m", "messages": [] });
        assert!(Answer::plan(&body, &script, "").is_err());
        let body = json!({ "model": "m", "messages": [],
            "tools": [{ "type": "function", "function": { "name": "weather" } }] });
        let answer = Answer::plan(&body, &script, "").unwrap();
        assert_eq!(
            answer.tool_call,
            Some(("weather".to_owned(), "{}".to_owned()))
        );
        assert!(answer.chunks.is_empty());
    }
}

/// The routes' handlers called as the server calls them: headers, directives and flags.
#[cfg(test)]
mod route_tests {
    use axum::http::HeaderMap;
    use serde_json::{Value, json};

    use super::{Settings, anthropic, gemini};

    async fn read(response: axum::response::Response) -> (u16, Option<String>, String) {
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        (status, retry, String::from_utf8_lossy(&body).into_owned())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn keyed() -> Settings {
        Settings {
            api_key: Some("k1".to_owned()),
            ..Settings::default()
        }
    }

    fn claude(text: &str, stream: bool) -> Vec<u8> {
        json!({"model": "c", "max_tokens": 10, "stream": stream,
            "messages": [{"role": "user", "content": text}]})
        .to_string()
        .into_bytes()
    }

    fn gemini_body(text: &str) -> Vec<u8> {
        json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
            .to_string()
            .into_bytes()
    }

    #[tokio::test]
    async fn the_messages_route_checks_its_headers_and_honours_directives() {
        let good = headers(&[("x-api-key", "k1"), ("anthropic-version", "2023-06-01")]);
        let (status, _, body) =
            read(anthropic::messages(&keyed(), &good, &claude("hi", false)).await).await;
        assert_eq!(status, 200, "{body}");
        let message: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(message["content"][0]["text"], "You said: hi");
        let wrong = headers(&[("x-api-key", "k2"), ("anthropic-version", "2023-06-01")]);
        let (status, _, body) =
            read(anthropic::messages(&keyed(), &wrong, &claude("hi", false)).await).await;
        assert_eq!(status, 401);
        assert!(body.contains("authentication_error"), "{body}");
        let unversioned = headers(&[("x-api-key", "k1")]);
        let (status, _, _) =
            read(anthropic::messages(&keyed(), &unversioned, &claude("hi", false)).await).await;
        assert_eq!(status, 400);
        let limited = claude("[[provider:status code=429 retry_after=7]]", true);
        let (status, retry, body) =
            read(anthropic::messages(&keyed(), &good, &limited).await).await;
        assert_eq!((status, retry.as_deref()), (429, Some("7")));
        assert!(body.contains("rate_limit_error"), "{body}");
        let (status, _, body) =
            read(anthropic::messages(&keyed(), &good, &claude("x", true)).await).await;
        assert_eq!(status, 200);
        assert!(body.starts_with("event: message_start\ndata: "), "{body}");
        assert!(body.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        let failing = Settings {
            fail_with: Some(529),
            ..keyed()
        };
        let (status, _, body) =
            read(anthropic::messages(&failing, &good, &claude("x", true)).await).await;
        assert_eq!(status, 529);
        assert!(body.contains("overloaded_error"), "{body}");
    }

    #[tokio::test]
    async fn the_gemini_routes_check_the_key_and_honour_directives() {
        let good = headers(&[("x-goog-api-key", "k1")]);
        let stream = "m-1:streamGenerateContent";
        let (status, _, body) = read(
            gemini::models(&keyed(), stream, Some("alt=sse"), &good, &gemini_body("hi")).await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("data: {"), "{body}");
        assert!(body.contains("\"finishReason\":\"STOP\""), "{body}");
        let (status, _, body) = read(
            gemini::models(
                &keyed(),
                "m-1:generateContent",
                None,
                &good,
                &gemini_body("hi"),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200);
        let whole: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            whole["candidates"][0]["content"]["parts"][0]["text"],
            "You said: hi"
        );
        // Gemini answers a wrong key with a 400 naming API_KEY_INVALID; `?key=` works too.
        let wrong = headers(&[("x-goog-api-key", "k2")]);
        let (status, _, body) = read(
            gemini::models(
                &keyed(),
                stream,
                Some("alt=sse"),
                &wrong,
                &gemini_body("hi"),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400);
        assert!(body.contains("API_KEY_INVALID"), "{body}");
        let (status, _, _) = read(
            gemini::models(
                &keyed(),
                stream,
                Some("alt=sse&key=k1"),
                &HeaderMap::new(),
                &gemini_body("hi"),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200);
        let limited = gemini_body("[[provider:status code=429 retry_after=5]]");
        let (status, retry, body) =
            read(gemini::models(&keyed(), stream, Some("alt=sse"), &good, &limited).await).await;
        assert_eq!((status, retry.as_deref()), (429, Some("5")));
        assert!(body.contains("RESOURCE_EXHAUSTED"), "{body}");
        let (status, _, _) =
            read(gemini::models(&keyed(), stream, None, &good, &gemini_body("hi")).await).await;
        assert_eq!(status, 400, "streaming needs alt=sse");
        let (status, _, _) =
            read(gemini::models(&keyed(), "m-1:embed", None, &good, &gemini_body("hi")).await)
                .await;
        assert_eq!(status, 404);
    }
}
