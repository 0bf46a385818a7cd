//! `POST /v1/embeddings` and `POST /v1/images/generations` end to end: `drawbridge` (and the
//! three-process stack) with provider accounts on real `mock-provider` processes. The answer
//! is the upstream's, byte for byte (read from the mock directly for comparison); base64
//! vectors decode to the float ones; a 5xx moves on to the other account and a 429 rests the
//! account; an ACP account refuses with a 400 naming the model; a key is charged the usage the
//! upstream reported. Which upstream was called is read from the mocks' own counters.

mod provider_mocks;

use std::path::Path;
use std::time::Duration;

use provider_mocks::{Upstream, provider_account};
use serde_json::json;
use test_support::http::Client;
use test_support::{AccountSpec, Stack, StackOptions};

const KEY_ONE: &str = "sk-one-0123456789";
const KEY_TWO: &str = "sk-two-0123456789";

/// A provider account `p-1` (and `p-2`, with a second upstream) serving `embed-test`, and
/// the mock ACP account `acct-1` serving `kiro`.
async fn stack_with(three: bool, upstreams: &[&Upstream]) -> Stack {
    let keys = [KEY_ONE, KEY_TWO];
    let accounts: String = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| provider_account(&format!("p-{}", i + 1), "embed-test", u, keys[i]))
        .collect();
    let options = StackOptions {
        accounts: vec![AccountSpec::new(1)],
        extra_accounts_yaml: accounts,
        ..StackOptions::default()
    };
    if three {
        Stack::three(options).await
    } else {
        Stack::single(options).await
    }
}

/// How many embeddings and image requests `upstream` received.
async fn forwarded(upstream: &Upstream) -> u64 {
    upstream.stats().await["forwarded_requests"]
        .as_u64()
        .expect("forwarded_requests")
}

