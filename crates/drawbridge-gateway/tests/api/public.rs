//! The public API: who gets in, within which limits, and what is charged.

use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use drawbridge_state::UsageStore as _;

use crate::common::{Gateway, MODEL, STATIC_KEY, ask};

/// A key that expires is let in until its expiry, on the gateway's clock, and refused after.
#[tokio::test(start_paused = true)]
async fn a_key_is_refused_once_it_has_expired() {
    let gateway = Gateway::start("");
    let (id, secret) = gateway
        .create_key(json!({"name": "short", "expires_in": "1h"}))
        .await;
    let reply = gateway
        .request(Method::GET, "/v1/models", Some(&secret), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    tokio::time::advance(Duration::from_secs(3600) - Duration::from_millis(1)).await;
    let reply = gateway.chat(Some(&secret), ask(MODEL, "still in")).await;
    assert_eq!(
        reply.status,
        200,
        "a moment before expiry: {}",
        reply.text()
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let reply = gateway.chat(Some(&secret), ask(MODEL, "too late")).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.code(), "invalid_api_key");
    assert!(reply.text().contains("expired"), "{}", reply.text());
    let view = gateway
        .admin(Method::GET, &format!("/admin/keys/{id}"), None)
        .await
        .json();
    assert_eq!(view["status"], "expired", "{view}");
    // Only the request within its life reached the backend (and the static key is unaffected).
    assert_eq!(gateway.backend.chats(), 1);
    let reply = gateway.chat(Some(STATIC_KEY), ask(MODEL, "hi")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// A key's rate limit: the headers count down, the request over the limit is 429 with a
/// `Retry-After`, and the window slides on the gateway's clock.
#[tokio::test(start_paused = true)]
async fn a_key_over_its_rate_limit_is_refused_with_429_and_its_headers() {
    let gateway = Gateway::start("");
    let (_, secret) = gateway.create_key(json!({"name": "slow", "rpm": 2})).await;
    for remaining in ["1", "0"] {
        let reply = gateway.chat(Some(&secret), ask(MODEL, "hi")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(reply.header("x-ratelimit-remaining"), Some(remaining));
    }
    let reply = gateway.chat(Some(&secret), ask(MODEL, "one more")).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.code(), "rate_limit_exceeded");
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        gateway.backend.chats(),
        2,
        "the refused request never reached the backend"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    let reply = gateway.chat(Some(&secret), ask(MODEL, "later")).await;
    assert_eq!(reply.status, 200, "a minute later: {}", reply.text());
    gateway.settle().await;
}

/// A streamed answer is charged once, when it has ended: one ledger entry with the backend's
/// usage, its account and credits.
#[tokio::test(start_paused = true)]
async fn a_streamed_answer_is_charged_once() {
    let gateway = Gateway::start("");
    let (id, secret) = gateway
        .create_key(json!({"name": "streamer", "quota": {"unit": "tokens", "limit": 1000}}))
        .await;
    let mut request = ask(MODEL, "stream it");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let reply = gateway.chat(Some(&secret), request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    assert!(text.contains("Hello there."), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    gateway.settle().await;
    let spent = gateway.store.spent(&id).await.unwrap();
    assert_eq!(spent.requests, 1);
    assert_eq!(spent.tokens, 15);
    assert_eq!(spent.credits, 2.0);
    let usage = gateway
        .admin(Method::GET, &format!("/admin/usage?key={id}"), None)
        .await
        .json();
    assert_eq!(usage["total"]["requests"], 1, "{usage}");
    assert_eq!(usage["data"][0]["account"], "acct-1", "{usage}");
    assert_eq!(usage["data"][0]["model"], MODEL, "{usage}");
}

/// Only key problems are 401, and the presented key is never echoed.
#[tokio::test(start_paused = true)]
async fn a_missing_bad_or_revoked_key_is_401() {
    let gateway = Gateway::start("");
    let (id, revoked) = gateway.create_key(json!({"name": "gone"})).await;
    let reply = gateway
        .admin(Method::DELETE, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for (what, key) in [
        ("no key", None),
        (
            "unknown key",
            Some("db-0000000000000000000000000000000000000000000000000"),
        ),
        ("not a key", Some("hello")),
        ("revoked key", Some(revoked.as_str())),
    ] {
        for path in ["/v1/chat/completions", "/v1/models"] {
            let reply = if path == "/v1/models" {
                gateway.request(Method::GET, path, key, None).await
            } else {
                gateway.chat(key, ask(MODEL, "hi")).await
            };
            assert_eq!(reply.status, 401, "{what} on {path}: {}", reply.text());
            assert_eq!(reply.code(), "invalid_api_key", "{what}");
            if let Some(key) = key {
                assert!(!reply.text().contains(key), "{what}: the key is echoed");
            }
        }
    }
    let reply = gateway.chat(Some(&revoked), ask(MODEL, "hi")).await;
    assert!(reply.text().contains("revoked"), "{}", reply.text());
    assert_eq!(gateway.backend.chats(), 0);
}

/// A key with a budget is served while budget is left, then refused with 429
/// `insufficient_quota`, without reaching the backend.
#[tokio::test(start_paused = true)]
async fn a_key_whose_budget_is_spent_is_refused() {
    let gateway = Gateway::start("");
    let (id, secret) = gateway
        .create_key(json!({"name": "budget", "quota": {"unit": "tokens", "limit": 20}}))
        .await;
    // Each answer costs 15 tokens: the second starts with 5 left, the third with none.
    for n in 1..=2 {
        let reply = gateway.chat(Some(&secret), ask(MODEL, "hi")).await;
        assert_eq!(reply.status, 200, "request {n}: {}", reply.text());
        gateway.settle().await;
    }
    let reply = gateway.chat(Some(&secret), ask(MODEL, "hi")).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.code(), "insufficient_quota");
    assert!(reply.text().contains("is spent"), "{}", reply.text());
    assert_eq!(gateway.backend.chats(), 2);
    gateway.settle().await;
    let spent = gateway.store.spent(&id).await.unwrap();
    assert_eq!(
        (spent.requests, spent.tokens),
        (2, 30),
        "the refusal was charged"
    );
}

/// A key limited to some models may not ask for another, and lists only its own; the
/// backend is told whose request it is.
#[tokio::test(start_paused = true)]
async fn a_key_may_use_only_its_models() {
    let gateway = Gateway::start("");
    let (id, secret) = gateway
        .create_key(json!({"name": "narrow", "models": [MODEL]}))
        .await;
    let reply = gateway.chat(Some(&secret), ask("other-model", "hi")).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.code(), "permission_denied");
    assert_eq!(reply.json()["error"]["param"], "model");
    assert_eq!(gateway.backend.chats(), 0);
    let models = gateway
        .request(Method::GET, "/v1/models", Some(&secret), None)
        .await
        .json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![MODEL], "{models}");
    let reply = gateway.chat(Some(&secret), ask(MODEL, "hi")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let contexts = gateway.backend.contexts();
    assert_eq!(contexts.len(), 1);
    assert_eq!(contexts[0].tenant, id);
    assert_eq!(contexts[0].caller.key_id, id);
    // A key without a list sees every model.
    let all = gateway
        .request(Method::GET, "/v1/models", Some(STATIC_KEY), None)
        .await
        .json();
    assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all}");
    gateway.settle().await;
}

/// A body over `gateway.max_body_bytes` is 413 and never reaches the backend.
#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_413() {
    let gateway = Gateway::start("  max_body_bytes: 4096\n");
    let reply = gateway
        .chat(Some(STATIC_KEY), ask(MODEL, &"x".repeat(8192)))
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.code(), "payload_too_large");
    let reply = gateway
        .chat(Some(STATIC_KEY), ask(MODEL, &"x".repeat(1024)))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(gateway.backend.chats(), 1);
}

/// The engine's `usage.drawbridge` reaches the gateway's client (JSON and usage chunk), its
/// credits reach `/admin/usage`, and the gateway's metrics count credits and the token source.
#[tokio::test(start_paused = true)]
async fn usage_details_cross_the_gateway() {
    use drawbridge_types::Usage;
    use drawbridge_types::openai::{TokenSource, UsageDetails};
    let gateway = Gateway::start("");
    let details = UsageDetails {
        tokens: TokenSource::Reported,
        credits: Some(0.75),
        context_usage_percent: Some(33.0),
        tool_choice_unmet: true,
    };
    gateway.backend.script(test_support::Script::Answer {
        pieces: vec!["Hi.".into()],
        usage: Usage::new(10, 5).with_details(details),
        account: "acct-1".into(),
        credits: 0.75,
    });
    let reply = gateway.chat(Some(STATIC_KEY), ask(MODEL, "hi")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["usage"]["drawbridge"],
        json!({"tokens": "reported", "credits": 0.75, "context_usage_percent": 33.0,
            "tool_choice_unmet": true})
    );
    let mut request = ask(MODEL, "stream it");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let text = gateway.chat(Some(STATIC_KEY), request).await.text();
    assert!(
        text.contains(
            r#""drawbridge":{"tokens":"reported","credits":0.75,"context_usage_percent":33.0,"tool_choice_unmet":true}"#
        ),
        "{text}"
    );
    gateway.settle().await;
    let usage = gateway
        .admin(Method::GET, "/admin/usage?group_by=account", None)
        .await
        .json();
    assert_eq!(usage["data"][0]["credits"], 1.5, "{usage}");
    let metrics = gateway
        .request(Method::GET, "/metrics", None, None)
        .await
        .text();
    assert!(
        metrics.contains(
            r#"drawbridge_tokens_total{model="kiro",kind="prompt",source="reported"} 20"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"drawbridge_credits_total{model="kiro"} 1.5"#),
        "{metrics}"
    );
}
