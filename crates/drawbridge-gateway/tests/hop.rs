//! The gateway over a real engine on loopback (the engine's router on a socket, scripted
//! workers behind it): the engine's keep-alives reach the gateway's streamed client as
//! keep-alives, its model list (aliases included) is the gateway's, and `usage.drawbridge`
//! survives the hop. Real time: the worker's tool phase is a second long, the keep-alive
//! interval a fifth of that.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use drawbridge_config::Config;
use drawbridge_engine::{Engine, EngineSettings, EngineState, WorkerConn};
use drawbridge_gateway::{GatewayDeps, HttpEngine, Stores};
use drawbridge_state::EmbeddedGatewayStore;
use drawbridge_telemetry::{LiveConfig, Metrics, Shutdown};
use serde_json::{Value, json};
use test_support::fake_worker::{FakeWorker, Script, Step, reported};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const KEY: &str = "sk-hop-test-0123456789";

const CONFIG: &str = "
gateway:
  api_keys: [{ name: hop, key: sk-hop-test-0123456789, rpm: 0 }]
engine:
  keepalive_interval: 200ms
model_aliases:
  gpt-4o: claude-sonnet-4.6
";

/// The engine's router served on loopback, and a gateway router whose backend is that
/// engine over HTTP.
async fn stack(worker: &Arc<FakeWorker>, scope: &Shutdown) -> axum::Router {
    let config = Config::from_yaml(CONFIG).unwrap();
    let conns: Vec<Arc<dyn WorkerConn>> = vec![worker.conn()];
    let engine = Engine::new(
        conns,
        EngineSettings::from_config(&config),
        EngineState::embedded(),
        scope.clone(),
    );
    engine.refresh().await;
    let engine_router = drawbridge_engine::router(engine, &config, CancellationToken::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let token = scope.token().clone();
    scope.spawn(async move {
        let _ = axum::serve(listener, engine_router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    let store = Arc::new(EmbeddedGatewayStore::in_memory());
    let stores = Stores {
        keys: store.clone(),
        limiter: store.clone(),
        usage: store,
        responses: Arc::new(drawbridge_state::EmbeddedResponses::new()),
        clock: drawbridge_gateway::system_clock(),
    };
    let backend = HttpEngine::new(&format!("http://{address}"), None, Duration::from_secs(2));
    drawbridge_gateway::router(
        &LiveConfig::new(config),
        GatewayDeps {
            backend: Arc::new(backend),
            stores,
            metrics: Arc::new(Metrics::new()),
            tasks: scope.clone(),
            draining: CancellationToken::new(),
        },
    )
}

async fn send(router: &axum::Router, request: Request<Body>) -> (u16, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn keep_alives_models_and_usage_cross_the_hop() {
    let worker = Arc::new(
        FakeWorker::new("a")
            .models(&["kiro", "claude-sonnet-4.6"])
            .otherwise(Script::Steps(vec![
                Step::ActivityFor {
                    every: Duration::from_millis(100),
                    total: Duration::from_secs(1),
                },
                Step::Text("done".into()),
                Step::Finish(reported(3, 1, 0.25, Some(5.0))),
            ])),
    );
    let scope = Shutdown::new();
    let gateway = stack(&worker, &scope).await;

    let (status, body) = send(
        &gateway,
        Request::get("/v1/models")
            .header("authorization", format!("Bearer {KEY}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = serde_json::from_str::<Value>(&body).unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["claude-sonnet-4.6", "gpt-4o", "kiro"]);

    let request = json!({
        "model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "go"}],
    });
    let (status, body) = send(
        &gateway,
        Request::post("/v1/chat/completions")
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(Body::from(request.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text_at = body.find("\"content\":\"done\"").expect("the text");
    assert!(
        body[..text_at].contains(": keep-alive\n\n"),
        "the engine's keep-alives reach the client before the text: {body}"
    );
    assert!(body.contains("\"model\":\"gpt-4o\""), "{body}");
    assert!(
        body.contains(
            r#""drawbridge":{"tokens":"reported","credits":0.25,"context_usage_percent":5.0}"#
        ),
        "{body}"
    );
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert_eq!(worker.prompts()[0].model, "claude-sonnet-4.6");
    scope.cancel();
    assert!(scope.drain(Duration::from_secs(5)).await);
}
