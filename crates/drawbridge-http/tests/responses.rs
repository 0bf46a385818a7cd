//! The Responses API in process: `POST /v1/responses` streamed and not, responses stored per
//! tenant and chained with `previous_response_id`, `GET /v1/responses/{id}`, behind channel
//! keys as the gate and a backend that answers from a script and remembers what it was asked.
#![expect(
    clippy::unwrap_used,
    reason = "the helpers fail the test loudly on what they cannot send or read"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drawbridge_config::{Secret, StaticKey};
use drawbridge_http::dialect::responses::ResponseStorage;
use drawbridge_http::{ApiState, ChatBackend, ChatContext, EventStream, Keys, openai_router};
use drawbridge_types::openai::{FunctionCall, ToolCall};
use drawbridge_types::{
    ApiError, ChatCompletionRequest, CompletionEvent, Finish, FinishReason, HealthReport,
    HealthStatus, Metering, Usage,
};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-0123456789";

/// Answers every request with the events it was given (none: never), and keeps the requests.
#[derive(Default)]
struct Backend {
    answer: Mutex<Vec<Result<CompletionEvent, ApiError>>>,
    requests: Mutex<Vec<ChatCompletionRequest>>,
}

impl Backend {
    fn answer(&self, events: Vec<Result<CompletionEvent, ApiError>>) {
        *self.answer.lock().unwrap() = events;
    }

    fn last_request(&self) -> ChatCompletionRequest {
        self.requests.lock().unwrap().last().unwrap().clone()
    }
}

fn finish(reason: FinishReason) -> CompletionEvent {
    CompletionEvent::Finish(Finish {
        finish_reason: reason,
        usage: Usage::new(7, 3),
        metering: Metering {
            accounts: vec!["acct-1".into()],
            credits: 1.0,
            tokens_estimated: false,
        },
    })
}

fn text(pieces: &[&str]) -> Vec<Result<CompletionEvent, ApiError>> {
    pieces
        .iter()
        .map(|p| Ok(CompletionEvent::Delta((*p).to_owned())))
        .chain([Ok(finish(FinishReason::Stop))])
        .collect()
}

impl ChatBackend for Backend {
    fn chat(
        &self,
        request: ChatCompletionRequest,
        _ctx: ChatContext,
    ) -> BoxFuture<'_, Result<EventStream, ApiError>> {
        self.requests.lock().unwrap().push(request);
        let events = self.answer.lock().unwrap().clone();
        // No events scripted: an answer that has not begun yet.
        let stream = if events.is_empty() {
            futures::stream::pending().boxed()
        } else {
            futures::stream::iter(events).boxed()
        };
        futures::future::ready(Ok(stream)).boxed()
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

/// Stored responses in a map, by (tenant, id).
#[derive(Default)]
struct Memory(Mutex<HashMap<(String, String), String>>);

impl Memory {
    fn holds(&self, id: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .keys()
            .any(|(_, stored)| stored == id)
    }
}

impl ResponseStorage for Memory {
    fn put<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        stored: String,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        self.0
            .lock()
            .unwrap()
            .insert((tenant.to_owned(), id.to_owned()), stored);
        futures::future::ready(Ok(())).boxed()
    }

    fn get<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ApiError>> {
        let found = self
            .0
            .lock()
            .unwrap()
            .get(&(tenant.to_owned(), id.to_owned()))
            .cloned();
        futures::future::ready(Ok(found)).boxed()
    }
}

