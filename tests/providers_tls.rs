//! HTTPS provider accounts end to end: `drawbridge` with a provider account on a real
//! `mock-provider` serving HTTPS with the test certificates of `tests/fixtures/tls`. With the
//! test CA as the account's `provider.ca_file` a whole and a streamed chat completion are
//! served over HTTP/2 (ALPN) on one pooled connection; without it the certificate is not
//! trusted and the request fails with a 5xx in OpenAI's error shape, the upstream never
//! reached; an upstream that offers only HTTP/1.1 is still served. The protocol used is read
//! from the mock's own counters, not from logs.

use std::path::Path;

use serde_json::{Value, json};
use test_support::provider::{MockProvider, test_ca};
use test_support::wait::poll;
use test_support::{Stack, StackOptions};

const KEY: &str = "sk-tls-0123456789";

/// `drawbridge` with one provider account, `p-tls`, on `upstream` (trusting `ca_file`).
async fn stack_on(upstream: &MockProvider, ca_file: Option<&Path>) -> Stack {
    let ca = ca_file.map_or(String::new(), |p| {
        format!("      ca_file: '{}'\n", p.display())
    });
    Stack::single(StackOptions {
        accounts: Vec::new(),
        extra_accounts_yaml: format!(
            "  - id: p-tls\n    kind: openai\n    models: [gpt-test]\n    provider:\n      base_url: {}\n      api_key: {KEY}\n{ca}      timeouts: {{ connect: 2s, first_byte: 10s, idle: 10s }}\n",
            upstream.base_url()
        ),
        ..StackOptions::default()
    })
    .await
}

fn ask(text: &str) -> Value {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": text}]})
}

fn streamed(text: &str) -> Value {
    let mut body = ask(text);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_provider_with_its_ca_file_answers_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockProvider::start_tls(dir.path(), KEY, &[]).await;
    assert!(upstream.base_url().starts_with("https://127.0.0.1:"));
    let stack = stack_on(&upstream, Some(&test_ca())).await;
    let client = stack.client();

    let reply = client.chat(&ask("hello over tls")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "You said: hello over tls"
    );
    assert_eq!(body["usage"]["completion_tokens"], 5, "{body}");

    let reply = client.chat(&streamed("stream over tls")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.sse_text(), "You said: stream over tls");

    let stats = upstream.stats().await;
    assert_eq!(stats["chat_requests"], 2, "{stats}");
    assert_eq!(stats["http_versions"]["h2"], 2, "{stats}");
    assert_eq!(stats["http_versions"]["http/1.1"], 0, "{stats}");
    // One connection from the engine's pool for both calls, one from the stats request.
    assert_eq!(stats["tls_connections"], 2, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_the_account_with_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockProvider::start_tls(dir.path(), KEY, &[]).await;
    let stack = stack_on(&upstream, None).await;

    let reply = stack.client().chat(&ask("who signed this")).await;
    assert!(
        (500..600).contains(&reply.status),
        "{}: {}",
        reply.status,
        reply.text()
    );
    let body = reply.json();
    for field in ["message", "type", "code"] {
        assert!(body["error"].get(field).is_some(), "error.{field}: {body}");
    }
    assert_eq!(upstream.requests().await, 0, "no request got through");

    // The account's own failure says why, for the operator.
    let admin = stack.admin();
    let last_error = poll(std::time::Duration::from_secs(10), || async {
        let accounts = admin.get("/admin/accounts").await.json();
        let list = accounts
            .get("data")
            .and_then(Value::as_array)
            .or_else(|| accounts.as_array())
            .cloned()
            .unwrap_or_default();
        list.into_iter()
            .find(|a| a["account"] == "p-tls")
            .and_then(|a| a["last_error"].as_str().map(str::to_owned))
    })
    .await
    .expect("p-tls reports its last error");
    assert!(last_error.contains("TLS handshake failed"), "{last_error}");
    assert!(last_error.contains("certificate"), "{last_error}");

    // The engine is still up and serving.
    let again = stack.client().chat(&ask("still there")).await;
    assert!((500..600).contains(&again.status), "{}", again.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_only_tls_upstream_is_served_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    let upstream =
        MockProvider::start_tls(dir.path(), KEY, &[("MOCK_PROVIDER_HTTP1_ONLY", "true")]).await;
    let stack = stack_on(&upstream, Some(&test_ca())).await;
    let client = stack.client();

    let reply = client.chat(&ask("old school")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = client.chat(&streamed("old school stream")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.sse_text(), "You said: old school stream");

    let stats = upstream.stats().await;
    assert_eq!(stats["chat_requests"], 2, "{stats}");
    assert_eq!(stats["http_versions"]["http/1.1"], 2, "{stats}");
    assert_eq!(stats["http_versions"]["h2"], 0, "{stats}");
}
