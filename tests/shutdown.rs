//! SIGTERM under load, on every binary: the one signalled stops admitting work (its `/health`
//! says draining), every stream already in flight completes in full, and it exits 0.

use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use serde_json::{Value, json};
use test_support::{Client, Process, Stack, StackOptions};

const STREAMS: usize = 8;
const WORDS: usize = 24;

fn options() -> StackOptions {
    StackOptions {
        // Each stream takes WORDS × 40 ms ≈ 1 s: long enough to be in flight when the signal
        // lands, short enough for a quick test.
        delay_ms: 40,
        accounts: vec![
            test_support::AccountSpec::new(4).behaviour(&format!("stream n={WORDS}")),
            test_support::AccountSpec::new(4).behaviour(&format!("stream n={WORDS}")),
        ],
        ..StackOptions::default()
    }
}

/// Start `STREAMS` streams and return once each has delivered its first chunk; each task then
/// reads its stream to the end and returns the whole SSE text.
async fn streams_in_flight(client: &Client) -> Vec<tokio::task::JoinHandle<String>> {
    let mut started = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let client = client.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        started.push(rx);
        tasks.push(tokio::spawn(async move {
            let body = json!({
                "model": "kiro",
                "stream": true,
                "messages": [{"role": "user", "content": format!("stream {i}")}]
            });
            let (status, mut body) = client.post_streaming("/v1/chat/completions", &body).await;
            assert_eq!(status, 200);
            let mut text = Vec::new();
            let mut tx = Some(tx);
            while let Some(frame) = body.next().await {
                text.extend_from_slice(&frame.expect("the stream is not cut"));
                if text.windows(8).any(|w| w == b"content\"")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
            String::from_utf8(text).unwrap()
        }));
    }
    for rx in started {
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("every stream starts")
            .expect("the stream task is alive");
    }
    tasks
}

/// Every stream ended normally with all its words, one finish_reason "stop", then [DONE].
async fn all_complete(tasks: Vec<tokio::task::JoinHandle<String>>) {
    for text in join_all(tasks).await {
        let text = text.expect("stream task");
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let words: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(words.matches("chunk ").count(), WORDS, "{text}");
        let finishes: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, vec![&json!("stop")], "{text}");
    }
}

/// SIGTERM `process` while streams run through `client`; `health` is the signalled process's
/// own health URL, checked to say draining while it finishes.
async fn sigterm_under_load(client: &Client, process: &mut Process, health: Option<Client>) {
    let tasks = streams_in_flight(client).await;
    process.signal(nix::sys::signal::Signal::SIGTERM);
    if let Some(health) = health {
        // While it drains it still answers, and its health turns to draining (503): a load
        // balancer stops sending it work. (Polled: the signal is handled asynchronously.)
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let reply = health.get("/health").await;
                if reply.status == 503 && reply.json()["status"] == "draining" {
                    break;
                }
                assert_eq!(reply.status, 200, "{}", reply.text());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("health turns to draining while the streams finish");
        // New work is refused with a retryable status while it drains.
        assert!(
            tasks.iter().any(|t| !t.is_finished()),
            "streams still in flight"
        );
        let refused = client
            .chat(&json!({"model": "kiro", "messages": [{"role": "user", "content": "late"}]}))
            .await;
        assert_eq!(refused.status, 503, "{}", refused.text());
    }
    all_complete(tasks).await;
    let status = process.wait().await;
    assert!(status.success(), "{status:?}: {}", process.log());
}

#[tokio::test]
async fn single_node_finishes_every_stream_on_sigterm() {
    let mut stack = Stack::single(options()).await;
    let client = stack.client();
    let health = Client::new(stack.base_url.clone(), None);
    let mut process = stack.processes.pop().unwrap();
    sigterm_under_load(&client, &mut process, Some(health)).await;
    assert!(stack.agent_pids().is_empty(), "no agent outlives the node");
}

#[tokio::test]
async fn the_gateway_finishes_every_stream_on_sigterm() {
    let mut stack = Stack::three(options()).await;
    let client = stack.client();
    let health = Client::new(stack.base_url.clone(), None);
    let mut gateway = stack.processes.pop().unwrap();
    sigterm_under_load(&client, &mut gateway, Some(health)).await;
}

#[tokio::test]
async fn the_engine_finishes_every_stream_on_sigterm() {
    let mut stack = Stack::three(options()).await;
    let client = stack.client();
    let mut engine = stack.processes.remove(1);
    let health = Client::new(format!("http://{}", engine.addr("engine")), None);
    sigterm_under_load(&client, &mut engine, Some(health)).await;
}

#[tokio::test]
async fn the_worker_finishes_every_stream_on_sigterm() {
    let mut stack = Stack::three(options()).await;
    let client = stack.client();
    let mut worker = stack.processes.remove(0);
    let health = Client::new(format!("http://{}", worker.addr("http")), None);
    sigterm_under_load(&client, &mut worker, Some(health)).await;
    assert!(
        stack.agent_pids().is_empty(),
        "the worker stopped its agents"
    );
}
