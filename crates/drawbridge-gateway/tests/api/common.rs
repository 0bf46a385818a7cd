//! The gateway's router in process, on a scripted backend and an in-memory store that share
//! one clock driven by tokio's paused time: requests go through `oneshot`, no socket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use drawbridge_config::Config;
use drawbridge_gateway::{GatewayDeps, Stores};
use drawbridge_state::{EmbeddedGatewayStore, EmbeddedResponses};
use drawbridge_telemetry::{LiveConfig, Metrics, Shutdown};
use serde_json::{Value, json};
use test_support::ScriptedBackend;
use tower::ServiceExt as _;

pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
/// The config's static key (`ops`, no rate limit of its own).
pub const STATIC_KEY: &str = "sk-static-ops-0123456789";
pub const MODEL: &str = "kiro";

pub struct Gateway {
    router: axum::Router,
    pub backend: Arc<ScriptedBackend>,
    pub store: Arc<EmbeddedGatewayStore>,
    /// The usage writes of ended answers.
    pub usage_writes: Shutdown,
}

pub use test_support::Reply;

/// The config of the tests: an admin token, one static key, plus `gateway_yaml` (indented
/// lines under `gateway:`).
pub fn config(gateway_yaml: &str, with_admin: bool) -> Config {
    let admin = if with_admin {
        format!("admin: {{ auth_token: {ADMIN_TOKEN} }}\n")
    } else {
        String::new()
    };
    let yaml = format!(
        "{admin}gateway:\n  api_keys: [{{ name: ops, key: {STATIC_KEY}, rpm: 0 }}]\n{gateway_yaml}"
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"))
}

impl Gateway {
    /// The gateway of [`config`]`(gateway_yaml, true)`.
    pub fn start(gateway_yaml: &str) -> Gateway {
        Gateway::with_config(config(gateway_yaml, true))
    }

    /// Inside a tokio runtime (the clock starts at its time now).
    pub fn with_config(config: Config) -> Gateway {
        let clock = test_support::clock::paused(test_support::clock::SOME_DAY_MS);
        let store = Arc::new(EmbeddedGatewayStore::in_memory().with_clock(clock.clone()));
        let stores = Stores {
            keys: store.clone(),
            limiter: store.clone(),
            usage: store.clone(),
            responses: Arc::new(EmbeddedResponses::new()),
            clock,
        };
        let backend = Arc::new(ScriptedBackend::new(&[MODEL, "other-model"]));
        let live = LiveConfig::new(config);
        let usage_writes = Shutdown::new();
        let router = drawbridge_gateway::router(
            &live,
            GatewayDeps {
                backend: backend.clone(),
                stores,
                metrics: Arc::new(Metrics::new()),
                tasks: usage_writes.clone(),
                draining: Shutdown::new().token().clone(),
            },
        );
        Gateway {
            router,
            backend,
            store,
            usage_writes,
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `POST /v1/chat/completions` with `key` and `body`.
    pub async fn chat(&self, key: Option<&str>, body: Value) -> Reply {
        self.request(Method::POST, "/v1/chat/completions", key, Some(body))
            .await
    }

    /// An admin request with the admin token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.request(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// A key made with the admin API: its id and its secret.
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let reply = self.admin(Method::POST, "/admin/keys", Some(body)).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let key = reply.json();
        (
            key["id"].as_str().unwrap().to_owned(),
            key["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Wait until every usage write of the answers so far has landed.
    pub async fn settle(&self) {
        assert!(
            self.usage_writes.drain(Duration::from_secs(5)).await,
            "usage writes still running"
        );
    }
}

/// A one-message chat request for `model`.
pub fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}
