//! The engine's HTTP surface, in process: its router called with `oneshot` (no sockets), over
//! scripted workers and embedded stores, on paused time.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drawbridge_config::Config;
use drawbridge_engine::{Engine, EngineSettings, EngineState};
use drawbridge_state::{AffinityStore, EmbeddedCredits, EmbeddedRouting};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::worker::PromptBody;
use drawbridge_types::{ApiError, CreditChange, ErrorKind};
use http_body_util::BodyExt as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use test_support::fake_worker::{FakeWorker, Script};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The gateway's key (trusted to name the tenant) and another caller's.
const GATEWAY_KEY: &str = "ck-gateway";
const OTHER_KEY: &str = "ck-other";

const CONFIG: &str = "
engine:
  channel_keys:
    - { name: gateway, key: ck-gateway, trust_tenant: true }
    - { name: other, key: ck-other }
  max_attempts: 3
  affinity: { enabled: true }
";

struct Harness {
    router: axum::Router,
    engine: Arc<Engine>,
    routing: Arc<EmbeddedRouting>,
    scope: Shutdown,
}

/// The engine over `workers`, its view refreshed once, and its router.
async fn harness(workers: &[&Arc<FakeWorker>]) -> Harness {
    let config = Config::from_yaml(CONFIG).unwrap();
    let routing = Arc::new(EmbeddedRouting::new());
    let state = EngineState {
        credits: Arc::new(EmbeddedCredits::new()),
        breakers: routing.clone(),
        cooldowns: routing.clone(),
        affinity: routing.clone(),
    };
    let scope = Shutdown::new();
    let engine = Engine::new(
        workers.iter().map(|w| w.conn()).collect(),
        EngineSettings::from_config(&config),
        state,
        scope.clone(),
    );
    engine.refresh().await;
    let router = drawbridge_engine::router(Arc::clone(&engine), &config, CancellationToken::new());
    Harness {
        router,
        engine,
        routing,
        scope,
    }
}

fn chat(key: &str) -> axum::http::request::Builder {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
}

fn body(model: &str, stream: bool) -> Body {
    Body::from(
        serde_json::json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": "go"}],
        })
        .to_string(),
    )
}

/// Send `request`; the status and the whole body.
async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// A plain (not streamed) chat with the gateway's key.
async fn ask(h: &Harness, model: &str) -> (StatusCode, Value) {
    let request = chat(GATEWAY_KEY).body(body(model, false)).unwrap();
    let (status, text) = send(&h.router, request).await;
    (status, serde_json::from_str(&text).unwrap())
}

fn content(answer: &Value) -> &str {
    answer["choices"][0]["message"]["content"].as_str().unwrap()
}

fn upstream() -> ApiError {
    ApiError::upstream("the agent crashed")
}

