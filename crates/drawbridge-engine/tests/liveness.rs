//! Liveness is any frame, on paused time with scripted workers: activity meets the first-byte
//! limit and feeds the idle limit, text alone decides whether a failure is after the first
//! byte (before it, the next account starts from scratch), and a streamed answer that shows
//! nothing for `keepalive_interval` commits and keeps its client alive.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use drawbridge_config::Config;
use drawbridge_engine::{Engine, EngineSettings, EngineState, WorkerConn};
use drawbridge_http::ChatContext;
use drawbridge_telemetry::Shutdown;
use drawbridge_telemetry::metrics::Metrics;
use drawbridge_types::worker::PromptBody;
use drawbridge_types::{ApiError, ChatCompletionRequest, CompletionEvent, ErrorKind};
use futures::StreamExt;
use http_body_util::BodyExt as _;
use serde_json::Value;
use test_support::fake_worker::{FakeWorker, Script, Step};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const TWO: Duration = Duration::from_secs(2);

/// Activity every 500 ms for `total`.
fn activity(total: Duration) -> Step {
    Step::ActivityFor {
        every: Duration::from_millis(500),
        total,
    }
}

/// `first` (three slots: picked first) and `second` (one slot).
fn workers(first: Script, second: Script) -> (Arc<FakeWorker>, Arc<FakeWorker>) {
    (
        Arc::new(FakeWorker::new("first").slots(3).otherwise(first)),
        Arc::new(FakeWorker::new("second").slots(1).otherwise(second)),
    )
}

async fn engine(workers: &[&Arc<FakeWorker>], settings: EngineSettings) -> Arc<Engine> {
    let conns: Vec<Arc<dyn WorkerConn>> = workers.iter().map(|w| w.conn()).collect();
    let engine = Engine::new(conns, settings, EngineState::embedded(), Shutdown::new());
    engine.refresh().await;
    engine
}

/// First byte and idle limits of 2 s; keep-alives out of the way.
fn two_second_limits() -> EngineSettings {
    EngineSettings {
        first_byte_timeout: TWO,
        idle_timeout: TWO,
        keepalive_interval: Duration::from_secs(3600),
        ..EngineSettings::default()
    }
}

fn request() -> ChatCompletionRequest {
    test_support::backend::streamed_request()
}

fn ctx() -> ChatContext {
    test_support::backend::context()
}

/// The answer's events, up to its end.
async fn events(engine: &Engine) -> Vec<Result<CompletionEvent, ApiError>> {
    let events = engine.chat(request(), &ctx()).await.expect("started");
    events.collect().await
}

