//! What an answer says, through the engine's router with scripted workers: model aliases and
//! the model list, reasoning shown, dropped or folded, and honest usage (`usage.drawbridge`)
//! in the JSON answer, the usage chunk and the metrics.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drawbridge_config::Config;
use drawbridge_engine::{Engine, EngineSettings, EngineState, WorkerConn};
use drawbridge_telemetry::Shutdown;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use test_support::fake_worker::{FakeWorker, Script, Step, reported};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

struct Harness {
    router: axum::Router,
    engine: Arc<Engine>,
}

async fn harness(config: &str, workers: &[&Arc<FakeWorker>]) -> Harness {
    let config = Config::from_yaml(config).unwrap();
    let conns: Vec<Arc<dyn WorkerConn>> = workers.iter().map(|w| w.conn()).collect();
    let engine = Engine::new(
        conns,
        EngineSettings::from_config(&config),
        EngineState::embedded(),
        Shutdown::new(),
    );
    engine.refresh().await;
    let router = drawbridge_engine::router(Arc::clone(&engine), &config, CancellationToken::new());
    Harness { router, engine }
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn chat(h: &Harness, body: Value) -> (StatusCode, String) {
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(&h.router, request).await
}

/// A JSON answer to `go` on `model`.
async fn ask(h: &Harness, model: &str) -> (StatusCode, Value) {
    let (status, body) = chat(
        h,
        json!({"model": model, "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    (status, serde_json::from_str(&body).unwrap())
}

/// A streamed answer to `go` on `kiro`, with usage: its chunks (without `[DONE]`).
async fn stream(h: &Harness) -> Vec<Value> {
    let (status, body) = chat(
        h,
        json!({
            "model": "kiro", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "go"}],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    body.split("\n\n")
        .filter_map(|b| b.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

// ---- model aliases ----

const ALIASES: &str = "
model_aliases:
  gpt-4o: claude-sonnet-4.6
  claude-sonnet: claude-sonnet-4.6
  ghost: model-nobody-serves
";

#[tokio::test(start_paused = true)]
async fn an_alias_runs_on_the_accounts_that_serve_its_target() {
    // The second account has the better score but not the target.
    let sonnet = Arc::new(
        FakeWorker::new("sonnet")
            .slots(1)
            .models(&["kiro", "claude-sonnet-4.6"]),
    );
    let plain = Arc::new(FakeWorker::new("plain").slots(5));
    let h = harness(ALIASES, &[&sonnet, &plain]).await;
    for _ in 0..3 {
        let (status, answer) = ask(&h, "gpt-4o").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["model"], "gpt-4o", "the name the client asked for");
    }
    let prompts = sonnet.prompts();
    assert_eq!(prompts.len(), 3);
    assert!(prompts.iter().all(|p| p.model == "claude-sonnet-4.6"));
    assert!(plain.prompts().is_empty());
    // A catalogue id asked for directly is sent as it is.
    let (status, _) = ask(&h, "claude-sonnet-4.6").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sonnet.prompts()[3].model, "claude-sonnet-4.6");
}

#[tokio::test(start_paused = true)]
async fn unknown_models_and_unserved_aliases_are_404_before_anything_is_sent() {
    let worker = Arc::new(FakeWorker::new("a").models(&["kiro", "claude-sonnet-4.6"]));
    let h = harness(ALIASES, &[&worker]).await;
    for model in ["gpt-5", "ghost"] {
        let (status, error) = ask(&h, model).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{model}: {error}");
        assert_eq!(error["error"]["code"], "model_not_found");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(model),
            "names the client's model: {message}"
        );
    }
    assert!(worker.prompts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_model_list_is_every_served_model_and_alias() {
    let a = Arc::new(FakeWorker::new("a").models(&["kiro", "claude-sonnet-4.6"]));
    let b = Arc::new(FakeWorker::new("b").models(&["kiro", "claude-haiku-4.5"]));
    let h = harness(ALIASES, &[&a, &b]).await;
    let (status, body) = send(
        &h.router,
        Request::get("/v1/models").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "claude-haiku-4.5",
            "claude-sonnet",
            "claude-sonnet-4.6",
            "gpt-4o",
            "kiro"
        ],
        "sorted, each once, no alias of an unserved model"
    );
    for model in list["data"].as_array().unwrap() {
        assert_eq!(model["object"], "model");
        assert_eq!(model["owned_by"], "drawbridge");
    }
    // `/internal/accounts` shows what each account serves.
    let (_, body) = send(
        &h.router,
        Request::get("/internal/accounts")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let accounts: Value = serde_json::from_str(&body).unwrap();
    let a_models = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["account"] == "a")
        .unwrap()["models"]
        .clone();
    assert_eq!(a_models, json!(["kiro", "claude-sonnet-4.6"]));
}

#[tokio::test(start_paused = true)]
async fn aliases_follow_a_reload() {
    let worker = Arc::new(FakeWorker::new("a").models(&["kiro", "claude-sonnet-4.6"]));
    let h = harness("{}", &[&worker]).await;
    assert_eq!(ask(&h, "gpt-4o").await.0, StatusCode::NOT_FOUND);
    let reloaded = Config::from_yaml(ALIASES).unwrap();
    h.engine
        .apply_settings(EngineSettings::from_config(&reloaded));
    assert_eq!(ask(&h, "gpt-4o").await.0, StatusCode::OK);
    assert!(h.engine.model_ids().contains(&"gpt-4o".to_owned()));
}

// ---- reasoning ----

fn thinker() -> Arc<FakeWorker> {
    Arc::new(FakeWorker::new("a").otherwise(Script::Steps(vec![
        Step::Reasoning("hmm, ".into()),
        Step::Activity,
        Step::Reasoning("ok".into()),
        Step::Text("The answer".into()),
        Step::Text(" is 4.".into()),
        Step::Finished,
    ])))
}

fn reasoning_config(mode: &str) -> String {
    format!("engine: {{ reasoning: {mode} }}")
}

#[tokio::test(start_paused = true)]
async fn reasoning_on_streams_reasoning_content_and_keeps_it_off_the_text() {
    let worker = thinker();
    let h = harness(&reasoning_config("on"), &[&worker]).await;
    let chunks = stream(&h).await;
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).map(|c| &c["delta"]))
        .collect();
    assert_eq!(
        deltas[0],
        &json!({"role": "assistant", "reasoning_content": "hmm, "})
    );
    assert_eq!(deltas[1], &json!({"reasoning_content": "ok"}));
    assert_eq!(deltas[2], &json!({"content": "The answer"}));
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::OK);
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], "The answer is 4.");
    assert_eq!(message["reasoning_content"], "hmm, ok");
}

