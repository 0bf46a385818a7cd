//! `/health` of an engine serving HTTP provider accounts, through its router with `oneshot`:
//! each provider account listed with its kind, whether it can take a request, and the median
//! time to its first event once it has served one; an account the upstream rate-limited
//! shows as unavailable while it rests. And the prompt tokens the upstream read from its cache
//! reach the client's usage. The upstream is a small OpenAI-compatible server in this process,
//! on a loopback socket (the engine's provider client speaks real HTTP).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use drawbridge_config::{Config, Role};
use drawbridge_engine::{Engine, EngineSettings, EngineState, ProviderConn, WorkerConn};
use drawbridge_telemetry::Shutdown;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// One streamed answer, or a rate limit when the prompt asks for one.
async fn upstream(body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    if body.to_string().contains("rate-limit me") {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "600")],
            axum::Json(json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})),
        )
            .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let usage = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
        "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 16}}});
    let sse = [
        chunk(json!({"role": "assistant", "content": "hi"}), Value::Null),
        chunk(json!({}), json!("stop")),
        format!("data: {usage}\n\n"),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from(sse),
    )
        .into_response()
}

struct Harness {
    router: axum::Router,
    _server: tokio::task::JoinSet<()>,
}

/// An engine with two provider accounts: `oa` (OpenAI) on the in-process upstream, `claude`
/// (Anthropic) on a port nobody listens on. No worker.
async fn harness() -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(upstream));
    let mut server = tokio::task::JoinSet::new();
    server.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let yaml = format!(
        "engine: {{ workers: [] }}\naccounts:\n  - id: oa\n    kind: openai\n    models: [gpt-test]\n    provider: {{ base_url: \"http://{addr}/v1\", api_key: sk-test, max_concurrency: 4 }}\n  - id: claude\n    kind: anthropic\n    models: [claude-test]\n    provider: {{ base_url: \"http://127.0.0.1:9/v1\", api_key: sk-ant-test }}\n"
    );
    let config = Config::from_yaml(&yaml).unwrap();
    config.validate(Role::Engine).unwrap();
    let conn: Arc<dyn WorkerConn> = Arc::new(ProviderConn::from_config(&config).unwrap());
    let engine = Engine::new(
        vec![conn],
        EngineSettings::from_config(&config),
        EngineState::embedded(),
        Shutdown::new(),
    );
    engine.refresh().await;
    let router = drawbridge_engine::router(engine, &config, CancellationToken::new());
    Harness {
        router,
        _server: server,
    }
}

async fn health(h: &Harness) -> (StatusCode, Value) {
    let response = h
        .router
        .clone()
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

async fn ask(h: &Harness, text: &str) -> StatusCode {
    answer(h, text).await.0
}

/// A whole answer to `text`: its status and body.
async fn answer(h: &Harness, text: &str) -> (StatusCode, Value) {
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"model": "gpt-test", "messages": [{"role": "user", "content": text}]})
                .to_string(),
        ))
        .unwrap();
    let response = h.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

fn provider<'a>(health: &'a Value, id: &str) -> &'a Value {
    health["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in {health}"))
}

#[tokio::test]
async fn health_lists_each_provider_account_with_its_availability_and_latency() {
    let h = harness().await;
    let (status, before) = health(&h).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    // The fields clients and dashboards read are unchanged.
    assert_eq!(before["status"], "healthy");
    assert_eq!(before["accounts"], 2);
    assert_eq!(before["total_slots"], before["available_slots"]);
    assert_eq!(before["providers"].as_array().unwrap().len(), 2);
    assert_eq!(
        provider(&before, "oa"),
        &json!({"id": "oa", "kind": "openai", "available": true, "latency_p50_ms": null})
    );
    assert_eq!(
        provider(&before, "claude"),
        &json!({"id": "claude", "kind": "anthropic", "available": true, "latency_p50_ms": null})
    );

    assert_eq!(ask(&h, "hello").await, StatusCode::OK);
    let (_, after) = health(&h).await;
    let oa = provider(&after, "oa");
    assert_eq!(oa["available"], true);
    let p50 = oa["latency_p50_ms"].as_f64().unwrap();
    assert!((0.0..10_000.0).contains(&p50), "{oa}");
    assert_eq!(provider(&after, "claude")["latency_p50_ms"], Value::Null);

    // A 429 with Retry-After rests the account: not available until the rest ends.
    assert_ne!(ask(&h, "rate-limit me").await, StatusCode::OK);
    let (_, resting) = health(&h).await;
    assert_eq!(provider(&resting, "oa")["available"], false, "{resting}");
    assert_eq!(provider(&resting, "claude")["available"], true, "{resting}");
}

#[tokio::test]
async fn cached_prompt_tokens_reach_the_clients_usage() {
    let h = harness().await;
    let (status, body) = answer(&h, "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 20, "{body}");
    assert_eq!(
        body["usage"]["prompt_tokens_details"],
        json!({"cached_tokens": 16}),
        "{body}"
    );
}

#[tokio::test]
async fn an_engine_of_acp_accounts_answers_health_as_before() {
    let worker = Arc::new(test_support::fake_worker::FakeWorker::new("kiro-1"));
    let config = Config::from_yaml("accounts:\n  - { id: kiro-1 }\n").unwrap();
    let engine = Engine::new(
        vec![worker.conn()],
        EngineSettings::from_config(&config),
        EngineState::embedded(),
        Shutdown::new(),
    );
    engine.refresh().await;
    let router = drawbridge_engine::router(engine, &config, CancellationToken::new());
    let response = router
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["accounts", "available_slots", "status", "total_slots"],
        "{body}"
    );
}