/// Standard base64 (padded), decoded.
fn unbase64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a') + 26,
        b'0'..=b'9' => u32::from(c - b'0') + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let digits: Vec<u32> = chunk
            .iter()
            .filter(|c| **c != b'=')
            .map(|c| value(*c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (d << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..digits.len()]);
    }
    out
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// What every shape must do: see the module docs.
async fn embeddings_and_images_are_passed_through(stack: &Stack, upstream: &Upstream) {
    let client = stack.client();
    let direct = Client::new(upstream.base_url(), Some(KEY_ONE));

    // Float: the upstream's body exactly.
    let ask = json!({"model": "embed-test", "input": ["hello embedding world", "second"]});
    let reply = client.post_json("/v1/embeddings", &ask).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let own = direct.post_json("/embeddings", &ask).await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(reply.text(), own.text(), "passed through as it came");
    let body = reply.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 4, "{body}");
    let vector: Vec<f32> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(vector.len(), 8);

    // Base64: little-endian f32s, the same vector.
    let mut ask64 = ask.clone();
    ask64["encoding_format"] = json!("base64");
    let reply = client.post_json("/v1/embeddings", &ask64).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let encoded = reply.json()["data"][0]["embedding"]
        .as_str()
        .expect("a base64 string")
        .to_owned();
    assert_eq!(floats(&unbase64(&encoded)), vector);

    // `dimensions` and token arrays reach the upstream.
    let reply = client
        .post_json(
            "/v1/embeddings",
            &json!({"model": "embed-test", "input": [[1, 2, 3]], "dimensions": 3}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Images: b64_json and url.
    let reply = client
        .post_json(
            "/v1/images/generations",
            &json!({"model": "embed-test", "prompt": "a red cat", "n": 2, "response_format": "b64_json"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let images = body["data"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{body}");
    let png = unbase64(images[0]["b64_json"].as_str().unwrap());
    assert_eq!(&png[1..4], b"PNG", "a PNG image");
    let reply = client
        .post_json(
            "/v1/images/generations",
            &json!({"model": "embed-test", "prompt": "a cat", "response_format": "url"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.json()["data"][0]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with(".png")),
        "{}",
        reply.text()
    );

    // Refusals: bad input (never sent upstream), the ACP account, an unknown model.
    let before = forwarded(upstream).await;
    let reply = client
        .post_json(
            "/v1/embeddings",
            &json!({"model": "embed-test", "input": "x", "encoding_format": "int8"}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["error"]["param"], "encoding_format");
    let reply = client
        .post_json(
            "/v1/images/generations",
            &json!({"model": "embed-test", "prompt": "x", "n": 0}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["error"]["param"], "n");
    let reply = client
        .post_json("/v1/embeddings", &json!({"model": "kiro", "input": "x"}))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let error = &reply.json()["error"];
    assert_eq!(
        error["message"], "The model 'kiro' does not serve embeddings.",
        "{error}"
    );
    assert_eq!(error["param"], "model");
    let reply = client
        .post_json(
            "/v1/images/generations",
            &json!({"model": "kiro", "prompt": "x"}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("does not serve image generation"));
    let reply = client
        .post_json("/v1/embeddings", &json!({"model": "nope", "input": "x"}))
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(reply.code(), "model_not_found");
    assert_eq!(
        forwarded(upstream).await,
        before,
        "no refusal went upstream"
    );

    // Counted under their own label.
    let metrics = client.with_key(None).get("/metrics").await.text();
    for label in ["dialect=\"embeddings\"", "dialect=\"images\""] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("drawbridge_requests_total") && l.contains(label)),
            "{label} in {metrics}"
        );
    }
}

/// A key with a token quota is charged what the upstream reported, under the account that
/// answered.
async fn a_keys_quota_is_charged_the_reported_usage(stack: &Stack) {
    let admin = stack.admin();
    let reply = admin
        .post_json(
            "/admin/keys",
            &json!({"name": "rag", "quota": {"unit": "tokens", "limit": 100000}}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let key = reply.json();
    let (id, secret) = (
        key["id"].as_str().unwrap().to_owned(),
        key["key"].as_str().unwrap().to_owned(),
    );
    let client = stack.client().with_key(Some(&secret));
    let reply = client
        .post_json(
            "/v1/embeddings",
            &json!({"model": "embed-test", "input": "one two three four five"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = client
        .post_json(
            "/v1/images/generations",
            &json!({"model": "embed-test", "prompt": "two words"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // 5 prompt tokens, then 2 input and 100 output tokens (the mock's image cost).
    let spent = test_support::wait::poll(Duration::from_secs(20), || async {
        let one = admin.get(&format!("/admin/keys/{id}")).await.json();
        (one["spent"]["requests"] == 2).then_some(one)
    })
    .await
    .expect("both requests charged");
    assert_eq!(spent["spent"]["tokens"], 107, "{spent}");
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
    assert_eq!(accounts, ["p-1"], "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drawbridge_passes_embeddings_and_images_through_a_provider_account() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), KEY_ONE, &[]).await;
    let stack = stack_with(false, &[&upstream]).await;
    embeddings_and_images_are_passed_through(&stack, &upstream).await;
    a_keys_quota_is_charged_the_reported_usage(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_process_stack_passes_embeddings_and_images_through() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), KEY_ONE, &[]).await;
    let stack = stack_with(true, &[&upstream]).await;
    embeddings_and_images_are_passed_through(&stack, &upstream).await;
    a_keys_quota_is_charged_the_reported_usage(&stack).await;
}

/// A failing upstream is passed over: on a 500 the request moves to the other account within
/// the same request; on a 429 too, and the limited account then rests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_passed_over_and_a_rate_limited_one_rests() {
    for (status, rests) in [("500", false), ("429", true)] {
        let dir = tempfile::tempdir().unwrap();
        let failing = Upstream::start(
            dir.path(),
            KEY_ONE,
            &[
                ("MOCK_PROVIDER_FAIL_WITH", status),
                ("MOCK_PROVIDER_RETRY_AFTER", "60"),
            ],
        )
        .await;
        let healthy = Upstream::start(dir.path(), KEY_TWO, &[]).await;
        let stack = stack_with(false, &[&failing, &healthy]).await;
        let client = stack.client();
        let ask = json!({"model": "embed-test", "input": "failover"});
        // Every answer is the healthy upstream's, also the ones the failing account was
        // tried for first.
        let mut asked = 0;
        while forwarded(&failing).await == 0 {
            asked += 1;
            assert!(asked <= 30, "{status}: the failing account was never tried");
            let reply = client.post_json("/v1/embeddings", &ask).await;
            assert_eq!(reply.status, 200, "{status}: {}", reply.text());
        }
        assert_eq!(forwarded(&healthy).await, asked, "{status}");
        for _ in 0..5 {
            let reply = client.post_json("/v1/embeddings", &ask).await;
            assert_eq!(reply.status, 200, "{status}: {}", reply.text());
        }
        if rests {
            assert_eq!(forwarded(&failing).await, 1, "the limited account rests");
        }
        assert_eq!(forwarded(&healthy).await, asked + 5, "{status}");
        let metrics = client.with_key(None).get("/metrics").await.text();
        assert!(
            metrics.contains("drawbridge_failovers_total{kind=\"retry\"}"),
            "{status}: {metrics}"
        );
    }
}

/// The official OpenAI Python SDK (`SDK_PYTHON`, as `make test` sets it):
/// `tests/sdk_embeddings`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_creates_embeddings_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), KEY_ONE, &[]).await;
    let stack = stack_with(false, &[&upstream]).await;
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk_embeddings");
    test_support::sdk::run_python_suite(&suite, &stack.base_url, &[], 5).await;
    assert!(forwarded(&upstream).await >= 4);
}

/// A count from a TAP summary (`# pass 3`).
fn tap_count(stdout: &str, key: &str) -> Option<u64> {
    let prefix = format!("# {key} ");
    stdout
        .lines()
        .rev()
        .filter_map(|line| line.strip_prefix(&prefix))
        .find_map(|count| count.trim().parse().ok())
}

/// The official OpenAI Node SDK, which asks base64 embeddings by default and decodes them:
/// `tests/sdk-node/embeddings.provider.mjs` (`make test` installs the SDK there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_node_sdk_asks_base64_embeddings_and_decodes_them() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk-node");
    assert!(
        suite.join("node_modules").join("openai").is_dir(),
        "the openai package is not installed in {}: run `make test`",
        suite.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), KEY_ONE, &[]).await;
    let stack = stack_with(false, &[&upstream]).await;
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=tap", "embeddings.provider.mjs"])
        .current_dir(&suite)
        .env("DRAWBRIDGE_BASE_URL", &stack.base_url)
        .env("DRAWBRIDGE_API_KEY", test_support::stack::API_KEY)
        .env_remove("NODE_OPTIONS")
        .env_remove("NODE_TEST_CONTEXT")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the Node SDK suite finishes")
        .unwrap_or_else(|err| panic!("run `node` (Node.js must be on PATH): {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the Node SDK suite failed");
    assert_eq!(tap_count(&stdout, "pass"), Some(3), "{stdout}");
    assert_eq!(tap_count(&stdout, "fail"), Some(0), "{stdout}");
    assert_eq!(tap_count(&stdout, "skipped"), Some(0), "{stdout}");
    assert!(forwarded(&upstream).await >= 3);
}

/// A model served by ACP accounts and an `openai` account: embeddings pass the ACP accounts
/// over (without counting them as tries) and reach the provider; an alias is resolved before
/// routing, and the upstream is sent the model it stands for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_model_is_served_by_its_provider_account_and_aliases_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(dir.path(), KEY_ONE, &[]).await;
    let stack = Stack::single(StackOptions {
        // Two ACP accounts of three slots each serve `kiro` too, and are picked first.
        accounts: vec![AccountSpec::new(3), AccountSpec::new(3)],
        // The provider has one slot to the agents' three: it scores last.
        extra_accounts_yaml: provider_account("p-1", "kiro, embed-test", &upstream, KEY_ONE)
            .replace("max_concurrency: 8", "max_concurrency: 1"),
        engine_yaml: "model_aliases:\n  embed: embed-test\n".to_owned(),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    for i in 0..6 {
        let reply = client
            .post_json(
                "/v1/embeddings",
                &json!({"model": "kiro", "input": format!("mixed {i}")}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["model"], "kiro");
    }
    assert_eq!(forwarded(&upstream).await, 6);
    let reply = client
        .post_json(
            "/v1/embeddings",
            &json!({"model": "embed", "input": "aliased"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["model"],
        "embed-test",
        "the alias's target went upstream"
    );
    // Chat on `kiro` still reaches the agents as before.
    let chat = client
        .chat(&json!({"model": "kiro", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
}
