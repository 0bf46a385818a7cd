//! Client tools through the engine, with scripted workers: tool calls reach the client as
//! OpenAI `tool_calls` (streamed and not), the request's tools reach the worker, and the
//! follow-up that brings the results goes to the account whose live session holds the calls
//! (through the binding in the shared state), with the session named; a follow-up for a
//! session nobody knows is scheduled as usual.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drawbridge_config::Config;
use drawbridge_engine::{Engine, EngineSettings, EngineState};
use drawbridge_state::{AffinityStore, EmbeddedCredits, EmbeddedRouting};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::tools::{live_call_id, new_live_id};
use drawbridge_types::worker::PromptBody;
use drawbridge_types::{ApiError, ErrorKind};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use test_support::fake_worker::{FakeWorker, Script, Step, called_tools, tool_call};
use test_support::wait::eventually;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

struct Harness {
    router: axum::Router,
    routing: Arc<EmbeddedRouting>,
}

async fn harness(workers: &[&Arc<FakeWorker>]) -> Harness {
    let config = Config::from_yaml(
        "engine: { max_attempts: 3, channel_keys: [{ name: gw, key: ck-gw, trust_tenant: true }] }",
    )
    .unwrap();
    let routing = Arc::new(EmbeddedRouting::new());
    let state = EngineState {
        credits: Arc::new(EmbeddedCredits::new()),
        breakers: routing.clone(),
        cooldowns: routing.clone(),
        affinity: routing.clone(),
    };
    let engine = Engine::new(
        workers.iter().map(|w| w.conn()).collect(),
        EngineSettings::from_config(&config),
        state,
        Shutdown::new(),
    );
    engine.refresh().await;
    let router = drawbridge_engine::router(Arc::clone(&engine), &config, CancellationToken::new());
    Harness { router, routing }
}