#[tokio::test(start_paused = true)]
async fn reasoning_off_drops_it() {
    let worker = thinker();
    let h = harness(&reasoning_config("off"), &[&worker]).await;
    let chunks = stream(&h).await;
    assert!(
        chunks
            .iter()
            .all(|c| c.to_string().find("reasoning_content").is_none()),
        "{chunks:?}"
    );
    let (_, answer) = ask(&h, "kiro").await;
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], "The answer is 4.");
    assert!(message.get("reasoning_content").is_none(), "{message}");
}

#[tokio::test(start_paused = true)]
async fn reasoning_fold_puts_it_before_the_answer_in_think_tags() {
    let worker = thinker();
    let h = harness(&reasoning_config("fold"), &[&worker]).await;
    let (_, answer) = ask(&h, "kiro").await;
    let message = &answer["choices"][0]["message"];
    assert_eq!(
        message["content"],
        "<think>hmm, ok</think>\n\nThe answer is 4."
    );
    assert!(message.get("reasoning_content").is_none(), "{message}");
    let text: String = stream(&h)
        .await
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "<think>hmm, ok</think>\n\nThe answer is 4.");
}

#[tokio::test(start_paused = true)]
async fn folded_reasoning_is_part_of_what_a_resumption_continues() {
    let first = Arc::new(
        FakeWorker::new("first")
            .slots(3)
            .otherwise(Script::Steps(vec![
                Step::Reasoning("plan".into()),
                Step::Text("The ans".into()),
                Step::Fail(drawbridge_types::ApiError::upstream("the agent crashed")),
            ])),
    );
    let second = Arc::new(
        FakeWorker::new("second")
            .slots(1)
            .otherwise(Script::Continues),
    );
    let h = harness(&reasoning_config("fold"), &[&first, &second]).await;
    let (status, answer) = ask(&h, "kiro").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    match &second.prompts()[0].body {
        drawbridge_types::worker::PromptBody::Resume { partial, .. } => {
            assert_eq!(partial, "<think>plan</think>\n\nThe ans");
        }
        other => panic!("not a resumption: {other:?}"),
    }
}

// ---- continuing an answer another engine began ----

const GATEWAY_KEY: &str = "db-channel-gateway-0001";
const OTHER_KEY: &str = "db-channel-other-00002";

/// Channel keys: the gateway's, trusted to speak for clients, and another caller's.
fn channel_keys() -> String {
    format!(
        "engine:\n  channel_keys:\n    - {{ name: gateway, key: {GATEWAY_KEY}, trust_tenant: true }}\n    - {{ name: other, key: {OTHER_KEY} }}\n"
    )
}

