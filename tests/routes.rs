//! Routes end to end: `drawbridge` with two ACP accounts (real `mock-acp-agent` processes)
//! and a provider account on a real `mock-provider`, all serving `kiro`, under a `fallback`
//! route: the Kiro accounts answer while they have credits (though the provider scores
//! better), and the provider takes over once they are spent. Who answered shows in the text
//! (the agent echoes the prompt, the provider prefixes it with "You said: "), in the mock's
//! own request counter, and in the admin API's accounts view and the metrics. And a route
//! changed in the file takes effect on SIGHUP, without a restart. And a target's `retry`
//! policy: an upstream that answers 503 twice, then recovers, keeps serving under
//! `on_status: [503]`, while under `on_status: [429]` its 503 sends the request on to the next
//! target.

use std::path::Path;

use nix::sys::signal::Signal;

use serde_json::{Value, json};
use test_support::process::Process;
use test_support::{AccountSpec, Client, Stack, StackOptions};

/// A running mock provider that wants `key`.
async fn upstream(dir: &Path, key: &str) -> Process {
    // The harness passes `--config` to every binary; the mock ignores it.
    let config = dir.join("mock-provider.yaml");
    std::fs::write(&config, "").unwrap();
    Process::start(
        "mock-provider",
        &config,
        &[("MOCK_PROVIDER_API_KEY", key)],
        &["http"],
    )
    .await
}

/// A running mock provider that wants `key` and answers its first `times` requests with
/// `status`.
async fn failing_upstream(dir: &Path, key: &str, status: u16, times: u64) -> Process {
    let config = dir.join("mock-provider-failing.yaml");
    std::fs::write(&config, "").unwrap();
    Process::start(
        "mock-provider",
        &config,
        &[
            ("MOCK_PROVIDER_API_KEY", key),
            ("MOCK_PROVIDER_FAIL_WITH", &status.to_string()),
            ("MOCK_PROVIDER_FAIL_TIMES", &times.to_string()),
        ],
        &["http"],
    )
    .await
}

/// How many chat requests the mock received.
async fn upstream_requests(mock: &Process) -> u64 {
    let stats = Client::new(format!("http://{}", mock.addr("http")), None)
        .get("/stats")
        .await
        .json();
    stats["chat_requests"].as_u64().unwrap()
}

fn ask(text: &str) -> Value {
    json!({"model": "kiro", "messages": [{"role": "user", "content": text}]})
}

