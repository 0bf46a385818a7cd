//! The admin API: every route behind one token check; keys, accounts and usage.

use axum::http::Method;
use serde_json::{Value, json};

use crate::common::{ADMIN_TOKEN, Gateway, MODEL, STATIC_KEY, ask, config};

/// Every admin route, with a body where it takes one.
fn routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::POST, "/admin/keys", Some(json!({"name": "x"}))),
        (Method::GET, "/admin/keys", None),
        (Method::GET, "/admin/keys/static.ops", None),
        (Method::PATCH, "/admin/keys/key_1", Some(json!({"rpm": 1}))),
        (Method::DELETE, "/admin/keys/key_1", None),
        (Method::GET, "/admin/accounts", None),
        (
            Method::POST,
            "/admin/accounts/acct-1/credits",
            Some(json!({"set": 1})),
        ),
        (Method::GET, "/admin/usage", None),
        (Method::GET, "/admin/metrics", None),
    ]
}

/// Without a configured token the admin API is off (404); with one, a request without it or
/// with another is 401; either way nothing is done.
#[tokio::test(start_paused = true)]
async fn every_admin_route_needs_the_admin_token() {
    let off = Gateway::with_config(config("", false));
    let on = Gateway::start("");
    for (method, path, body) in routes() {
        let reply = off
            .request(method.clone(), path, Some(ADMIN_TOKEN), body.clone())
            .await;
        assert_eq!(reply.status, 404, "{method} {path} with no admin token set");
        assert!(
            reply.text().contains("admin API is off"),
            "{}",
            reply.text()
        );
        let reply = on.request(method.clone(), path, None, body.clone()).await;
        assert_eq!(reply.status, 401, "{method} {path} without a token");
        assert!(reply.text().contains("needs"), "{}", reply.text());
        for wrong in ["not-the-token", STATIC_KEY] {
            let reply = on
                .request(method.clone(), path, Some(wrong), body.clone())
                .await;
            assert_eq!(reply.status, 401, "{method} {path} with {wrong}");
            assert_eq!(reply.code(), "invalid_api_key");
            assert!(!reply.text().contains(wrong), "the token is echoed");
        }
    }
    let keys = on.admin(Method::GET, "/admin/keys", None).await.json();
    assert_eq!(
        keys["data"].as_array().unwrap().len(),
        1,
        "only the config's: {keys}"
    );
    let accounts = on.admin(Method::GET, "/admin/accounts", None).await.json();
    assert_eq!(accounts["data"][0]["credits"], 5000, "{accounts}");
}