#[tokio::test(start_paused = true)]
async fn a_chat_is_answered() {
    let worker = Arc::new(FakeWorker::new("acct-a").then(Script::answer(&["hel", "lo"])));
    let h = harness(&[&worker]).await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(content(&answer), "hello");
    assert_eq!(worker.prompts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_answer_arrives_as_events() {
    let worker = Arc::new(FakeWorker::new("acct-a").then(Script::answer(&["one ", "two"])));
    let h = harness(&[&worker]).await;
    let request = chat(GATEWAY_KEY).body(body("kiro", true)).unwrap();
    let (status, text) = send(&h.router, request).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let deltas: String = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str::<Value>(data).unwrap())
        .filter_map(|event| {
            event["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(deltas, "one two");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_fails_before_its_first_byte_moves_to_another_account() {
    // acct-a has more free slots (the better score): it is tried first.
    let first = Arc::new(
        FakeWorker::new("acct-a")
            .slots(4)
            .then(Script::Fails(upstream())),
    );
    let second = Arc::new(FakeWorker::new("acct-b").slots(1));
    let h = harness(&[&first, &second]).await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(content(&answer), "hello");
    assert_eq!((first.prompts().len(), second.prompts().len()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_breaks_off_after_its_first_byte_resumes_elsewhere() {
    let first = Arc::new(
        FakeWorker::new("acct-a")
            .slots(4)
            .then(Script::BreaksAfter(vec!["one ".to_owned()], upstream())),
    );
    let second = Arc::new(
        FakeWorker::new("acct-b")
            .slots(1)
            .otherwise(Script::Continues),
    );
    let h = harness(&[&first, &second]).await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(content(&answer), "one [after one ]");
    let resumed = second.prompts();
    assert!(
        matches!(&resumed[0].body, PromptBody::Resume { partial, .. } if partial == "one "),
        "the second account is asked to continue the partial answer"
    );
}

#[tokio::test(start_paused = true)]
async fn spent_credits_are_429_insufficient_quota() {
    let worker = Arc::new(FakeWorker::new("acct-a"));
    let h = harness(&[&worker]).await;
    h.engine
        .change_credits("acct-a", CreditChange::Set(Some(0)))
        .await
        .unwrap();
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "insufficient_quota");
    assert!(worker.prompts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn no_healthy_account_is_503() {
    let worker = Arc::new(FakeWorker::new("acct-a").draining());
    let h = harness(&[&worker]).await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(worker.prompts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unknown_model_is_404() {
    let worker = Arc::new(FakeWorker::new("acct-a"));
    let h = harness(&[&worker]).await;
    let (status, answer) = ask(&h, "no-such-model").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "model_not_found");
}

#[tokio::test(start_paused = true)]
async fn a_bad_channel_key_is_401() {
    let worker = Arc::new(FakeWorker::new("acct-a"));
    let h = harness(&[&worker]).await;
    let request = chat("ck-wrong").body(body("kiro", false)).unwrap();
    let (status, text) = send(&h.router, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], ErrorKind::InvalidApiKey.code());
    assert!(worker.prompts().is_empty());
}

/// The conversation key session affinity stores: per tenant, hashed.
fn conversation(tenant: &str, session: &str) -> String {
    let digest = Sha256::new()
        .chain_update(tenant.as_bytes())
        .chain_update([0u8])
        .chain_update(format!("s:{session}").as_bytes())
        .finalize();
    drawbridge_core::hex::encode(&digest)
}

/// Send a chat with `key` naming the tenant `tenant-1` for the session `s1`; the tenant the
/// engine kept the conversation under, found in the affinity store.
async fn tenant_kept(key: &str) -> (bool, bool) {
    let worker = Arc::new(FakeWorker::new("acct-a"));
    let h = harness(&[&worker]).await;
    let request = chat(key)
        .header(drawbridge_http::TENANT_HEADER, "tenant-1")
        .header("x-session-id", "s1")
        .body(body("kiro", false))
        .unwrap();
    let (status, text) = send(&h.router, request).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // The binding is written in the background: wait for the engine's writes.
    assert!(h.scope.drain(Duration::from_secs(5)).await);
    let named = h
        .routing
        .affinity(&conversation("tenant-1", "s1"))
        .await
        .unwrap();
    let own = h
        .routing
        .affinity(&conversation(&format!("static.{}", key_name(key)), "s1"))
        .await
        .unwrap();
    (named.is_some(), own.is_some())
}

fn key_name(key: &str) -> &'static str {
    if key == GATEWAY_KEY {
        "gateway"
    } else {
        "other"
    }
}

#[tokio::test(start_paused = true)]
async fn the_tenant_header_is_taken_from_a_trusted_key_only() {
    assert_eq!(
        tenant_kept(GATEWAY_KEY).await,
        (true, false),
        "the gateway's key names the tenant"
    );
    assert_eq!(
        tenant_kept(OTHER_KEY).await,
        (false, true),
        "another key's tenant header is ignored: the key is the tenant"
    );
}

/// The routing view follows this engine's own writes at once, not at the next refresh: an
/// account that met its rate limit gets no further request while it rests.
#[tokio::test(start_paused = true)]
async fn a_rate_limited_account_is_skipped_by_the_next_request_without_a_refresh() {
    let limited = ApiError::new(ErrorKind::AccountRateLimited, "slow down")
        .with_retry_after(Duration::from_secs(60));
    let first = Arc::new(
        FakeWorker::new("acct-a")
            .slots(4)
            .then(Script::Fails(limited)),
    );
    let second = Arc::new(FakeWorker::new("acct-b").slots(1));
    let h = harness(&[&first, &second]).await;
    for _ in 0..2 {
        let (status, answer) = ask(&h, "kiro").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    assert_eq!(
        (first.prompts().len(), second.prompts().len()),
        (1, 2),
        "the resting account was not tried again"
    );
}

/// `POST` `body` to `path` with the gateway's key.
async fn forward(h: &Harness, path: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, text) = send(&h.router, request).await;
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test(start_paused = true)]
async fn an_acp_account_refuses_embeddings_and_images_with_a_400_naming_the_model() {
    let worker = Arc::new(FakeWorker::new("acct-a"));
    let other = Arc::new(FakeWorker::new("acct-b"));
    let h = harness(&[&worker, &other]).await;
    let embeddings = serde_json::json!({"model": "kiro", "input": "hello"});
    let (status, answer) = forward(&h, "/v1/embeddings", embeddings).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "The model 'kiro' does not serve embeddings."
    );
    assert_eq!(answer["error"]["param"], "model");
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    let images = serde_json::json!({"model": "kiro", "prompt": "a cat"});
    let (status, answer) = forward(&h, "/v1/images/generations", images).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "The model 'kiro' does not serve image generation."
    );
    // An unknown model is 404, as for chat.
    let unknown = serde_json::json!({"model": "nope", "input": "hello"});
    let (status, answer) = forward(&h, "/v1/embeddings", unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "model_not_found");
    // No turn was started, and neither account counts a failure.
    assert!(worker.prompts().is_empty() && other.prompts().is_empty());
    let views = h.engine.account_views();
    assert!(
        views.iter().all(|v| v.breaker == "closed"),
        "{:?}",
        views.iter().map(|v| &v.breaker).collect::<Vec<_>>()
    );
    h.scope.cancel();
}
