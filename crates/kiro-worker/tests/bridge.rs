//! The tool bridge over real HTTP on loopback, called as an agent calls it: with rmcp's own
//! streamable HTTP client and the `session/new` entry the bridge hands out.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use drawbridge_acp::HttpMcpServer;
use drawbridge_telemetry::Shutdown;
use drawbridge_types::tools::Tool;
use kiro_worker::bridge::{Bridge, BridgeSession, HeldCall, SESSION_ENDED};
use rmcp::model::{CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest};
use rmcp::service::{PeerRequestOptions, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};

type Agent = RunningService<RoleClient, ()>;

fn weather() -> Tool {
    Tool::function(
        "get_weather",
        "The weather in a city.",
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    )
}

fn clock() -> Tool {
    let mut tool = Tool::function("get_time", "The time now.", json!({}));
    tool.function.parameters = None;
    tool
}

async fn bridge() -> (Arc<Bridge>, Shutdown) {
    let shutdown = Shutdown::new();
    let bridge = Bridge::start(&shutdown).await.expect("start the bridge");
    (bridge, shutdown)
}

/// The bearer token of a `session/new` entry.
fn token(server: &HttpMcpServer) -> String {
    let (name, value) = &server.headers[0];
    assert_eq!(name, "Authorization");
    value
        .strip_prefix("Bearer ")
        .expect("a bearer token")
        .to_owned()
}

/// Connect to `server` as an agent would, with `token` as its bearer token.
async fn connect(server: &HttpMcpServer, token: &str) -> Result<Agent, impl std::fmt::Debug> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(server.url.as_str()).auth_header(token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
}

async fn agent(session: &BridgeSession) -> Agent {
    let server = session.server();
    connect(&server, &token(&server)).await.expect("connect")
}

fn call(name: &str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object");
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(arguments)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// Poll `future` once: whether it is still pending.
async fn pending<F: Future + Unpin>(future: &mut F) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx).is_pending()))
        .await
}

/// Drive `call` until the session hands over the call it made; the call must still wait.
async fn held<F: Future + Unpin>(session: &mut BridgeSession, call: &mut F) -> HeldCall
where
    F::Output: std::fmt::Debug,
{
    tokio::select! {
        answered = call => panic!("the call finished before it was held: {answered:?}"),
        held = session.next_call() => held.expect("a held call"),
    }
}

#[tokio::test]
async fn lists_exactly_the_sessions_tools() {
    let (bridge, _shutdown) = bridge().await;
    let session = bridge.open(vec![weather(), clock()]);
    let agent = agent(&session).await;
    let tools = agent.list_all_tools().await.expect("tools/list");
    let listed: Vec<(String, Option<String>, Value)> = tools
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.description.as_deref().map(str::to_owned),
                Value::Object((*t.input_schema).clone()),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (
                "get_weather".to_owned(),
                Some("The weather in a city.".to_owned()),
                weather().function.parameters.expect("parameters"),
            ),
            (
                "get_time".to_owned(),
                Some("The time now.".to_owned()),
                json!({"type": "object", "properties": {}}),
            ),
        ]
    );
    let server = session.server();
    assert_eq!(server.name, drawbridge_acp::CLIENT_TOOLS_SERVER);
    assert_eq!(server.url, bridge.url());
    assert!(server.url.starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn a_call_is_held_until_it_is_answered() {
    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let agent = agent(&session).await;
    let mut call = Box::pin(agent.call_tool(call("get_weather", json!({"city": "Oslo"}))));

    let held = held(&mut session, &mut call).await;
    assert_eq!(held.name, "get_weather");
    let arguments: Value = serde_json::from_str(&held.arguments).expect("JSON arguments");
    assert_eq!(arguments, json!({"city": "Oslo"}));
    assert!(held.is_waiting());
    // The agent's other requests go through while the call is held.
    assert_eq!(agent.list_all_tools().await.expect("tools/list").len(), 1);
    assert!(pending(&mut call).await, "the call finished unanswered");

    held.answer("12°C, rain".to_owned(), false);
    let result = call.await.expect("tools/call");
    assert_eq!(result.is_error, Some(false));
    assert_eq!(text(&result), "12°C, rain");
}

/// A client on the newest protocol (`server/discover`, no handshake, no session) is served too.
#[tokio::test]
async fn the_newest_protocol_is_served_too() {
    use rmcp::model::ProtocolVersion;
    use rmcp::{ClientLifecycleMode, ClientServiceExt as _};

    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let server = session.server();
    let config = StreamableHttpClientTransportConfig::with_uri(server.url.as_str())
        .auth_header(token(&server));
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let agent = ()
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_config(config),
            lifecycle,
        )
        .await
        .expect("discover");
    assert_eq!(agent.list_all_tools().await.expect("tools/list").len(), 1);
    let mut call = Box::pin(agent.call_tool(call("get_weather", json!({"city": "Oslo"}))));
    let held = held(&mut session, &mut call).await;
    assert!(pending(&mut call).await);
    held.answer("sunny".to_owned(), false);
    assert_eq!(text(&call.await.expect("tools/call")), "sunny");
}

