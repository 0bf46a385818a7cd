//! Hot reload: a worker takes new, changed and removed accounts from its config file on SIGHUP
//! (or when the file changes), without a restart and without dropping the answer in flight; a
//! bad file changes nothing and the log says why.

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use test_support::{WorkerUnderTest, eventually};

const ACCOUNT_A: &str = "  - id: a\n    pool_size: 1\n    models: [kiro]\n    agent: { command: __AGENT__, env: { MOCK_ACP_DELAY_MS: \"30\" } }\n";

fn sizes(slots: &Value) -> Vec<(String, u64)> {
    let mut sizes: Vec<(String, u64)> = slots["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["account"].as_str().unwrap().to_owned(),
                a["size"].as_u64().unwrap(),
            )
        })
        .collect();
    sizes.sort();
    sizes
}

/// Rewrite the worker's config file with `edit` applied to its text, then send SIGHUP.
fn edit_and_hangup(worker: &WorkerUnderTest, edit: impl Fn(&str) -> String) {
    let path = worker.dir.path().join("worker.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
    worker.process.signal(Signal::SIGHUP);
}

#[tokio::test]
async fn a_worker_reloads_its_accounts_without_dropping_the_answer_in_flight() {
    let worker = WorkerUnderTest::start("", ACCOUNT_A, &[]).await;
    let client = worker.client();
    assert_eq!(
        sizes(
            &worker
                .wait_for_slots(|s| s["accounts"][0]["idle"] == 1)
                .await
        ),
        vec![("a".to_owned(), 1)]
    );

    // An answer of 40 chunks × 30 ms is in flight on account a while a's settings change.
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .post_json(
                    "/prompt",
                    &json!({"model": "kiro", "prompt": "[[mock:stream n=40]]", "stream": true, "account": "a"}),
                )
                .await
        })
    };
    worker
        .wait_for_slots(|s| s["accounts"][0]["busy"] == 1)
        .await;

    // a grows to two slots, b is new.
    edit_and_hangup(&worker, |text| {
        text.replace("pool_size: 1", "pool_size: 2")
            + "  - id: b\n    pool_size: 1\n    models: [kiro]\n    agent: { command: "
            + &test_support::binary("mock-acp-agent").display().to_string()
            + " }\n"
    });
    let slots = worker
        .wait_for_slots(|s| sizes(s) == vec![("a".to_owned(), 2), ("b".to_owned(), 1)])
        .await;
    assert_eq!(slots["accounts"].as_array().unwrap().len(), 2);

    // The answer that was in flight finished whole, on the process it started on.
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let chunks = reply.sse_chunks();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text.matches("chunk ").count(), 40, "{text}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    // The new account serves.
    let reply = client
        .post_json(
            "/prompt",
            &json!({"model": "kiro", "prompt": "hello b", "stream": false, "account": "b"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Removing b stops its pool.
    edit_and_hangup(&worker, |text| {
        text[..text.find("  - id: b").unwrap()].to_owned()
    });
    worker
        .wait_for_slots(|s| sizes(s) == vec![("a".to_owned(), 2)])
        .await;
}

#[tokio::test]
async fn a_bad_file_keeps_the_running_accounts_and_says_why() {
    let worker = WorkerUnderTest::start("", ACCOUNT_A, &[]).await;
    edit_and_hangup(&worker, |text| text.replace("pool_size: 1", "pool_size: 0"));
    let logged = eventually("the failed reload is logged", || async {
        let log = worker.process.log();
        log.lines()
            .find(|l| l.contains("configuration not reloaded"))
            .map(str::to_owned)
    })
    .await;
    assert!(logged.contains("accounts[0].pool_size"), "{logged}");
    let slots = worker.client().get("/slots").await.json();
    assert_eq!(sizes(&slots), vec![("a".to_owned(), 1)]);
    let reply = worker
        .client()
        .post_json(
            "/prompt",
            &json!({"model": "kiro", "prompt": "still here", "stream": false}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The engine's routing settings and the accounts' credit grants reload too (here in the
/// single-node binary): `engine.max_attempts: 1` lets a failing first account fail the
/// request; after the reload to 2 the request moves on to the second account, and a changed
/// grant resets that account's balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_reloads_its_routing_settings_and_grants() {
    use test_support::{AccountSpec, Stack, StackOptions};
    let mut stack = Stack::single(StackOptions {
        // acct-1 (three slots) scores first and fails before its first byte.
        accounts: vec![
            AccountSpec::new(3).behaviour("crash after=0"),
            AccountSpec::new(1).credits(1.0),
        ],
        engine_yaml: "engine: { max_attempts: 1 }\n".to_owned(),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    let ask = json!({"model": "kiro", "messages": [{"role": "user", "content": "hello"}]});
    let reply = client.chat(&ask).await;
    assert_eq!(reply.status, 502, "one attempt only: {}", reply.text());

    let path = stack.dir.path().join("drawbridge.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("max_attempts: 1", "max_attempts: 2")
        .replace("credits: 1", "credits: 7");
    std::fs::write(&path, text).unwrap();
    stack.processes[0].signal(Signal::SIGHUP);
    assert!(stack.wait_for_log("engine settings reloaded").await);

    let reply = client.chat(&ask).await;
    assert_eq!(
        reply.status,
        200,
        "the second account serves: {}",
        reply.text()
    );
    let accounts = stack.admin().get("/admin/accounts").await.json();
    let second = accounts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "acct-2")
        .cloned()
        .unwrap();
    // 7 credits granted by the reload, less what the one answer cost (0.01).
    assert!(
        (6_900..=7_000).contains(&second["credits"].as_i64().unwrap()),
        "{second}"
    );
    stack.stop().await;
}
