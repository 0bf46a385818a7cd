//! Provider accounts of kind `anthropic` and `gemini` end to end: `drawbridge` with accounts
//! on real `mock-provider` processes speaking Anthropic's Messages API and Gemini's
//! `streamGenerateContent` (each wanting its own key in its own header), answering the
//! OpenAI dialect streamed and whole, a tool call round trip through each, a rate-limited
//! account resting while an account of the other kind serves, a client's 400 staying the
//! client's, and the official OpenAI Python SDK through both. Which upstream was called is
//! read from the mocks' counters and the engine's account view.

mod provider_mocks;

use std::path::Path;

use provider_mocks::{Upstream, account, account_with_error, content, provider_account_of};
use serde_json::{Value, json};
use test_support::{Stack, StackOptions};

const CLAUDE_KEY: &str = "sk-ant-test-0123456789";
const GEMINI_KEY: &str = "AIza-test-0123456789";

/// An Anthropic account `c-1` serving `claude_model` and a Gemini account `g-1` serving
/// `gemini_model`, each on its own mock (started with `claude_env` / `gemini_env`).
async fn claude_and_gemini(
    dir: &Path,
    (claude_model, claude_env): (&str, &[(&str, &str)]),
    (gemini_model, gemini_env): (&str, &[(&str, &str)]),
) -> (Stack, Upstream, Upstream) {
    let claude = Upstream::start(dir, CLAUDE_KEY, claude_env).await;
    let gemini = Upstream::start(dir, GEMINI_KEY, gemini_env).await;
    let stack = Stack::single(StackOptions {
        accounts: Vec::new(),
        extra_accounts_yaml: provider_account_of(
            "anthropic",
            "c-1",
            claude_model,
            &claude,
            CLAUDE_KEY,
        ) + &provider_account_of(
            "gemini",
            "g-1",
            gemini_model,
            &gemini,
            GEMINI_KEY,
        ),
        ..StackOptions::default()
    })
    .await;
    (stack, claude, gemini)
}

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_and_gemini_accounts_answer_streamed_and_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, claude, gemini) =
        claude_and_gemini(dir.path(), ("claude-test", &[]), ("gemini-test", &[])).await;
    let client = stack.client();
    for (model, upstream) in [("claude-test", &claude), ("gemini-test", &gemini)] {
        // Whole: the upstream's text and the usage it reported (the mock counts words).
        let reply = client
            .chat(&ask(model, "hello provider world [[provider:reason]]"))
            .await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text());
        let body = reply.json();
        assert_eq!(content(&reply), "You said: hello provider world", "{body}");
        assert_eq!(body["model"], model);
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
        assert_eq!(body["usage"]["prompt_tokens"], 4, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 5, "{body}");
        assert_eq!(body["usage"]["drawbridge"]["tokens"], "reported", "{body}");

        // Streamed, with usage.
        let mut streamed = ask(model, "stream me please");
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let reply = client.chat(&streamed).await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text());
        assert_eq!(reply.sse_text(), "You said: stream me please");
        let chunks = reply.sse_chunks();
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage["prompt_tokens"], 3, "{usage}");
        assert_eq!(usage["completion_tokens"], 5, "{usage}");
        let finish: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finish, ["stop"]);
        assert_eq!(upstream.requests().await, 2, "{model}");
    }

    // The request's parameters reach each upstream in its own terms.
    let mut sampled = ask("claude-test", "[[provider:echo_request]]");
    sampled["temperature"] = json!(0.3);
    sampled["stop"] = json!(["END"]);
    sampled["max_tokens"] = json!(50);
    sampled["system"] = json!("ignored");
    let reply = client.chat(&sampled).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent: Value = serde_json::from_str(&content(&reply)).unwrap();
    assert_eq!(sent["temperature"], 0.3, "{sent}");
    assert_eq!(sent["stop_sequences"], json!(["END"]), "{sent}");
    assert_eq!(sent["max_tokens"], 50, "{sent}");
    assert_eq!(sent["model"], "claude-test", "{sent}");
    assert_eq!(sent["stream"], true, "{sent}");
    assert!(sent.get("stop").is_none(), "{sent}");

    let mut sampled = ask("gemini-test", "[[provider:echo_request]]");
    sampled["temperature"] = json!(0.3);
    sampled["stop"] = json!(["END"]);
    sampled["max_tokens"] = json!(50);
    sampled["response_format"] = json!({"type": "json_object"});
    let reply = client.chat(&sampled).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent: Value = serde_json::from_str(&content(&reply)).unwrap();
    assert_eq!(
        sent["generationConfig"],
        json!({"temperature": 0.3, "stopSequences": ["END"], "maxOutputTokens": 50,
            "responseMimeType": "application/json"}),
        "{sent}"
    );

    // Both models are listed; every request carried its account's key (the mocks refuse any
    // other).
    let models = client.get("/v1/models").await.json();
    for model in ["claude-test", "gemini-test"] {
        assert!(
            models["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == model),
            "{models}"
        );
    }
    assert_eq!(claude.requests().await + gemini.requests().await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_round_trip_through_each_provider() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, claude, gemini) =
        claude_and_gemini(dir.path(), ("claude-test", &[]), ("gemini-test", &[])).await;
    let client = stack.client();
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    for model in ["claude-test", "gemini-test"] {
        for stream in [false, true] {
            let question = "weather please [[provider:tool args={\"city\":\"Oslo\"}]]";
            let mut request = ask(model, question);
            request["tools"] = tools.clone();
            request["stream"] = json!(stream);
            let reply = client.chat(&request).await;
            assert_eq!(reply.status, 200, "{model}: {}", reply.text());
            let call = if stream {
                let chunks = reply.sse_chunks();
                let finish: Vec<&str> = chunks
                    .iter()
                    .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
                    .collect();
                assert_eq!(finish, ["tool_calls"], "{model}");
                let deltas: Vec<&Value> = chunks
                    .iter()
                    .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
                    .flatten()
                    .collect();
                let arguments: String = deltas
                    .iter()
                    .filter_map(|d| d["function"]["arguments"].as_str())
                    .collect();
                json!({"id": deltas[0]["id"], "type": "function", "function": {
                    "name": deltas[0]["function"]["name"], "arguments": arguments}})
            } else {
                let body = reply.json();
                assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
                body["choices"][0]["message"]["tool_calls"][0].clone()
            };
            assert_eq!(call["function"]["name"], "get_weather", "{model}: {call}");
            let arguments: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(arguments, json!({"city": "Oslo"}), "{model}");
            let id = call["id"].as_str().unwrap();
            assert!(id.starts_with("call_") || id.starts_with("toolu_"), "{id}");

            // The result goes back; the upstream accepts it only as the answer to its own
            // call (the mocks check that, as the providers do), and answers the new turn.
            let follow_up = json!({"model": model, "tools": tools, "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": id, "content": "{\"temp\": 21}"},
                {"role": "user", "content": "thanks"},
            ]});
            let reply = client.chat(&follow_up).await;
            assert_eq!(reply.status, 200, "{model}: {}", reply.text());
            assert_eq!(content(&reply), "You said: thanks", "{model}");
        }
    }
    assert_eq!(claude.requests().await, 4);
    assert_eq!(gemini.requests().await, 4);
}

