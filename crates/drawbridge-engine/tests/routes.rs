//! Routes (`routes`), through the engine's router with scripted workers on paused time: the
//! order a fallback route tries its targets in, a load-balanced route's spread, a route
//! keeping a model on its own accounts, the fastest target winning, a rule on the client's
//! model name, a reload changing a route, and session affinity inside a route.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drawbridge_config::{Config, Role};
use drawbridge_engine::{Engine, EngineSettings, EngineState, WorkerConn};
use drawbridge_state::{AffinityStore, EmbeddedCredits, EmbeddedRouting};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::{ApiError, CreditChange, ErrorKind};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use test_support::eventually;
use test_support::fake_worker::{FakeWorker, Script, Step};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Every account the tests' workers serve (a route may name only configured accounts).
const ACCOUNTS: &str = "
accounts:
  - { id: kiro-1 }
  - { id: kiro-2 }
  - { id: openai }
  - { id: other }
";

struct Harness {
    router: axum::Router,
    engine: Arc<Engine>,
    /// The breakers, cooldowns and affinity bindings the engine keeps.
    routing: Arc<EmbeddedRouting>,
}

fn config(routes: &str) -> Config {
    let config = Config::from_yaml(&format!("{ACCOUNTS}{routes}")).unwrap();
    config.validate(Role::Engine).unwrap();
    config
}

async fn harness(routes: &str, workers: &[&Arc<FakeWorker>]) -> Harness {
    let config = config(routes);
    let conns: Vec<Arc<dyn WorkerConn>> = workers.iter().map(|w| w.conn()).collect();
    let routing = Arc::new(EmbeddedRouting::new());
    let state = EngineState {
        credits: Arc::new(EmbeddedCredits::new()),
        breakers: routing.clone(),
        cooldowns: routing.clone(),
        affinity: routing.clone(),
    };
    let engine = Engine::new(
        conns,
        EngineSettings::from_config(&config),
        state,
        Shutdown::new(),
    );
    engine.refresh().await;
    let router = drawbridge_engine::router(Arc::clone(&engine), &config, CancellationToken::new());
    Harness {
        router,
        engine,
        routing,
    }
}

/// A JSON answer to `go` on `model`.
async fn ask(h: &Harness, model: &str) -> (StatusCode, Value) {
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"model": model, "messages": [{"role": "user", "content": "go"}]}).to_string(),
        ))
        .unwrap();
    let response = h.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn spend(h: &Harness, account: &str) {
    h.engine
        .change_credits(account, CreditChange::Set(Some(0)))
        .await
        .unwrap();
}

fn upstream() -> ApiError {
    ApiError::new(ErrorKind::Upstream, "agent crashed")
}

const FALLBACK: &str = "
engine: { max_attempts: 3 }
routes:
  kiro:
    strategy: fallback
    targets:
      - { accounts: [kiro-1, kiro-2] }
      - { accounts: [openai] }
";

#[tokio::test(start_paused = true)]
async fn fallback_serves_from_the_first_target_until_its_accounts_are_spent() {
    // The provider has the best score by far: without the route it would take everything.
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").slots(1));
    let kiro_2 = Arc::new(FakeWorker::new("kiro-2").slots(1));
    let openai = Arc::new(FakeWorker::new("openai").slots(8));
    let h = harness(FALLBACK, &[&kiro_1, &kiro_2, &openai]).await;
    for _ in 0..4 {
        let (status, answer) = ask(&h, "kiro").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    assert_eq!(kiro_1.prompts().len() + kiro_2.prompts().len(), 4);
    assert!(
        !kiro_1.prompts().is_empty() && !kiro_2.prompts().is_empty(),
        "near ties rotate inside the group"
    );
    assert!(openai.prompts().is_empty());
    // One account of the group spent: the other one still serves.
    spend(&h, "kiro-1").await;
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(kiro_2.prompts().len() + kiro_1.prompts().len(), 5);
    assert!(openai.prompts().is_empty());
    // The whole group spent: the next target.
    spend(&h, "kiro-2").await;
    for _ in 0..2 {
        assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    }
    assert_eq!(openai.prompts().len(), 2);
    assert_eq!(kiro_1.prompts().len() + kiro_2.prompts().len(), 5);
    // Everything spent: 429 quota, as without a route.
    spend(&h, "openai").await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "insufficient_quota");
}