/// The gateway's request to continue "The ans", with `key`: the status, the resume header of
/// the answer, and its chunks.
async fn continue_with(h: &Harness, key: &str) -> (StatusCode, Option<String>, Vec<Value>) {
    let body = json!({
        "model": "kiro", "stream": true, "stream_options": {"include_usage": true},
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "The ans"},
        ],
    });
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header(drawbridge_http::RESUME_HEADER, "continue")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = h.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let confirmed = response
        .headers()
        .get(drawbridge_http::RESUME_HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let chunks = String::from_utf8(bytes.to_vec())
        .unwrap()
        .split("\n\n")
        .filter_map(|b| b.strip_prefix("data: ").map(str::to_owned))
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str(&d).unwrap())
        .collect();
    (status, confirmed, chunks)
}

fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_gateway_may_ask_for_the_rest_of_an_answer_another_engine_began() {
    let worker = Arc::new(FakeWorker::new("a").otherwise(Script::Continues));
    let h = harness(&channel_keys(), &[&worker]).await;
    let (status, confirmed, chunks) = continue_with(&h, GATEWAY_KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(confirmed.as_deref(), Some("continued"));
    match &worker.prompts()[0].body {
        drawbridge_types::worker::PromptBody::Resume { messages, partial } => {
            assert_eq!(partial, "The ans");
            assert_eq!(messages.len(), 1, "the partial is not a message of its own");
        }
        other => panic!("not a resumption: {other:?}"),
    }
    // Only the rest is sent; the usage covers the whole answer, estimated.
    assert_eq!(text_of(&chunks), "[after The ans]");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["drawbridge"]["tokens"], "estimated");
    assert_eq!(
        usage["completion_tokens"],
        drawbridge_core::tokens::estimate_tokens("The ans[after The ans]")
    );
}

#[tokio::test(start_paused = true)]
async fn only_a_trusted_caller_may_ask_for_the_rest() {
    let worker = Arc::new(FakeWorker::new("a").otherwise(Script::Continues));
    let h = harness(&channel_keys(), &[&worker]).await;
    let (status, confirmed, chunks) = continue_with(&h, OTHER_KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(confirmed, None, "the answer is a whole one, and says so");
    assert!(matches!(
        worker.prompts()[0].body,
        drawbridge_types::worker::PromptBody::Messages(_)
    ));
    assert_eq!(text_of(&chunks), "whole");
}

// ---- honest usage ----

#[tokio::test(start_paused = true)]
async fn reported_usage_credits_and_context_go_out_with_the_answer() {
    let worker = Arc::new(FakeWorker::new("a").otherwise(Script::Steps(vec![
        Step::Text("hi".into()),
        Step::Finish(reported(12, 7, 0.5, Some(42.5))),
    ])));
    let h = harness("{}", &[&worker]).await;
    let (_, answer) = ask(&h, "kiro").await;
    assert_eq!(
        answer["usage"],
        json!({
            "prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
            "drawbridge": {"tokens": "reported", "credits": 0.5, "context_usage_percent": 42.5},
        })
    );
    let chunks = stream(&h).await;
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["drawbridge"]["tokens"], "reported");
    assert_eq!(usage["usage"]["drawbridge"]["credits"], 0.5);
    // Only the usage chunk carries usage (OpenAI's `include_usage` rule).
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null())
    );
    // The metrics count the source, the credits and the context use.
    let (_, metrics) = send(
        &h.router,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(
        metrics.contains(
            r#"drawbridge_tokens_total{model="kiro",kind="prompt",source="reported"} 24"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"drawbridge_credits_total{model="kiro"} 1.0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"drawbridge_context_usage_percent_count{model="kiro"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn estimated_usage_says_so_and_shows_no_credits() {
    let worker = Arc::new(FakeWorker::new("a"));
    let h = harness("{}", &[&worker]).await;
    let (_, answer) = ask(&h, "kiro").await;
    assert_eq!(
        answer["usage"]["drawbridge"],
        json!({"tokens": "estimated"})
    );
    let (_, metrics) = send(
        &h.router,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(
        metrics.contains(
            r#"drawbridge_tokens_total{model="kiro",kind="prompt",source="estimated"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_answer_is_estimated() {
    let first = Arc::new(
        FakeWorker::new("first")
            .slots(3)
            .otherwise(Script::Steps(vec![
                Step::Text("one ".into()),
                Step::Fail(drawbridge_types::ApiError::upstream("the agent crashed")),
            ])),
    );
    let second = Arc::new(
        FakeWorker::new("second")
            .slots(1)
            .otherwise(Script::Steps(vec![
                Step::Text("two".into()),
                Step::Finish(reported(12, 7, 0.5, Some(10.0))),
            ])),
    );
    let h = harness("{}", &[&first, &second]).await;
    let (_, answer) = ask(&h, "kiro").await;
    assert_eq!(answer["choices"][0]["message"]["content"], "one two");
    let details = &answer["usage"]["drawbridge"];
    assert_eq!(details["tokens"], "estimated", "{details}");
    assert_eq!(details["credits"], 0.5);
    assert_eq!(details["context_usage_percent"], 10.0);
}
