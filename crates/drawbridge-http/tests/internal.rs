//! The engine-side router in process: channel keys as the gate, accounts only where an
//! account admin was given.
#![expect(
    clippy::unwrap_used,
    reason = "the request helper fails the test loudly on what it cannot send or read"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drawbridge_config::{Secret, StaticKey};
use drawbridge_http::{ApiState, Keys, internal_router};
use test_support::ScriptedBackend;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const KEY: &str = "channel-key-0123456789";

fn state(backend: &Arc<ScriptedBackend>) -> ApiState<Keys> {
    let keys = Keys::required(&[StaticKey {
        name: "gateway".into(),
        key: Secret::new(KEY),
        rpm: None,
        trust_tenant: false,
    }]);
    ApiState::new(
        backend.clone(),
        Arc::new(keys),
        1024,
        CancellationToken::new(),
    )
}

async fn get(router: &axum::Router, path: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn accounts_are_served_only_from_an_account_admin_behind_the_keys() {
    let backend = Arc::new(ScriptedBackend::new(&["kiro"]));
    let without = internal_router(state(&backend));
    let (status, body) = get(&without, "/internal/accounts", Some(KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let with = internal_router(state(&backend).with_accounts(backend.clone()));
    let (status, body) = get(&with, "/internal/accounts", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = get(&with, "/internal/accounts", Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"acct-1\""), "{body}");
    let (status, body) = get(&with, "/v1/models", Some(KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"kiro\""), "{body}");
}

/// A client that hangs up while the backend is still starting the answer (before any byte)
/// is counted as `client_closed`, like one that hangs up mid-answer.
#[tokio::test]
async fn a_client_gone_before_the_first_byte_is_counted_as_client_closed() {
    let backend = Arc::new(ScriptedBackend::new(&["kiro"]));
    backend.script(test_support::backend::Script::Hang);
    let metrics = Arc::new(drawbridge_telemetry::Metrics::new());
    let router = internal_router(state(&backend).with_metrics(Arc::clone(&metrics)));
    let request = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"model": "kiro", "messages": [{"role": "user", "content": "hi"}]}"#,
        ))
        .unwrap();
    let mut response = Box::pin(router.clone().oneshot(request));
    // Poll the request until it waits on the backend; it never gets further.
    for _ in 0..1000 {
        assert!(futures::poll!(response.as_mut()).is_pending());
        if backend.chats() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(backend.chats(), 1, "the backend was asked");
    let closed = |metrics: &drawbridge_telemetry::Metrics| {
        metrics
            .snapshot()
            .samples
            .into_iter()
            .find(|s| {
                s.name == "drawbridge_request_errors_total"
                    && s.labels.get("code").map(String::as_str) == Some("client_closed")
            })
            .map(|s| s.value)
    };
    assert_eq!(closed(&metrics), None, "not before the client leaves");
    drop(response); // the client hangs up
    let (status, text) = get(&router, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(r#"drawbridge_request_errors_total{model="kiro",code="client_closed"} 1"#),
        "{text}"
    );
    assert_eq!(closed(&metrics), Some(1.0));
}
