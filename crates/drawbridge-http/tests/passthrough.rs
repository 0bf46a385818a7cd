//! `POST /v1/embeddings` and `POST /v1/images/generations` in process: validation (a 400 in
//! OpenAI's shape naming the field, the backend never asked), keys, the backend's answer
//! passed through byte for byte, and the request counted under its own `dialect` label.
#![expect(
    clippy::unwrap_used,
    reason = "the request helper fails the test loudly on what it cannot send or read"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use drawbridge_config::{Secret, StaticKey};
use drawbridge_http::{
    ApiState, ChatBackend, ChatContext, Endpoint, EventStream, Forward, Forwarded, Keys,
    openai_router,
};
use drawbridge_telemetry::Metrics;
use drawbridge_types::{ApiError, ChatCompletionRequest, HealthReport, HealthStatus};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const KEY: &str = "client-key-0123456789";

/// What the backend answers: floats written as an upstream writes them (not as serde would).
const UPSTREAM: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.10000000149011612,-2.5e-7]}],"model":"e","usage":{"prompt_tokens":3,"total_tokens":3}}"#;

/// A backend that forwards: it answers [`UPSTREAM`] from account `p-1`, and counts its calls.
#[derive(Default)]
struct Forwarding {
    calls: AtomicUsize,
    last: std::sync::Mutex<Option<Forward>>,
}

impl ChatBackend for Forwarding {
    fn chat(
        &self,
        _request: ChatCompletionRequest,
        _ctx: ChatContext,
    ) -> BoxFuture<'_, Result<EventStream, ApiError>> {
        futures::future::ready(Err(ApiError::internal("no chat here"))).boxed()
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, ApiError>> {
        futures::future::ready(Ok(vec!["e".to_owned()])).boxed()
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

    fn forward(
        &self,
        request: Forward,
        _ctx: ChatContext,
    ) -> BoxFuture<'_, Result<Forwarded, ApiError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap() = Some(request);
        futures::future::ready(Ok(Forwarded {
            body: Bytes::from_static(UPSTREAM.as_bytes()),
            account: Some("p-1".to_owned()),
        }))
        .boxed()
    }
}

fn router(backend: &Arc<Forwarding>, metrics: &Arc<Metrics>, internal: bool) -> axum::Router {
    let keys = Keys::required(&[StaticKey {
        name: "team".into(),
        key: Secret::new(KEY),
        rpm: None,
        trust_tenant: false,
    }]);
    let mut state = ApiState::new(
        backend.clone(),
        Arc::new(keys),
        4096,
        CancellationToken::new(),
    )
    .with_metrics(Arc::clone(metrics));
    state.expose_metering = internal;
    openai_router(state)
}