fn text(events: &[Result<CompletionEvent, ApiError>]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(CompletionEvent::Delta(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The value of the sample `name` with `labels`, if counted.
fn sample(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.snapshot().value(name, labels)
}

#[tokio::test(start_paused = true)]
async fn a_long_tool_phase_with_activity_is_not_a_silence() {
    let (first, second) = workers(
        Script::Steps(vec![
            activity(Duration::from_secs(10)),
            Step::Text("hello".into()),
            Step::Finished,
        ]),
        Script::answer(&["other"]),
    );
    let engine = engine(&[&first, &second], two_second_limits()).await;
    let began = Instant::now();
    let events = events(&engine).await;
    assert_eq!(text(&events), "hello");
    assert!(matches!(
        events.last(),
        Some(Ok(CompletionEvent::Finish(_)))
    ));
    assert_eq!(began.elapsed(), Duration::from_secs(10));
    assert_eq!(first.prompts().len(), 1);
    assert!(second.prompts().is_empty(), "no failover");
    assert_eq!(
        sample(&engine.metrics(), "drawbridge_failovers_total", &[]),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn silence_after_activity_fails_over_from_scratch() {
    // Activity for 3 s, then nothing: the idle limit (2 s) ends it at 5 s; nothing of the
    // answer was shown, so the second account starts it again (not a resumption).
    let (first, second) = workers(
        Script::Steps(vec![activity(Duration::from_secs(3))]),
        Script::answer(&["whole"]),
    );
    let engine = engine(&[&first, &second], two_second_limits()).await;
    let began = Instant::now();
    let events = events(&engine).await;
    assert_eq!(text(&events), "whole");
    assert_eq!(began.elapsed(), Duration::from_secs(5));
    let prompts = second.prompts();
    assert_eq!(prompts.len(), 1);
    assert!(
        matches!(prompts[0].body, PromptBody::Messages(_)),
        "{:?}",
        prompts[0].body
    );
    let Some(Ok(CompletionEvent::Finish(finish))) = events.last() else {
        panic!("no finish: {events:?}");
    };
    assert_eq!(finish.metering.accounts, vec!["second".to_owned()]);
    let metrics = engine.metrics();
    assert_eq!(
        sample(&metrics, "drawbridge_failovers_total", &[("kind", "retry")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "drawbridge_failovers_total",
            &[("kind", "resume")]
        ),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_after_reasoning_before_text_starts_again_elsewhere() {
    let (first, second) = workers(
        Script::Steps(vec![
            Step::Reasoning("let me think".into()),
            Step::Fail(ApiError::upstream("the agent crashed")),
        ]),
        Script::answer(&["whole"]),
    );
    let engine = engine(&[&first, &second], two_second_limits()).await;
    let events = events(&engine).await;
    assert_eq!(text(&events), "whole");
    assert_eq!(
        events[0],
        Ok(CompletionEvent::Reasoning("let me think".into())),
        "reasoning is shown as it comes"
    );
    assert!(matches!(second.prompts()[0].body, PromptBody::Messages(_)));
}

#[tokio::test(start_paused = true)]
async fn without_activity_the_first_byte_limit_still_holds() {
    let (first, second) = workers(
        Script::Steps(vec![
            Step::Wait(Duration::from_secs(3)),
            Step::Text("late".into()),
        ]),
        Script::answer(&["whole"]),
    );
    let engine = engine(&[&first, &second], two_second_limits()).await;
    let began = Instant::now();
    let events = events(&engine).await;
    assert_eq!(text(&events), "whole");
    assert_eq!(began.elapsed(), TWO);
}

// ---- keep-alive, through the engine's router ----

const KEEPALIVE_CONFIG: &str = "
engine:
  keepalive_interval: 10s
  first_byte_timeout: 15s
  idle_timeout: 15s
";

async fn engine_router(workers: &[&Arc<FakeWorker>]) -> axum::Router {
    let config = Config::from_yaml(KEEPALIVE_CONFIG).unwrap();
    let engine = engine(workers, EngineSettings::from_config(&config)).await;
    drawbridge_engine::router(engine, &config, CancellationToken::new())
}

async fn chat(router: &axum::Router, stream: bool) -> (StatusCode, String) {
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            serde_json::json!({
                "model": "kiro",
                "stream": stream,
                "messages": [{"role": "user", "content": "go"}],
            })
            .to_string(),
        ))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The SSE body's blocks in order: `keep-alive` for a comment, else the `data` payload.
fn blocks(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|b| match b.strip_prefix("data: ") {
            Some(data) => data.to_owned(),
            None => {
                assert_eq!(b, ": keep-alive");
                "keep-alive".to_owned()
            }
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_quiet_streamed_answer_is_kept_alive_until_its_text() {
    // Activity for 25 s: keep-alives at 10 s and 20 s, then the text.
    let (first, second) = workers(
        Script::Steps(vec![
            activity(Duration::from_secs(25)),
            Step::Text("hello".into()),
            Step::Finished,
        ]),
        Script::answer(&["other"]),
    );
    let router = engine_router(&[&first, &second]).await;
    let (status, body) = chat(&router, true).await;
    assert_eq!(status, StatusCode::OK);
    let blocks = blocks(&body);
    assert_eq!(blocks[..2], ["keep-alive", "keep-alive"], "{blocks:?}");
    let chunk: Value = serde_json::from_str(&blocks[2]).unwrap();
    assert_eq!(chunk["choices"][0]["delta"]["content"], "hello");
    assert_eq!(blocks.last().unwrap(), "[DONE]");
    assert_eq!(
        blocks.iter().filter(|b| *b == "keep-alive").count(),
        2,
        "none after the text: {blocks:?}"
    );
    assert!(second.prompts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_committed_stream_fails_over_inside_and_ends_with_the_error_chunk() {
    // The first account is mute (15 s first-byte limit), the second too: the stream was
    // committed at 10 s, so the end is the error chunk and [DONE], not a status.
    let (first, second) = workers(Script::Mute, Script::Mute);
    let router = engine_router(&[&first, &second]).await;
    let (status, body) = chat(&router, true).await;
    assert_eq!(status, StatusCode::OK);
    let blocks = blocks(&body);
    assert_eq!(blocks[0], "keep-alive");
    assert_eq!(blocks.last().unwrap(), "[DONE]");
    let error: Value = serde_json::from_str(&blocks[blocks.len() - 2]).unwrap();
    assert_eq!(error["choices"][0]["finish_reason"], "error");
    assert_eq!(error["error"]["code"], "timeout", "{error}");
    assert_eq!(second.prompts().len(), 1, "failed over inside the stream");
    // And a failover that finds an answer continues the same stream.
    let (first, second) = workers(Script::Mute, Script::answer(&["late but here"]));
    let answering = engine_router(&[&first, &second]).await;
    let (status, body) = chat(&answering, true).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(": keep-alive\n\n"), "{body}");
    assert!(body.contains("late but here"), "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn a_non_streamed_answer_never_commits_early() {
    let (first, second) = workers(Script::Mute, Script::Mute);
    let router = engine_router(&[&first, &second]).await;
    let (status, body) = chat(&router, false).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "timeout");
    assert!(!body.contains("keep-alive"));
}

#[tokio::test(start_paused = true)]
async fn an_early_refusal_keeps_its_status_on_a_stream() {
    let (first, second) = workers(Script::Mute, Script::Mute);
    let router = engine_router(&[&first, &second]).await;
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"model": "nope", "stream": true, "messages": [{"role": "user", "content": "go"}]}"#,
        ))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], ErrorKind::ModelNotFound.code());
}