#[tokio::test]
async fn an_error_answer_sets_is_error() {
    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let agent = agent(&session).await;
    let mut call = Box::pin(agent.call_tool(call("get_weather", json!({"city": "Nowhere"}))));
    held(&mut session, &mut call)
        .await
        .answer("no such city".to_owned(), true);
    let result = call.await.expect("tools/call");
    assert_eq!(result.is_error, Some(true));
    assert_eq!(text(&result), "no such city");
}

#[tokio::test]
async fn concurrent_calls_are_all_delivered_in_order_of_arrival() {
    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather(), clock()]);
    let agent = agent(&session).await;
    let mut first = Box::pin(agent.call_tool(call("get_weather", json!({"city": "Oslo"}))));
    let first_held = held(&mut session, &mut first).await;
    let mut second = Box::pin(agent.call_tool(call("get_time", json!({}))));
    let second_held = held(&mut session, &mut second).await;
    assert_eq!(
        (first_held.name.as_str(), second_held.name.as_str()),
        ("get_weather", "get_time")
    );
    assert_eq!(second_held.arguments, "{}");
    assert!(pending(&mut first).await);

    // Answered in the other order, each gets its own answer.
    second_held.answer("noon".to_owned(), false);
    assert_eq!(text(&second.await.expect("second call")), "noon");
    assert!(pending(&mut first).await);
    first_held.answer("sunny".to_owned(), false);
    assert_eq!(text(&first.await.expect("first call")), "sunny");
}

#[tokio::test]
async fn parallel_calls_are_all_delivered() {
    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let agent = agent(&session).await;
    let cities = ["Oslo", "Lima", "Pune"];
    let calls = futures::future::join_all(
        cities.map(|city| agent.call_tool(call("get_weather", json!({ "city": city })))),
    );
    let answer = async {
        for _ in cities {
            let held = session.next_call().await.expect("a held call");
            let arguments: Value = serde_json::from_str(&held.arguments).expect("JSON");
            let city = arguments["city"].as_str().expect("a city").to_owned();
            held.answer(format!("weather in {city}"), false);
        }
    };
    let (results, ()) = tokio::join!(calls, answer);
    let texts: Vec<String> = results
        .iter()
        .map(|r| text(r.as_ref().expect("tools/call")))
        .collect();
    assert_eq!(
        texts,
        cities.map(|city| format!("weather in {city}")).to_vec()
    );
}

#[tokio::test]
async fn an_unknown_tool_is_an_error_result_and_not_held() {
    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let agent = agent(&session).await;
    let result = agent
        .call_tool(call("rm_rf", json!({})))
        .await
        .expect("tools/call");
    assert_eq!(result.is_error, Some(true));
    assert!(text(&result).contains("rm_rf"), "{}", text(&result));
    assert!(pending(&mut Box::pin(session.next_call())).await);
}

#[tokio::test]
async fn a_dropped_session_ends_its_held_calls() {
    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let agent = agent(&session).await;
    let mut kept = Box::pin(agent.call_tool(call("get_weather", json!({"city": "Oslo"}))));
    let held = held(&mut session, &mut kept).await;
    // A call dropped unanswered (as the calls still queued in a dropped session are) ends.
    let mut dropped = Box::pin(agent.call_tool(call("get_weather", json!({"city": "Rome"}))));
    drop(self::held(&mut session, &mut dropped).await);
    let result = dropped.await.expect("tools/call");
    assert_eq!(result.is_error, Some(true));
    assert_eq!(text(&result), SESSION_ENDED);
    assert!(pending(&mut kept).await);
    assert_eq!(bridge.open_sessions(), 1);

    drop(session);
    assert_eq!(bridge.open_sessions(), 0);
    let result = kept.await.expect("tools/call");
    assert_eq!(result.is_error, Some(true));
    assert_eq!(text(&result), SESSION_ENDED);
    assert!(!held.is_waiting());
    // Its token opens nothing any more.
    assert!(agent.list_all_tools().await.is_err());
}

