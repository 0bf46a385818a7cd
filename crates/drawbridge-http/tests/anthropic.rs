//! The Anthropic Messages routes in process: `/v1/messages` and `/v1/messages/count_tokens`
//! of the public router, behind static keys, against a backend that answers with the events
//! a test gives it.
#![expect(
    clippy::unwrap_used,
    reason = "the helpers fail the test loudly on what they cannot send or read"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drawbridge_config::{Secret, StaticKey};
use drawbridge_http::{ApiState, ChatBackend, ChatContext, EventStream, Keys, openai_router};
use drawbridge_types::openai::{FunctionCall, ToolCall};
use drawbridge_types::{
    ApiError, ChatCompletionRequest, CompletionEvent, ErrorKind, Finish, FinishReason,
    HealthReport, HealthStatus, Metering, Role, Usage,
};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const KEY: &str = "sk-anthropic-test-0123456789";

/// What the backend does with the next requests.
#[derive(Clone)]
enum Answer {
    Events(Vec<Result<CompletionEvent, ApiError>>),
    Refuse(ApiError),
}

/// Serves the model `kiro` with the scripted [`Answer`], keeping every request it gets.
struct Backend {
    answer: Mutex<Answer>,
    requests: Mutex<Vec<ChatCompletionRequest>>,
}

impl Backend {
    fn new(answer: Answer) -> Arc<Self> {
        Arc::new(Backend {
            answer: Mutex::new(answer),
            requests: Mutex::new(Vec::new()),
        })
    }

    fn requests(&self) -> Vec<ChatCompletionRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl ChatBackend for Backend {
    fn chat(
        &self,
        request: ChatCompletionRequest,
        _ctx: ChatContext,
    ) -> BoxFuture<'_, Result<EventStream, ApiError>> {
        let model = request.model.clone();
        self.requests.lock().unwrap().push(request);
        let answer = if model != "kiro" {
            Err(ApiError::model_not_found(&model))
        } else {
            match self.answer.lock().unwrap().clone() {
                Answer::Events(events) => Ok(futures::stream::iter(events).boxed()),
                Answer::Refuse(error) => Err(error),
            }
        };
        futures::future::ready(answer).boxed()
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, ApiError>> {
        futures::future::ready(Ok(vec!["kiro".to_owned()])).boxed()
    }

    fn health(&self) -> BoxFuture<'_, HealthReport> {
        futures::future::ready(HealthReport {
            status: HealthStatus::Healthy,
            accounts: 1,
            total_slots: 1,
            available_slots: 1,
            providers: Vec::new(),
        })
        .boxed()
    }
}

fn router(backend: &Arc<Backend>) -> axum::Router {
    router_draining(backend, CancellationToken::new())
}

fn router_draining(backend: &Arc<Backend>, draining: CancellationToken) -> axum::Router {
    let keys = Keys::required(&[StaticKey {
        name: "client".into(),
        key: Secret::new(KEY),
        rpm: None,
        trust_tenant: false,
    }]);
    openai_router(ApiState::new(
        backend.clone(),
        Arc::new(keys),
        1 << 20,
        draining,
    ))
}

fn finish(reason: FinishReason) -> CompletionEvent {
    CompletionEvent::Finish(Finish {
        finish_reason: reason,
        usage: Usage::new(11, 7),
        metering: Metering::default(),
    })
}

fn text_answer() -> Answer {
    Answer::Events(vec![
        Ok(CompletionEvent::Delta("Hello".into())),
        Ok(CompletionEvent::Delta(" there.".into())),
        Ok(finish(FinishReason::Stop)),
    ])
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The SSE body as `(event, data)` pairs, checking each event's name is its data's type.
    fn events(&self) -> Vec<(String, Value)> {
        self.body
            .split_terminator("\n\n")
            .map(|frame| {
                let (event, data) = frame
                    .strip_prefix("event: ")
                    .and_then(|rest| rest.split_once("\ndata: "))
                    .unwrap_or_else(|| panic!("bad frame {frame:?}"));
                let data: Value = serde_json::from_str(data).unwrap();
                assert_eq!(data["type"], event, "{frame}");
                (event.to_owned(), data)
            })
            .collect()
    }
}

async fn send(router: &axum::Router, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut request = Request::post(path).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn hello(stream: bool) -> Value {
    json!({
        "model": "kiro",
        "max_tokens": 256,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}],
    })
}

