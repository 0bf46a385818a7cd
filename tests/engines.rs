//! A gateway with two engines (`gateway.engine_urls`), both on one Redis and one worker: it
//! sends to the first while it serves; once that engine is SIGKILLed, every request (chat in
//! both forms, models, health) is answered by the other, none with a 5xx, and the dead engine
//! is not tried again for each request. A stream whose engine is killed mid-answer is finished
//! by the other engine.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::cluster::{Assignment, Cluster, wait_for_lines};
use test_support::process::{Process, Signal};
use test_support::stack::API_KEY;
use test_support::wait::poll;
use test_support::{AccountSpec, Client, Reply};

fn ask(text: &str, stream: bool) -> Value {
    json!({"model": "kiro", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

/// The answer's text, streamed or not; the test fails on anything but a whole 200 answer.
fn answer(reply: &Reply, stream: bool) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    if stream {
        reply.sse_text()
    } else {
        reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Lines of `process`'s log containing `needle`.
fn lines(process: &Process, needle: &str) -> usize {
    process.log().lines().filter(|l| l.contains(needle)).count()
}

async fn gateway(cluster: &Cluster) -> Process {
    cluster.start_gateway(API_KEY).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_moves_to_another_engine_when_one_dies() {
    let mut cluster = Cluster::new();
    cluster
        .add_worker("w1", Assignment::Config, &[("acct-1", AccountSpec::new(2))])
        .await;
    cluster.add_engine("e1", &[], "").await;
    cluster.add_engine("e2", &[], "").await;
    cluster.wait_serving(0, 1).await;
    cluster.wait_serving(1, 1).await;
    let gateway = gateway(&cluster).await;
    let client = Client::new(format!("http://{}", gateway.addr("gateway")), Some(API_KEY));
    let ready = poll(Duration::from_secs(20), || async {
        client.get("/health").await.status == 200
    })
    .await;
    assert!(ready.is_some(), "the gateway never became healthy");

    // Both engines serve: the gateway prefers the first.
    for (i, stream) in [false, true, false, true].into_iter().enumerate() {
        let text = format!("before {i}");
        assert_eq!(
            answer(&client.chat(&ask(&text, stream)).await, stream),
            text
        );
    }
    let ended = "chat completion ended";
    assert!(
        wait_for_lines(&cluster.engines[0], &[ended], 4, Duration::from_secs(5)).await,
        "the first engine served the first requests"
    );
    assert_eq!(lines(&cluster.engines[1], ended), 0);

    cluster.engines[0].signal(Signal::SIGKILL);
    cluster.engines[0].wait().await;

    // Every request now is the second engine's, and none fails.
    let mut failed = Vec::new();
    for i in 0..10 {
        let stream = i % 2 == 1;
        let text = format!("after {i}");
        let reply = client.chat(&ask(&text, stream)).await;
        if reply.status != 200 || answer(&reply, stream) != text {
            failed.push((i, reply.status, reply.text()));
        }
    }
    let models = client.get("/v1/models").await;
    assert_eq!(models.status, 200, "{}", models.text());
    let health = client.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text());
    if !failed.is_empty() {
        cluster.dump();
        panic!(
            "requests failed after an engine died: {failed:?}\ngateway log:\n{}",
            gateway.log()
        );
    }
    assert!(
        wait_for_lines(&cluster.engines[1], &[ended], 10, Duration::from_secs(5)).await,
        "the second engine served them"
    );
    // The dead engine rests after it failed: it is not tried (and waited for) per request.
    let tried = lines(&gateway, "engine unreachable");
    assert!(
        (1..=2).contains(&tried),
        "the dead engine was tried {tried} times:\n{}",
        gateway.log()
    );
}

/// A streamed answer whose engine is SIGKILLed after its first chunks reached the client: the
/// gateway asks the other engine to continue it, and the client's one stream carries every
/// chunk exactly once, then `[DONE]`, with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_engine_dies_mid_answer_is_finished_by_the_other_engine() {
    let mut cluster = Cluster::new();
    let slow = AccountSpec::new(2).behaviour("stream n=10 delay_ms=150");
    cluster
        .add_worker("w1", Assignment::Config, &[("acct-1", slow)])
        .await;
    cluster.add_engine("e1", &[], "").await;
    cluster.add_engine("e2", &[], "").await;
    cluster.wait_serving(0, 1).await;
    cluster.wait_serving(1, 1).await;
    let gateway = gateway(&cluster).await;
    let base = format!("http://{}", gateway.addr("gateway"));
    let client = Client::new(base.clone(), Some(API_KEY));
    let ready = poll(Duration::from_secs(20), || async {
        client.get("/health").await.status == 200
    })
    .await;
    assert!(ready.is_some(), "the gateway never became healthy");

    let head = test_support::chaos::ChaosClient::new()
        .post_streaming(
            &format!("{base}/v1/chat/completions"),
            API_KEY,
            &ask("a long answer", true),
            &[],
        )
        .await
        .expect("a response head");
    assert_eq!(head.status, 200);
    let mut body = head.body;
    let mut raw = Vec::new();
    // Read until two chunks of text are with the client, then kill the engine serving it (the
    // first: the gateway prefers it while it serves).
    while String::from_utf8_lossy(&raw).matches("chunk ").count() < 2 {
        let bytes = futures::StreamExt::next(&mut body)
            .await
            .expect("the answer goes on")
            .expect("the answer is not broken");
        raw.extend_from_slice(&bytes);
    }
    cluster.engines[0].signal(Signal::SIGKILL);
    cluster.engines[0].wait().await;
    while let Some(bytes) = futures::StreamExt::next(&mut body).await {
        match bytes {
            Ok(bytes) => raw.extend_from_slice(&bytes),
            Err(error) => panic!(
                "the client's stream broke: {error}\ngateway log:\n{}",
                gateway.log()
            ),
        }
    }
    let frames = drawbridge_types::sse::SseDecoder::new().push(&raw);
    assert_eq!(
        frames.last().map(String::as_str),
        Some("[DONE]"),
        "{frames:?}"
    );
    let mut text = String::new();
    for frame in &frames[..frames.len() - 1] {
        let chunk: Value = serde_json::from_str(frame).unwrap();
        assert!(chunk.get("error").is_none(), "an error chunk: {chunk}");
        if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(delta);
        }
    }
    let whole: String = (0..10).map(|i| format!("chunk {i} ")).collect();
    assert_eq!(text, whole, "every chunk once, in order");
    // The move is counted where operators look.
    let metrics = client.get("/metrics").await;
    assert!(
        metrics
            .text()
            .contains("drawbridge_failovers_total{kind=\"engine_resume\"} 1"),
        "{}",
        metrics.text()
    );
    assert!(
        wait_for_lines(
            &cluster.engines[1],
            &["continuing an answer another engine began"],
            1,
            Duration::from_secs(5)
        )
        .await
    );
}
