//! The engine's time limits on paused time, with scripted workers: the idle limit between
//! chunks (a silent account is a failure: the answer resumes elsewhere), the first-byte limit
//! (the request moves on), and the request's deadline (it bounds everything).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::sync::Arc;
use std::time::Duration;

use drawbridge_engine::{Engine, EngineSettings, EngineState, WorkerConn};
use drawbridge_http::ChatContext;
use drawbridge_telemetry::Shutdown;
use drawbridge_types::openai::FinishReason;
use drawbridge_types::{ApiError, ChatCompletionRequest, CompletionEvent, ErrorKind};
use futures::StreamExt;
use test_support::fake_worker::{FakeWorker, Script};
use tokio::time::Instant;

/// Two chunks, then silence forever.
fn silent_after_two() -> Script {
    Script::Stalls(vec!["one ".to_owned(), "two ".to_owned()])
}

const IDLE: Duration = Duration::from_secs(30);
const FIRST_BYTE: Duration = Duration::from_secs(20);

/// An engine over `first` (three slots: the best score) and `second` (one slot).
async fn engine(first: Script, second: Script, request_timeout: Duration) -> Arc<Engine> {
    engine_with(first, second, request_timeout, |_| {}, Shutdown::new()).await
}

/// [`engine`] with its settings changed by `tweak`, its background tasks on `scope`.
async fn engine_with(
    first: Script,
    second: Script,
    request_timeout: Duration,
    tweak: impl FnOnce(&mut EngineSettings),
    scope: Shutdown,
) -> Arc<Engine> {
    let workers: Vec<Arc<dyn WorkerConn>> = vec![
        Arc::new(FakeWorker::new("first").slots(3).otherwise(first)).conn(),
        Arc::new(FakeWorker::new("second").slots(1).otherwise(second)).conn(),
    ];
    let mut settings = EngineSettings {
        idle_timeout: IDLE,
        first_byte_timeout: FIRST_BYTE,
        request_timeout,
        // These tests are about the limits, not keep-alives: a failure before the first
        // byte stays the `Err` of `chat` (see `liveness.rs` for the committed stream).
        keepalive_interval: Duration::from_secs(3600),
        ..EngineSettings::default()
    };
    tweak(&mut settings);
    let engine = Engine::new(workers, settings, EngineState::embedded(), scope);
    engine.refresh().await;
    engine
}

fn request() -> ChatCompletionRequest {
    test_support::backend::streamed_request()
}

fn ctx() -> ChatContext {
    test_support::backend::context()
}

/// Each account's breaker state, by account.
async fn breakers(engine: &Engine) -> std::collections::HashMap<String, String> {
    drawbridge_http::AccountsAdmin::accounts(engine)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.account, a.breaker))
        .collect()
}

/// The answer's text and how it ended.
async fn answer(engine: &Engine) -> (String, Result<FinishReason, ApiError>) {
    let mut events = engine.chat(request(), &ctx()).await.expect("started");
    let mut text = String::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(CompletionEvent::Delta(delta)) => text.push_str(&delta),
            Ok(CompletionEvent::Finish(finish)) => return (text, Ok(finish.finish_reason)),
            Ok(
                CompletionEvent::Reasoning(_)
                | CompletionEvent::KeepAlive
                | CompletionEvent::ToolCall { .. },
            ) => {}
            Err(error) => return (text, Err(error)),
        }
    }
    panic!("the answer ended without a finish or an error")
}

#[tokio::test(start_paused = true)]
async fn a_silent_account_fails_after_the_idle_limit_and_the_answer_resumes() {
    let engine = engine(
        silent_after_two(),
        Script::Continues,
        Duration::from_secs(600),
    )
    .await;
    let began = Instant::now();
    let (text, end) = answer(&engine).await;
    assert_eq!(text, "one two [after one two ]");
    assert_eq!(end.unwrap(), FinishReason::Stop);
    assert_eq!(
        began.elapsed(),
        IDLE,
        "exactly the idle limit, not the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_first_byte_moves_on_after_the_first_byte_limit() {
    let engine = engine(Script::Mute, Script::Continues, Duration::from_secs(600)).await;
    let began = Instant::now();
    let (text, end) = answer(&engine).await;
    assert_eq!(text, "whole");
    assert_eq!(end.unwrap(), FinishReason::Stop);
    assert_eq!(began.elapsed(), FIRST_BYTE);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_an_answer_that_no_account_can_finish_in_time() {
    // Both accounts go silent after two chunks; the deadline (40 s) comes before the second
    // one's idle limit would.
    let engine = engine(
        silent_after_two(),
        silent_after_two(),
        Duration::from_secs(40),
    )
    .await;
    let began = Instant::now();
    let (text, end) = answer(&engine).await;
    // 30 s: the first account is silent, the second resumes (and repeats, as this script
    // ignores the partial answer), then goes silent too: the deadline ends it at 40 s.
    assert_eq!(text, "one two one two ");
    let error = end.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert_eq!(began.elapsed(), Duration::from_secs(40));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_wait_for_a_first_byte() {
    let engine = engine(Script::Mute, Script::Mute, Duration::from_secs(25)).await;
    let began = Instant::now();
    let error = match engine.chat(request(), &ctx()).await {
        Err(error) => error,
        Ok(_) => panic!("no account answered, yet the answer started"),
    };
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    // 20 s for the first account's first byte, then 5 s of the second's before the deadline.
    assert_eq!(began.elapsed(), Duration::from_secs(25));
}

/// The request's deadline passing while an account answers is the request's limit, not the
/// account's failure: its breaker does not count it. The account that really went silent is
/// counted.
#[tokio::test(start_paused = true)]
async fn the_deadline_is_not_held_against_the_account_answering_when_it_passes() {
    let scope = Shutdown::new();
    let engine = engine_with(
        silent_after_two(),
        silent_after_two(),
        Duration::from_secs(40),
        |settings| settings.breaker.failure_threshold = 1,
        scope.clone(),
    )
    .await;
    let (_, end) = answer(&engine).await;
    assert_eq!(end.unwrap_err().kind, ErrorKind::Timeout);
    // The outcomes are written in the background: wait for those writes.
    assert!(scope.drain(Duration::from_secs(5)).await);
    let states = breakers(&engine).await;
    let breaker = |id: &str| states[id].clone();
    assert_eq!(
        breaker("first"),
        "open",
        "silent for the idle limit: a failure"
    );
    assert_eq!(
        breaker("second"),
        "closed",
        "cut by the deadline: not its failure"
    );
}

/// The same before the first byte: the account still waited on when the deadline passes is
/// not counted; the one that missed its first-byte limit is.
#[tokio::test(start_paused = true)]
async fn the_deadline_is_not_held_against_the_account_awaited_when_it_passes() {
    let scope = Shutdown::new();
    let engine = engine_with(
        Script::Mute,
        Script::Mute,
        Duration::from_secs(25),
        |settings| settings.breaker.failure_threshold = 1,
        scope.clone(),
    )
    .await;
    assert!(engine.chat(request(), &ctx()).await.is_err());
    assert!(scope.drain(Duration::from_secs(5)).await);
    let states = breakers(&engine).await;
    let breaker = |id: &str| states[id].clone();
    assert_eq!(breaker("first"), "open", "no first byte within its limit");
    assert_eq!(breaker("second"), "closed", "cut by the deadline");
}
