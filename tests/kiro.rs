//! Real Kiro accounts (issue 13), end to end: the `drawbridge` binary with accounts whose
//! `mock-acp-agent` speaks Kiro CLI 2.22's v2 and v3 dialects, started the way kiro-cli is
//! (`acp --agent-engine v3 --auth-method cli`). Each account is given its own model in its
//! catalogue (`MOCK_ACP_MODELS`), so a request for that model reaches that account only.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::wait::poll;
use test_support::{AccountSpec, Stack, StackOptions};

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The ids `GET /v1/models` lists.
async fn model_ids(stack: &Stack) -> Vec<String> {
    let reply = stack.client().get("/v1/models").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Wait until `/v1/models` lists every model of `expected` (catalogues are read as the agents
/// warm up and reach the engine at its next refresh).
async fn wait_for_models(stack: &Stack, expected: &[&str]) -> Vec<String> {
    let listed = poll(Duration::from_secs(30), || async {
        let ids = model_ids(stack).await;
        expected
            .iter()
            .all(|m| ids.iter().any(|id| id == m))
            .then_some(ids)
    })
    .await;
    match listed {
        Some(ids) => ids,
        None => panic!(
            "/v1/models never listed {expected:?}: {:?}",
            model_ids(stack).await
        ),
    }
}

/// The account `id` as `/admin/accounts` shows it.
async fn account(stack: &Stack, id: &str) -> Value {
    let reply = stack.admin().get("/admin/accounts").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let accounts = body["data"].as_array().or(body.as_array()).cloned();
    accounts
        .unwrap_or_default()
        .into_iter()
        .find(|a| a["account"] == id)
        .unwrap_or_else(|| panic!("no account {id} in {body}"))
}

fn content(reply: &test_support::Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_and_chosen_per_request_on_both_dialects() {
    let stack = Stack::single(StackOptions {
        accounts: vec![
            AccountSpec::kiro(1, "v2")
                .arg("--echo-model")
                .env("MOCK_ACP_MODELS", "claude-sonnet-5,model-two"),
            AccountSpec::kiro(1, "v3")
                .arg("--echo-model")
                .env("MOCK_ACP_MODELS", "claude-sonnet-5,model-three"),
        ],
        engine_yaml: "model_aliases: { gpt-4o: model-three, sonnet: claude-sonnet-5 }\n".into(),
        ..StackOptions::default()
    })
    .await;
    let ids = wait_for_models(
        &stack,
        &[
            "kiro",
            "claude-sonnet-5",
            "model-two",
            "model-three",
            "gpt-4o",
            "sonnet",
        ],
    )
    .await;
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "listed once each, sorted");

    // Availability per account.
    let v2 = account(&stack, "acct-1").await;
    let v2_models = v2["models"].to_string();
    assert!(v2_models.contains("model-two"), "{v2}");
    assert!(!v2_models.contains("model-three"), "{v2}");

    let client = stack.client();
    // A catalogue model runs on the account that has it, on that model, on either dialect.
    for _ in 0..3 {
        let reply = client.chat(&ask("model-two", "on v2")).await;
        assert_eq!(content(&reply), "[model-two] on v2");
        let reply = client.chat(&ask("model-three", "on v3")).await;
        assert_eq!(content(&reply), "[model-three] on v3");
    }
    // A configured label is the agent's default model.
    let reply = client.chat(&ask("kiro", "default")).await;
    assert_eq!(content(&reply), "[claude-sonnet-5] default");
    // An alias runs on its target; the client sees the name it asked for.
    let reply = client.chat(&ask("gpt-4o", "aliased")).await;
    assert_eq!(content(&reply), "[model-three] aliased");
    assert_eq!(reply.json()["model"], "gpt-4o");
    let reply = client.chat(&ask("sonnet", "aliased")).await;
    assert_eq!(content(&reply), "[claude-sonnet-5] aliased");
    // Streamed too.
    let mut body = ask("model-two", "streamed choice");
    body["stream"] = json!(true);
    let reply = client.chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.sse_text();
    assert_eq!(text, "[model-two] streamed choice");

    // An unknown model is a 404 before anything is sent.
    let reply = client.chat(&ask("no-such-model", "hello")).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(reply.code(), "model_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_do_not_pile_up_in_an_account_home() {
    // Each answer's session is deleted when the turn ends, or (warm sessions, at most 2 per
    // account) when its warm TTL passes.
    let stack = Stack::single(StackOptions {
        accounts: vec![AccountSpec::kiro(2, "v3")],
        worker_yaml: "  warm_session_ttl: 1s\n".into(),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    for i in 0..6 {
        let reply = client.chat(&ask("kiro", &format!("turn {i}"))).await;
        assert_eq!(content(&reply), format!("turn {i}"));
    }
    let sessions = stack.account_home(1).join(".kiro").join("sessions");
    let files = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir(&sessions)
            .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    let clean = poll(Duration::from_secs(10), || {
        futures::future::ready(files().is_empty())
    })
    .await;
    assert!(
        clean.is_some(),
        "session files left in the account's home: {:?}",
        files()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_no_tools_unless_the_operator_allows_them() {
    let stack = Stack::single(StackOptions {
        accounts: vec![
            // The default: a tool-less profile.
            AccountSpec::kiro(1, "v3").env("MOCK_ACP_MODELS", "claude-sonnet-5,model-none"),
            // Built-in tools, nothing allowed: autopilot off, so shell asks and is refused.
            AccountSpec::kiro(1, "v3")
                .env("MOCK_ACP_MODELS", "claude-sonnet-5,model-builtin")
                .agent("tools: builtin"),
            // v2 with the tool-less profile (`--agent drawbridge`).
            AccountSpec::kiro(1, "v2").env("MOCK_ACP_MODELS", "claude-sonnet-5,model-v2"),
        ],
        ..StackOptions::default()
    })
    .await;
    wait_for_models(&stack, &["model-none", "model-builtin", "model-v2"]).await;
    let client = stack.client();

    for model in ["model-none", "model-v2"] {
        let answer = content(&client.chat(&ask(model, "[[mock:shell]] list files")).await);
        assert!(
            !answer.contains("shell:"),
            "{model}: a tool-less agent ran or asked for a tool: {answer}"
        );
    }
    let profile = stack.account_home(1).join(".kiro/agents/drawbridge.json");
    let profile: Value =
        serde_json::from_slice(&std::fs::read(&profile).expect("the tool-less profile")).unwrap();
    assert_eq!(profile["tools"], json!(["@drawbridge"]));

    let answer = content(
        &client
            .chat(&ask("model-builtin", "[[mock:shell]] list files"))
            .await,
    );
    assert!(answer.starts_with("shell: refused"), "{answer}");
    let refused = poll(Duration::from_secs(10), || async {
        account(&stack, "acct-2").await["tools_refused"].as_u64() >= Some(1)
    })
    .await;
    assert!(refused.is_some(), "{}", account(&stack, "acct-2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_tool_phase_is_not_silence() {
    let stack = Stack::single(StackOptions {
        // Kiro's own tools (a tool-less agent would answer at once that it has none).
        accounts: vec![AccountSpec::kiro(1, "v3").agent("tools: builtin")],
        worker_yaml: "  idle_timeout: 2s\n".into(),
        engine_yaml: "engine:\n  first_byte_timeout: 2s\n  idle_timeout: 2s\n  keepalive_interval: 1s\n  refresh_interval: 250ms\n".into(),
        ..StackOptions::default()
    })
    .await;
    let mut body = ask("kiro", "[[mock:busy secs=10]] worth the wait");
    body["stream"] = json!(true);
    let reply = stack.client().chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let raw = reply.text();
    assert!(
        raw.matches(": keep-alive").count() >= 5,
        "the silent phase kept the connection alive: {raw}"
    );
    let chunks = reply.sse_chunks();
    let text = reply.sse_text();
    assert_eq!(text.trim(), "worth the wait");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_owned));
    assert_eq!(finish.as_deref(), Some("stop"));
    // One account, one turn: nothing failed over or was retried.
    assert_eq!(
        stack.engine_metric("drawbridge_failovers_total", &[]).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_says_whether_tokens_were_reported_and_what_kiro_charged() {
    let stack = Stack::single(StackOptions {
        accounts: vec![AccountSpec::kiro(1, "v2"), AccountSpec::kiro(1, "v3")],
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    let reply = client
        .chat(&ask(
            "kiro",
            "[[mock:echo input_tokens=11 output_tokens=13 credits=0.25 context=12.5]] counted",
        ))
        .await;
    assert_eq!(content(&reply).trim(), "counted");
    let usage = &reply.json()["usage"];
    assert_eq!(usage["prompt_tokens"], 11, "{usage}");
    assert_eq!(usage["completion_tokens"], 13, "{usage}");
    assert_eq!(usage["drawbridge"]["tokens"], "reported", "{usage}");
    assert_eq!(usage["drawbridge"]["credits"], 0.25, "{usage}");
    assert_eq!(
        usage["drawbridge"]["context_usage_percent"], 12.5,
        "{usage}"
    );

    let reply = client
        .chat(&ask("kiro", "[[mock:echo credits=0.5]] estimated"))
        .await;
    assert_eq!(content(&reply).trim(), "estimated");
    let usage = &reply.json()["usage"];
    assert_eq!(usage["drawbridge"]["tokens"], "estimated", "{usage}");
    assert_eq!(usage["drawbridge"]["credits"], 0.5, "{usage}");

    // Streamed, the usage chunk carries the same.
    let mut body = ask("kiro", "[[mock:echo credits=0.125]] streamed");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = client.chat(&body).await;
    let usage = reply
        .sse_chunks()
        .into_iter()
        .find_map(|c| c.get("usage").filter(|u| !u.is_null()).cloned())
        .expect("a usage chunk");
    assert_eq!(usage["drawbridge"]["credits"], 0.125, "{usage}");

    // The ledger has the credits of all three.
    let usage_total = || async { stack.admin().get("/admin/usage").await.json()["total"].clone() };
    let charged = poll(Duration::from_secs(10), || async {
        let total = usage_total().await;
        (total["requests"] == 3).then_some(total)
    })
    .await;
    let Some(total) = charged else {
        panic!("the ledger never had 3 requests: {}", usage_total().await)
    };
    let credits = total["credits"].as_f64().expect("credits in /admin/usage");
    assert!((credits - 0.875).abs() < 1e-9, "{total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_asks_for_tokens_makes_its_account_unhealthy_not_the_client_wait() {
    let mut v3_without_cli_auth = AccountSpec::new(1);
    v3_without_cli_auth.args = ["acp", "--agent-engine", "v3"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let stack = Stack::single(StackOptions {
        accounts: vec![v3_without_cli_auth, AccountSpec::kiro(1, "v3")],
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    // Whichever account each request lands on first, every client gets an answer.
    for i in 0..4 {
        let reply = client.chat(&ask("kiro", &format!("answer {i}"))).await;
        assert_eq!(content(&reply), format!("answer {i}"));
        if account(&stack, "acct-1").await["status"] == "unhealthy" {
            break;
        }
    }
    let unhealthy = poll(Duration::from_secs(10), || async {
        // The worker's reason reaches the engine at its next refresh (the status may say
        // unhealthy before that: the account's breaker opens on the failures).
        let stuck = account(&stack, "acct-1").await;
        (stuck["status"] == "unhealthy" && !stuck["last_error"].is_null()).then_some(stuck)
    })
    .await;
    let Some(stuck) = unhealthy else {
        panic!("never unhealthy: {}", account(&stack, "acct-1").await)
    };
    let reason = stuck["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("_kiro/auth/getAccessToken") && reason.contains("--auth-method cli"),
        "{stuck}"
    );
    assert_eq!(account(&stack, "acct-2").await["status"], "healthy");
}