#[tokio::test(start_paused = true)]
async fn a_broken_first_target_fails_over_to_the_next_within_the_request() {
    let kiro_1 = Arc::new(
        FakeWorker::new("kiro-1")
            .slots(2)
            .then(Script::Fails(upstream())),
    );
    let kiro_2 = Arc::new(
        FakeWorker::new("kiro-2")
            .slots(1)
            .then(Script::Fails(upstream())),
    );
    let openai = Arc::new(FakeWorker::new("openai").slots(8));
    let h = harness(FALLBACK, &[&kiro_1, &kiro_2, &openai]).await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The group's accounts first (the better score first), then the next target.
    let tried: Vec<usize> = [&kiro_1, &kiro_2, &openai]
        .iter()
        .map(|w| w.prompts().len())
        .collect();
    assert_eq!(tried, [1, 1, 1]);
    // With a rotation budget of 2 the provider is never reached: the group's error stands.
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").then(Script::Fails(upstream())));
    let kiro_2 = Arc::new(FakeWorker::new("kiro-2").then(Script::Fails(upstream())));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(
        &FALLBACK.replace("max_attempts: 3", "max_attempts: 2"),
        &[&kiro_1, &kiro_2, &openai],
    )
    .await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert!(openai.prompts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn loadbalance_spreads_by_weight() {
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1"));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(
        "
routes:
  kiro:
    strategy: loadbalance
    targets:
      - { accounts: [kiro-1], weight: 3 }
      - { accounts: [openai], weight: 1 }
",
        &[&kiro_1, &openai],
    )
    .await;
    for _ in 0..400 {
        assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    }
    let (kiro, openai) = (kiro_1.prompts().len(), openai.prompts().len());
    assert_eq!(kiro + openai, 400);
    // 300 / 100 expected; a weighted draw stays well inside ±40.
    assert!((260..=340).contains(&kiro), "kiro {kiro}, openai {openai}");
}

#[tokio::test(start_paused = true)]
async fn a_route_keeps_a_model_on_its_own_accounts() {
    let best = Arc::new(FakeWorker::new("other").slots(8));
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").slots(1));
    let h = harness(
        "routes: { kiro: { strategy: single, targets: [{ accounts: [kiro-1] }] } }",
        &[&best, &kiro_1],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    }
    assert_eq!(kiro_1.prompts().len(), 3);
    // Its account spent: 429 quota, and the account outside the route still gets nothing.
    spend(&h, "kiro-1").await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "insufficient_quota");
    assert!(best.prompts().is_empty());
    // The model stays listed.
    assert!(h.engine.model_ids().contains(&"kiro".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn least_latency_measures_each_target_then_keeps_the_fastest() {
    let slow = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Steps(vec![
        Step::Wait(Duration::from_millis(800)),
        Step::Text("slow".into()),
        Step::Finished,
    ])));
    let fast = Arc::new(FakeWorker::new("kiro-2").otherwise(Script::Steps(vec![
        Step::Wait(Duration::from_millis(50)),
        Step::Text("fast".into()),
        Step::Finished,
    ])));
    let h = harness(
        "routes: { kiro: { strategy: least-latency, targets: [{ accounts: [kiro-1] }, { accounts: [kiro-2] }] } }",
        &[&slow, &fast],
    )
    .await;
    for _ in 0..6 {
        assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    }
    assert_eq!(slow.prompts().len(), 1, "measured once, then avoided");
    assert_eq!(fast.prompts().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_conditional_route_follows_the_name_the_client_used() {
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").slots(8));
    let openai = Arc::new(FakeWorker::new("openai").slots(1));
    let h = harness(
        "
model_aliases: { cheap: kiro, plain: kiro }
routes:
  kiro:
    strategy: conditional
    targets:
      - { accounts: [openai], when: { model: cheap } }
      - { accounts: [kiro-1], when: { model_prefix: ki } }
",
        &[&kiro_1, &openai],
    )
    .await;
    assert_eq!(ask(&h, "cheap").await.0, StatusCode::OK);
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(openai.prompts().len(), 1);
    assert_eq!(kiro_1.prompts().len(), 1);
    assert_eq!(
        openai.prompts()[0].model,
        "kiro",
        "the agent is asked for the target"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_changes_a_route() {
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").slots(8));
    let openai = Arc::new(FakeWorker::new("openai").slots(1));
    let h = harness(
        "routes: { kiro: { targets: [{ accounts: [kiro-1] }] } }",
        &[&kiro_1, &openai],
    )
    .await;
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(kiro_1.prompts().len(), 1);
    h.engine.apply_settings(EngineSettings::from_config(&config(
        "routes: { kiro: { targets: [{ accounts: [openai] }] } }",
    )));
    for _ in 0..2 {
        assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    }
    assert_eq!(served(&[&kiro_1, &openai]), [1, 2]);
    // The route removed: credit-aware over every account again (the better score wins).
    h.engine
        .apply_settings(EngineSettings::from_config(&config("")));
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(kiro_1.prompts().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_bound_conversation_stays_inside_its_route_and_moves_when_the_route_leaves_it() {
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").slots(8));
    let other = Arc::new(FakeWorker::new("other").slots(8));
    let affinity = "engine: { affinity: { enabled: true } }\n";
    let fallback = format!(
        "{affinity}routes: {{ kiro: {{ strategy: fallback, targets: [{{ accounts: [kiro-1] }}, {{ accounts: [other] }}] }} }}"
    );
    let h = harness(&fallback, &[&kiro_1, &other]).await;
    let in_session = || {
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("x-session-id", "conversation-1")
            .body(Body::from(
                json!({"model": "kiro", "messages": [{"role": "user", "content": "go"}]})
                    .to_string(),
            ))
            .unwrap()
    };
    let session = |h: &Harness| {
        let router = h.router.clone();
        async move { router.oneshot(in_session()).await.unwrap().status() }
    };
    // The first target spent: the second serves the conversation, which binds to it.
    spend(&h, "kiro-1").await;
    assert_eq!(session(&h).await, StatusCode::OK);
    assert_eq!(other.prompts().len(), 1);
    // The binding is written in the background (the key: the tenant, then the session).
    let digest = Sha256::new()
        .chain_update(b"anonymous")
        .chain_update([0u8])
        .chain_update(b"s:conversation-1")
        .finalize();
    let key = drawbridge_core::hex::encode(&digest);
    eventually("the conversation is bound", || async {
        h.routing.affinity(&key).await.unwrap().as_deref() == Some("other")
    })
    .await;
    // The first target back: the conversation keeps its account (it is in the route) ...
    h.engine
        .change_credits("kiro-1", CreditChange::Set(Some(1_000_000)))
        .await
        .unwrap();
    assert_eq!(session(&h).await, StatusCode::OK);
    assert_eq!(served(&[&kiro_1, &other]), [0, 2]);
    // ... while a request without a conversation takes the first target.
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(kiro_1.prompts().len(), 1);
    // A reload drops its account from the route: the conversation moves into the route.
    h.engine
        .apply_settings(EngineSettings::from_config(&config(&format!(
            "{affinity}routes: {{ kiro: {{ targets: [{{ accounts: [kiro-1] }}] }} }}"
        ))));
    assert_eq!(session(&h).await, StatusCode::OK);
    assert_eq!(served(&[&kiro_1, &other]), [2, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_conditional_rule_on_the_key_sees_the_tenant_the_gateway_names() {
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").slots(8));
    let openai = Arc::new(FakeWorker::new("openai").slots(1));
    let h = harness(
        "
engine:
  channel_keys: [{ name: gateway, key: ck-gateway, trust_tenant: true }]
routes:
  kiro:
    strategy: conditional
    targets:
      - { accounts: [openai], when: { key: batch } }
      - { accounts: [kiro-1] }
",
        &[&kiro_1, &openai],
    )
    .await;
    for tenant in ["static.batch", "static.interactive", "key_123"] {
        let request = Request::post("/v1/chat/completions")
            .header("authorization", "Bearer ck-gateway")
            .header(drawbridge_http::TENANT_HEADER, tenant)
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"model": "kiro", "messages": [{"role": "user", "content": "go"}]})
                    .to_string(),
            ))
            .unwrap();
        let response = h.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{tenant}");
    }
    // The batch key's request on its own target; the others on the default one.
    assert_eq!(served(&[&openai, &kiro_1]), [1, 2]);
}

/// A fallback route whose first target (kiro-1) has `retry` (a YAML flow mapping), the second
/// `openai`.
fn retrying(retry: &str) -> String {
    format!(
        "
engine: {{ max_attempts: 3 }}
routes:
  kiro:
    strategy: fallback
    targets:
      - {{ accounts: [kiro-1], retry: {retry} }}
      - {{ accounts: [openai] }}
"
    )
}

/// The times between successive turns a worker was sent, in milliseconds.
/// How many turns each worker was sent, in order.
fn served(workers: &[&FakeWorker]) -> Vec<usize> {
    workers.iter().map(|w| w.prompts().len()).collect()
}

fn gaps_ms(worker: &FakeWorker) -> Vec<u128> {
    worker
        .sent_at()
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_target_is_tried_its_attempts_then_the_route_moves_on() {
    // Failing every turn: three tries of the first target (the same account again), then the
    // next target.
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(upstream())));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(&retrying("{ attempts: 3 }"), &[&kiro_1, &openai]).await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(served(&[&kiro_1, &openai]), [3, 1]);
    // Failing twice: the third try serves, the next target is never asked.
    let kiro_1 = Arc::new(
        FakeWorker::new("kiro-1")
            .then(Script::Fails(upstream()))
            .then(Script::Fails(upstream())),
    );
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(&retrying("{ attempts: 3 }"), &[&kiro_1, &openai]).await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(served(&[&kiro_1, &openai]), [3, 0]);
    // Without `retry`, one try (`retries_per_account` is 0) and the next target.
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(upstream())));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(FALLBACK, &[&kiro_1, &openai]).await;
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(served(&[&kiro_1, &openai]), [1, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_target_with_several_accounts_counts_its_tries_over_them() {
    // Both kiro accounts rate limited for a minute: each rests after its try, and the target's
    // third try has no account left, so the route moves on after two.
    let limited = || {
        ApiError::new(ErrorKind::AccountRateLimited, "slow down")
            .with_retry_after(Duration::from_secs(60))
    };
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(limited())));
    let kiro_2 = Arc::new(FakeWorker::new("kiro-2").otherwise(Script::Fails(limited())));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(
        &FALLBACK.replace(
            "{ accounts: [kiro-1, kiro-2] }",
            "{ accounts: [kiro-1, kiro-2], retry: { attempts: 2, on_status: [429] } }",
        ),
        &[&kiro_1, &kiro_2, &openai],
    )
    .await;
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(served(&[&kiro_1, &kiro_2, &openai]), [1, 1, 1]);
    // An upstream failure tries the same account again, up to the target's attempts.
    let kiro_1 = Arc::new(
        FakeWorker::new("kiro-1")
            .slots(8)
            .otherwise(Script::Fails(upstream())),
    );
    let kiro_2 = Arc::new(FakeWorker::new("kiro-2").slots(1));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(
        &FALLBACK.replace(
            "{ accounts: [kiro-1, kiro-2] }",
            "{ accounts: [kiro-1, kiro-2], retry: { attempts: 2 } }",
        ),
        &[&kiro_1, &kiro_2, &openai],
    )
    .await;
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(
        served(&[&kiro_1, &kiro_2, &openai]),
        [2, 0, 1],
        "the better-scored account twice, then the next target"
    );
}

#[tokio::test(start_paused = true)]
async fn a_status_outside_on_status_moves_to_the_next_target_at_once() {
    // The provider's own status is what `on_status` matches (503 here, though the client
    // would see the kind's 502).
    let unavailable = || upstream().with_upstream_status(503);
    for (retry, first_target_tries) in [
        ("{ attempts: 3, on_status: [429] }", 1),
        ("{ attempts: 3, on_status: [502] }", 1),
        ("{ attempts: 3, on_status: [503] }", 3),
        // By default: what another try may get past (an upstream failure is).
        ("{ attempts: 3 }", 3),
    ] {
        let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(unavailable())));
        let openai = Arc::new(FakeWorker::new("openai"));
        let h = harness(&retrying(retry), &[&kiro_1, &openai]).await;
        let (status, answer) = ask(&h, "kiro").await;
        assert_eq!(status, StatusCode::OK, "{retry}: {answer}");
        assert_eq!(
            served(&[&kiro_1, &openai]),
            [first_target_tries, 1],
            "{retry}"
        );
    }
    // An account without an upstream status fails with its kind's: 502 for an upstream
    // failure.
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(upstream())));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(
        &retrying("{ attempts: 2, on_status: [502] }"),
        &[&kiro_1, &openai],
    )
    .await;
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(served(&[&kiro_1, &openai]), [2, 1]);
    // A client error is the client's, whatever the list says: no retry, no next target.
    let refused = ApiError::invalid_request("bad temperature").with_upstream_status(400);
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(refused)));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(
        &retrying("{ attempts: 3, on_status: [400, 502] }"),
        &[&kiro_1, &openai],
    )
    .await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(served(&[&kiro_1, &openai]), [1, 0]);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_doubles_between_a_targets_tries() {
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(upstream())));
    let openai = Arc::new(FakeWorker::new("openai"));
    // Four failures in a row: health.circuit_breaker must not open at the third.
    let h = harness(
        &format!(
            "health: {{ circuit_breaker: {{ failure_threshold: 5 }} }}{}",
            retrying("{ attempts: 4, backoff: 100ms }")
        ),
        &[&kiro_1, &openai],
    )
    .await;
    let began = tokio::time::Instant::now();
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(gaps_ms(&kiro_1), [100, 200, 400]);
    // The next target is a new one: no wait before its first try.
    let to_openai = openai.sent_at()[0] - *kiro_1.sent_at().last().unwrap();
    assert_eq!(to_openai.as_millis(), 0);
    assert_eq!(began.elapsed().as_millis(), 700);
    // No backoff: no wait.
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(upstream())));
    let h = harness(&retrying("{ attempts: 3 }"), &[&kiro_1, &openai]).await;
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(gaps_ms(&kiro_1), [0, 0]);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_a_backoff_short() {
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(upstream())));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(
        &retrying("{ attempts: 3, backoff: 800ms }")
            .replace("max_attempts: 3", "max_attempts: 3, request_timeout: 1s"),
        &[&kiro_1, &openai],
    )
    .await;
    let began = tokio::time::Instant::now();
    let (status, answer) = ask(&h, "kiro").await;
    // Tries at 0 and 800 ms; the next wait (1600 ms) ends at the deadline, with no try.
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{answer}");
    assert_eq!(gaps_ms(&kiro_1), [800]);
    assert_eq!(began.elapsed().as_millis(), 1000);
    assert!(openai.prompts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_targets_breaker_opens_after_its_own_threshold_while_others_keep_the_default() {
    // health.circuit_breaker: 3 failures open a breaker; kiro-1's target says 1.
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(upstream())));
    let kiro_2 = Arc::new(FakeWorker::new("kiro-2").otherwise(Script::Fails(upstream())));
    let h = harness(
        "
engine: { max_attempts: 3 }
health: { circuit_breaker: { failure_threshold: 3, window_size: 10, reset_timeout: 60s } }
routes:
  kiro:
    strategy: fallback
    targets:
      - { accounts: [kiro-1], circuit_breaker: { failure_threshold: 1 } }
      - { accounts: [kiro-2] }
",
        &[&kiro_1, &kiro_2],
    )
    .await;
    let breaker = |h: &Harness, account: &str| {
        h.engine
            .account_views()
            .into_iter()
            .find(|v| v.account == account)
            .map(|v| v.breaker)
            .unwrap()
    };
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(served(&[&kiro_1, &kiro_2]), [1, 1]);
    eventually("kiro-1's breaker opens after one failure", || async {
        h.engine.breaker_transitions() == [("kiro-1".to_owned(), "open", 1)]
    })
    .await;
    assert_eq!(breaker(&h, "kiro-1"), "open");
    assert_eq!(breaker(&h, "kiro-2"), "closed");
    // kiro-1 is skipped now; kiro-2 opens at its third failure, as health.circuit_breaker says.
    for _ in 0..2 {
        assert_eq!(ask(&h, "kiro").await.0, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(served(&[&kiro_1, &kiro_2]), [1, 3]);
    eventually("kiro-2's breaker opens after three failures", || async {
        h.engine
            .breaker_transitions()
            .contains(&("kiro-2".to_owned(), "open", 1))
    })
    .await;
    assert_eq!(breaker(&h, "kiro-2"), "open");
}

#[tokio::test(start_paused = true)]
async fn a_reload_changes_a_targets_breaker() {
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(upstream())));
    // health.circuit_breaker: five failures open a breaker.
    let route = |breaker: &str| {
        format!(
            "health: {{ circuit_breaker: {{ failure_threshold: 5 }} }}\nroutes: {{ kiro: {{ targets: [{{ accounts: [kiro-1]{breaker} }}] }} }}"
        )
    };
    let h = harness(&route(""), &[&kiro_1]).await;
    for _ in 0..2 {
        assert_eq!(ask(&h, "kiro").await.0, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(
        h.engine.settings().breaker_for("kiro-1"),
        h.engine.settings().breaker
    );
    // The window holds two failures; under the reloaded override the third opens it.
    h.engine
        .apply_settings(EngineSettings::from_config(&config(&route(
            ", circuit_breaker: { failure_threshold: 3 }",
        ))));
    assert_eq!(
        h.engine.settings().breaker_for("kiro-1").failure_threshold,
        3
    );
    assert!(h.engine.breaker_transitions().is_empty());
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::BAD_GATEWAY);
    eventually(
        "kiro-1's breaker opens under the reloaded settings",
        || async { h.engine.breaker_transitions() == [("kiro-1".to_owned(), "open", 1)] },
    )
    .await;
    assert_eq!(kiro_1.prompts().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_request_done_with_every_target_it_may_use_gets_the_last_failure() {
    // The only target whose rule matches moves on after a rate limit (not in its
    // `on_status`): the client gets that rate limit, not a missing model.
    let limited = ApiError::new(ErrorKind::AccountRateLimited, "slow down")
        .with_retry_after(Duration::from_secs(30));
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").otherwise(Script::Fails(limited)));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(
        "
model_aliases: { cheap: kiro }
routes:
  kiro:
    strategy: conditional
    targets:
      - { accounts: [kiro-1], when: { model_prefix: ki }, retry: { attempts: 3, on_status: [503] } }
      - { accounts: [openai], when: { model: cheap } }
",
        &[&kiro_1, &openai],
    )
    .await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "rate_limit_exceeded", "{answer}");
    assert_eq!(served(&[&kiro_1, &openai]), [1, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_within_the_backoff_is_waited_a_longer_one_rests_the_account() {
    let limited = |after_ms: u64| {
        ApiError::new(ErrorKind::AccountRateLimited, "slow down")
            .with_retry_after(Duration::from_millis(after_ms))
    };
    let retry = "{ attempts: 2, on_status: [429], backoff: 200ms }";
    // Back after 100 ms: the backoff of 200 ms covers it, the same account answers.
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").then(Script::Fails(limited(100))));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(&retrying(retry), &[&kiro_1, &openai]).await;
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(served(&[&kiro_1, &openai]), [2, 0]);
    assert_eq!(gaps_ms(&kiro_1), [200]);
    // Back after a second: not awaited; the account rests and the next target answers.
    let kiro_1 = Arc::new(FakeWorker::new("kiro-1").then(Script::Fails(limited(1000))));
    let openai = Arc::new(FakeWorker::new("openai"));
    let h = harness(&retrying(retry), &[&kiro_1, &openai]).await;
    let began = tokio::time::Instant::now();
    assert_eq!(ask(&h, "kiro").await.0, StatusCode::OK);
    assert_eq!(served(&[&kiro_1, &openai]), [1, 1]);
    assert!(began.elapsed() < Duration::from_secs(1));
}
