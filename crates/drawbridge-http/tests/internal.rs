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
