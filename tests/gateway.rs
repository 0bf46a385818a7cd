//! The gateway as its users and operators meet it: API keys made and revoked with the admin
//! API (on the embedded data file and on a real Redis shared by two gateway nodes), per-key
//! rate limits with their headers, quotas under concurrency, the usage ledger (charged once,
//! even across the engine's retries), bad input, and secrets kept out of logs.

use std::time::Duration;

use futures::future::join_all;
use http::Method;
use serde_json::{Value, json};
use test_support::redis::RedisServer;
use test_support::stack::{ADMIN_TOKEN, API_KEY};
use test_support::wait::poll;
use test_support::{AccountSpec, Client, Reply, Stack, StackOptions, eventually};

fn user(text: &str) -> Value {
    json!({"model": "kiro", "messages": [{"role": "user", "content": text}]})
}

fn error_code(reply: &Reply) -> String {
    let body = reply.json();
    for field in ["message", "type", "param", "code"] {
        assert!(
            body["error"].get(field).is_some(),
            "error.{field} missing: {body}"
        );
    }
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn header(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Make a key with the admin API: (id, secret).
async fn create_key(admin: &Client, body: Value) -> (String, String) {
    let reply = admin.post_json("/admin/keys", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let key = reply.json();
    (
        key["id"].as_str().expect("id").to_owned(),
        key["key"].as_str().expect("secret").to_owned(),
    )
}

/// The key's usage rows (all days, grouped by key), once `ready` holds: usage is written
/// just after the answer ends.
async fn usage_of(admin: &Client, key_id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let reply = admin
                .get(&format!("/admin/usage?key={key_id}&group_by=key"))
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            last = reply.json()["total"].clone();
            if ready(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "usage never got there; last: {last}");
    last
}

fn no_secret_in_logs(stack: &Stack, secrets: &[&str]) {
    let logs = stack.logs();
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "a secret reached a log line:\n{logs}"
        );
    }
    assert!(!logs.contains("panicked"), "something panicked:\n{logs}");
}

async fn key_lifecycle(stack: &Stack) -> Vec<String> {
    let admin = stack.admin();
    let client = stack.client();

    // The admin API wants the admin token, and only that.
    for who in [None, Some("wrong-admin-token-000000"), Some(API_KEY)] {
        let reply = admin.with_key(who).get("/admin/keys").await;
        assert_eq!(reply.status, 401, "{who:?}: {}", reply.text());
        assert_eq!(error_code(&reply), "invalid_api_key");
    }

    let reply = admin
        .post_json(
            "/admin/keys",
            &json!({"name": "team-a", "rpm": 100, "models": ["kiro"], "expires_in": "30d"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let created = reply.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert!(id.starts_with("key_"), "{created}");
    assert!(secret.starts_with("db-") && secret.len() >= 40, "{created}");
    assert_eq!(created["prefix"], secret[..10]);
    assert_eq!(created["status"], "active");
    assert_eq!(created["rpm"], 100);
    assert!(created["expires_at"].as_u64().unwrap() > created["created_at"].as_u64().unwrap());

    // Listed without its secret or hash, beside the config's key.
    let listed = admin.get("/admin/keys").await;
    assert_eq!(listed.status, 200);
    assert!(!listed.text().contains(&secret), "{}", listed.text());
    assert!(!listed.text().contains("hash"), "{}", listed.text());
    let keys = listed.json()["data"].as_array().unwrap().clone();
    let mine = keys
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("listed");
    assert_eq!(mine["name"], "team-a");
    assert!(mine.get("key").is_none());
    assert!(
        keys.iter()
            .any(|k| k["id"] == "static.test" && k["source"] == "config")
    );

    // The key works, and its use is recorded.
    let keyed = client.with_key(Some(&secret));
    let reply = keyed.chat(&user("hello with a new key")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let usage = usage_of(&admin, &id, |u| u["requests"] == 1).await;
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(
        usage["estimated_requests"], 1,
        "Kiro reports no tokens: {usage}"
    );
    let one = admin.get(&format!("/admin/keys/{id}")).await.json();
    assert_eq!(one["spent"]["requests"], 1, "{one}");
    assert!(one["last_used_at"].as_u64().is_some(), "{one}");

    // Limits change with PATCH; a model outside the allowed list is refused.
    let patched = admin
        .request(
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            json!({"rpm": 5}).to_string(),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["rpm"], 5);
    let mut other_model = user("hi");
    other_model["model"] = json!("gpt-4o");
    let reply = keyed.chat(&other_model).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(error_code(&reply), "permission_denied");
    let models = keyed.get("/v1/models").await.json();
    assert_eq!(models["data"][0]["id"], "kiro");

    // Revoked: refused at once, listed as revoked.
    let reply = admin
        .request(Method::DELETE, &format!("/admin/keys/{id}"), "")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "revoked");
    let reply = keyed.chat(&user("still there?")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(error_code(&reply), "invalid_api_key");
    assert_eq!(keyed.get("/v1/models").await.status, 401);
    let keys = admin.get("/admin/keys").await.json();
    assert!(
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str() && k["status"] == "revoked")
    );
    // The config's keys are not the admin API's to revoke; unknown ids are 404.
    let reply = admin
        .request(Method::DELETE, "/admin/keys/static.test", "")
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let reply = admin
        .request(Method::DELETE, "/admin/keys/key_0000000000000000", "")
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    for unknown in [
        "/admin/keys/static.nope",
        "/admin/keys/key_0000000000000000",
    ] {
        assert_eq!(admin.get(unknown).await.status, 404, "{unknown}");
        let reply = admin.request(Method::DELETE, unknown, "").await;
        assert_eq!(reply.status, 404, "{unknown}: {}", reply.text());
    }
    assert_eq!(admin.get("/admin/keys/static.test").await.status, 200);
    // A day that is not a date is refused, naming the parameter the client sent.
    let reply = admin.get("/admin/usage?from=2026-13-45").await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["error"]["param"], "from", "{}", reply.text());
    // Bad admin input is a 400 in the OpenAI shape.
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x", "rpm": -1}),
        json!({"name": "x", "quota": {"unit": "tokens", "limit": 0}}),
        json!({"name": "x", "colour": "blue"}),
        json!({"name": "x", "expires_in": "soon"}),
    ] {
        let reply = admin.post_json("/admin/keys", &bad).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
        assert_eq!(error_code(&reply), "invalid_request", "{bad}");
    }
    vec![secret]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lifecycle_on_the_embedded_store() {
    let mut stack = Stack::single(StackOptions::default()).await;
    let secrets = key_lifecycle(&stack).await;
    no_secret_in_logs(&stack, &[&secrets[0], ADMIN_TOKEN, API_KEY]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_off_without_a_token() {
    let mut stack = Stack::single(StackOptions {
        admin: false,
        ..StackOptions::default()
    })
    .await;
    for token in [Some(ADMIN_TOKEN), None] {
        let reply = stack.admin().with_key(token).get("/admin/keys").await;
        assert_eq!(reply.status, 404, "{}", reply.text());
        assert!(
            reply.text().contains("admin.auth_token"),
            "{}",
            reply.text()
        );
    }
    stack.stop().await;
}

/// The accounts' credits left, in milli-credits, summed, once `ready` holds.
async fn credits_left(admin: &Client, ready: impl Fn(i64) -> bool) -> i64 {
    let mut last = 0;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let accounts = admin.get("/admin/accounts").await.json();
            last = accounts["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["credits"].as_i64().unwrap())
                .sum();
            if ready(last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "credits never got there; last: {last}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_usage_and_credits_survive_a_restart() {
    let mut stack = Stack::single(StackOptions {
        accounts: vec![
            AccountSpec::new(2).credits(1.0),
            AccountSpec::new(2).credits(1.0),
        ],
        ..StackOptions::default()
    })
    .await;
    let (id, secret) = create_key(&stack.admin(), json!({"name": "durable"})).await;
    for _ in 0..2 {
        let reply = stack
            .client()
            .with_key(Some(&secret))
            .chat(&user("remember me"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let before = usage_of(&stack.admin(), &id, |u| u["requests"] == 2).await;
    // Each turn of the mock costs 0.01 credits (10 milli-credits).
    let spent_before = credits_left(&stack.admin(), |left| left == 2000 - 20).await;

    stack.restart_single().await;

    let after = usage_of(&stack.admin(), &id, |u| u["requests"] == 2).await;
    assert_eq!(before, after, "the ledger is the same after the restart");
    let spent_after = credits_left(&stack.admin(), |_| true).await;
    assert_eq!(
        spent_before, spent_after,
        "balances are kept, and the configured grant does not refill them"
    );
    let reply = stack
        .client()
        .with_key(Some(&secret))
        .chat(&user("still me"))
        .await;
    assert_eq!(reply.status, 200, "the key works after the restart");
    usage_of(&stack.admin(), &id, |u| u["requests"] == 3).await;
    stack.stop().await;
}

/// Two gateway nodes on one Redis (worker and engine behind them).
async fn two_gateways(redis: &RedisServer, options: StackOptions) -> (Stack, Client) {
    let mut stack = Stack::three(StackOptions {
        gateway_top_yaml: format!("redis: {{ url: \"{}\" }}\n", redis.url()),
        ..options
    })
    .await;
    let second = stack.add_gateway().await;
    let client = Client::new(second, Some(API_KEY));
    (stack, client)
}

/// ValKey goes away while answers are served: keys it knew and their rate limits keep
/// working, and the charges wait and land once each when it is back (nothing lost, nothing
/// charged twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_made_while_valkey_is_down_land_once_when_it_returns() {
    let mut redis = RedisServer::start();
    let mut stack = Stack::three(StackOptions {
        gateway_top_yaml: format!("redis: {{ url: \"{}\" }}\n", redis.url()),
        ..StackOptions::default()
    })
    .await;
    let admin = stack.admin();
    let client = stack.client();
    let charged = |n: u64| move |u: &Value| u["requests"].as_u64() >= Some(n);
    assert_eq!(client.chat(&user("before")).await.status, 200);
    usage_of(&admin, "static.test", charged(1)).await;
    // A stored key with a rate limit, known to the gateway before ValKey goes.
    let (_, secret) = create_key(&admin, json!({"name": "limited", "rpm": 10})).await;
    let limited = client.with_key(Some(&secret));
    assert_eq!(limited.chat(&user("before")).await.status, 200);

    redis.stop();
    // The static key needs no store: the answers are served while ValKey is away.
    for _ in 0..2 {
        let reply = client.chat(&user("while it is away")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // The stored key is served from the gateway's memory of it, and its rate limit, which
    // lives in ValKey, lets the request through rather than refusing it.
    let reply = limited.chat(&user("while it is away")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Their charges failed and wait.
    let waiting = poll(Duration::from_secs(30), || async {
        stack.logs().contains("retrying until the store is back")
    })
    .await;
    assert!(waiting.is_some(), "no charge waited:\n{}", stack.logs());

    redis.restart(); // empty: only what lands from now on is there
    let total = usage_of(&admin, "static.test", charged(2)).await;
    assert_eq!(total["requests"], 2, "{total}");
    assert_eq!(client.chat(&user("after")).await.status, 200);
    let total = usage_of(&admin, "static.test", charged(3)).await;
    assert_eq!(total["requests"], 3, "each charge landed once: {total}");
    assert!(!stack.logs().contains("usage is lost"), "{}", stack.logs());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_one_gateway_node_is_seen_by_the_other() {
    let redis = RedisServer::start();
    let (mut stack, other) = two_gateways(&redis, StackOptions::default()).await;
    // The whole lifecycle on Redis, through the first node.
    let secrets = key_lifecycle(&stack).await;

    // A key made on one node works on the other, and its revocation there is immediate.
    let (id, secret) = create_key(&stack.admin(), json!({"name": "shared"})).await;
    let on_other = other.with_key(Some(&secret));
    let reply = on_other.chat(&user("from the other node")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let listed = other.with_key(Some(ADMIN_TOKEN)).get("/admin/keys").await;
    assert!(listed.text().contains(&id), "{}", listed.text());
    let reply = stack
        .admin()
        .request(Method::DELETE, &format!("/admin/keys/{id}"), "")
        .await;
    assert_eq!(reply.status, 200);
    let reply = on_other.chat(&user("and now?")).await;
    assert_eq!(
        reply.status, 401,
        "revoked on one node, refused on the other at once"
    );
    no_secret_in_logs(&stack, &[&secrets[0], &secret, ADMIN_TOKEN, API_KEY]);
    stack.stop().await;
}

/// 60 requests pass with their headers counting down; the 61st gets 429 with the headers and
/// a usable `Retry-After`; another key is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_61st_request_in_a_minute_is_limited() {
    let mut stack = Stack::single(StackOptions::default()).await;
    let admin = stack.admin();
    let (_, secret) = create_key(&admin, json!({"name": "default-limit"})).await;
    let (_, other) = create_key(&admin, json!({"name": "bystander"})).await;
    let keyed = stack.client().with_key(Some(&secret));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for i in 0..60u32 {
        let reply = keyed.get("/v1/models").await;
        assert_eq!(reply.status, 200, "request {}: {}", i + 1, reply.text());
        assert_eq!(header(&reply, "x-ratelimit-limit").as_deref(), Some("60"));
        assert_eq!(
            header(&reply, "x-ratelimit-remaining"),
            Some((59 - i).to_string())
        );
    }
    let reply = keyed.chat(&user("one too many")).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(error_code(&reply), "rate_limit_exceeded");
    assert_eq!(reply.json()["error"]["type"], "requests");
    assert_eq!(header(&reply, "x-ratelimit-limit").as_deref(), Some("60"));
    assert_eq!(
        header(&reply, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    let reset: u64 = header(&reply, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reset >= now && reset <= now + 62,
        "reset {reset}, now {now}"
    );
    let retry: u64 = header(&reply, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    // One key's limit is its own.
    let reply = stack
        .client()
        .with_key(Some(&other))
        .chat(&user("not me"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        header(&reply, "x-ratelimit-remaining").as_deref(),
        Some("59")
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_nodes_share_one_limit() {
    let redis = RedisServer::start();
    let (mut stack, other) = two_gateways(&redis, StackOptions::default()).await;
    let (_, secret) = create_key(&stack.admin(), json!({"name": "shared-limit", "rpm": 6})).await;
    let first = stack.client().with_key(Some(&secret));
    let second = other.with_key(Some(&secret));
    for i in 0..6 {
        let node = if i % 2 == 0 { &first } else { &second };
        let reply = node.get("/v1/models").await;
        assert_eq!(reply.status, 200, "request {}: {}", i + 1, reply.text());
        assert_eq!(
            header(&reply, "x-ratelimit-remaining"),
            Some((5 - i).to_string())
        );
    }
    for node in [&first, &second] {
        let reply = node.get("/v1/models").await;
        assert_eq!(reply.status, 429, "{}", reply.text());
    }
    stack.stop().await;
}

/// The prompt the quota tests send, and how many tokens one answer to it costs (prompt and
/// echo, as the usage reports them).
const QUOTA_PROMPT: &str = "spend a few tokens of my budget please";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_never_overspend_a_budget() {
    let mut stack = Stack::single(StackOptions {
        accounts: vec![AccountSpec::new(4), AccountSpec::new(4)],
        delay_ms: 30,
        ..StackOptions::default()
    })
    .await;
    let admin = stack.admin();
    // What one request costs, measured with the unlimited key.
    let mut body = user(QUOTA_PROMPT);
    body["max_tokens"] = json!(16);
    let probe = stack.client().chat(&body).await.json();
    let cost = probe["usage"]["total_tokens"].as_u64().unwrap();
    let budget = cost * 5 + cost / 2;
    // A client may send its own `x-request-id`, the same one on every request: its
    // requests still hold one reservation each.
    for same_request_id in [false, true] {
        let (id, secret) = create_key(
            &admin,
            json!({"name": format!("budget{same_request_id}"), "quota": {"unit": "tokens", "limit": budget}}),
        )
        .await;
        let keyed = stack.client().with_key(Some(&secret));
        let headers: &[(&str, &str)] = if same_request_id {
            &[("x-request-id", "the-same-id")]
        } else {
            &[]
        };
        let send = |body: &Value| {
            let keyed = keyed.clone();
            let body = serde_json::to_vec(body).unwrap();
            async move {
                keyed
                    .request_with_headers(Method::POST, "/v1/chat/completions", body, headers)
                    .await
            }
        };
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let replies = join_all((0..12).map(|_| send(&streamed))).await;
        let mut refused = 0;
        for reply in &replies {
            match reply.status {
                200 => {
                    reply.sse_chunks();
                }
                429 => {
                    assert_eq!(error_code(reply), "insufficient_quota");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {}", reply.text()),
            }
        }
        assert!(
            refused > 0,
            "12 concurrent requests cannot all fit a budget of 5.5 (same id: {same_request_id})"
        );
        // Keep spending until the budget says it is spent. An answer is charged when it ends,
        // just after the client has it: a refusal because the last answer still holds its
        // reservation ("in flight") is retried once that charge is in the ledger.
        let mut served = replies.len() - refused;
        let mut held = 0;
        loop {
            let reply = send(&body).await;
            if reply.status == 429 {
                assert_eq!(error_code(&reply), "insufficient_quota");
                if reply.text().contains("in flight") {
                    held += 1;
                    assert!(held < 50, "a reservation was never released");
                    usage_of(&admin, &id, |u| u["requests"] == served as u64).await;
                    continue;
                }
                break;
            }
            assert_eq!(reply.status, 200, "{}", reply.text());
            served += 1;
            assert!(served < 50, "the budget never ran out");
        }
        let total = usage_of(&admin, &id, |u| u["requests"] == served as u64).await;
        let spent = total["total_tokens"].as_u64().unwrap();
        assert!(
            spent <= budget + cost,
            "spent {spent} of a budget of {budget}: over by more than one request ({cost}); same id: {same_request_id}"
        );
        assert!(
            spent + cost > budget,
            "the budget was used up: {spent} of {budget}"
        );
    }
    stack.stop().await;
}

/// The first account fails before its first byte (the engine retries on the second) or after
/// it (the second resumes the answer): either way the key is charged once, for the answer the
/// client got, and the ledger names the account that finished it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_and_resumed_requests_are_charged_once() {
    for first in ["crash after=0", "crash after=2"] {
        let mut stack = Stack::single(StackOptions {
            accounts: vec![
                AccountSpec::new(3).behaviour(first),
                AccountSpec::new(1).behaviour("stream n=6"),
            ],
            ..StackOptions::default()
        })
        .await;
        let admin = stack.admin();
        let (id, secret) = create_key(
            &admin,
            json!({"name": "retried", "quota": {"unit": "tokens", "limit": 100000}}),
        )
        .await;
        let reply = stack
            .client()
            .with_key(Some(&secret))
            .chat(&user("count for me"))
            .await;
        assert_eq!(reply.status, 200, "{first}: {}", reply.text());
        let usage = reply.json()["usage"].clone();
        let total = usage_of(&admin, &id, |u| u["requests"] == 1).await;
        assert_eq!(
            total["total_tokens"], usage["total_tokens"],
            "{first}: {total}"
        );
        let rows = admin
            .get(&format!("/admin/usage?key={id}&group_by=account"))
            .await
            .json();
        let accounts: Vec<&str> = rows["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["account"].as_str().unwrap())
            .collect();
        assert_eq!(accounts, vec!["acct-2"], "{first}: {rows}");
        let one = admin.get(&format!("/admin/keys/{id}")).await.json();
        assert_eq!(one["spent"]["requests"], 1, "{first}: {one}");
        assert_eq!(
            one["spent"]["tokens"], usage["total_tokens"],
            "{first}: {one}"
        );
        stack.stop().await;
    }
}

/// Every kind of bad input gets its status and OpenAI error code, and none is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_in_the_openai_shape_and_never_charged() {
    let mut stack = Stack::single(StackOptions {
        gateway_yaml: "  max_body_bytes: 4096\n".to_owned(),
        ..StackOptions::default()
    })
    .await;
    let admin = stack.admin();
    let (id, secret) = create_key(
        &admin,
        json!({"name": "careless", "quota": {"unit": "tokens", "limit": 1000000}}),
    )
    .await;
    let (revoked_id, revoked) = create_key(&admin, json!({"name": "gone"})).await;
    admin
        .request(Method::DELETE, &format!("/admin/keys/{revoked_id}"), "")
        .await;
    let keyed = stack.client().with_key(Some(&secret));
    let big = "x".repeat(8192);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"model\": \"kiro\", ".into(), 400, "invalid_request"),
        ("not an object", "[1, 2]".into(), 400, "invalid_request"),
        ("wrong type", json!({"model": 7, "messages": []}).to_string(), 400, "invalid_request"),
        ("no messages", json!({"model": "kiro"}).to_string(), 400, "invalid_request"),
        ("empty messages", json!({"model": "kiro", "messages": []}).to_string(), 400, "invalid_request"),
        ("unknown role", json!({"model": "kiro", "messages": [{"role": "wizard", "content": "hi"}]}).to_string(), 400, "invalid_request"),
        ("stream not a bool", json!({"model": "kiro", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}).to_string(), 400, "invalid_request"),
        ("oversized body", json!({"model": "kiro", "messages": [{"role": "user", "content": big}]}).to_string(), 413, "payload_too_large"),
        ("unknown model", json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}).to_string(), 404, "model_not_found"),
    ];
    for (what, body, status, code) in &cases {
        let reply = keyed
            .request(Method::POST, "/v1/chat/completions", body.clone())
            .await;
        assert_eq!(reply.status, *status, "{what}: {}", reply.text());
        assert_eq!(error_code(&reply), *code, "{what}");
        assert!(
            header(&reply, "x-ratelimit-limit").is_some(),
            "{what}: limits are reported"
        );
    }
    // Key problems: 401, and only key problems are 401 (an expired key: the gateway's
    // in-process tests, on paused time).
    for (what, key) in [
        ("no key", None),
        (
            "unknown key",
            Some("db-0000000000000000000000000000000000000000000000000"),
        ),
        ("not a key", Some("hello")),
        ("revoked key", Some(revoked.as_str())),
    ] {
        let reply = stack.client().with_key(key).chat(&user("hi")).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.text());
        assert_eq!(error_code(&reply), "invalid_api_key", "{what}");
        if let Some(key) = key {
            assert!(!reply.text().contains(key), "{what}: the key is echoed");
        }
    }
    // A good request afterwards is the only thing charged.
    let reply = keyed.chat(&user("finally a good one")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    usage_of(&admin, &id, |u| u["requests"] == 1).await;
    let one = admin.get(&format!("/admin/keys/{id}")).await.json();
    assert_eq!(one["spent"]["requests"], 1, "bad input was charged: {one}");
    no_secret_in_logs(&stack, &[&secret, &revoked, ADMIN_TOKEN, API_KEY]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_admin_snapshot_count_requests() {
    let mut stack = Stack::single(StackOptions::default()).await;
    let client = stack.client();
    let reply = client.chat(&user("count me")).await;
    assert_eq!(reply.status, 200);
    let metrics = client.with_key(None).get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        header(&metrics, "content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        metrics.headers
    );
    let text = metrics.text();
    assert!(
        text.contains(
            "drawbridge_requests_total{model=\"kiro\",status=\"success\",dialect=\"openai\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("drawbridge_account_slots{account=\"acct-1\"} 3"),
        "{text}"
    );
    assert!(
        !text.contains(API_KEY) && !text.contains("test"),
        "no key in the metrics"
    );
    let snapshot = stack.admin().get("/admin/metrics").await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.text());
    let samples = snapshot.json()["samples"].as_array().unwrap().clone();
    assert!(
        samples
            .iter()
            .any(|s| s["name"] == "drawbridge_requests_total"
                && s["labels"]["status"] == "success"
                && s["value"] == 1.0),
        "{samples:?}"
    );
    let accounts = stack.admin().get("/admin/accounts").await.json();
    assert_eq!(accounts["data"].as_array().unwrap().len(), 2, "{accounts}");
    assert_eq!(accounts["data"][0]["breaker"], "closed", "{accounts}");
    stack.stop().await;
}

/// The config's keys and limits reload without a restart (SIGHUP): a key added to the file
/// works, with its own rate limit, and one removed from it stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reloads_its_keys_and_limits() {
    let mut stack = Stack::single(StackOptions::default()).await;
    const ADDED: &str = "db-added-by-a-reload-0123456789";
    let added = stack.client().with_key(Some(ADDED));
    assert_eq!(added.get("/v1/models").await.status, 401);

    let path = stack.dir.path().join("drawbridge.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let old = format!("[{{ name: test, key: {API_KEY}, rpm: 0 }}]");
    assert!(text.contains(&old), "{text}");
    let new = format!("[{{ name: reloaded, key: {ADDED}, rpm: 1 }}]");
    std::fs::write(&path, text.replace(&old, &new)).unwrap();
    stack.processes[0].signal(nix::sys::signal::Signal::SIGHUP);

    eventually("the added key works after the reload", || async {
        added.get("/v1/models").await.status == 200
    })
    .await;
    let reply = added.get("/v1/models").await;
    assert_eq!(reply.status, 429, "its rpm of 1 applies: {}", reply.text());
    let reply = stack.client().get("/v1/models").await;
    assert_eq!(
        reply.status,
        401,
        "the removed key is refused: {}",
        reply.text()
    );
    assert!(stack.wait_for_log("configuration reloaded").await);
    stack.stop().await;
}

/// An answer that breaks off and that no account can resume: streamed, the client keeps the
/// text it received and is charged for that (estimated); not streamed, the client gets an
/// error status and nothing is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_answer_is_charged_for_what_the_client_received() {
    let mut stack = Stack::single(StackOptions {
        accounts: vec![
            AccountSpec::new(2).behaviour("crash after=2"),
            AccountSpec::new(2).behaviour("crash after=2"),
        ],
        ..StackOptions::default()
    })
    .await;
    let admin = stack.admin();
    let quota = json!({"unit": "tokens", "limit": 100000});
    let (json_id, json_secret) =
        create_key(&admin, json!({"name": "broken-json", "quota": quota})).await;
    let (id, secret) = create_key(&admin, json!({"name": "broken", "quota": quota})).await;
    // Not streamed: the charge is settled (nothing) before the 502 goes out.
    let reply = stack
        .client()
        .with_key(Some(&json_secret))
        .chat(&user("count for me"))
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text());

    let keyed = stack.client().with_key(Some(&secret));
    let mut body = user("count for me");
    body["stream"] = json!(true);
    let reply = keyed.chat(&body).await;
    assert_eq!(reply.status, 200);
    let chunks = reply.sse_chunks();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "chunk 0 chunk 1 ");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "error"
    );

    // Only the streamed one is in the ledger, for the 16 characters it delivered.
    let total = usage_of(&admin, &id, |u| u["requests"] == 1).await;
    assert_eq!(total["completion_tokens"], 4, "{total}");
    assert_eq!(total["estimated_requests"], 1, "{total}");
    let rows = admin
        .get(&format!("/admin/usage?key={id}&group_by=account"))
        .await
        .json();
    assert_eq!(rows["data"][0]["account"], "unknown", "{rows}");
    let one = admin.get(&format!("/admin/keys/{id}")).await.json();
    assert_eq!(one["spent"]["requests"], 1, "{one}");
    let not_streamed = admin.get(&format!("/admin/keys/{json_id}")).await.json();
    assert_eq!(not_streamed["spent"]["requests"], 0, "{not_streamed}");
    assert_eq!(not_streamed["spent"]["tokens"], 0, "{not_streamed}");
    stack.stop().await;
}

/// A client that hangs up mid-stream is charged once, for the text it received and, for a
/// budget in credits, the credits reserved for it (the agent's figure never comes): hanging up
/// before the end is no way around a budget. The request counts as `client_closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_is_charged_once() {
    let mut stack = Stack::single(StackOptions {
        accounts: vec![AccountSpec::new(2).behaviour("stream n=40")],
        delay_ms: 50,
        ..StackOptions::default()
    })
    .await;
    let admin = stack.admin();
    let (id, secret) = create_key(
        &admin,
        json!({"name": "leaver", "quota": {"unit": "credits", "limit": 100}}),
    )
    .await;
    let keyed = stack.client().with_key(Some(&secret));
    let mut body = user("count for me");
    body["stream"] = json!(true);
    let (status, mut stream) = keyed.post_streaming("/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    // Wait for some text, then hang up.
    let mut received = String::new();
    while !received.contains("chunk 1") {
        let bytes = futures::StreamExt::next(&mut stream)
            .await
            .expect("the stream ended early")
            .expect("the stream broke");
        received.push_str(&String::from_utf8_lossy(&bytes));
    }
    drop(stream);

    let total = usage_of(&admin, &id, |u| u["requests"] == 1).await;
    assert_eq!(
        total["credits"], 1.0,
        "gateway.quota.reserve_credits: {total}"
    );
    assert!(total["completion_tokens"].as_u64() > Some(0), "{total}");
    assert_eq!(total["estimated_requests"], 1, "{total}");
    let metrics = stack.client().get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("drawbridge_request_errors_total")
                && l.contains("code=\"client_closed\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    stack.stop().await;
}

/// Operators see the accounts and top them up through the gateway's admin API; in the
/// three-process shape that goes through the engine's internal API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_listed_and_topped_up_through_the_admin_api() {
    let mut stack = Stack::three(StackOptions {
        accounts: vec![AccountSpec::new(2).credits(2.5), AccountSpec::new(1)],
        ..StackOptions::default()
    })
    .await;
    let admin = stack.admin();
    let accounts = admin.get("/admin/accounts").await;
    assert_eq!(accounts.status, 200, "{}", accounts.text());
    let accounts = accounts.json();
    let first = accounts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "acct-1")
        .cloned()
        .unwrap();
    assert_eq!(first["credits"], 2500, "milli-credits: {first}");
    assert_eq!(first["slots"], 2, "{first}");
    assert_eq!(first["breaker"], "closed", "{first}");

    let topped = admin
        .post_json("/admin/accounts/acct-1/credits", &json!({"add": 1000}))
        .await;
    assert_eq!(topped.status, 200, "{}", topped.text());
    assert_eq!(topped.json(), json!({"account": "acct-1", "credits": 3500}));
    for (body, status) in [
        (json!({"add": -1}), 400),
        (json!({"add": 1, "set": 2}), 400),
        (json!({"pour": 5}), 400),
    ] {
        let reply = admin
            .post_json("/admin/accounts/acct-1/credits", &body)
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
    }
    let reply = admin
        .post_json("/admin/accounts/nobody/credits", &json!({"add": 1}))
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let reply = stack
        .client()
        .post_json("/admin/accounts/acct-1/credits", &json!({"add": 1}))
        .await;
    assert_eq!(reply.status, 401, "a client key is no admin token");

    // The gauge follows, in credits.
    let text = eventually("the credits gauge shows the top-up", || async {
        let text = stack.client().with_key(None).get("/metrics").await.text();
        text.contains("drawbridge_account_credits{account=\"acct-1\"} 3.5")
            .then_some(text)
    })
    .await;
    assert!(
        !text.contains("drawbridge_account_credits{account=\"acct-2\"}"),
        "an unmetered account has no credits gauge"
    );
    stack.stop().await;
}

/// Message content reaches the log only when `log.messages` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_logged_only_when_asked() {
    const SECRET_PROMPT: &str = "purple elephants dance at 4711";
    for logged in [false, true] {
        let mut stack = Stack::single(StackOptions {
            env: vec![("DRAWBRIDGE_LOG__MESSAGES".to_owned(), logged.to_string())],
            ..StackOptions::default()
        })
        .await;
        let reply = stack.client().chat(&user(SECRET_PROMPT)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if logged {
            assert!(stack.wait_for_log(SECRET_PROMPT).await, "{}", stack.logs());
        } else {
            // The request's last line is written when it ends: after it, nothing more of it.
            assert!(stack.wait_for_log("chat completion ended").await);
            assert!(!stack.logs().contains(SECRET_PROMPT), "{}", stack.logs());
        }
        stack.stop().await;
    }
}
