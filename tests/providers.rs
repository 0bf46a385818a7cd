//! HTTP provider accounts (`kind: openai`) end to end: `drawbridge` with accounts on real
//! `mock-provider` processes (OpenAI's wire format, each with its own key), answering
//! streamed and whole, passing the request's parameters and tools on, and each upstream
//! failure handled as its class: a rate limit rests the account, a 5xx or a refused key moves
//! on to the other account, a 400 is the client's. Which upstream was called is read from the
//! mocks' own counters and the engine's account view, not from logs.

mod provider_mocks;

use std::path::Path;

use std::time::Duration;

use provider_mocks::{Upstream, account, account_with_error, ask, content, provider_account};
use serde_json::{Value, json};
use test_support::wait::poll;
use test_support::{AccountSpec, Stack, StackOptions};

/// Two provider accounts, `p-1` and `p-2`, on two mocks (the first started with `first_env`).
async fn two_providers(dir: &Path, first_env: &[(&str, &str)]) -> (Stack, Upstream, Upstream) {
    let one = Upstream::start(dir, "sk-one-0123456789", first_env).await;
    let two = Upstream::start(dir, "sk-two-0123456789", &[]).await;
    let stack = Stack::single(StackOptions {
        accounts: Vec::new(),
        extra_accounts_yaml: provider_account("p-1", "gpt-test", &one, "sk-one-0123456789")
            + &provider_account("p-2", "gpt-test", &two, "sk-two-0123456789"),
        ..StackOptions::default()
    })
    .await;
    (stack, one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_accounts_answer_with_the_upstreams_text_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, one, two) = two_providers(dir.path(), &[]).await;
    let client = stack.client();

    // Whole: the upstream's text, and the usage it reported (the mock counts words).
    let reply = client.chat(&ask("hello provider world")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(content(&reply), "You said: hello provider world");
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 3, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 5, "{body}");
    assert_eq!(body["usage"]["drawbridge"]["tokens"], "reported", "{body}");

    // Streamed, with usage.
    let mut streamed = ask("stream me please");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let reply = client.chat(&streamed).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.sse_text(), "You said: stream me please");
    let chunks = reply.sse_chunks();
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 3, "{usage}");
    assert_eq!(usage["completion_tokens"], 5, "{usage}");

    // The request's parameters and output limit reach the upstream; streaming with usage is
    // what the engine asks for, whatever the client did.
    let mut sampled = ask("[[provider:echo_request]]");
    sampled["temperature"] = json!(0.3);
    sampled["seed"] = json!(11);
    sampled["stop"] = json!(["END"]);
    sampled["max_tokens"] = json!(50);
    let reply = client.chat(&sampled).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent: Value = serde_json::from_str(&content(&reply)).unwrap();
    assert_eq!(sent["temperature"], 0.3, "{sent}");
    assert_eq!(sent["seed"], 11, "{sent}");
    assert_eq!(sent["stop"], json!(["END"]), "{sent}");
    assert_eq!(sent["max_tokens"], 50, "{sent}");
    assert_eq!(sent["model"], "gpt-test", "{sent}");
    assert_eq!(sent["stream"], true, "{sent}");
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");

    // Tools go upstream and the upstream's call comes back as the client's tool call.
    let mut tools = ask("weather please [[provider:tool args={\"city\":\"Oslo\"}]]");
    tools["tools"] = json!([{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object"}}}]);
    let reply = client.chat(&tools).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{body}");
    assert_eq!(
        call["function"]["arguments"], "{\"city\":\"Oslo\"}",
        "{body}"
    );

    // The model is listed, and every request reached an upstream (with its key: the mocks
    // refuse any other).
    let models = client.get("/v1/models").await.json();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-test"),
        "{models}"
    );
    assert_eq!(one.requests().await + two.requests().await, 4);
    assert_eq!(account(&stack, "p-1").await["slots"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_provider_account_rests_while_the_other_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, limited, healthy) = two_providers(
        dir.path(),
        &[
            ("MOCK_PROVIDER_FAIL_WITH", "429"),
            ("MOCK_PROVIDER_RETRY_AFTER", "60"),
        ],
    )
    .await;
    let client = stack.client();
    // Until the scheduler has tried the limited account once, every answer still comes from
    // the other.
    let mut asked = 0;
    while limited.requests().await == 0 {
        asked += 1;
        assert!(asked <= 30, "the limited account was never tried");
        let reply = client.chat(&ask("hello")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), "You said: hello");
    }
    // Now it rests (60 s, as its upstream asked): no request goes to it.
    for _ in 0..10 {
        let reply = client.chat(&ask("hello again")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), "You said: hello again");
    }
    assert_eq!(
        limited.requests().await,
        1,
        "a resting account is not tried"
    );
    assert_eq!(healthy.requests().await, asked + 10);
    // A rate limit is not a failure of the account: its breaker stays closed.
    let view = account_with_error(&stack, "p-1", "rate limited").await;
    assert_eq!(view["breaker"], "closed", "{view}");
    // /health shows it unavailable while it rests, the other available.
    let health = client.get("/health").await.json();
    let available = |id: &str| {
        health["providers"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["id"] == id))
            .map(|p| p["available"].clone())
    };
    assert_eq!(available("p-1"), Some(json!(false)), "{health}");
    assert_eq!(available("p-2"), Some(json!(true)), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, failing, healthy) =
        two_providers(dir.path(), &[("MOCK_PROVIDER_FAIL_WITH", "500")]).await;
    let client = stack.client();
    // Enough requests for the scheduler's rotation to try it up to its breaker's threshold.
    for i in 0..12 {
        let reply = client.chat(&ask(&format!("request {i}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), format!("You said: request {i}"));
    }
    assert!(
        failing.requests().await >= 1,
        "the failing account was tried"
    );
    assert_eq!(
        healthy.requests().await,
        12,
        "the other served every request"
    );
    // Its failures count: its breaker opened.
    let view = account_with_error(&stack, "p-1", "The provider answered with status 500.").await;
    assert_eq!(view["breaker"], "open", "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_request_is_the_clients_400_and_no_accounts_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, one, two) = two_providers(dir.path(), &[]).await;
    let client = stack.client();
    for _ in 0..4 {
        let reply = client
            .chat(&ask("[[provider:status code=400]] refuse this"))
            .await;
        assert_eq!(reply.status, 400, "{}", reply.text());
        let error = &reply.json()["error"];
        assert_eq!(error["type"], "invalid_request_error", "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("Invalid value for 'temperature'"),
            "the upstream's reason reaches the client: {error}"
        );
    }
    // Never tried on another account, never retried.
    assert_eq!(one.requests().await + two.requests().await, 4);
    for id in ["p-1", "p-2"] {
        let view = account(&stack, id).await;
        assert_eq!(view["breaker"], "closed", "{view}");
        assert_eq!(view["status"], "healthy", "{view}");
        assert_eq!(view["last_error"], Value::Null, "{view}");
    }
    // And the accounts still serve.
    let reply = client.chat(&ask("fine now")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_the_accounts_failure_never_the_clients_401() {
    let dir = tempfile::tempdir().unwrap();
    let wants = Upstream::start(dir.path(), "sk-right-0123456789", &[]).await;
    let two = Upstream::start(dir.path(), "sk-two-0123456789", &[]).await;
    let wrong_key = "sk-wrong-secret-0123456789";
    let stack = Stack::single(StackOptions {
        accounts: Vec::new(),
        extra_accounts_yaml: provider_account("p-1", "gpt-test", &wants, wrong_key)
            + &provider_account("p-2", "gpt-test", &two, "sk-two-0123456789"),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    for _ in 0..12 {
        let reply = client.chat(&ask("hello")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert!(wants.requests().await >= 1, "the account was tried");
    assert_eq!(two.requests().await, 12);
    // The account's failure: its breaker opened.
    let view = account_with_error(&stack, "p-1", "refused this account's key").await;
    assert_eq!(view["breaker"], "open", "{view}");
    let accounts = stack.admin().get("/admin/accounts").await.text();
    assert!(!accounts.contains("sk-wrong"), "{accounts}");
    assert!(
        !stack.logs().contains(wrong_key),
        "the key never reaches a log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_acp_pool_falls_back_to_a_provider_account() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), "sk-one-0123456789", &[]).await;
    let stack = Stack::single(StackOptions {
        // acct-1: a mock ACP agent whose credits are spent.
        accounts: vec![AccountSpec::new(1).credits(0.0)],
        extra_accounts_yaml: provider_account("p-1", "kiro", &upstream, "sk-one-0123456789"),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    for i in 0..3 {
        let reply = client
            .chat(&json!({"model": "kiro", "messages": [{"role": "user", "content": format!("fallback {i}")}]}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), format!("You said: fallback {i}"));
    }
    assert_eq!(upstream.requests().await, 3);
    let acp = account(&stack, "acct-1").await;
    assert_eq!(acp["credits"], 0, "{acp}");
    // The provider account was charged like any other (unmetered: nothing to spend), and
    // the worker left it alone: it appears once, served by the engine.
    let accounts = stack.admin().get("/admin/accounts").await.text();
    assert_eq!(accounts.matches("\"p-1\"").count(), 1, "{accounts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_times_out_at_its_first_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), "sk-one-0123456789", &[]).await;
    let account = provider_account("p-1", "gpt-test", &upstream, "sk-one-0123456789")
        .replace("first_byte: 10s", "first_byte: 300ms");
    let stack = Stack::single(StackOptions {
        accounts: Vec::new(),
        extra_accounts_yaml: account,
        ..StackOptions::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let reply = stack
        .client()
        .chat(&ask("[[provider:slow_first_byte ms=5000]] anyone?"))
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(
        took < Duration::from_secs(4),
        "the 300 ms limit ended the wait ({took:?})"
    );
    let view = account_with_error(&stack, "p-1", "did not answer within").await;
    assert_eq!(view["status"], "healthy", "{view}");
}

/// In the three-process shape the worker ignores provider accounts (it has no agent to
/// start for them) and the engine serves them beside the worker's ACP accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_serves_provider_accounts_beside_a_workers_pools() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), "sk-one-0123456789", &[]).await;
    let stack = Stack::three(StackOptions {
        accounts: vec![AccountSpec::new(1)],
        extra_accounts_yaml: provider_account("p-1", "gpt-test", &upstream, "sk-one-0123456789"),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    let reply = client.chat(&ask("through three processes")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(content(&reply), "You said: through three processes");
    assert_eq!(upstream.requests().await, 1);
    // The ACP account is still the worker's.
    let acp = client
        .chat(&json!({"model": "kiro", "messages": [{"role": "user", "content": "agent"}]}))
        .await;
    assert_eq!(acp.status, 200, "{}", acp.text());
    assert_eq!(upstream.requests().await, 1);
    let view = account(&stack, "p-1").await;
    assert_eq!(view["worker"], "providers", "{view}");
    assert_eq!(account(&stack, "acct-1").await["slots"], 1);
    // The gateway's /health passes on the engine's view of the provider account (the ACP
    // account is counted in the fields before, not listed).
    let health = client.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text());
    let health = health.json();
    assert_eq!(health["accounts"], 2, "{health}");
    let providers = health["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1, "{health}");
    assert_eq!(providers[0]["id"], "p-1");
    assert_eq!(providers[0]["kind"], "openai");
    assert_eq!(providers[0]["available"], true);
    assert!(
        providers[0]["latency_p50_ms"].as_f64().is_some(),
        "{health}"
    );
}

/// A provider's stream that breaks off after its first byte is finished by the other account:
/// the client gets one whole, well-formed stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_answer_is_finished_on_the_other_account() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, one, two) = two_providers(dir.path(), &[]).await;
    let mut body = ask("[[provider:cut after=2]] a long answer");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = stack.client().chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let chunks = reply.sse_chunks();
    let finish = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(finish, ["stop"], "{}", reply.text());
    // The first account sent "You said: " and broke off; the second was asked to continue
    // (the mock echoes that request), and the part it repeated was spliced away.
    let text = reply.sse_text();
    assert!(
        text.starts_with("You said: Your previous reply was cut off"),
        "{text}"
    );
    assert!(!text.starts_with("You said: You said:"), "{text}");
    assert_eq!(one.requests().await, 1);
    assert_eq!(two.requests().await, 1);
}

/// The official OpenAI Python SDK (`SDK_PYTHON`, as `make test` sets it) through provider
/// accounts: `tests/sdk_providers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_through_provider_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, one, two) = two_providers(dir.path(), &[]).await;
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk_providers");
    test_support::sdk::run_python_suite(&suite, &stack.base_url, &[], 7).await;
    assert!(one.requests().await + two.requests().await >= 6);
}

/// A reload adds, changes and removes provider accounts without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_accounts_follow_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let one = Upstream::start(dir.path(), "sk-one-0123456789", &[]).await;
    let two = Upstream::start(dir.path(), "sk-two-0123456789", &[]).await;
    let first = provider_account("p-1", "gpt-test", &one, "sk-one-0123456789");
    let stack = Stack::single(StackOptions {
        accounts: Vec::new(),
        extra_accounts_yaml: first.clone(),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    let reply = client.chat(&ask("before")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(one.requests().await, 1);

    // p-1 goes, p-2 comes on the other upstream, serving gpt-test and gpt-other.
    let path = stack.dir.path().join("drawbridge.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let second = provider_account("p-2", "gpt-test, gpt-other", &two, "sk-two-0123456789");
    std::fs::write(&path, yaml.replace(&first, &second)).unwrap();
    let other = json!({"model": "gpt-other", "messages": [{"role": "user", "content": "after"}]});
    let served = poll(Duration::from_secs(20), || async {
        (client.chat(&other).await.status == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "the reloaded account never served");
    let reply = client.chat(&ask("after too")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(content(&reply), "You said: after too");
    assert_eq!(one.requests().await, 1, "the removed account gets nothing");
    assert!(two.requests().await >= 2);
    let accounts = stack.admin().get("/admin/accounts").await.text();
    assert!(!accounts.contains("\"p-1\""), "{accounts}");
}

/// Images go to the accounts that take them: beside an ACP account serving the same model,
/// every request with an image is the provider's (which receives the image); with ACP
/// accounts only, it is a 400 naming `messages`, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_an_image_goes_to_a_provider_account_never_to_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), "sk-one-0123456789", &[]).await;
    let stack = Stack::single(StackOptions {
        accounts: vec![AccountSpec::new(2)],
        extra_accounts_yaml: provider_account("p-1", "kiro", &upstream, "sk-one-0123456789"),
        ..StackOptions::default()
    })
    .await;
    let with_image = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]}]})
    };
    let client = stack.client();
    for _ in 0..4 {
        let reply = client.chat(&with_image("kiro")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), "You said: what is this? [image]");
    }
    assert_eq!(upstream.requests().await, 4, "every one was the provider's");
    // The ACP account is still served text.
    let reply = client
        .chat(&json!({"model": "kiro", "messages": [{"role": "user", "content": "plain"}]}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let acp_only = Stack::single(StackOptions::default()).await;
    let reply = acp_only.client().chat(&with_image("kiro")).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let error = &reply.json()["error"];
    assert_eq!(error["param"], "messages", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("does not take images"),
        "{error}"
    );
}

/// Prompt tokens the upstream read from its cache reach the client: OpenAI's
/// `prompt_tokens_details.cached_tokens`, whole and streamed, and Anthropic's
/// `cache_read_input_tokens` on `/v1/messages` (taken out of `input_tokens`, as Anthropic
/// counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_prompt_tokens_reach_the_client_in_each_dialect() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), "sk-one-0123456789", &[]).await;
    let stack = Stack::single(StackOptions {
        accounts: Vec::new(),
        extra_accounts_yaml: provider_account("p-1", "gpt-test", &upstream, "sk-one-0123456789"),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    let prompt = "four words said here [[provider:cached n=3]]";
    // Without the directive, no cached tokens are shown.
    let plain = client.chat(&ask("four words said here")).await;
    assert!(
        plain.json()["usage"].get("prompt_tokens_details").is_none(),
        "{}",
        plain.text()
    );
    let whole = client.chat(&ask(prompt)).await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    let usage = &whole.json()["usage"];
    // The mock counts the words of the whole message, the directive's included.
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 3, "{usage}");
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"], 3,
        "{usage}"
    );

    let mut streamed = ask(prompt);
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let reply = client.chat(&streamed).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let chunks = reply.sse_chunks();
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"], 3,
        "{usage}"
    );

    let messages = client
        .post_json(
            "/v1/messages",
            &json!({"model": "gpt-test", "max_tokens": 64,
                    "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    assert_eq!(messages.status, 200, "{}", messages.text());
    let usage = &messages.json()["usage"];
    assert_eq!(usage["cache_read_input_tokens"], 3, "{usage}");
    assert_eq!(usage["input_tokens"], prompt_tokens - 3, "{usage}");
}
