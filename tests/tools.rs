//! Client tools end to end (issue 14), with the real binaries and `mock-acp-agent` as a real MCP
//! client of the worker's tool bridge: a call held open across two requests (the live
//! session), the follow-up served by another engine of a cluster, a session nobody comes back
//! for cancelled after its TTL (its process serves again, and a late follow-up is answered
//! from the whole conversation), and emulated tools for an agent without HTTP MCP.
//! The OpenAI SDK round trips are in `sdk/test_tools.py`.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::cluster::{Assignment, Cluster};
use test_support::{AccountSpec, Stack, StackOptions, eventually_within};

const WEATHER: &str = r#"[[mock:call tool=get_weather args={"city":"Paris"}]]"#;

fn tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

fn ask() -> Value {
    json!({"model": "kiro", "tools": tools(),
        "messages": [{"role": "user", "content": format!("Weather in Paris? {WEATHER}")}]})
}

/// The first answer's tool call (asserting the answer is one), and the follow-up request that
/// brings its result.
fn follow_up(reply: &test_support::Reply, result: &str) -> (String, Value) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{body}");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("arguments"))
            .expect("JSON arguments");
    assert_eq!(arguments, json!({"city": "Paris"}));
    let id = call["id"].as_str().expect("id").to_owned();
    let mut request = ask();
    let messages = request["messages"].as_array_mut().expect("messages");
    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
    (id, request)
}

fn content(reply: &test_support::Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The account's busy slots, as `/admin/accounts` shows them.
async fn busy(stack: &Stack) -> u64 {
    let reply = stack.admin().get("/admin/accounts").await;
    let body = reply.json();
    let accounts = body["data"].as_array().or(body.as_array()).cloned();
    let account = accounts
        .unwrap_or_default()
        .into_iter()
        .next()
        .expect("an account");
    account["busy"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_nobody_comes_back_for_is_cancelled_and_a_late_follow_up_is_answered_from_the_conversation()
 {
    let mut stack = Stack::single(StackOptions {
        accounts: vec![AccountSpec::new(1)],
        worker_yaml: "  live_session_ttl: 4s\n".into(),
        engine_yaml: "engine: { refresh_interval: 100ms }\n".into(),
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    let reply = client.chat(&ask()).await;
    let (id, request) = follow_up(&reply, "sunny");
    // The session holds the account's only process while it waits for the result...
    eventually_within(
        Duration::from_secs(3),
        "the live session holds the process",
        || async { busy(&stack).await == 1 },
    )
    .await;
    // ...until its TTL passes: the agent's turn is cancelled and the process serves again.
    eventually_within(
        Duration::from_secs(10),
        "the live session's process is idle again",
        || async { busy(&stack).await == 0 },
    )
    .await;
    let reply = client.chat(&request).await;
    assert_eq!(
        content(&reply),
        format!("result {id}: sunny"),
        "the fresh session was given the whole conversation"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_http_mcp_gets_emulated_tools() {
    let mut stack = Stack::single(StackOptions {
        accounts: vec![AccountSpec::new(1).arg("--no-mcp-http")],
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    let reply = client.chat(&ask()).await;
    assert!(
        !reply.text().contains("<tool_call>"),
        "tags never reach the client: {}",
        reply.text()
    );
    let (id, request) = follow_up(&reply, "sunny");
    let reply = client.chat(&request).await;
    assert_eq!(content(&reply), format!("result {id}: sunny"));

    // Streamed, the calls come as tool-call deltas and nothing of the tags as text.
    let mut streamed = ask();
    streamed["stream"] = json!(true);
    let reply = client.chat(&streamed).await;
    let text = reply.text();
    assert!(text.contains("\"tool_calls\""), "{text}");
    assert!(!text.contains("tool_call>"), "{text}");
    assert!(text.contains("\"finish_reason\":\"tool_calls\""), "{text}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follow_up_is_served_by_another_engine_of_the_cluster() {
    let mut cluster = Cluster::new();
    cluster
        .add_worker("w1", Assignment::Config, &[("acct-1", AccountSpec::new(1))])
        .await;
    cluster.add_engine("e1", &[], "").await;
    cluster.add_engine("e2", &[], "").await;
    cluster.wait_serving(0, 1).await;
    cluster.wait_serving(1, 1).await;
    let reply = cluster.engine(0).chat(&ask()).await;
    let (_, request) = follow_up(&reply, "sunny");
    let reply = cluster.engine(1).chat(&request).await;
    assert_eq!(
        content(&reply),
        "get_weather: sunny",
        "the agent's held call got the result (a fresh session would answer from the transcript)"
    );
}

/// A chat of `messages` (user and assistant texts, alternating from the user's).
fn conversation(turns: &[&str]) -> Value {
    let messages: Vec<Value> = turns
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": text})
        })
        .collect();
    json!({"model": "kiro", "messages": messages})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_that_extends_the_conversation_goes_to_its_warm_session() {
    // One process: the warm session holds it between the turns. The mock echoes its prompt,
    // so the answer shows what the agent was sent: only the new message when the session was
    // warm, the whole rendered conversation otherwise.
    let mut stack = Stack::single(StackOptions {
        accounts: vec![AccountSpec::new(1)],
        queue_timeout: "10s",
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    let first = content(&client.chat(&conversation(&["hello one"])).await);
    assert_eq!(first, "hello one");
    let second = content(
        &client
            .chat(&conversation(&["hello one", &first, "hello two"]))
            .await,
    );
    assert_eq!(
        second, "hello two",
        "only the new message went to the session"
    );
    let third = content(
        &client
            .chat(&conversation(&[
                "hello one",
                &first,
                "hello two",
                &second,
                "hello three",
            ]))
            .await,
    );
    assert_eq!(third, "hello three");

    // An answer the client changed is not the session's: a fresh session gets everything.
    let edited = content(
        &client
            .chat(&conversation(&[
                "hello one",
                &first,
                "hello two",
                "edited",
                "hello four",
            ]))
            .await,
    );
    assert!(edited.contains("[User]\nhello one"), "{edited}");

    // A request of another conversation needs the only process: the warm session of the last
    // answer gives it back at once instead of making it wait for the queue timeout.
    let started = tokio::time::Instant::now();
    let other = content(&client.chat(&conversation(&["something else"])).await);
    assert_eq!(other, "something else");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_tool_round_trip_the_conversation_goes_on_in_the_same_session() {
    let mut stack = Stack::single(StackOptions {
        accounts: vec![AccountSpec::new(1)],
        ..StackOptions::default()
    })
    .await;
    let client = stack.client();
    let (_, mut request) = follow_up(&client.chat(&ask()).await, "sunny");
    let reply = client.chat(&request).await;
    let answer = content(&reply);
    assert_eq!(answer, "get_weather: sunny");
    // The session that ran the tool is kept warm under the conversation with its results: the
    // next turn sends the agent only the new message (the mock echoes it).
    let messages = request["messages"].as_array_mut().expect("messages");
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": "thanks"}));
    assert_eq!(content(&client.chat(&request).await), "thanks");
    stack.stop().await;
}