fn router(backend: &Arc<Backend>, memory: Option<&Arc<Memory>>) -> axum::Router {
    let key = |name: &str, key: &str| StaticKey {
        name: name.into(),
        key: Secret::new(key),
        rpm: None,
        trust_tenant: false,
    };
    let keys = Keys::required(&[key("alice", ALICE), key("bob", BOB)]);
    let mut state = ApiState::new(
        backend.clone(),
        Arc::new(keys),
        1 << 20,
        CancellationToken::new(),
    );
    if let Some(memory) = memory {
        state = state.with_responses(memory.clone());
    }
    openai_router(state)
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn post(key: &str, body: &Value) -> Request<Body> {
    Request::post("/v1/responses")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn create(router: &axum::Router, key: &str, body: &Value) -> (StatusCode, Value) {
    let (status, body) = send(router, post(key, body)).await;
    (status, serde_json::from_str(&body).unwrap())
}

async fn retrieve(router: &axum::Router, key: &str, id: &str) -> (StatusCode, Value) {
    let request = Request::get(format!("/v1/responses/{id}"))
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(router, request).await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn a_stored_response_is_retrieved_and_chained_by_its_tenant_only() {
    let backend = Arc::new(Backend::default());
    let memory = Arc::new(Memory::default());
    let router = router(&backend, Some(&memory));
    backend.answer(text(&["Hello", " Alice."]));
    let (status, first) = create(
        &router,
        ALICE,
        &json!({"model": "kiro", "input": "Hi, I am Alice.", "instructions": "Be kind."}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["instructions"], "Be kind.");
    assert_eq!(first["output"][0]["content"][0]["text"], "Hello Alice.");
    assert_eq!(first["usage"]["total_tokens"], 10);
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"), "{id}");

    let (status, got) = retrieve(&router, ALICE, id).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got, first);
    let (status, error) = retrieve(&router, BOB, id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(error["error"]["code"], "not_found");

    backend.answer(text(&["You are Alice."]));
    let (status, second) = create(
        &router,
        ALICE,
        &json!({"model": "kiro", "input": "Who am I?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["previous_response_id"], id);
    // The earlier turn comes first; its instructions do not carry over.
    let upstream = serde_json::to_value(backend.last_request().messages).unwrap();
    assert_eq!(
        upstream,
        json!([
            {"role": "user", "content": "Hi, I am Alice."},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello Alice."}]},
            {"role": "user", "content": "Who am I?"},
        ])
    );

    let (status, error) = create(
        &router,
        BOB,
        &json!({"model": "kiro", "input": "Who am I?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(error["error"]["param"], "previous_response_id");
}

#[tokio::test]
async fn a_stream_is_stored_before_its_last_event_leaves() {
    let backend = Arc::new(Backend::default());
    let memory = Arc::new(Memory::default());
    let router = router(&backend, Some(&memory));
    backend.answer(text(&["a", "b"]));
    let response = router
        .clone()
        .oneshot(post(
            ALICE,
            &json!({"model": "kiro", "input": "x", "stream": true}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body().into_data_stream();
    let mut sse = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
        if let Some(at) = chunk.find("event: response.completed") {
            let data = chunk[at..].lines().nth(1).unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            let id = data["response"]["id"].as_str().unwrap();
            assert!(
                memory.holds(id),
                "response.completed left before {id} was stored"
            );
        }
        sse.push_str(&chunk);
    }
    let types: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
}

#[tokio::test]
async fn store_false_and_failed_answers_are_not_kept() {
    let backend = Arc::new(Backend::default());
    let memory = Arc::new(Memory::default());
    let router = router(&backend, Some(&memory));
    backend.answer(text(&["secret"]));
    let (status, unstored) = create(
        &router,
        ALICE,
        &json!({"model": "kiro", "input": "x", "store": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{unstored}");
    assert_eq!(unstored["store"], false);
    let id = unstored["id"].as_str().unwrap();
    assert_eq!(retrieve(&router, ALICE, id).await.0, StatusCode::NOT_FOUND);
    let (status, error) = create(
        &router,
        ALICE,
        &json!({"model": "kiro", "input": "y", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");

    backend.answer(vec![
        Ok(CompletionEvent::Delta("par".into())),
        Err(ApiError::upstream("the agent died")),
    ]);
    let (status, sse) = send(
        &router,
        post(
            ALICE,
            &json!({"model": "kiro", "input": "x", "stream": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let last = sse.trim_end().lines().last().unwrap();
    let failed: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(failed["type"], "response.failed");
    assert_eq!(failed["response"]["error"]["message"], "the agent died");
    assert!(
        memory.0.lock().unwrap().is_empty(),
        "a failed answer was stored"
    );
}

#[tokio::test]
async fn tool_calls_come_back_as_function_calls_and_their_outputs_follow_up() {
    let backend = Arc::new(Backend::default());
    let memory = Arc::new(Memory::default());
    let router = router(&backend, Some(&memory));
    let call = ToolCall {
        id: "call_0123456789abcdef0123456789abcdef_0".into(),
        kind: "function".into(),
        function: FunctionCall {
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        },
    };
    backend.answer(vec![
        Ok(CompletionEvent::ToolCall {
            index: 0,
            call: call.clone(),
        }),
        Ok(finish(FinishReason::ToolCalls)),
    ]);
    let tools = json!([{"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let (status, first) = create(
        &router,
        ALICE,
        &json!({"model": "kiro", "input": "Weather?", "tools": tools}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let item = &first["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["call_id"], call.id);
    assert_eq!(item["name"], "get_weather");

    backend.answer(text(&["Sunny."]));
    let (status, second) = create(
        &router,
        ALICE,
        &json!({"model": "kiro", "tools": tools, "previous_response_id": first["id"],
                "input": [{"type": "function_call_output", "call_id": call.id, "output": "sunny"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let upstream = backend.last_request();
    assert_eq!(upstream.messages.len(), 3);
    assert_eq!(
        upstream.messages[1].tool_calls.as_deref(),
        Some(&[call.clone()][..])
    );
    assert_eq!(
        upstream.messages[2].tool_call_id.as_deref(),
        Some(call.id.as_str())
    );
}

#[tokio::test]
async fn without_storage_previous_response_id_is_a_400_and_nothing_is_retrieved() {
    let backend = Arc::new(Backend::default());
    let router = router(&backend, None);
    backend.answer(text(&["ok"]));
    let (status, answer) = create(&router, ALICE, &json!({"model": "kiro", "input": "x"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["id"].as_str().unwrap();
    assert_eq!(retrieve(&router, ALICE, id).await.0, StatusCode::NOT_FOUND);
    let (status, error) = create(
        &router,
        ALICE,
        &json!({"model": "kiro", "input": "x", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["param"], "previous_response_id");
    let (status, error) = create(
        &router,
        ALICE,
        &json!({"model": "kiro", "input": [{"role": "user", "content": [{"type": "input_file"}]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["param"], "input[0].content[0].type");
    let (status, _) = retrieve(&router, "wrong-key", id).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_stream_says_created_before_the_answer_begins() {
    let backend = Arc::new(Backend::default());
    let router = router(&backend, None);
    let response = router
        .clone()
        .oneshot(post(
            ALICE,
            &json!({"model": "kiro", "input": "x", "stream": true}),
        ))
        .await
        .unwrap();
    let mut body = response.into_body().into_data_stream();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
        .await
        .expect("response.created was held back until the answer began")
        .unwrap()
        .unwrap();
    let first = String::from_utf8(first.to_vec()).unwrap();
    let types: Vec<&str> = first
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(types, ["response.created", "response.in_progress"]);
}
