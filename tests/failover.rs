//! Failover in both shapes: an account that fails before the first byte is replaced silently;
//! one that fails after it is replaced by another account that continues the answer in the same
//! client stream; only when no account can continue does the stream end with an error chunk.

use serde_json::{Value, json};
use test_support::{AccountSpec, Reply, Stack, StackOptions, eventually};

fn go(stream: bool) -> Value {
    json!({"model": "kiro", "stream": stream, "messages": [{"role": "user", "content": "count for me"}]})
}

fn streamed_text(reply: &Reply) -> (String, Vec<Value>) {
    let chunks = reply.sse_chunks();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (text, chunks)
}

fn finishes(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .map(|c| c["choices"][0]["finish_reason"].clone())
        .collect()
}

/// The first account (three slots, so it scores highest) breaks as `first` says; the second
/// (one slot) answers with six numbered chunks, continuing a cut-off answer where it stopped.
fn options(first: &str, second: &str) -> StackOptions {
    StackOptions {
        accounts: vec![
            AccountSpec::new(3).behaviour(first),
            AccountSpec::new(1).behaviour(second),
        ],
        ..StackOptions::default()
    }
}

const ALL_SIX: &str = "chunk 0 chunk 1 chunk 2 chunk 3 chunk 4 chunk 5 ";

async fn resumes_after_the_first_byte(stack: Stack) {
    let client = stack.client();
    let reply = client.chat(&go(true)).await;
    assert_eq!(reply.status, 200);
    let (text, chunks) = streamed_text(&reply);
    assert_eq!(
        text, ALL_SIX,
        "the text before and after the splice arrives once each"
    );
    assert_eq!(finishes(&chunks), vec![json!("stop")]);
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "{chunks:?}"
    );
    assert!(
        stack
            .wait_for_log("answer resumed on another account")
            .await,
        "the first account really broke off and another resumed"
    );

    let reply = client.chat(&go(false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["choices"][0]["message"]["content"], ALL_SIX);
}

async fn ends_with_an_error_chunk_when_nobody_can_resume(stack: Stack) {
    let reply = stack.client().chat(&go(true)).await;
    assert_eq!(reply.status, 200);
    let (text, chunks) = streamed_text(&reply);
    assert_eq!(
        text, "chunk 0 chunk 1 ",
        "what was sent stays sent, nothing is repeated"
    );
    assert_eq!(finishes(&chunks), vec![json!("error")]);
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "upstream_error");
    assert_eq!(reply.sse_data().last().map(String::as_str), Some("[DONE]"));
    assert!(
        stack
            .wait_for_log("no account could resume the answer")
            .await
    );
}

