//! The Responses API on the gateway: answers kept in the gateway's stores per client key, for
//! `gateway.responses_ttl`.

use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use crate::common::{Gateway, MODEL, STATIC_KEY, config};

/// A stored response is the key's own, and is gone once `gateway.responses_ttl` has passed.
#[tokio::test(start_paused = true)]
async fn a_response_is_kept_for_its_key_until_the_configured_ttl() {
    let gateway = Gateway::with_config(config("  responses_ttl: 10m\n", true));
    let (_, other) = gateway.create_key(json!({"name": "other"})).await;
    let reply = gateway
        .request(
            Method::POST,
            "/v1/responses",
            Some(STATIC_KEY),
            Some(json!({"model": MODEL, "input": "remember this"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let created = reply.json();
    assert_eq!(created["output"][0]["content"][0]["text"], "Hello there.");
    let path = format!("/v1/responses/{}", created["id"].as_str().unwrap());

    let got = gateway
        .request(Method::GET, &path, Some(STATIC_KEY), None)
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), created);
    let foreign = gateway
        .request(Method::GET, &path, Some(&other), None)
        .await;
    assert_eq!(foreign.status, 404, "{}", foreign.text());
    let chained = gateway
        .request(
            Method::POST,
            "/v1/responses",
            Some(&other),
            Some(json!({"model": MODEL, "input": "x", "previous_response_id": created["id"]})),
        )
        .await;
    assert_eq!(chained.status, 404, "{}", chained.text());

    tokio::time::advance(Duration::from_secs(600) - Duration::from_millis(1)).await;
    let still = gateway
        .request(Method::GET, &path, Some(STATIC_KEY), None)
        .await;
    assert_eq!(still.status, 200, "{}", still.text());
    tokio::time::advance(Duration::from_millis(1)).await;
    let gone = gateway
        .request(Method::GET, &path, Some(STATIC_KEY), None)
        .await;
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert_eq!(gone.code(), "not_found");
}