/// An account of one kind rate limited (its mock answers 429 with `Retry-After: 60`) rests,
/// and the account of the other kind serving the same model answers meanwhile.
async fn rests_while_the_other_serves(limited_kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let limited_env: &[(&str, &str)] = &[
        ("MOCK_PROVIDER_FAIL_WITH", "429"),
        ("MOCK_PROVIDER_RETRY_AFTER", "60"),
    ];
    let (claude_env, gemini_env) = if limited_kind == "anthropic" {
        (limited_env, &[][..])
    } else {
        (&[][..], limited_env)
    };
    let (stack, claude, gemini) =
        claude_and_gemini(dir.path(), ("mixed", claude_env), ("mixed", gemini_env)).await;
    let (limited, healthy, limited_id) = if limited_kind == "anthropic" {
        (&claude, &gemini, "c-1")
    } else {
        (&gemini, &claude, "g-1")
    };
    let client = stack.client();
    let mut asked = 0;
    while limited.requests().await == 0 {
        asked += 1;
        assert!(asked <= 30, "the limited account was never tried");
        let reply = client.chat(&ask("mixed", "hello")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), "You said: hello");
    }
    for _ in 0..8 {
        let reply = client.chat(&ask("mixed", "hello again")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(content(&reply), "You said: hello again");
    }
    assert_eq!(
        limited.requests().await,
        1,
        "a resting account is not tried"
    );
    assert_eq!(healthy.requests().await, asked + 8);
    let view = account_with_error(&stack, limited_id, "rate limited").await;
    assert_eq!(view["breaker"], "closed", "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_anthropic_account_rests_while_gemini_serves() {
    rests_while_the_other_serves("anthropic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_gemini_account_rests_while_anthropic_serves() {
    rests_while_the_other_serves("gemini").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_400_stays_the_clients_on_both_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, claude, gemini) =
        claude_and_gemini(dir.path(), ("claude-test", &[]), ("gemini-test", &[])).await;
    let client = stack.client();
    for model in ["claude-test", "gemini-test"] {
        for _ in 0..3 {
            let reply = client
                .chat(&ask(model, "[[provider:status code=400]] refuse this"))
                .await;
            assert_eq!(reply.status, 400, "{model}: {}", reply.text());
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
    }
    assert_eq!(claude.requests().await, 3, "never retried");
    assert_eq!(gemini.requests().await, 3, "never retried");
    for id in ["c-1", "g-1"] {
        let view = account(&stack, id).await;
        assert_eq!(view["breaker"], "closed", "{view}");
        assert_eq!(view["last_error"], Value::Null, "{view}");
    }
    let reply = client.chat(&ask("gemini-test", "fine now")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Gemini answers a wrong key with a 400 (`API_KEY_INVALID`): the account's failure, never
/// the client's 400, and the other account serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_gemini_key_is_the_accounts_failure() {
    let dir = tempfile::tempdir().unwrap();
    let gemini = Upstream::start(dir.path(), GEMINI_KEY, &[]).await;
    let claude = Upstream::start(dir.path(), CLAUDE_KEY, &[]).await;
    let wrong = "AIza-wrong-secret-0123456789";
    let stack = Stack::single(StackOptions {
        accounts: Vec::new(),
        extra_accounts_yaml: provider_account_of("gemini", "g-1", "mixed", &gemini, wrong)
            + &provider_account_of("anthropic", "c-1", "mixed", &claude, CLAUDE_KEY),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    for _ in 0..12 {
        let reply = client.chat(&ask("mixed", "hello")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert!(gemini.requests().await >= 1, "the account was tried");
    assert_eq!(claude.requests().await, 12);
    let view = account_with_error(&stack, "g-1", "refused this account's key").await;
    assert_eq!(view["breaker"], "open", "{view}");
    assert!(!stack.logs().contains(wrong), "the key never reaches a log");
}

/// A stream cut mid-answer on the Anthropic account is finished on the Gemini one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_on_one_kind_is_finished_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, claude, gemini) =
        claude_and_gemini(dir.path(), ("mixed", &[]), ("mixed", &[])).await;
    let mut body = ask("mixed", "[[provider:cut after=2]] a long answer");
    body["stream"] = json!(true);
    let reply = stack.client().chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let finish: Vec<String> = reply
        .sse_chunks()
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(finish, ["stop"], "{}", reply.text());
    let text = reply.sse_text();
    assert!(
        text.starts_with("You said: Your previous reply was cut off"),
        "{text}"
    );
    assert_eq!(claude.requests().await + gemini.requests().await, 2);
    assert_eq!(claude.requests().await, 1, "each account tried once");
}

/// The official OpenAI Python SDK (`SDK_PYTHON`, as `make test` sets it) through an Anthropic
/// and a Gemini account: `tests/sdk_upstreams`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_through_anthropic_and_gemini_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, claude, gemini) =
        claude_and_gemini(dir.path(), ("claude-test", &[]), ("gemini-test", &[])).await;
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk_upstreams");
    test_support::sdk::run_python_suite(&suite, &stack.base_url, &[], 6).await;
    assert!(claude.requests().await >= 3);
    assert!(gemini.requests().await >= 3);
}
