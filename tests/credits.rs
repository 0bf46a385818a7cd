//! Credits end to end: finished turns are charged against an account's configured grant, an
//! account whose credits are spent gets no traffic, a model whose accounts are all spent gets a
//! clear 429 `insufficient_quota` (not a hang), and a top-up through the engine's internal API
//! brings the account back.

use serde_json::{Value, json};
use test_support::stack::{API_KEY, CHANNEL_KEY};
use test_support::{AccountSpec, Client, Stack, StackOptions, eventually};

fn ask(text: &str) -> Value {
    json!({"model": "kiro", "messages": [{"role": "user", "content": text}]})
}

/// Each turn of the mock agent reports 0.01 credits (10 milli-credits).
fn tiny(accounts: Vec<AccountSpec>) -> StackOptions {
    StackOptions {
        accounts,
        ..StackOptions::default()
    }
}

fn engine_api(stack: &Stack) -> Client {
    Client::new(
        format!("http://{}", stack.processes[1].addr("engine")),
        Some(CHANNEL_KEY),
    )
}

/// The balance the engine shows for `account`, in milli-credits.
async fn balance(engine: &Client, account: &str) -> Value {
    let reply = engine.get("/internal/accounts").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .map(|a| a["credits"].clone())
        .unwrap_or_else(|| panic!("no {account} in {}", reply.text()))
}

async fn spends_its_credits_then_answers_429(client: &Client) {
    // 25 milli-credits: three turns of 10 (the third takes the last 5), then none.
    for i in 0..3 {
        let reply = client.chat(&ask(&format!("turn {i}"))).await;
        assert_eq!(reply.status, 200, "turn {i}: {}", reply.text());
    }
    let refused = client.chat(&ask("one more")).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "insufficient_quota", "{error}");
    assert_eq!(error["type"], "insufficient_quota", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("credits"),
        "{error}"
    );
    // Streamed requests get the same status before any stream starts.
    let streamed = client
        .chat(&json!({"model": "kiro", "stream": true, "messages": [{"role": "user", "content": "s"}]}))
        .await;
    assert_eq!(streamed.status, 429, "{}", streamed.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_spends_credits_then_refuses_with_429() {
    let stack = Stack::single(tiny(vec![AccountSpec::new(2).credits(0.025)])).await;
    spends_its_credits_then_answers_429(&stack.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_spend_credits_and_a_top_up_brings_the_account_back() {
    let stack = Stack::three(tiny(vec![AccountSpec::new(2).credits(0.025)])).await;
    let engine = engine_api(&stack);
    assert_eq!(balance(&engine, "acct-1").await, 25);
    spends_its_credits_then_answers_429(&stack.client()).await;
    assert_eq!(balance(&engine, "acct-1").await, 0, "never below zero");

    let topped = engine
        .post_json("/internal/accounts/acct-1/credits", &json!({"add": 1000}))
        .await;
    assert_eq!(topped.status, 200, "{}", topped.text());
    assert_eq!(topped.json(), json!({"account": "acct-1", "credits": 1000}));
    let reply = stack.client().chat(&ask("back")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "back");
    assert_eq!(balance(&engine, "acct-1").await, 990);

    // Unmetered: never exhausted, shown without a balance.
    let unmetered = engine
        .post_json("/internal/accounts/acct-1/credits", &json!({"set": null}))
        .await;
    assert_eq!(unmetered.json()["credits"], Value::Null);
    assert_eq!(balance(&engine, "acct-1").await, Value::Null);

    // Bad changes are 400 naming the field; unknown accounts 404; a client key is refused.
    let negative = engine
        .post_json("/internal/accounts/acct-1/credits", &json!({"add": -5}))
        .await;
    assert_eq!(negative.status, 400, "{}", negative.text());
    assert_eq!(negative.json()["error"]["param"], "add");
    let unknown = engine
        .post_json("/internal/accounts/nobody/credits", &json!({"add": 5}))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let outsider = engine
        .with_key(Some(API_KEY))
        .post_json("/internal/accounts/acct-1/credits", &json!({"add": 5}))
        .await;
    assert_eq!(outsider.status, 401, "{}", outsider.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_never_drives_a_balance_below_zero() {
    let stack = Stack::three(tiny(vec![AccountSpec::new(3).credits(0.05)])).await;
    let client = stack.client();
    let burst = (0..12).map(|i| {
        let client = client.clone();
        async move { client.chat(&ask(&format!("burst {i}"))).await.status }
    });
    let statuses = futures::future::join_all(burst).await;
    // Turns are charged when they finish, so a burst admitted together may all be served; what
    // is left afterwards is never below zero, and the account is exhausted.
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.iter().filter(|s| **s == 200).count() >= 5);
    let engine = engine_api(&stack);
    let left = eventually("the burst spends the whole balance", || async {
        let left = balance(&engine, "acct-1").await;
        assert!(left.as_i64().unwrap() >= 0, "{left}");
        (left == 0).then_some(left)
    })
    .await;
    assert_eq!(left, 0);
    assert_eq!(client.chat(&ask("after")).await.status, 429);
}
