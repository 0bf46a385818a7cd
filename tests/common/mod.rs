//! The behaviour both deployment shapes must show, written once.

use futures::future::join_all;
use serde_json::{Value, json};
use test_support::{Client, Stack};

pub fn user(text: &str) -> Value {
    json!({"model": "kiro", "messages": [{"role": "user", "content": text}]})
}

pub fn streaming(text: &str, include_usage: bool) -> Value {
    let mut body = user(text);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn error_code(reply: &test_support::Reply) -> String {
    let body = reply.json();
    let error = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "error.{field} missing: {body}");
    }
    error["code"].as_str().unwrap_or_default().to_owned()
}

pub async fn non_stream(client: &Client) {
    let reply = client.chat(&user("Hello there, gateway!")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "kiro");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    // The mock agent echoes the ACP prompt it received, which for one user message is its text.
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello there, gateway!"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
}

/// Check the OpenAI stream rules; return the streamed text.
fn check_stream(reply: &test_support::Reply, include_usage: bool) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let chunks = reply.sse_chunks();
    assert!(chunks.len() >= 2, "{chunks:?}");
    let (id, created) = (chunks[0]["id"].clone(), chunks[0]["created"].clone());
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["created"], created);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(
            chunk.get("usage").is_some(),
            include_usage,
            "usage key only with include_usage: {chunk}"
        );
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let choice_chunks: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"].as_array().unwrap().is_empty())
        .collect();
    let last = choice_chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    for chunk in &choice_chunks[..choice_chunks.len() - 1] {
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    if include_usage {
        let usage_chunk = chunks.last().unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);
        for chunk in &chunks[..chunks.len() - 1] {
            assert_eq!(chunk["usage"], Value::Null);
        }
    }
    choice_chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

pub async fn stream(client: &Client) {
    let text = "one two three four five";
    let reply = client.chat(&streaming(text, false)).await;
    assert_eq!(check_stream(&reply, false), text);
    // One chunk per word: the answer really streamed.
    assert!(reply.sse_chunks().len() >= 5);
}

pub async fn include_usage(client: &Client) {
    let reply = client
        .chat(&streaming("count my tokens please", true))
        .await;
    assert_eq!(check_stream(&reply, true), "count my tokens please");
}

pub async fn concurrent_streams(client: &Client, n: usize) {
    let requests = (0..n).map(|i| {
        let client = client.clone();
        async move {
            let text = format!("stream number {i} of many");
            let reply = client.chat(&streaming(&text, true)).await;
            (text, check_stream(&reply, true))
        }
    });
    for (sent, got) in join_all(requests).await {
        assert_eq!(
            got, sent,
            "every stream gets its own answer, nothing mixed in"
        );
    }
}

pub async fn conversation_is_rendered(client: &Client) {
    let body = json!({
        "model": "kiro",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"}
        ],
        "max_completion_tokens": 16
    });
    let reply = client.chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "[System]\nBe brief.\n\n[Developer]\nAnswer in English.\n\n[User]\nHi\n\n[Assistant]\nHello!\n\n[User]\nBye"
    );
    // NEW-API's channel test.
    let reply = client
        .chat(&json!({"model": "kiro", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}))
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

pub async fn errors(client: &Client) {
    let bad_key = client
        .with_key(Some("db-wrong-key-000000"))
        .chat(&user("x"))
        .await;
    assert_eq!(bad_key.status, 401);
    assert_eq!(error_code(&bad_key), "invalid_api_key");
    assert!(
        !bad_key.text().contains("db-wrong-key"),
        "the key is not echoed"
    );

    let no_key = client.with_key(None).chat(&user("x")).await;
    assert_eq!(no_key.status, 401);

    let bad_json = client
        .request(
            test_support::Method::POST,
            "/v1/chat/completions",
            "{\"model\": ",
        )
        .await;
    assert_eq!(bad_json.status, 400, "{}", bad_json.text());
    assert_eq!(bad_json.json()["error"]["type"], "invalid_request_error");

    let missing = client.chat(&json!({"model": "kiro"})).await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages")
    );

    let empty = client.chat(&json!({"model": "kiro", "messages": []})).await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.json()["error"]["param"], "messages");

    let bad_role = client
        .chat(&json!({"model": "kiro", "messages": [{"role": "wizard", "content": "x"}]}))
        .await;
    assert_eq!(bad_role.status, 400);
    assert_eq!(bad_role.json()["error"]["param"], "messages[0].role");

    let unknown_model = client
        .chat(&json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(unknown_model.status, 404, "{}", unknown_model.text());
    assert_eq!(error_code(&unknown_model), "model_not_found");

    // Over the 4 MiB limit, several times and sizes: the client must get the 413 every time,
    // never a connection closed mid-upload.
    for size in [
        4 * 1024 * 1024 + 1,
        5 * 1024 * 1024,
        9 * 1024 * 1024,
        6 * 1024 * 1024,
    ] {
        let too_large = client.chat(&user(&"x".repeat(size))).await;
        assert_eq!(too_large.status, 413, "{size} bytes");
        assert_eq!(error_code(&too_large), "payload_too_large");
    }

    let nowhere = client.get("/v1/nowhere").await;
    assert_eq!(nowhere.status, 404);
    error_code(&nowhere);
}

pub async fn models_and_health(client: &Client) {
    let models = client.get("/v1/models").await;
    assert_eq!(models.status, 200);
    let body = models.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "kiro");
    assert_eq!(client.with_key(None).get("/v1/models").await.status, 401);

    let health = client.with_key(None).get("/health").await;
    assert_eq!(health.status, 200);
    let h = health.json();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["accounts"], 2);
    assert_eq!(h["total_slots"], 6);
    assert!(h["available_slots"].as_u64().is_some());
}

/// Run every scenario against `stack`, then stop it and check nothing is left behind.
pub async fn full_suite(mut stack: Stack) {
    let client = stack.client();
    models_and_health(&client).await;
    non_stream(&client).await;
    stream(&client).await;
    include_usage(&client).await;
    conversation_is_rendered(&client).await;
    errors(&client).await;
    concurrent_streams(&client, 20).await;

    assert!(
        !stack.agent_pids().is_empty(),
        "agents run while the stack is up"
    );
    let exits = stack.stop().await;
    assert!(
        exits.iter().all(|ok| *ok),
        "every process exits 0 on SIGTERM: {exits:?}"
    );
    assert_eq!(
        stack.agent_pids(),
        Vec::<u32>::new(),
        "no agent process outlives its binary"
    );
}