async fn chat(h: &Harness, body: &Value) -> (StatusCode, String) {
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer ck-gw")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = h.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

fn ask(stream: bool) -> Value {
    json!({"model": "kiro", "stream": stream, "tools": tools(),
        "messages": [{"role": "user", "content": "weather in Paris?"}]})
}

/// The conversation after the client ran the call `id`.
fn follow_up(id: &str) -> Value {
    json!({"model": "kiro", "tools": tools(), "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "sunny"}]})
}

/// A turn that calls `weather` under `id` and ends with `tool_calls`.
fn calls_weather(id: &str) -> Script {
    Script::Steps(vec![
        Step::ToolCall(tool_call(id, "weather", r#"{"city":"Paris"}"#)),
        Step::Finish(called_tools()),
    ])
}

#[tokio::test(start_paused = true)]
async fn a_tool_call_is_the_answer_and_its_results_go_back_to_the_session_that_holds_it() {
    let live = new_live_id();
    let id = live_call_id(&live, 0);
    // `acct-b` scores better (more slots) but refuses the first turn: `acct-a` holds the call.
    let a = Arc::new(FakeWorker::new("acct-a").slots(1).then(calls_weather(&id)));
    let b = Arc::new(
        FakeWorker::new("acct-b")
            .slots(4)
            .then(Script::Fails(ApiError::new(ErrorKind::NoCapacity, "busy"))),
    );
    let h = harness(&[&a, &b]).await;

    let (status, body) = chat(&h, &ask(false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(choice["message"]["tool_calls"][0]["id"], id.as_str());
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "weather"
    );
    // The worker got the request's tools.
    let first = &a.prompts()[0];
    assert_eq!(first.tools.tools[0].function.name, "weather");
    assert!(first.live_session.is_none());

    // The binding is written in the background.
    let key = format!("live:{live}");
    eventually("the live session is bound", || async {
        h.routing.affinity(&key).await.unwrap().as_deref() == Some("acct-a")
    })
    .await;

    let (status, body) = chat(&h, &follow_up(&id)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let prompts = a.prompts();
    assert_eq!(
        prompts.len(),
        2,
        "the follow-up went to the account holding the session"
    );
    assert_eq!(prompts[1].live_session.as_deref(), Some(live.as_str()));
    let PromptBody::Messages(messages) = &prompts[1].body else {
        panic!("the whole conversation goes along, for a worker that lost the session");
    };
    assert_eq!(messages.len(), 3);
    assert_eq!(b.prompts().len(), 1, "only the refused first turn");
}

#[tokio::test(start_paused = true)]
async fn tool_calls_stream_as_openai_deltas() {
    let id = live_call_id(&new_live_id(), 0);
    let a = Arc::new(FakeWorker::new("acct-a").then(calls_weather(&id)));
    let h = harness(&[&a]).await;
    let (status, body) = chat(&h, &ask(true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chunks: Vec<Value> = body
        .split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(deltas.len(), 2, "{body}");
    assert_eq!(deltas[0][0]["id"], id.as_str());
    assert_eq!(deltas[0][0]["function"]["name"], "weather");
    assert_eq!(deltas[1][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test(start_paused = true)]
async fn a_follow_up_for_an_unknown_session_is_scheduled_as_usual() {
    let a = Arc::new(FakeWorker::new("acct-a"));
    let h = harness(&[&a]).await;
    // Ids of a session nobody bound, and of another client.
    for id in [live_call_id(&new_live_id(), 0), "call_abc".to_owned()] {
        let (status, body) = chat(&h, &follow_up(&id)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert!(a.prompts().iter().all(|p| p.live_session.is_none()));
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_breaks_after_a_tool_call_is_not_started_again_elsewhere() {
    let id = live_call_id(&new_live_id(), 0);
    let a = Arc::new(FakeWorker::new("acct-a").slots(4).then(Script::Steps(vec![
        Step::ToolCall(tool_call(&id, "weather", "{}")),
        Step::Fail(ApiError::upstream("agent died")),
    ])));
    let b = Arc::new(FakeWorker::new("acct-b").slots(1));
    let h = harness(&[&a, &b]).await;
    let (status, body) = chat(&h, &ask(true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"finish_reason\":\"error\""), "{body}");
    assert!(
        b.prompts().is_empty(),
        "the client has the call: nobody else may answer"
    );
}

/// A turn that answers `text` and says its worker keeps the session warm.
fn answers_warm(text: &str) -> Script {
    let mut summary = test_support::fake_worker::reported(3, 2, 0.0, None);
    summary.warm = true;
    Script::Steps(vec![Step::Text(text.to_owned()), Step::Finish(summary)])
}

/// A warm session's binding lasts as long as a worker keeps such a session
/// (`engine.affinity.session_ttl`, 5 minutes), not the conversations' hour: at saturation with
/// one-shot requests every answer leaves one, and an hour of them filled ValKey (the soak).
#[tokio::test(start_paused = true)]
async fn a_warm_binding_lasts_the_session_ttl_not_the_affinity_ttl() {
    let a = Arc::new(
        FakeWorker::new("acct-a")
            .slots(1)
            .then(answers_warm("first")),
    );
    let h = harness(&[&a]).await;
    let one = json!({"model": "kiro", "messages": [{"role": "user", "content": "one"}]});
    let (status, body) = chat(&h, &one).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key = format!(
        "warm:{}",
        a.prompts()[0]
            .conversation
            .clone()
            .expect("a conversation key")
    );
    eventually("the warm session is bound", || async {
        h.routing.affinity(&key).await.unwrap().is_some()
    })
    .await;
    tokio::time::advance(std::time::Duration::from_secs(299)).await;
    assert_eq!(
        h.routing.affinity(&key).await.unwrap().as_deref(),
        Some("acct-a")
    );
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        h.routing.affinity(&key).await.unwrap(),
        None,
        "gone after 5 minutes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_follow_up_goes_to_the_account_that_keeps_its_conversation_warm() {
    // `acct-b` scores better but refuses the first turn; `acct-a` answers and keeps it warm.
    let a = Arc::new(
        FakeWorker::new("acct-a")
            .slots(1)
            .then(answers_warm("first")),
    );
    let b = Arc::new(
        FakeWorker::new("acct-b")
            .slots(4)
            .then(Script::Fails(ApiError::new(ErrorKind::NoCapacity, "busy"))),
    );
    let h = harness(&[&a, &b]).await;
    let one = json!({"model": "kiro", "messages": [{"role": "user", "content": "one"}]});
    let (status, body) = chat(&h, &one).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key = a.prompts()[0]
        .conversation
        .clone()
        .expect("a conversation key");
    eventually("the warm session is bound", || async {
        h.routing
            .affinity(&format!("warm:{key}"))
            .await
            .unwrap()
            .as_deref()
            == Some("acct-a")
    })
    .await;

    let two = json!({"model": "kiro", "messages": [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "two"}]});
    let (status, body) = chat(&h, &two).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let prompts = a.prompts();
    assert_eq!(prompts.len(), 2, "the follow-up went to the warm account");
    assert_eq!(prompts[1].live_session.as_deref(), Some(key.as_str()));
    assert_ne!(prompts[1].conversation, prompts[0].conversation);

    // Another tenant's same conversation is not this one.
    let (before_a, before_b) = (a.prompts().len(), b.prompts().len());
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer ck-gw")
        .header(drawbridge_http::TENANT_HEADER, "someone-else")
        .body(Body::from(two.to_string()))
        .unwrap();
    let response = h.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let new: Vec<_> = a.prompts()[before_a..]
        .iter()
        .chain(&b.prompts()[before_b..])
        .cloned()
        .collect();
    assert_eq!(new.len(), 1);
    assert!(new[0].live_session.is_none(), "{:?}", new[0].live_session);
}