async fn retries_before_the_first_byte(stack: Stack) {
    let reply = stack.client().chat(&go(true)).await;
    let (text, chunks) = streamed_text(&reply);
    assert_eq!(text, ALL_SIX);
    assert_eq!(finishes(&chunks), vec![json!("stop")]);
    assert!(
        stack
            .wait_for_log("turn failed before its first byte")
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_resumes_after_the_first_byte() {
    resumes_after_the_first_byte(Stack::single(options("crash after=2", "stream n=6")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_resume_after_the_first_byte() {
    resumes_after_the_first_byte(Stack::three(options("crash after=2", "stream n=6")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_ends_cleanly_when_no_account_can_resume() {
    ends_with_an_error_chunk_when_nobody_can_resume(
        Stack::single(options("crash after=2", "crash after=2")).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_end_cleanly_when_no_account_can_resume() {
    ends_with_an_error_chunk_when_nobody_can_resume(
        Stack::three(options("crash after=2", "crash after=2")).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_the_first_byte_is_invisible() {
    retries_before_the_first_byte(Stack::single(options("crash after=0", "stream n=6")).await)
        .await;
    retries_before_the_first_byte(Stack::three(options("crash after=0", "stream n=6")).await).await;
}

/// How often acct-1's circuit breaker entered `to` (the engine's metric).
async fn breaker_transitions(stack: &Stack, to: &str) -> f64 {
    stack
        .engine_metric(
            "drawbridge_breaker_transitions_total",
            &[("account", "acct-1"), ("to", to)],
        )
        .await
}

/// How many turns moved to another account before their first byte (the engine's metric).
async fn retries(stack: &Stack) -> f64 {
    stack
        .engine_metric("drawbridge_failovers_total", &[("kind", "retry")])
        .await
}

/// An account whose agent always fails is isolated after `failure_threshold` failures: later
/// requests go straight to the healthy account, and no client ever sees an error.
async fn a_failing_account_is_isolated(stack: Stack) {
    let client = stack.client();
    for i in 0..6 {
        let reply = client.chat(&go(false)).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.json()["choices"][0]["message"]["content"], ALL_SIX);
    }
    // The engine counts both before it answers: what it says now is final.
    assert_eq!(
        breaker_transitions(&stack, "open").await,
        1.0,
        "the failing account's breaker opened once"
    );
    assert_eq!(
        retries(&stack).await,
        2.0,
        "after two failures (each moved on to the healthy account) the account got no more traffic"
    );
    // On-call sees it: one of two accounts is out, so the service is degraded, and only the
    // healthy account's slot counts as available.
    // (Slot counts come with the engine's next refresh of the worker: wait for the last
    // request's slot to be reported free.)
    let health = eventually("the healthy account's slot is reported free", || async {
        let health = client.with_key(None).get("/health").await;
        assert_eq!(health.status, 200);
        let health = health.json();
        assert_eq!(health["status"], "degraded", "{health}");
        (health["available_slots"] == 1).then_some(health)
    })
    .await;
    assert_eq!(health["available_slots"], 1, "{health}");
}

fn breaker_options() -> StackOptions {
    StackOptions {
        engine_yaml: "health: { circuit_breaker: { failure_threshold: 2, window_size: 10, reset_timeout: 60s } }\n".to_owned(),
        ..options("crash after=0", "stream n=6")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_isolates_a_failing_account() {
    a_failing_account_is_isolated(Stack::single(breaker_options()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_isolate_a_failing_account() {
    a_failing_account_is_isolated(Stack::three(breaker_options()).await).await;
}

/// The failing account's agent gets fixed (its `while=` file disappears) while its breaker is
/// open: after `reset_timeout` a half-open probe finds it healthy, the breaker closes, and the
/// account takes traffic again. No client ever sees an error.
async fn a_fixed_account_is_restored_by_a_probe(stack: Stack, broken: &std::path::Path) {
    let client = stack.client();
    for i in 0..3 {
        let reply = client.chat(&go(false)).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.json()["choices"][0]["message"]["content"], ALL_SIX);
    }
    assert_eq!(breaker_transitions(&stack, "open").await, 1.0);
    std::fs::remove_file(broken).unwrap();
    // Until reset_timeout has passed the healthy account answers; then the probe goes to the
    // fixed one (the better score: three slots), which echoes.
    let restored = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let reply = client.chat(&go(false)).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            let content = reply.json()["choices"][0]["message"]["content"].clone();
            if content == "count for me" {
                return;
            }
            assert_eq!(content, ALL_SIX);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(restored.is_ok(), "the fixed account never got a probe");
    for state in ["half_open", "closed"] {
        assert_eq!(breaker_transitions(&stack, state).await, 1.0, "{state}");
    }
    // Closed again: it takes the traffic its score gives it.
    let reply = client.chat(&go(false)).await;
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "count for me"
    );
}

fn recovery_options(broken: &std::path::Path) -> StackOptions {
    std::fs::write(broken, "").unwrap();
    StackOptions {
        engine_yaml: "health: { circuit_breaker: { failure_threshold: 2, window_size: 10, reset_timeout: 1s } }\n".to_owned(),
        ..options(
            &format!("crash after=0 while={}", broken.display()),
            "stream n=6",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_restores_a_fixed_account_after_reset_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    let stack = Stack::single(recovery_options(&broken)).await;
    a_fixed_account_is_restored_by_a_probe(stack, &broken).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_restore_a_fixed_account_after_reset_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    let stack = Stack::three(recovery_options(&broken)).await;
    a_fixed_account_is_restored_by_a_probe(stack, &broken).await;
}

/// Engine settings for every process of a stack, as `DRAWBRIDGE_ENGINE__*` variables.
fn engine_env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| {
            (
                format!("DRAWBRIDGE_ENGINE__{}", key.to_uppercase()),
                (*value).to_owned(),
            )
        })
        .collect()
}

/// An agent that goes silent after its first chunks trips the engine's idle limit (long
/// before the worker's own, 300 s by default) and is treated like a crash: the answer resumes
/// on the other account, each chunk delivered once.
async fn a_silent_agent_is_a_failure(stack: Stack) {
    let started = tokio::time::Instant::now();
    let reply = stack.client().chat(&go(true)).await;
    assert_eq!(reply.status, 200);
    let (text, chunks) = streamed_text(&reply);
    assert_eq!(text, ALL_SIX);
    assert_eq!(finishes(&chunks), vec![json!("stop")]);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(stack.wait_for_log("The agent sent nothing for 500ms").await);
    assert!(
        stack
            .wait_for_log("answer resumed on another account")
            .await
    );
}

fn silent_options(first: &str) -> StackOptions {
    StackOptions {
        env: engine_env(&[("idle_timeout", "500ms"), ("first_byte_timeout", "500ms")]),
        ..options(first, "stream n=6")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_treats_a_silent_agent_like_a_crash() {
    a_silent_agent_is_a_failure(Stack::single(silent_options("hang after=2")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_treat_a_silent_agent_like_a_crash() {
    a_silent_agent_is_a_failure(Stack::three(silent_options("hang after=2")).await).await;
}

/// An agent that never sends its first byte fails after `first_byte_timeout`: the request
/// moves on to the other account before the client sees anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_first_byte_moves_the_request_on() {
    let stack = Stack::three(silent_options("hang after=0")).await;
    let reply = stack.client().chat(&go(false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["choices"][0]["message"]["content"], ALL_SIX);
    assert_eq!(
        retries(&stack).await,
        1.0,
        "acct-1 failed once, then acct-2 answered"
    );
    assert!(
        stack
            .wait_for_log("The agent sent nothing within 500ms")
            .await
    );
}

/// The total deadline is its own limit: with generous first-byte and idle limits, a request
/// whose only account hangs ends with 504 when `request_timeout` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_deadline_bounds_everything() {
    let stack = Stack::three(StackOptions {
        accounts: vec![AccountSpec::new(1).behaviour("hang after=0")],
        env: engine_env(&[("request_timeout", "1s")]),
        ..StackOptions::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let reply = stack.client().chat(&go(false)).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "timeout");
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(4),
        "{took:?}"
    );
}

/// The retry budget (the same account again) is separate from the rotation budget (other
/// accounts): with one retry, a crashing account is tried twice before the next one answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_tries_the_same_account_again() {
    let stack = Stack::single(StackOptions {
        env: engine_env(&[("retries_per_account", "1")]),
        ..options("crash after=0", "stream n=6")
    })
    .await;
    let reply = stack.client().chat(&go(false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["choices"][0]["message"]["content"], ALL_SIX);
    assert_eq!(retries(&stack).await, 1.0, "one move to the other account");
    let end = ["chat completion ended"];
    assert_eq!(
        stack
            .log_lines_once_ended(&["turn failed before its first byte", "acct-1"], 2, &end)
            .await,
        2
    );
    assert_eq!(
        stack
            .log_lines_once_ended(&["trying the same account again", "acct-1"], 1, &end)
            .await,
        1
    );
}
