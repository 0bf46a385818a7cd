//! Drawbridge as a NEW-API channel: the calls NEW-API makes, byte for byte in what matters
//! (only a bearer header, its channel-test body, forced `include_usage`), and what it reads from
//! the answers. Against the public gateway of both deployment shapes and against the engine's
//! internal endpoint with a channel key.

use serde_json::{Value, json};
use test_support::stack::CHANNEL_KEY;
use test_support::{Client, Method, Stack, StackOptions};

/// Everything NEW-API needs from one base URL.
async fn channel_works(client: &Client) {
    // "Fetch models": GET /v1/models with nothing but the bearer header.
    let models = client.request(Method::GET, "/v1/models", "").await;
    assert_eq!(models.status, 200, "{}", models.text());
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"kiro".to_owned()), "{ids:?}");

    // The channel test: non-streaming, max_tokens 16; NEW-API reads usage.
    let test = client
        .chat(&json!({"model": "kiro", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}))
        .await;
    assert_eq!(test.status, 200, "{}", test.text());
    let usage = &test.json()["usage"];
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert!(usage[field].as_u64().unwrap() > 0, "{field}: {usage}");
    }

    // A relayed streaming call: NEW-API forces include_usage on, and parses every `data:` line
    // as one JSON object; the last one before [DONE] must carry the usage it bills by.
    let stream = client
        .chat(&json!({
            "model": "kiro",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "Tell me something in a few words"}
            ],
            "max_completion_tokens": 64
        }))
        .await;
    assert_eq!(stream.status, 200, "{}", stream.text());
    let text = stream.text();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    // No event spans several data lines (each data line parsed above on its own).
    assert_eq!(
        text.lines().filter(|l| l.starts_with("data:")).count(),
        data.len()
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    assert!(
        last["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{last}"
    );
    assert!(
        last["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{last}"
    );
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!streamed.is_empty());

    // Status codes as NEW-API reads them: 401 only for the key (it disables the channel).
    let bad_key = client
        .with_key(Some("db-not-a-key-of-this-gateway"))
        .request(Method::GET, "/v1/models", "")
        .await;
    assert_eq!(bad_key.status, 401);
    // A request no channel can serve is final: 400.
    let bad = client
        .chat(&json!({"model": "kiro", "messages": "hi"}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    // An answer that fails on every account: retryable elsewhere (5xx), never 401 or 400.
    let failed = client
        .chat(&json!({"model": "kiro", "messages": [{"role": "user", "content": "[[mock:crash after=0]] boom"}]}))
        .await;
    assert!(
        failed.status >= 500 || failed.status == 429,
        "{}: {}",
        failed.status,
        failed.text()
    );
    assert!(failed.json()["error"]["message"].is_string());
}

fn one_account() -> StackOptions {
    StackOptions {
        accounts: vec![test_support::AccountSpec::new(2)],
        ..StackOptions::default()
    }
}

#[tokio::test]
async fn single_node_works_as_a_new_api_channel() {
    let stack = Stack::single(one_account()).await;
    channel_works(&stack.client()).await;
}

#[tokio::test]
async fn three_processes_work_as_a_new_api_channel_through_the_gateway_and_the_engine() {
    let stack = Stack::three(one_account()).await;
    channel_works(&stack.client()).await;
    // NEW-API pointed at the engine directly, with a channel key.
    let engine = format!("http://{}", stack.processes[1].addr("engine"));
    channel_works(&Client::new(engine, Some(CHANNEL_KEY))).await;
}
