//! The legacy completions dialect in process: the same path as chat (keys, metering) with its
//! own wire format, and counted under its `dialect` label.
#![expect(
    clippy::unwrap_used,
    reason = "the request helper fails the test loudly on what it cannot send or read"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drawbridge_config::{Secret, StaticKey};
use drawbridge_http::{ApiState, Keys, openai_router};
use drawbridge_telemetry::Metrics;
use test_support::ScriptedBackend;
use test_support::backend::Script;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const KEY: &str = "client-key-0123456789";

fn router(backend: &Arc<ScriptedBackend>, metrics: &Arc<Metrics>) -> axum::Router {
    let keys = Keys::required(&[StaticKey {
        name: "team".into(),
        key: Secret::new(KEY),
        rpm: None,
        trust_tenant: false,
    }]);
    let state = ApiState::new(
        backend.clone(),
        Arc::new(keys),
        4096,
        CancellationToken::new(),
    )
    .with_metrics(Arc::clone(metrics));
    openai_router(state)
}

async fn post(router: &axum::Router, key: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::post("/v1/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

fn requests(metrics: &Metrics, dialect: &str, status: &str) -> f64 {
    metrics
        .snapshot()
        .samples
        .into_iter()
        .filter(|s| {
            s.name == "drawbridge_requests_total"
                && s.labels.get("dialect").map(String::as_str) == Some(dialect)
                && s.labels.get("status").map(String::as_str) == Some(status)
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn a_completion_is_answered_as_text_completion_and_counted_as_completions() {
    let backend = Arc::new(ScriptedBackend::new(&["kiro"]));
    backend.script(Script::text("Paris."));
    let metrics = Arc::new(Metrics::new());
    let router = router(&backend, &metrics);
    let (status, body) = post(
        &router,
        KEY,
        r#"{"model": "kiro", "prompt": "Capital of France?", "max_tokens": 8}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Paris.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(requests(&metrics, "completions", "success"), 1.0);
    assert_eq!(requests(&metrics, "openai", "success"), 0.0);
    assert_eq!(backend.chats(), 1);
}

#[tokio::test]
async fn refusals_keep_the_openai_shape_and_are_counted_under_the_dialect() {
    let backend = Arc::new(ScriptedBackend::new(&["kiro"]));
    let metrics = Arc::new(Metrics::new());
    let router = router(&backend, &metrics);
    let (status, body) = post(
        &router,
        "not-the-key",
        r#"{"model": "kiro", "prompt": "x"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, body) = post(&router, KEY, r#"{"model": "kiro", "prompt": ["a", "b"]}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "prompt");
    assert_eq!(requests(&metrics, "completions", "error"), 2.0);
    assert_eq!(backend.chats(), 0, "nothing reached the backend");
}
