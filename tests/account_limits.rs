//! Accounts whose provider says "no": an agent that reports its quota is spent (Kiro's monthly
//! limit) marks its account exhausted (credits 0) until an operator tops it up; one that
//! reports a rate limit rests its account for the time it asks. Meanwhile the other account
//! serves every request, and the client sees no error; when every account is limited, the
//! client gets 429 at once.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use test_support::stack::CHANNEL_KEY;
use test_support::{AccountSpec, Client, Stack, StackOptions};

fn ask(text: &str) -> Value {
    json!({"model": "kiro", "messages": [{"role": "user", "content": text}]})
}

fn content(reply: &test_support::Reply) -> Value {
    reply.json()["choices"][0]["message"]["content"].clone()
}

const ALL_SIX: &str = "chunk 0 chunk 1 chunk 2 chunk 3 chunk 4 chunk 5 ";

/// acct-1 (three slots: the best score) fails as `limited` while `flag` exists; acct-2 (one
/// slot) answers six numbered chunks.
fn limited_and_healthy(limited: &str, flag: &Path) -> StackOptions {
    std::fs::write(flag, "").unwrap();
    StackOptions {
        accounts: vec![
            AccountSpec::new(3).behaviour(&format!("{limited} while={}", flag.display())),
            AccountSpec::new(1).behaviour("stream n=6"),
        ],
        ..StackOptions::default()
    }
}

/// The turns that failed before their first byte and moved to another account (the engine's
/// metric, counted before it answers). Only acct-1 fails in these tests.
async fn failures_of_acct_1(stack: &Stack) -> f64 {
    stack
        .engine_metric("drawbridge_failovers_total", &[("kind", "retry")])
        .await
}

fn engine_api(stack: &Stack) -> Client {
    Client::new(
        format!("http://{}", stack.processes[1].addr("engine")),
        Some(CHANNEL_KEY),
    )
}

async fn credits_of(engine: &Client, account: &str) -> Value {
    let accounts = engine.get("/internal/accounts").await.json();
    accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .map(|a| a["credits"].clone())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_account_is_skipped_until_topped_up() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("quota-spent");
    let stack = Stack::three(limited_and_healthy("quota", &flag)).await;
    let client = stack.client();
    for i in 0..4 {
        let reply = client.chat(&ask("hello")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(content(&reply), ALL_SIX);
    }
    assert_eq!(
        failures_of_acct_1(&stack).await,
        1.0,
        "tried once, then skipped"
    );
    assert!(stack.wait_for_log("account quota spent").await);
    let engine = engine_api(&stack);
    assert_eq!(credits_of(&engine, "acct-1").await, 0);

    // The operator tops it up (after the provider's new month): it serves again.
    std::fs::remove_file(&flag).unwrap();
    let topped = engine
        .post_json("/internal/accounts/acct-1/credits", &json!({"add": 5000}))
        .await;
    assert_eq!(topped.status, 200, "{}", topped.text());
    let reply = client.chat(&ask("hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(content(&reply), "hello", "acct-1 (an echo now) answered");
    assert_eq!(failures_of_acct_1(&stack).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_account_rests_for_the_time_it_asks() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("throttled");
    let stack = Stack::single(limited_and_healthy("rate_limit retry_after=2", &flag)).await;
    let client = stack.client();
    let reply = client.chat(&ask("hello")).await;
    let limited_at = tokio::time::Instant::now();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(content(&reply), ALL_SIX);
    assert!(stack.wait_for_log("account rate limited; resting it").await);
    assert_eq!(
        stack
            .log_lines_once_ended(
                &["account rate limited", "acct-1", "rest_ms=2000"],
                1,
                &["chat completion ended"]
            )
            .await,
        1,
        "the agent's Retry-After was read"
    );
    // The provider would let it through again now, but it rests until its time has passed.
    std::fs::remove_file(&flag).unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let reply = client.chat(&ask("hello")).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            if content(&reply) == "hello" {
                return limited_at.elapsed();
            }
            assert_eq!(content(&reply), ALL_SIX);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the account comes back after its rest");
    assert!(
        back >= Duration::from_millis(1500),
        "it rested only {back:?} of the 2 s it asked"
    );
    assert_eq!(failures_of_acct_1(&stack).await, 1.0);
}

async fn every_account_limited_gives_429(client: &Client, stack: &Stack) {
    let refused = client.chat(&ask("hello")).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((25..=30).contains(&retry_after), "{retry_after}");
    // The second request does not even try the resting account.
    let again = client.chat(&ask("hello")).await;
    assert_eq!(again.status, 429, "{}", again.text());
    let failed = ["turn failed before its first byte", "acct-1"];
    assert_eq!(
        stack
            .log_lines_once_ended(&failed, 1, &["chat completion ended"])
            .await,
        1
    );
}

async fn every_account_spent_gives_429(client: &Client) {
    for _ in 0..2 {
        let refused = client.chat(&ask("hello")).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        let error = &refused.json()["error"];
        assert_eq!(error["code"], "insufficient_quota", "{error}");
        assert_eq!(error["type"], "insufficient_quota", "{error}");
    }
}

fn only(behaviour: &str) -> StackOptions {
    StackOptions {
        accounts: vec![AccountSpec::new(1).behaviour(behaviour)],
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_answers_429_when_every_account_is_limited() {
    let stack = Stack::single(only("rate_limit retry_after=30")).await;
    every_account_limited_gives_429(&stack.client(), &stack).await;
    let stack = Stack::single(only("quota")).await;
    every_account_spent_gives_429(&stack.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_answer_429_when_every_account_is_limited() {
    let stack = Stack::three(only("rate_limit retry_after=30")).await;
    every_account_limited_gives_429(&stack.client(), &stack).await;
    let stack = Stack::three(only("quota")).await;
    every_account_spent_gives_429(&stack.client()).await;
}

/// A rate limit in the middle of an answer is a failure after the first byte like any other:
/// the answer resumes on the other account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_mid_answer_resumes_elsewhere() {
    let stack = Stack::three(StackOptions {
        accounts: vec![
            AccountSpec::new(3).behaviour("rate_limit after=2"),
            AccountSpec::new(1).behaviour("stream n=6"),
        ],
        ..StackOptions::default()
    })
    .await;
    let reply = stack
        .client()
        .chat(&json!({"model": "kiro", "stream": true, "messages": [{"role": "user", "content": "count"}]}))
        .await;
    assert_eq!(reply.status, 200);
    let text = reply.sse_text();
    assert_eq!(text, ALL_SIX);
    assert!(
        stack
            .wait_for_log("answer resumed on another account")
            .await
    );
    assert!(stack.wait_for_log("account rate limited; resting it").await);
}
