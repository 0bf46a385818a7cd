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
