//! The provider-account tests' helpers: a `mock-provider` process, the accounts that point
//! at it, and the engine's view of an account.

#![allow(dead_code, reason = "each test file uses a part")]

use std::time::Duration;

use serde_json::{Value, json};
use test_support::Stack;
use test_support::wait::poll;

/// A running mock upstream (HTTP, or HTTPS with the test certificate).
pub use test_support::provider::MockProvider as Upstream;

/// An `accounts:` entry for a provider account on `upstream` serving `model`.
pub fn provider_account(id: &str, model: &str, upstream: &Upstream, key: &str) -> String {
    provider_account_of("openai", id, model, upstream, key)
}

/// An `accounts:` entry for a provider account of `kind` on `upstream` serving `model`.
pub fn provider_account_of(
    kind: &str,
    id: &str,
    model: &str,
    upstream: &Upstream,
    key: &str,
) -> String {
    format!(
        "  - id: {id}\n    kind: {kind}\n    models: [{model}]\n    provider:\n      base_url: {}\n      api_key: {key}\n      max_concurrency: 8\n      timeouts: {{ connect: 2s, first_byte: 10s, idle: 10s }}\n",
        upstream.base_url_for(kind)
    )
}

pub fn ask(text: &str) -> Value {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": text}]})
}

pub fn content(reply: &test_support::Reply) -> String {
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `account`'s entry once its `last_error` (as its connection reported it at the engine's
/// last refresh) contains `needle`.
pub async fn account_with_error(stack: &Stack, id: &str, needle: &str) -> Value {
    let found = poll(Duration::from_secs(10), || async {
        let view = account(stack, id).await;
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(needle))
            .then_some(view)
    })
    .await;
    match found {
        Some(view) => view,
        None => panic!(
            "{id} never reported '{needle}': {}",
            account(stack, id).await
        ),
    }
}

/// `account`'s entry in the admin API's accounts view.
pub async fn account(stack: &Stack, account: &str) -> Value {
    let accounts = stack.admin().get("/admin/accounts").await;
    assert_eq!(accounts.status, 200, "{}", accounts.text());
    let list = accounts.json();
    let list = list
        .get("data")
        .and_then(Value::as_array)
        .or_else(|| list.as_array())
        .cloned()
        .unwrap_or_default();
    list.into_iter()
        .find(|a| a["account"] == account)
        .unwrap_or_else(|| panic!("no account {account} in {}", accounts.text()))
}