/// A key's life through the admin API: made, listed, read with what it spent, limits
/// changed, revoked.
#[tokio::test(start_paused = true)]
async fn keys_are_created_listed_changed_and_revoked() {
    let gateway = Gateway::start("");
    let reply = gateway
        .admin(
            Method::POST,
            "/admin/keys",
            Some(json!({"name": "team-a", "rpm": 100, "models": [MODEL], "expires_in": "30d"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let created = reply.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with(created["prefix"].as_str().unwrap()),
        "{created}"
    );
    assert_eq!(created["status"], "active");
    assert_eq!(created["source"], "admin");
    assert_eq!(created["rpm"], 100);
    let created_at = created["created_at"].as_u64().unwrap();
    assert_eq!(
        created_at,
        test_support::clock::SOME_DAY_MS / 1000,
        "on the gateway's clock"
    );
    assert_eq!(
        created["expires_at"].as_u64().unwrap(),
        created_at + 30 * 86_400
    );

    let list = gateway.admin(Method::GET, "/admin/keys", None).await.json();
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ops", "team-a"], "{list}");
    assert!(
        !list.to_string().contains(&secret),
        "a listing shows a secret"
    );

    let reply = gateway.chat(Some(&secret), ask(MODEL, "hi")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    gateway.settle().await;
    let one = gateway
        .admin(Method::GET, &format!("/admin/keys/{id}"), None)
        .await
        .json();
    assert_eq!(one["spent"]["requests"], 1, "{one}");
    assert_eq!(one["spent"]["tokens"], 15, "{one}");
    assert!(one.get("key").is_none(), "the secret is shown again: {one}");

    let path = format!("/admin/keys/{id}");
    let changed = gateway
        .admin(Method::PATCH, &path, Some(json!({"rpm": 5, "models": []})))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    let changed = changed.json();
    assert_eq!(changed["rpm"], 5);
    assert_eq!(changed["models"], json!([]));
    assert_eq!(changed["expires_at"], created["expires_at"], "expiry kept");
    let renamed = gateway
        .admin(Method::PATCH, &path, Some(json!({"name": "b"})))
        .await;
    assert_eq!(renamed.status, 400, "{}", renamed.text());

    let revoked = gateway.admin(Method::DELETE, &path, None).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.json()["revoked"], true);
    assert_eq!(revoked.json()["status"], "revoked");
    let reply = gateway.chat(Some(&secret), ask(MODEL, "hi")).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
}

/// The config's keys are shown, never changed here; unknown ids are 404; bad bodies 400.
#[tokio::test(start_paused = true)]
async fn static_keys_unknown_ids_and_bad_bodies() {
    let gateway = Gateway::start("");
    let ops = gateway
        .admin(Method::GET, "/admin/keys/static.ops", None)
        .await;
    assert_eq!(ops.status, 200, "{}", ops.text());
    assert_eq!(ops.json()["source"], "config");
    let reply = gateway
        .admin(
            Method::PATCH,
            "/admin/keys/static.ops",
            Some(json!({"rpm": 1})),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("config"), "{}", reply.text());
    for path in ["/admin/keys/key_nope", "/admin/keys/static.nobody"] {
        let reply = gateway.admin(Method::DELETE, path, None).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
    }
    for (body, param) in [
        (json!({"name": ""}), Some("name")),
        (
            json!({"name": "x", "expires_in": "soon"}),
            Some("expires_in"),
        ),
        (json!({"name": "x", "expires_at": 1}), Some("expires_at")),
        (
            json!({"name": "x", "quota": {"unit": "tokens", "limit": 0}}),
            Some("quota.limit"),
        ),
        (json!({"name": "x", "colour": "red"}), None),
    ] {
        let reply = gateway
            .admin(Method::POST, "/admin/keys", Some(body.clone()))
            .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.code(), "invalid_request", "{body}");
        if let Some(param) = param {
            assert_eq!(reply.json()["error"]["param"], param, "{body}");
        }
    }
    let keys = gateway.admin(Method::GET, "/admin/keys", None).await.json();
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
}

/// `GET /admin/usage` refuses bad days, groups and parameters, and totals the ledger.
#[tokio::test(start_paused = true)]
async fn usage_queries_are_checked_and_grouped() {
    let gateway = Gateway::start("");
    for (query, param) in [
        ("from=2026-13-45", Some("from")),
        ("to=yesterday", Some("to")),
        ("group_by=week", Some("group_by")),
        ("colour=red", None),
    ] {
        let reply = gateway
            .admin(Method::GET, &format!("/admin/usage?{query}"), None)
            .await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
        assert_eq!(reply.code(), "invalid_request", "{query}");
        if let Some(param) = param {
            assert_eq!(reply.json()["error"]["param"], param, "{query}");
        }
    }
    let (id, secret) = gateway.create_key(json!({"name": "counted"})).await;
    for _ in 0..2 {
        let reply = gateway.chat(Some(&secret), ask(MODEL, "hi")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    gateway.settle().await;
    let usage = gateway
        .admin(
            Method::GET,
            "/admin/usage?group_by=key&from=2027-01-01&to=2027-01-31",
            None,
        )
        .await
        .json();
    assert_eq!(
        usage["data"],
        json!([{
            "key": id, "requests": 2, "prompt_tokens": 20, "completion_tokens": 10,
            "total_tokens": 30, "credits": 4.0, "estimated_requests": 0,
        }]),
        "{usage}"
    );
    assert_eq!(usage["total"]["requests"], 2, "{usage}");
    let none = gateway
        .admin(Method::GET, "/admin/usage?to=2026-12-31", None)
        .await
        .json();
    assert_eq!(none["total"]["requests"], 0, "{none}");
}

/// Accounts and their credits come from the backend's account admin.
#[tokio::test(start_paused = true)]
async fn accounts_are_listed_and_topped_up() {
    let gateway = Gateway::start("");
    let list = gateway
        .admin(Method::GET, "/admin/accounts", None)
        .await
        .json();
    assert_eq!(list["data"][0]["account"], "acct-1", "{list}");
    let reply = gateway
        .admin(
            Method::POST,
            "/admin/accounts/acct-1/credits",
            Some(json!({"add": 1000})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"account": "acct-1", "credits": 6000}));
    let reply = gateway
        .admin(
            Method::POST,
            "/admin/accounts/nobody/credits",
            Some(json!({"add": 1})),
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let reply = gateway
        .admin(
            Method::POST,
            "/admin/accounts/acct-1/credits",
            Some(json!({"add": "lots"})),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let snapshot = gateway.admin(Method::GET, "/admin/metrics", None).await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.text());
}