#[tokio::test]
async fn a_cancelled_call_is_no_longer_waited_for() {
    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let agent = agent(&session).await;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(call(
        "get_weather",
        json!({"city": "Oslo"}),
    )));
    let handle = agent
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .expect("send tools/call");
    let held = session.next_call().await.expect("a held call");
    assert!(held.is_waiting());
    handle
        .cancel(Some("the user pressed stop".to_owned()))
        .await
        .expect("cancel");
    held.abandoned().await;
    assert!(!held.is_waiting());
    // Answering it anyway is harmless.
    held.answer("too late".to_owned(), false);
    assert_eq!(agent.list_all_tools().await.expect("tools/list").len(), 1);
}

/// Agents on other MCP clients send `notifications/cancelled` and keep the call's stream open.
#[tokio::test]
async fn a_call_cancelled_by_notification_is_no_longer_waited_for() {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let authorization = session.server().headers[0].1.clone();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let post = |message: Value| {
        let request = axum::http::Request::post(bridge.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", &authorization)
            .body(Full::new(bytes::Bytes::from(message.to_string())))
            .expect("request");
        client.request(request)
    };
    let call = post(json!({
        "jsonrpc": "2.0", "id": "call-41", "method": "tools/call",
        "params": {"name": "get_weather", "arguments": {"city": "Oslo"}}
    }));
    let (response, held) = tokio::join!(call, session.next_call());
    let response = response.expect("tools/call");
    assert_eq!(response.status(), 200);
    let held = held.expect("a held call");
    assert!(held.is_waiting());

    let cancel = |id: &str| {
        post(json!({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": "stop"}
        }))
    };
    assert_eq!(cancel("call-40").await.expect("cancel").status(), 202);
    assert!(held.is_waiting());
    assert_eq!(cancel("call-41").await.expect("cancel").status(), 202);
    held.abandoned().await;
    assert!(!held.is_waiting());
    drop(response);
}

#[tokio::test]
async fn a_call_whose_agent_hangs_up_is_no_longer_waited_for() {
    let (bridge, _shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let agent = agent(&session).await;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(call(
        "get_weather",
        json!({"city": "Oslo"}),
    )));
    let handle = agent
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .expect("send tools/call");
    let held = session.next_call().await.expect("a held call");
    drop(handle);
    agent.cancel().await.expect("stop the agent");
    held.abandoned().await;
    assert!(!held.is_waiting());
}

#[tokio::test]
async fn requests_without_a_sessions_token_get_401() {
    let (bridge, _shutdown) = bridge().await;
    let session = bridge.open(vec![weather()]);
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "0"}}
    })
    .to_string();
    let base = bridge.url().to_owned();
    let accept = [("accept", "application/json, text/event-stream")];
    for key in [None, Some("0123"), Some(&*"f".repeat(64))] {
        let reply = test_support::http::Client::new(base.clone(), key)
            .request_with_headers(axum::http::Method::POST, "", initialize.clone(), &accept)
            .await;
        assert_eq!(reply.status, 401, "key {key:?}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    let valid = token(&session.server());
    let reply = test_support::http::Client::new(base, Some(&valid))
        .request_with_headers(axum::http::Method::POST, "", initialize, &accept)
        .await;
    assert_eq!(reply.status, 200);

    let wrong = "a".repeat(64);
    assert!(connect(&session.server(), &wrong).await.is_err());
}

#[tokio::test]
async fn a_sessions_token_shows_only_its_own_tools() {
    let (bridge, _shutdown) = bridge().await;
    let mut weather_session = bridge.open(vec![weather()]);
    let clock_session = bridge.open(vec![clock()]);
    assert_eq!(bridge.open_sessions(), 2);
    assert_ne!(
        token(&weather_session.server()),
        token(&clock_session.server())
    );
    let clock_agent = agent(&clock_session).await;
    let names: Vec<String> = clock_agent
        .list_all_tools()
        .await
        .expect("tools/list")
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, ["get_time"]);
    let result = clock_agent
        .call_tool(call("get_weather", json!({"city": "Oslo"})))
        .await
        .expect("tools/call");
    assert_eq!(result.is_error, Some(true));
    assert!(pending(&mut Box::pin(weather_session.next_call())).await);
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    assert!(Bridge::start_in_runtime(&Shutdown::new()).is_err());
}

#[tokio::test]
async fn the_bridge_stops_with_its_scope() {
    let (bridge, shutdown) = bridge().await;
    let mut session = bridge.open(vec![weather()]);
    let agent = agent(&session).await;
    let mut call = Box::pin(agent.call_tool(call("get_weather", json!({"city": "Oslo"}))));
    let held = held(&mut session, &mut call).await;
    shutdown.cancel();
    held.abandoned().await;
    assert!(!held.is_waiting());
    assert!(session.next_call().await.is_none());
    // Its server task ends although the agent is still connected.
    assert!(shutdown.drain(std::time::Duration::from_secs(10)).await);
}