fn content(reply: &test_support::Reply) -> String {
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every account's credits in the admin API's view (milli-credits; null: unmetered).
async fn credits(stack: &Stack) -> Vec<(String, Value)> {
    let reply = stack.admin().get("/admin/accounts").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = reply.json();
    let list = list
        .get("data")
        .and_then(Value::as_array)
        .or_else(|| list.as_array())
        .cloned()
        .unwrap_or_default();
    let mut credits: Vec<(String, Value)> = list
        .iter()
        .map(|a| {
            (
                a["account"].as_str().unwrap_or_default().to_owned(),
                a["credits"].clone(),
            )
        })
        .collect();
    credits.sort_by(|a, b| a.0.cmp(&b.0));
    credits
}

const FALLBACK: &str = "routes:\n  kiro:\n    strategy: fallback\n    targets:\n      - { accounts: [acct-1, acct-2] }\n      - { accounts: [openai-main] }\n";

/// `drawbridge` with two mock-agent accounts (`acct-1`, `acct-2`, one slot each, with
/// `credits`) and the provider account `openai-main` on `mock`, all serving `kiro`, and
/// `routes` (top-level YAML).
async fn stack(mock: &Process, key: &str, routes: &str, credits: Option<f64>) -> Stack {
    let account = |spec: AccountSpec| match credits {
        Some(credits) => spec.credits(credits),
        None => spec,
    };
    Stack::single(StackOptions {
        accounts: vec![account(AccountSpec::new(1)), account(AccountSpec::new(1))],
        // The provider has 8 slots to the agents' 1: without a route it would win.
        extra_accounts_yaml: format!(
            "  - id: openai-main\n    kind: openai\n    models: [kiro]\n    provider:\n      base_url: http://{}/v1\n      api_key: {key}\n      max_concurrency: 8\n",
            mock.addr("http")
        ),
        engine_yaml: routes.to_owned(),
        ..StackOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_route_serves_from_kiro_then_the_provider_once_kiro_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-route-0123456789";
    let mock = upstream(dir.path(), key).await;
    // Each mock-agent turn costs 0.01 credits: two turns per account.
    let stack = stack(&mock, key, FALLBACK, Some(0.02)).await;
    let client = stack.client();

    for i in 0..4 {
        let reply = client.chat(&ask(&format!("kiro turn {i}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let text = content(&reply);
        assert!(
            text.contains(&format!("kiro turn {i}")) && !text.starts_with("You said:"),
            "an agent answered turn {i}: {text}"
        );
    }
    assert_eq!(
        upstream_requests(&mock).await,
        0,
        "the provider was not called"
    );
    let spent = credits(&stack).await;
    assert_eq!(
        spent,
        [
            ("acct-1".to_owned(), json!(0)),
            ("acct-2".to_owned(), json!(0)),
            ("openai-main".to_owned(), Value::Null),
        ],
        "both Kiro accounts spent their grant"
    );

    for i in 0..2 {
        let reply = client.chat(&ask(&format!("provider turn {i}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), format!("You said: provider turn {i}"));
    }
    assert_eq!(upstream_requests(&mock).await, 2);
    // The metrics show the spent pool beside the provider that took over.
    let metrics = client.with_key(None).get("/metrics").await.text();
    for line in [
        "drawbridge_account_credits{account=\"acct-1\"} 0",
        "drawbridge_account_credits{account=\"acct-2\"} 0",
        "drawbridge_account_healthy{account=\"openai-main\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    // `/v1/models` still lists the routed model.
    let models = client.get("/v1/models").await;
    assert_eq!(models.status, 200, "{}", models.text());
    assert!(models.text().contains("\"kiro\""), "{}", models.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_changed_in_the_file_applies_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-route-0123456789";
    let mock = upstream(dir.path(), key).await;
    let single = |account: &str| {
        format!(
            "routes:\n  kiro:\n    strategy: single\n    targets:\n      - {{ accounts: [{account}] }}\n"
        )
    };
    let mut stack = stack(&mock, key, &single("acct-1"), None).await;
    let client = stack.client();
    let reply = client.chat(&ask("before")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        !content(&reply).starts_with("You said:"),
        "{}",
        content(&reply)
    );

    let path = stack.dir.path().join("drawbridge.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(&single("acct-1"), &single("openai-main")),
    )
    .unwrap();
    stack.processes[0].signal(Signal::SIGHUP);
    assert!(stack.wait_for_log("engine settings reloaded").await);

    for i in 0..2 {
        let reply = client.chat(&ask(&format!("after {i}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), format!("You said: after {i}"));
    }
    assert_eq!(upstream_requests(&mock).await, 2);
    stack.stop().await;
}

/// `drawbridge` with one mock-agent account and the provider accounts `flaky` (on `first`)
/// and `steady` (on `second`), under a fallback route whose first target, `flaky`, has
/// `retry`.
async fn retry_stack(first: &Process, second: &Process, key: &str, retry: &str) -> Stack {
    let provider = |id: &str, mock: &Process| {
        format!(
            "  - id: {id}\n    kind: openai\n    models: [kiro]\n    provider:\n      base_url: http://{}/v1\n      api_key: {key}\n",
            mock.addr("http")
        )
    };
    Stack::single(StackOptions {
        accounts: vec![AccountSpec::new(1)],
        extra_accounts_yaml: format!("{}{}", provider("flaky", first), provider("steady", second)),
        engine_yaml: format!(
            "routes:\n  kiro:\n    strategy: fallback\n    targets:\n      - {{ accounts: [flaky], retry: {retry} }}\n      - {{ accounts: [steady] }}\n"
        ),
        ..StackOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_retried_on_its_status_serves_once_its_upstream_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-route-0123456789";
    let flaky = failing_upstream(dir.path(), key, 503, 2).await;
    let steady = upstream(dir.path(), key).await;
    let stack = retry_stack(
        &flaky,
        &steady,
        key,
        "{ attempts: 3, on_status: [503], backoff: 50ms }",
    )
    .await;
    let reply = stack.client().chat(&ask("third time lucky")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(content(&reply), "You said: third time lucky");
    // Two 503s, then the answer, all from the first target's upstream.
    assert_eq!(upstream_requests(&flaky).await, 3);
    assert_eq!(upstream_requests(&steady).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_the_target_does_not_retry_goes_to_the_next_target() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-route-0123456789";
    let flaky = failing_upstream(dir.path(), key, 503, 2).await;
    let steady = upstream(dir.path(), key).await;
    let stack = retry_stack(&flaky, &steady, key, "{ attempts: 3, on_status: [429] }").await;
    let reply = stack.client().chat(&ask("next please")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(content(&reply), "You said: next please");
    assert_eq!(upstream_requests(&flaky).await, 1, "one 503, not retried");
    assert_eq!(upstream_requests(&steady).await, 1);
}