/// `{"type": "error", "error": {"type": TYPE, ...}}` and its message.
fn anthropic_error(reply: &Reply, kind: &str) -> String {
    let body = reply.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_bad_or_missing_key_is_an_authentication_error() {
    let backend = Backend::new(text_answer());
    let router = router(&backend);
    for headers in [&[("x-api-key", "sk-wrong")][..], &[][..]] {
        let reply = send(&router, "/v1/messages", headers, &hello(false)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
        anthropic_error(&reply, "authentication_error");
        assert!(!reply.body.contains("sk-wrong"), "the key is not echoed");
    }
    assert!(backend.requests().is_empty());
}

#[tokio::test]
async fn a_missing_max_tokens_is_a_400_naming_it() {
    let backend = Backend::new(text_answer());
    let router = router(&backend);
    let mut body = hello(false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let reply = send(&router, "/v1/messages", &[("x-api-key", KEY)], &body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let message = anthropic_error(&reply, "invalid_request_error");
    assert!(message.contains("max_tokens"), "{message}");
    assert!(backend.requests().is_empty(), "refused before the backend");
}

#[tokio::test]
async fn refusals_have_anthropics_statuses_and_retry_headers() {
    let cases = [
        (
            ApiError::new(ErrorKind::NoCapacity, "Every slot is busy.")
                .with_retry_after(Duration::from_millis(1500)),
            529,
            "overloaded_error",
        ),
        (
            ApiError::new(ErrorKind::RateLimited, "Slow down.")
                .with_retry_after(Duration::from_secs(7)),
            429,
            "rate_limit_error",
        ),
        (
            ApiError::new(ErrorKind::Timeout, "Too slow."),
            504,
            "timeout_error",
        ),
        (ApiError::upstream("The agent failed."), 500, "api_error"),
    ];
    for (error, status, kind) in cases {
        let retry = error.retry_after;
        let backend = Backend::new(Answer::Refuse(error));
        let reply = send(
            &router(&backend),
            "/v1/messages",
            &[("x-api-key", KEY)],
            &hello(true),
        )
        .await;
        assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
        anthropic_error(&reply, kind);
        match retry {
            Some(after) => {
                let header = |name: &str| reply.headers[name].to_str().unwrap().to_owned();
                assert_eq!(
                    header("retry-after"),
                    after.as_millis().div_ceil(1000).to_string()
                );
                assert_eq!(header("retry-after-ms"), after.as_millis().to_string());
            }
            None => assert!(reply.headers.get("retry-after").is_none()),
        }
    }
}

#[tokio::test]
async fn a_draining_node_answers_overloaded() {
    let backend = Backend::new(text_answer());
    let draining = CancellationToken::new();
    draining.cancel();
    let reply = send(
        &router_draining(&backend, draining),
        "/v1/messages",
        &[("x-api-key", KEY)],
        &hello(true),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 529, "{}", reply.body);
    anthropic_error(&reply, "overloaded_error");
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(backend.requests().is_empty());
}

#[tokio::test]
async fn an_over_long_body_is_request_too_large() {
    let backend = Backend::new(text_answer());
    let mut body = hello(false);
    body["messages"][0]["content"] = json!("x".repeat(2 << 20));
    let reply = send(
        &router(&backend),
        "/v1/messages",
        &[("x-api-key", KEY)],
        &body,
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    anthropic_error(&reply, "request_too_large");
}

#[tokio::test]
async fn an_unknown_model_is_not_found() {
    let backend = Backend::new(text_answer());
    let mut body = hello(false);
    body["model"] = json!("no-such-model");
    let reply = send(
        &router(&backend),
        "/v1/messages",
        &[("x-api-key", KEY)],
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    let message = anthropic_error(&reply, "not_found_error");
    assert!(message.contains("no-such-model"), "{message}");
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        kind: "function".into(),
        function: FunctionCall {
            name: name.into(),
            arguments: arguments.into(),
        },
    }
}

#[tokio::test]
async fn a_stream_comes_in_anthropics_event_order() {
    let backend = Backend::new(Answer::Events(vec![
        Ok(CompletionEvent::KeepAlive),
        Ok(CompletionEvent::Reasoning("Let me look.".into())),
        Ok(CompletionEvent::Delta("Checking".into())),
        Ok(CompletionEvent::Delta(" now.".into())),
        Ok(CompletionEvent::ToolCall {
            index: 0,
            call: call("call_1", "get_weather", r#"{"city":"Paris"}"#),
        }),
        Ok(finish(FinishReason::ToolCalls)),
    ]));
    // Claude Code's way in: a bearer key, the beta query and headers.
    let reply = send(
        &router(&backend),
        "/v1/messages?beta=true",
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("anthropic-version", "2023-06-01"),
            (
                "anthropic-beta",
                "claude-code-20250219,interleaved-thinking-2025-05-14",
            ),
        ],
        &hello(true),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let message = &events[0].1["message"];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["model"], "kiro");
    assert_eq!(message["content"], json!([]));
    assert!(message["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(events[3].1["content_block"]["type"], "thinking");
    assert_eq!(events[4].1["delta"]["thinking"], "Let me look.");
    assert_eq!(events[6].1["index"], 1);
    assert_eq!(events[8].1["delta"]["text"], " now.");
    assert_eq!(
        events[10].1["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}})
    );
    assert_eq!(
        events[11].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"city\":\"Paris\"}"})
    );
    assert_eq!(events[13].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[13].1["usage"]["output_tokens"], 7);
    assert_eq!(events[13].1["usage"]["input_tokens"], 11);
}

#[tokio::test]
async fn a_stream_that_breaks_ends_with_an_error_event() {
    for tail in [
        vec![Err(ApiError::upstream("The agent exited."))],
        vec![], // the stream just ends
    ] {
        let mut events = vec![Ok(CompletionEvent::Delta("half".into()))];
        events.extend(tail);
        let backend = Backend::new(Answer::Events(events));
        let reply = send(
            &router(&backend),
            "/v1/messages",
            &[("x-api-key", KEY)],
            &hello(true),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let events = reply.events();
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names[names.len() - 2..],
            ["content_block_stop", "error"],
            "{names:?}"
        );
        assert_eq!(events[events.len() - 1].1["error"]["type"], "api_error");
        assert!(!names.contains(&"message_stop"));
    }
}

#[tokio::test]
async fn a_message_gathers_its_blocks() {
    let backend = Backend::new(Answer::Events(vec![
        Ok(CompletionEvent::Reasoning("hm".into())),
        Ok(CompletionEvent::Delta("Let me check.".into())),
        Ok(CompletionEvent::ToolCall {
            index: 0,
            call: call("call_1", "get_weather", r#"{"city":"Paris"}"#),
        }),
        Ok(finish(FinishReason::ToolCalls)),
    ]));
    let reply = send(
        &router(&backend),
        "/v1/messages",
        &[("x-api-key", KEY)],
        &hello(false),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let message = reply.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "kiro");
    assert_eq!(
        message["content"],
        json!([
            {"type": "thinking", "thinking": "hm", "signature": ""},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        ])
    );
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["stop_sequence"], Value::Null);
    assert_eq!(message["usage"]["input_tokens"], 11);
    assert_eq!(message["usage"]["output_tokens"], 7);
}

#[tokio::test]
async fn tool_results_reach_the_backend_as_tool_messages_with_their_ids() {
    let backend = Backend::new(text_answer());
    let body = json!({
        "model": "kiro",
        "max_tokens": 100,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}, "defer_loading": true}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": "thanks"},
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}
            ]},
        ],
    });
    let reply = send(
        &router(&backend),
        "/v1/messages",
        &[("x-api-key", KEY)],
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let requests = backend.requests();
    let messages = &requests[0].messages;
    let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::Tool, Role::User],
        "the result comes before the turn's text"
    );
    assert_eq!(messages[1].tool_calls.as_ref().unwrap()[0].id, "call_1");
    assert_eq!(messages[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(messages[2].text(), "sunny");
}

#[tokio::test]
async fn count_tokens_estimates_behind_the_keys() {
    let backend = Backend::new(text_answer());
    let router = router(&backend);
    let short = json!({"model": "kiro", "messages": [{"role": "user", "content": "Hi"}]});
    let long = json!({
        "model": "kiro",
        "system": [{"type": "text", "text": "You are a careful assistant.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Hi ".repeat(200)}],
    });
    let path = "/v1/messages/count_tokens?beta=true";
    let reply = send(&router, path, &[("x-api-key", "sk-wrong")], &short).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    anthropic_error(&reply, "authentication_error");
    let reply = send(
        &router,
        path,
        &[("x-api-key", KEY)],
        &json!({"model": "kiro"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(anthropic_error(&reply, "invalid_request_error").contains("messages"));

    let count = |reply: Reply| {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.json()["input_tokens"].as_u64().unwrap()
    };
    let few = count(send(&router, path, &[("x-api-key", KEY)], &short).await);
    let many = count(send(&router, path, &[("x-api-key", KEY)], &long).await);
    assert!(few >= 1, "{few}");
    assert!(many > few + 100, "{few} {many}");
    assert!(backend.requests().is_empty(), "counting asks no backend");
}