async fn post(
    router: &axum::Router,
    path: &str,
    key: &str,
    body: &str,
) -> (StatusCode, Option<String>, Bytes) {
    let request = Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let account = response
        .headers()
        .get(drawbridge_http::passthrough::ACCOUNT_HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, account, body)
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
async fn bad_bodies_are_refused_naming_the_field_and_never_forwarded() {
    let backend = Arc::new(Forwarding::default());
    let metrics = Arc::new(Metrics::new());
    let router = router(&backend, &metrics, false);
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/v1/embeddings", "not json", None),
        ("/v1/embeddings", "[1]", None),
        ("/v1/embeddings", r#"{"input":"x"}"#, Some("model")),
        (
            "/v1/embeddings",
            r#"{"model":"","input":"x"}"#,
            Some("model"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":7,"input":"x"}"#,
            Some("model"),
        ),
        ("/v1/embeddings", r#"{"model":"e"}"#, Some("input")),
        (
            "/v1/embeddings",
            r#"{"model":"e","input":[]}"#,
            Some("input"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"e","input":{"a":1}}"#,
            Some("input"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"e","input":["a",{}]}"#,
            Some("input"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"e","input":[[1,-2]]}"#,
            Some("input"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"e","input":"x","encoding_format":"int8"}"#,
            Some("encoding_format"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"e","input":"x","dimensions":0}"#,
            Some("dimensions"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"e","input":"x","dimensions":"8"}"#,
            Some("dimensions"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"e","input":"x","user":5}"#,
            Some("user"),
        ),
        ("/v1/images/generations", r#"{"model":"e"}"#, Some("prompt")),
        (
            "/v1/images/generations",
            r#"{"prompt":"a cat"}"#,
            Some("model"),
        ),
        (
            "/v1/images/generations",
            r#"{"model":"e","prompt":"c","n":11}"#,
            Some("n"),
        ),
        (
            "/v1/images/generations",
            r#"{"model":"e","prompt":"c","n":1.5}"#,
            Some("n"),
        ),
        (
            "/v1/images/generations",
            r#"{"model":"e","prompt":"c","response_format":"png"}"#,
            Some("response_format"),
        ),
        (
            "/v1/images/generations",
            r#"{"model":"e","prompt":"c","size":1024}"#,
            Some("size"),
        ),
        (
            "/v1/images/generations",
            r#"{"model":"e","prompt":"c","quality":true}"#,
            Some("quality"),
        ),
        (
            "/v1/images/generations",
            r#"{"model":"e","prompt":"c","style":[]}"#,
            Some("style"),
        ),
    ];
    for (path, body, param) in cases {
        let (status, _, answer) = post(&router, path, KEY, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        assert_eq!(
            answer["error"]["param"].as_str(),
            *param,
            "{path} {body}: {answer}"
        );
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
    assert_eq!(requests(&metrics, "embeddings", "error"), 14.0);
    assert_eq!(requests(&metrics, "images", "error"), 8.0);
    // Without the key: 401, not forwarded either.
    let (status, _, _) = post(
        &router,
        "/v1/embeddings",
        "wrong",
        r#"{"model":"e","input":"x"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_backends_answer_is_passed_through_byte_for_byte() {
    let backend = Arc::new(Forwarding::default());
    let metrics = Arc::new(Metrics::new());
    let public = router(&backend, &metrics, false);
    let sent = r#"{"model":"e","input":[[1,2],"text"],"encoding_format":"base64","dimensions":4,"user":"u","extra_field":true}"#;
    let (status, account, body) = post(&public, "/v1/embeddings", KEY, sent).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, UPSTREAM.as_bytes());
    assert_eq!(account, None, "the public API names no account");
    let forwarded = backend.last.lock().unwrap().clone().unwrap();
    assert_eq!(forwarded.endpoint, Endpoint::Embeddings);
    assert_eq!(forwarded.model, "e");
    assert_eq!(
        forwarded.body,
        sent.as_bytes(),
        "the body goes on as it came"
    );
    assert_eq!(requests(&metrics, "embeddings", "success"), 1.0);

    // The engine's internal API names the account for the gateway's ledger.
    let internal = router(&backend, &metrics, true);
    let images = r#"{"model":"e","prompt":"a cat","n":2,"response_format":"b64_json","size":"256x256","quality":"hd","style":"vivid"}"#;
    let (status, account, _) = post(&internal, "/v1/images/generations", KEY, images).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(account.as_deref(), Some("p-1"));
    assert_eq!(
        backend.last.lock().unwrap().as_ref().unwrap().endpoint,
        Endpoint::Images
    );
    assert_eq!(requests(&metrics, "images", "success"), 1.0);
}

#[tokio::test]
async fn a_backend_that_forwards_nothing_answers_404() {
    let backend = Arc::new(test_support::ScriptedBackend::new(&["e"]));
    let keys = Keys::required(&[StaticKey {
        name: "team".into(),
        key: Secret::new(KEY),
        rpm: None,
        trust_tenant: false,
    }]);
    let router = openai_router(ApiState::new(
        backend,
        Arc::new(keys),
        4096,
        CancellationToken::new(),
    ));
    let (status, _, body) = post(
        &router,
        "/v1/embeddings",
        KEY,
        r#"{"model":"e","input":"x"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["message"], "This API serves no embeddings.");
}
