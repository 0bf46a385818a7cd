//! `kiro-worker` on its own, over its HTTP surface, with real `mock-acp-agent` processes:
//! pool limits and queueing, crash, hang, client disconnect, drain, isolation.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use test_support::{WorkerUnderTest, eventually, eventually_within};

const ONE_ACCOUNT: &str =
    "  - id: solo\n    pool_size: 3\n    agent: { command: __AGENT__, args: [] }\n";

fn prompt(text: &str, stream: bool) -> Value {
    json!({"model": "kiro", "prompt": text, "stream": stream})
}

/// The streamed text and the final chunk of an SSE answer.
fn streamed(reply: &test_support::Reply) -> (String, Value) {
    let chunks = reply.sse_chunks();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (text, chunks.last().cloned().unwrap_or(Value::Null))
}

fn account<'a>(slots: &'a Value, id: &str) -> &'a Value {
    slots["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["account"] == id))
        .unwrap_or_else(|| panic!("no account {id} in {slots}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_three_serves_three_at_once_and_queues_the_fourth() {
    let worker = WorkerUnderTest::start("", ONE_ACCOUNT, &[]).await;
    let client = worker.client();
    let requests = (0..4).map(|i| {
        let client = client.clone();
        async move {
            let text = format!("[[mock:stream n=40 delay_ms=25]] request {i}");
            client.post_json("/prompt", &prompt(&text, true)).await
        }
    });
    let all = tokio::spawn(futures::future::join_all(requests));
    let busy = worker
        .wait_for_slots(|s| s["accounts"][0]["busy"] == 3 && s["accounts"][0]["queue_depth"] == 1)
        .await;
    assert_eq!(busy["accounts"][0]["idle"], 0, "{busy}");
    for reply in all.await.unwrap() {
        assert_eq!(reply.status, 200);
        let (text, last) = streamed(&reply);
        assert_eq!(text.matches("chunk").count(), 40);
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
    }
    worker
        .wait_for_slots(|s| s["accounts"][0]["idle"] == 3 && s["accounts"][0]["queue_depth"] == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_stream_ends_cleanly_and_the_process_is_replaced() {
    let worker = WorkerUnderTest::start("", ONE_ACCOUNT, &[]).await;
    let client = worker.client();
    let before = worker.agent_pids();

    let reply = client
        .post_json("/prompt", &prompt("[[mock:crash after=2]]", true))
        .await;
    assert_eq!(reply.status, 200);
    let (text, last) = streamed(&reply);
    assert_eq!(text, "chunk 0 chunk 1 ");
    assert_eq!(last["choices"][0]["finish_reason"], "error");
    assert_eq!(last["error"]["code"], "upstream_error");
    assert!(
        !last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("crashing as asked"),
        "stderr stays in the logs"
    );

    // The dead process is replaced: three warm agents again, one of them new.
    worker
        .wait_for_slots(|s| s["accounts"][0]["idle"] == 3)
        .await;
    let after = worker.agent_pids();
    assert_eq!(after.len(), 3);
    assert_ne!(after, before);

    let next = client
        .post_json("/prompt", &prompt("still serving", false))
        .await;
    assert_eq!(next.status, 200);
    assert_eq!(
        next.json()["choices"][0]["message"]["content"],
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_hits_the_idle_deadline() {
    let worker = WorkerUnderTest::start("  idle_timeout: 400ms\n", ONE_ACCOUNT, &[]).await;
    let client = worker.client();
    let reply = client
        .post_json("/prompt", &prompt("[[mock:hang after=1]]", true))
        .await;
    let (text, last) = streamed(&reply);
    assert_eq!(text, "chunk 0 ");
    assert_eq!(last["choices"][0]["finish_reason"], "error");
    assert_eq!(last["error"]["code"], "timeout");

    // Hung before its first byte, non-streamed: an HTTP 504.
    let reply = client
        .post_json("/prompt", &prompt("[[mock:hang after=0]]", false))
        .await;
    assert_eq!(reply.status, 504, "{}", reply.text());

    worker
        .wait_for_slots(|s| s["accounts"][0]["idle"] == 3)
        .await;
    let next = client
        .post_json("/prompt", &prompt("after the hang", false))
        .await;
    assert_eq!(
        next.json()["choices"][0]["message"]["content"],
        "after the hang"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_cancels_the_turn_and_frees_the_slot() {
    let single = "  - id: solo\n    pool_size: 1\n    agent: { command: __AGENT__, args: [] }\n";
    let worker = WorkerUnderTest::start("", single, &[]).await;
    let client = worker.client();
    let pid = worker.agent_pids();
    {
        let (status, mut body) = client
            .post_streaming(
                "/prompt",
                &prompt("[[mock:stream n=100000 delay_ms=5]]", true),
            )
            .await;
        assert_eq!(status, 200);
        let first = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap();
        assert!(first.is_some());
        worker
            .wait_for_slots(|s| s["accounts"][0]["busy"] == 1)
            .await;
    } // hang up mid-answer
    worker
        .wait_for_slots(|s| s["accounts"][0]["busy"] == 0 && s["accounts"][0]["idle"] == 1)
        .await;
    // The same process serves again, and it saw exactly one session/cancel.
    assert_eq!(
        worker.agent_pids(),
        pid,
        "the process answered the cancel and was kept"
    );
    let stats = client
        .post_json("/prompt", &prompt("[[mock:stats]]", false))
        .await;
    let stats: Value = serde_json::from_str(
        stats.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats["cancels"], 1, "{stats}");
    assert_eq!(stats["prompts"], 2, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_in_flight_turns_then_exits() {
    let mut worker = WorkerUnderTest::start("", ONE_ACCOUNT, &[]).await;
    let client = worker.client();
    let in_flight = (0..3).map(|i| {
        let client = client.clone();
        async move {
            let text = format!("[[mock:stream n=30 delay_ms=20]] {i}");
            client.post_json("/prompt", &prompt(&text, true)).await
        }
    });
    let in_flight = tokio::spawn(futures::future::join_all(in_flight));
    worker
        .wait_for_slots(|s| s["accounts"][0]["busy"] == 3)
        .await;

    let drain = client
        .request(test_support::Method::POST, "/drain", "")
        .await;
    assert_eq!(drain.status, 202);
    assert_eq!(drain.json()["in_flight"], 3);

    for reply in in_flight.await.unwrap() {
        let (text, last) = streamed(&reply);
        assert_eq!(
            text.matches("chunk").count(),
            30,
            "in-flight turns finish whole"
        );
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
    }
    let status = worker.process.wait().await;
    assert!(status.success(), "the worker exits 0 after a drain");
    assert_eq!(worker.agent_pids(), Vec::<u32>::new(), "no agent remains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_that_stays_up_refuses_new_turns() {
    let mut worker = WorkerUnderTest::start("", ONE_ACCOUNT, &[]).await;
    let client = worker.client();
    let drain = client
        .post_json("/drain", &json!({"keep_running": true}))
        .await;
    assert_eq!(drain.status, 202);
    let health = eventually("the worker reports draining", || async {
        let h = client.get("/health").await;
        (h.json()["status"] == "draining").then_some(h)
    })
    .await;
    assert_eq!(health.status, 503);
    let refused = client
        .post_json("/prompt", &prompt("too late", false))
        .await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"]["code"], "service_unavailable");
    // Drained but alive; SIGTERM ends it.
    assert!(worker.process.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_never_see_each_others_home_or_environment() {
    let accounts = "  - id: alpha\n    pool_size: 1\n    agent: { command: __AGENT__, args: [], env: { ALPHA_ONLY: a } }\n\
                    \x20 - id: beta\n    pool_size: 1\n    agent: { command: __AGENT__, args: [], env: { BETA_ONLY: b } }\n";
    let worker = WorkerUnderTest::start(
        "",
        accounts,
        &[("KIRO_API_KEY", "leaked-key"), ("WORKER_SECRET", "leaked")],
    )
    .await;
    let client = worker.client();
    let mut homes = Vec::new();
    for (id, own, other) in [
        ("alpha", "ALPHA_ONLY", "BETA_ONLY"),
        ("beta", "BETA_ONLY", "ALPHA_ONLY"),
    ] {
        let reply = client
            .post_json("/prompt", &json!({"account": id, "prompt": "[[mock:env]]"}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen: Value = serde_json::from_str(
            reply.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let env = seen["env"].as_object().unwrap();
        assert!(env.contains_key(own), "{id}: {seen}");
        assert!(
            !env.contains_key(other),
            "{id} sees the other account's env: {seen}"
        );
        assert!(
            !env.contains_key("KIRO_API_KEY"),
            "{id} sees the worker's env"
        );
        assert!(
            !env.contains_key("WORKER_SECRET"),
            "{id} sees the worker's env"
        );
        let home = seen["home"].as_str().unwrap().to_owned();
        assert!(home.ends_with(&format!("{id}/home")), "{home}");
        assert_eq!(env["XDG_DATA_HOME"], format!("{home}/.local/share"));
        assert!(
            seen["cwd"]
                .as_str()
                .unwrap()
                .ends_with(&format!("{id}/work"))
        );
        homes.push(home);
    }
    assert_ne!(homes[0], homes[1]);
    let slots = client.get("/slots").await.json();
    assert_eq!(account(&slots, "alpha")["size"], 1);
    assert_eq!(account(&slots, "beta")["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_whose_agent_cannot_start_turns_unhealthy_with_the_reason() {
    let accounts = "  - id: broken\n    pool_size: 1\n    agent: { command: __AGENT__, args: [], env: { MOCK_ACP_FAIL_START: 'You are not logged in' } }\n\
                    \x20 - id: fine\n    pool_size: 1\n    agent: { command: __AGENT__, args: [] }\n";
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "worker:\n  http_listen: 127.0.0.1:0\n  grpc_listen: 127.0.0.1:0\n  data_dir: {}\naccounts:\n{}",
        dir.path().display(),
        accounts.replace(
            "__AGENT__",
            &test_support::binary("mock-acp-agent").display().to_string()
        )
    );
    let config = dir.path().join("worker.yaml");
    std::fs::write(&config, yaml).unwrap();
    let process = test_support::Process::start("kiro-worker", &config, &[], &["http"]).await;
    let client = test_support::Client::new(format!("http://{}", process.addr("http")), None);
    // Three failed starts in a row (with backoff) make the account unhealthy.
    let slots = eventually_within(
        Duration::from_secs(20),
        "the broken account is unhealthy",
        || async {
            let slots = client.get("/slots").await.json();
            (account(&slots, "broken")["status"] == "unhealthy").then_some(slots)
        },
    )
    .await;
    let broken = account(&slots, "broken");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("not logged in"),
        "{broken}"
    );
    assert!(broken["failed"].as_u64().unwrap() >= 3);
    let health = client.get("/health").await;
    assert_eq!(health.status, 200, "one healthy account still serves");
    let health = health.json();
    assert_eq!(health["status"], "degraded");
    let reasons = health["reasons"].to_string();
    assert!(
        reasons.contains("broken") && reasons.contains("not logged in"),
        "{health}"
    );
    // The healthy account still serves; the broken one is refused at once, not after a wait.
    let ok = client
        .post_json("/prompt", &json!({"account": "fine", "prompt": "hi"}))
        .await;
    assert_eq!(ok.status, 200);
    let refused = client
        .post_json("/prompt", &json!({"account": "broken", "prompt": "hi"}))
        .await;
    assert_eq!(refused.status, 502, "{}", refused.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prompt_requests_get_clear_errors() {
    let worker = WorkerUnderTest::start("", ONE_ACCOUNT, &[]).await;
    let client = worker.client();
    for (body, status) in [
        (json!({"model": "kiro"}), 400),
        (json!({"model": "kiro", "prompt": ""}), 400),
        (json!({"prompt": "x"}), 400),
        (json!({"model": "nope", "prompt": "x"}), 404),
        (json!({"account": "ghost", "prompt": "x"}), 400),
    ] {
        let reply = client.post_json("/prompt", &body).await;
        assert_eq!(reply.status, status, "{body} → {}", reply.text());
        assert!(reply.json()["error"]["message"].is_string());
    }
    let reply = client
        .request(test_support::Method::POST, "/prompt", "{oops")
        .await;
    assert_eq!(reply.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_internal_markup_is_stripped_from_the_stream() {
    let worker = WorkerUnderTest::start("", ONE_ACCOUNT, &[]).await;
    let reply = worker
        .client()
        .post_json("/prompt", &prompt("[[mock:artifacts]]", true))
        .await;
    let (text, last) = streamed(&reply);
    // The agent split its tags across chunks; none of them reaches the client.
    assert_eq!(text, "Here is the answer. The result is 42.");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_mode_passes_everything_through() {
    let accounts = format!("{ONE_ACCOUNT}sanitize: {{ mode: identity }}\n");
    let worker = WorkerUnderTest::start("", &accounts, &[]).await;
    let reply = worker
        .client()
        .post_json("/prompt", &prompt("[[mock:artifacts]]", false))
        .await;
    let content = reply.json()["choices"][0]["message"]["content"].clone();
    assert_eq!(
        content,
        "Here is the answer.<thinking>internal reasoning</thinking> The result is 42.<tool_use>{\"name\":\"fs_read\"}</tool_use>"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_answer_is_continued_on_the_same_session_seamlessly() {
    let worker = WorkerUnderTest::start("", ONE_ACCOUNT, &[]).await;
    let client = worker.client();
    // The agent stops with max_tokens twice; the third round ends the answer.
    let reply = client
        .post_json("/prompt", &prompt("[[mock:max_tokens n=3 rounds=3]]", true))
        .await;
    let (text, last) = streamed(&reply);
    let expected: String = (0..9).map(|i| format!("chunk {i} ")).collect();
    assert_eq!(
        text, expected,
        "one seamless answer, nothing repeated or dropped"
    );
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    let finish_chunks = reply
        .sse_chunks()
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .count();
    assert_eq!(finish_chunks, 1, "one finish_reason for the whole answer");

    // Bounded: past max_rounds (5) the answer ends as it is, with `length`.
    let reply = client
        .post_json(
            "/prompt",
            &prompt("[[mock:max_tokens n=2 rounds=50]]", false),
        )
        .await;
    let body = reply.json();
    let expected: String = (0..12).map(|i| format!("chunk {i} ")).collect();
    assert_eq!(
        body["choices"][0]["message"]["content"], expected,
        "1 + 5 rounds of 2 chunks"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_can_be_turned_off() {
    let accounts = format!("{ONE_ACCOUNT}continuation: {{ enabled: false }}\n");
    let worker = WorkerUnderTest::start("", &accounts, &[]).await;
    let reply = worker
        .client()
        .post_json(
            "/prompt",
            &prompt("[[mock:max_tokens n=3 rounds=3]]", false),
        )
        .await;
    let body = reply.json();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "chunk 0 chunk 1 chunk 2 "
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_requests_follow_the_accounts_policy() {
    let accounts = "  - id: strict\n    pool_size: 1\n    agent: { command: __AGENT__, args: [] }\n\
                    \x20 - id: reader\n    pool_size: 1\n    agent: { command: __AGENT__, args: [], tools: builtin, allow_tools: [read] }\n";
    let worker = WorkerUnderTest::start("", accounts, &[]).await;
    let client = worker.client();
    for (account, expected) in [
        ("strict", "permission: reject-once"),
        ("reader", "permission: allow-once"),
    ] {
        let reply = client
            .post_json(
                "/prompt",
                &json!({"account": account, "prompt": "[[mock:permission]]"}),
            )
            .await;
        assert_eq!(
            reply.json()["choices"][0]["message"]["content"],
            expected,
            "{account}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_registers_in_valkey_and_leaves_on_drain() {
    let redis = test_support::redis::RedisServer::start();
    let settings = format!(
        "  heartbeat_interval: 200ms\n  heartbeat_ttl: 1s\nredis: {{ url: \"{}\" }}\n",
        redis.url()
    );
    let mut worker = WorkerUnderTest::start(&settings, ONE_ACCOUNT, &[]).await;
    let registry = drawbridge_state::ValkeyRegistry::connect(&redis.url())
        .await
        .unwrap();
    use drawbridge_state::Registry as _;

    // Registered, with its pools, and kept alive past several TTLs.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let after = seen.last().copied().unwrap_or(0);
        let pods = eventually("the worker keeps heartbeating", || async {
            let pods = registry.pods().await.unwrap();
            let renewed = pods
                .iter()
                .any(|p| p.id == "worker-under-test" && p.updated_at_ms > after);
            renewed.then_some(pods)
        })
        .await;
        let pod = pods.iter().find(|p| p.id == "worker-under-test").unwrap();
        assert_eq!(pod.models, vec!["kiro"]);
        assert_eq!(pod.accounts[0].account, "solo");
        assert_eq!(pod.accounts[0].size, 3);
        assert!(pod.address.starts_with("http://127.0.0.1:"));
        seen.push(pod.updated_at_ms);
    }
    assert_eq!(registry.pods_for_model("kiro").await.unwrap().len(), 1);

    // Drain: the entry is gone before the process exits.
    let drain = worker
        .client()
        .request(test_support::Method::POST, "/drain", "")
        .await;
    assert_eq!(drain.status, 202);
    assert!(worker.process.wait().await.success());
    assert!(
        registry.pods().await.unwrap().is_empty(),
        "deregistered on drain"
    );
    assert!(registry.pods_for_model("kiro").await.unwrap().is_empty());
}
