//! The provider-account tests' helpers: a `mock-provider` process, the accounts that point
//! at it, and the engine's view of an account.

#![allow(dead_code, reason = "each test file uses a part")]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use test_support::process::Process;
use test_support::wait::poll;
use test_support::{Client, Stack};

/// A running mock upstream.
pub struct Upstream {
    process: Process,
}

impl Upstream {
    /// A mock that wants `key`; `env` adds its knobs (e.g. `MOCK_PROVIDER_FAIL_WITH`).
    pub async fn start(dir: &Path, key: &str, env: &[(&str, &str)]) -> Upstream {
        // The harness passes `--config` to every binary; the mock ignores it.
        let config = dir.join("mock-provider.yaml");
        std::fs::write(&config, "").unwrap();
        let mut env = env.to_vec();
        env.push(("MOCK_PROVIDER_API_KEY", key));
        let process = Process::start("mock-provider", &config, &env, &["http"]).await;
        Upstream { process }
    }

    /// The base URL of its OpenAI-compatible API (also its Anthropic API's: both under
    /// `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.process.addr("http"))
    }

    /// The base URL of its API for accounts of `kind` (`openai`, `anthropic`, `gemini`).
    pub fn base_url_for(&self, kind: &str) -> String {
        match kind {
            "gemini" => format!("http://{}/v1beta", self.process.addr("http")),
            _ => self.base_url(),
        }
    }

    /// How many chat requests it received.
    pub async fn requests(&self) -> u64 {
        let stats = Client::new(format!("http://{}", self.process.addr("http")), None)
            .get("/stats")
            .await
            .json();
        stats["chat_requests"].as_u64().unwrap()
    }
}

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
