//! The mock agent as a real MCP client: a real MCP server (the official SDK's streamable HTTP
//! server, on loopback) handed to the real mock binary in `session/new` `mcpServers`, driven
//! over real ACP by the `call` directive: single and parallel calls held open by the server,
//! missing tools, permission, cancel, transcripts, the capability flag and bad server entries.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

mod raw;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raw::{GUARD, MOCK, Raw, kind, select, text};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

const TOKEN: &str = "Bearer secret-token";
const SERVER_NAME: &str = "drawbridge";

/// What the test's MCP server saw and how its held calls are released.
#[derive(Clone)]
struct Tools {
    /// Every request's `Authorization` header (`tools/list` and `tools/call`).
    auth: Arc<Mutex<Vec<Option<String>>>>,
    /// The tools called, in order.
    calls: Arc<Mutex<Vec<String>>>,
    /// A held call (`hold_*`) says it started.
    started: mpsc::UnboundedSender<String>,
    /// A held call says the client cancelled it.
    cancelled: mpsc::UnboundedSender<String>,
    /// Held calls answer once this is true.
    release: watch::Receiver<bool>,
}

impl Tools {
    fn record_auth(&self, context: &RequestContext<RoleServer>) {
        let header = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get(http::header::AUTHORIZATION))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        self.auth.lock().unwrap().push(header);
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.record_auth(&context);
        let schema = Arc::new(serde_json::Map::from_iter([(
            "type".to_owned(),
            json!("object"),
        )]));
        let tools = ["echo", "fail", "hold_a", "hold_b"]
            .map(|name| Tool::new(name, format!("the test's {name}"), schema.clone()));
        Ok(ListToolsResult::with_all_items(tools.to_vec()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.record_auth(&context);
        let name = request.name.to_string();
        self.calls.lock().unwrap().push(name.clone());
        let args = Value::Object(request.arguments.unwrap_or_default()).to_string();
        let result = match name.as_str() {
            "echo" => {
                CallToolResult::success(vec![ContentBlock::text("args="), ContentBlock::text(args)])
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text("boom")]),
            _ => {
                let _ = self.started.send(name.clone());
                let mut release = self.release.clone();
                tokio::select! {
                    _ = release.wait_for(|released| *released) => {}
                    () = context.ct.cancelled() => {
                        let _ = self.cancelled.send(name.clone());
                        return Err(ErrorData::internal_error("cancelled", None));
                    }
                }
                CallToolResult::success(vec![ContentBlock::text(format!("released {name}"))])
            }
        };
        Ok(result.into())
    }
}

/// The test's MCP server on 127.0.0.1, with handles on what it sees.
struct Server {
    url: String,
    auth: Arc<Mutex<Vec<Option<String>>>>,
    calls: Arc<Mutex<Vec<String>>>,
    started: mpsc::UnboundedReceiver<String>,
    cancelled: mpsc::UnboundedReceiver<String>,
    release: watch::Sender<bool>,
    /// The HTTP server's task, ended with the test (dropping the set aborts it).
    _task: tokio::task::JoinSet<()>,
}

impl Server {
    async fn start() -> Self {
        let (started_tx, started) = mpsc::unbounded_channel();
        let (cancelled_tx, cancelled) = mpsc::unbounded_channel();
        let (release, release_rx) = watch::channel(false);
        let tools = Tools {
            auth: Arc::default(),
            calls: Arc::default(),
            started: started_tx,
            cancelled: cancelled_tx,
            release: release_rx,
        };
        let (auth, calls) = (tools.auth.clone(), tools.calls.clone());
        let service: StreamableHttpService<Tools, LocalSessionManager> = StreamableHttpService::new(
            move || Ok(tools.clone()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        );
        let router = axum::Router::new().nest_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let mut task = tokio::task::JoinSet::new();
        task.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url,
            auth,
            calls,
            started,
            cancelled,
            release,
            _task: task,
        }
    }

    /// The `mcpServers` entry a Drawbridge worker gives the agent.
    fn entry(&self) -> Value {
        json!({
            "type": "http",
            "name": SERVER_NAME,
            "url": self.url,
            "headers": [{ "name": "Authorization", "value": TOKEN }],
        })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Every request carried the bearer token (and there were some).
    fn assert_authorized(&self) {
        let auth = self.auth.lock().unwrap();
        assert!(!auth.is_empty(), "the server saw no request");
        assert!(
            auth.iter().all(|header| header.as_deref() == Some(TOKEN)),
            "{auth:?}"
        );
    }

    async fn next(receiver: &mut mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(GUARD, receiver.recv())
            .await
            .expect("the MCP server waited in vain")
            .expect("the MCP server is gone")
    }
}

/// A plain mock with `args`, and a session given `servers`.
async fn session(args: &[&str], home: &Path, servers: Value) -> (Raw, String) {
    let mut raw = raw::start(args, home).await;
    let session = raw
        .call("session/new", json!({ "cwd": home, "mcpServers": servers }))
        .await
        .expect("session/new");
    let id = session["sessionId"].as_str().unwrap().to_owned();
    (raw, id)
}

fn updates<'a>(frames: &'a [Value], which: &str) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|frame| kind(frame) == which)
        .map(|frame| &frame["params"]["update"])
        .collect()
}

fn stop_reason(answer: &Result<Value, Value>) -> &str {
    answer.as_ref().unwrap()["stopReason"].as_str().unwrap()
}

#[tokio::test]
async fn a_call_reaches_the_server_with_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let (mut raw, id) = session(&[], dir.path(), json!([server.entry()])).await;
    let (frames, answer) = raw
        .prompt(
            &id,
            r#"[[mock:call tool=echo args={"city":"Paris","n":[1,2]}]]"#,
        )
        .await;
    assert_eq!(stop_reason(&answer), "end_turn");
    assert_eq!(text(&frames), r#"echo: args={"city":"Paris","n":[1,2]}"#);
    let calls = updates(&frames, "tool_call");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["title"], "mcp__drawbridge__echo");
    // `other`, the default kind, may go unsaid.
    assert!(
        [json!("other"), Value::Null].contains(&calls[0]["kind"]),
        "{}",
        calls[0]
    );
    // `pending`, the default status, may go unsaid.
    assert!(
        [json!("pending"), Value::Null].contains(&calls[0]["status"]),
        "{}",
        calls[0]
    );
    assert_eq!(
        calls[0]["rawInput"],
        json!({ "city": "Paris", "n": [1, 2] })
    );
    let statuses: Vec<&Value> = updates(&frames, "tool_call_update")
        .iter()
        .map(|update| &update["status"])
        .collect();
    assert_eq!(statuses, [&json!("in_progress"), &json!("completed")]);
    assert_eq!(server.calls(), ["echo"]);
    server.assert_authorized();
}

#[tokio::test]
async fn kiro_dialects_call_too_and_a_failed_result_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    for args in [
        &["acp", "--kiro-engine", "v2"][..],
        &["acp", "--kiro-engine", "v3", "--auth-method", "cli"],
    ] {
        let (mut raw, id) = session(args, dir.path(), json!([server.entry()])).await;
        let (frames, answer) = raw.prompt(&id, "[[mock:call tool=fail,echo]]").await;
        assert_eq!(stop_reason(&answer), "end_turn", "{args:?}");
        assert_eq!(
            text(&frames),
            "fail failed: boom\necho: args={}",
            "{args:?}"
        );
        let statuses: Vec<&Value> = updates(&frames, "tool_call_update")
            .iter()
            .map(|update| &update["status"])
            .filter(|status| *status != "in_progress")
            .collect();
        assert_eq!(
            statuses,
            [&json!("failed"), &json!("completed")],
            "{args:?}"
        );
    }
    server.assert_authorized();
}

#[tokio::test]
async fn calls_run_in_parallel_and_are_held_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start().await;
    let (mut raw, id) = session(&[], dir.path(), json!([server.entry()])).await;
    let prompt = raw
        .send_request(
            "session/prompt",
            json!({ "sessionId": id, "prompt": [{ "type": "text", "text": "[[mock:call tool=hold_a,hold_b]]" }] }),
        )
        .await;
    // Both calls are in flight before either is answered.
    let mut started = [
        Server::next(&mut server.started).await,
        Server::next(&mut server.started).await,
    ];
    started.sort();
    assert_eq!(started, ["hold_a", "hold_b"]);
    server.release.send(true).unwrap();
    let answer = raw.response(prompt).await;
    assert_eq!(stop_reason(&answer), "end_turn");
    assert_eq!(
        text(&raw.log),
        "hold_a: released hold_a\nhold_b: released hold_b"
    );
}

#[tokio::test]
async fn a_cancel_stops_waiting_and_cancels_the_calls() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start().await;
    let (mut raw, id) = session(&[], dir.path(), json!([server.entry()])).await;
    let prompt = raw
        .send_request(
            "session/prompt",
            json!({ "sessionId": id, "prompt": [{ "type": "text", "text": "[[mock:call tool=hold_a]]" }] }),
        )
        .await;
    assert_eq!(Server::next(&mut server.started).await, "hold_a");
    raw.notify("session/cancel", json!({ "sessionId": id }))
        .await;
    let answer = raw.response(prompt).await;
    assert_eq!(stop_reason(&answer), "cancelled");
    // The server is told (`notifications/cancelled`), not left to notice the session's end
    // (which its SDK gives 5 s).
    let cancelled = tokio::time::timeout(Duration::from_secs(3), server.cancelled.recv()).await;
    assert_eq!(cancelled.unwrap().as_deref(), Some("hold_a"));
    // The agent goes on serving.
    let (frames, answer) = raw.prompt(&id, "[[mock:call tool=echo]]").await;
    assert_eq!(stop_reason(&answer), "end_turn");
    assert_eq!(text(&frames), "echo: args={}");
}

#[tokio::test]
async fn a_tool_the_server_does_not_offer_is_not_called() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let (mut raw, id) = session(&[], dir.path(), json!([server.entry()])).await;
    let (frames, answer) = raw.prompt(&id, "[[mock:call tool=nope,echo,other]]").await;
    assert_eq!(stop_reason(&answer), "end_turn");
    assert_eq!(
        text(&frames),
        "no tool nope offered\necho: args={}\nno tool other offered"
    );
    assert_eq!(updates(&frames, "tool_call").len(), 1);
    assert_eq!(server.calls(), ["echo"]);
}

#[tokio::test]
async fn ask_asks_permission_for_each_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let (mut raw, id) = session(&[], dir.path(), json!([server.entry()])).await;

    raw.answer = select("allow_once");
    let (frames, answer) = raw.prompt(&id, "[[mock:call tool=echo ask=1]]").await;
    assert_eq!(stop_reason(&answer), "end_turn");
    assert_eq!(text(&frames), "echo: args={}");
    let asks: Vec<&Value> = frames
        .iter()
        .filter(|frame| frame["method"] == "session/request_permission")
        .collect();
    assert_eq!(asks.len(), 1);
    let params = &asks[0]["params"];
    assert_eq!(params["toolCall"]["title"], "mcp__drawbridge__echo");
    let options: Vec<&Value> = params["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|option| &option["optionId"])
        .collect();
    assert_eq!(options, [&json!("allow_once"), &json!("reject_once")]);
    assert_eq!(server.calls(), ["echo"]);

    raw.answer = select("reject_once");
    let (frames, answer) = raw.prompt(&id, "[[mock:call tool=echo,fail ask=1]]").await;
    assert_eq!(stop_reason(&answer), "end_turn");
    assert_eq!(
        text(&frames),
        "permission refused for echo\npermission refused for fail"
    );
    let statuses: Vec<&Value> = updates(&frames, "tool_call_update")
        .iter()
        .map(|update| &update["status"])
        .collect();
    assert_eq!(statuses, [&json!("failed"), &json!("failed")]);
    assert_eq!(server.calls(), ["echo"], "a refused tool is not called");
}

#[tokio::test]
async fn a_transcript_is_answered_from_its_tool_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start().await;
    let (mut raw, id) = session(&[], dir.path(), json!([server.entry()])).await;
    let transcript = "[User]\nweather? [[mock:call tool=echo]]\n\n\
                      [Assistant called tool echo (id call_1)]\n{}\n\n\
                      [Tool result (id call_1)]\nsunny\nand warm\n\n\
                      [Tool result (id call_2)]\n{\"t\": 20}";
    let (frames, answer) = raw.prompt(&id, transcript).await;
    assert_eq!(stop_reason(&answer), "end_turn");
    assert_eq!(
        text(&frames),
        "result call_1: sunny\nand warm\nresult call_2: {\"t\": 20}"
    );
    assert!(updates(&frames, "tool_call").is_empty());
    assert!(server.calls().is_empty(), "no tool is called");

    // Results before the directive belong to an earlier turn: this one calls.
    let transcript =
        "[User]\nfirst\n\n[Tool result (id old)]\nx\n\n[User]\n[[mock:call tool=echo]]";
    let (frames, _) = raw.prompt(&id, transcript).await;
    assert_eq!(text(&frames), "echo: args={}");
    assert_eq!(server.calls(), ["echo"]);
}

#[tokio::test]
async fn http_mcp_is_announced_unless_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let capabilities =
        |raw: &Raw| raw.log[0]["result"]["agentCapabilities"]["mcpCapabilities"].clone();
    for (args, env, expected) in [
        (&[][..], &[][..], json!({ "http": true, "sse": false })),
        (
            &["--no-mcp-http"],
            &[],
            json!({ "http": false, "sse": false }),
        ),
        (
            &[],
            &[("MOCK_ACP_MCP_HTTP", "0")],
            json!({ "http": false, "sse": false }),
        ),
        (
            &["--kiro-engine", "v2"],
            &[],
            json!({ "http": true, "sse": false }),
        ),
        (
            &["--kiro-engine", "v2", "--no-mcp-http"],
            &[],
            json!({ "http": false, "sse": false }),
        ),
        (
            &["--kiro-engine", "v3", "--auth-method", "cli"],
            &[],
            json!({ "http": true, "sse": true }),
        ),
        (
            &[
                "--kiro-engine",
                "v3",
                "--auth-method",
                "cli",
                "--no-mcp-http",
            ],
            &[],
            json!({ "http": false, "sse": true }),
        ),
    ] {
        let raw = raw::start_program(MOCK, args, home, env).await;
        let announced = capabilities(&raw);
        for key in ["http", "sse"] {
            assert_eq!(
                announced[key].as_bool().unwrap_or(false),
                expected[key],
                "{args:?} {env:?}: {announced}"
            );
        }
    }
    // Without HTTP MCP the agent does not load the server.
    let server = Server::start().await;
    let (mut raw, id) = session(&["--no-mcp-http"], home, json!([server.entry()])).await;
    let (frames, answer) = raw.prompt(&id, "[[mock:call tool=echo]]").await;
    assert_eq!(stop_reason(&answer), "end_turn");
    assert_eq!(text(&frames), "no MCP server");
    assert!(server.auth.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_http_server_without_headers_is_an_acp_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let bare = json!([{ "type": "http", "name": SERVER_NAME, "url": "http://127.0.0.1:9/mcp" }]);
    for args in [
        &[][..],
        &["--kiro-engine", "v2"],
        &["--kiro-engine", "v3", "--auth-method", "cli"],
        &["--no-mcp-http"],
    ] {
        let mut raw = raw::start(args, home).await;
        let error = raw
            .call("session/new", json!({ "cwd": home, "mcpServers": bare }))
            .await
            .expect_err("refused");
        assert_eq!(error["code"], -32602, "{args:?}: {error}");
        assert_eq!(error["data"], "headers: expected array", "{args:?}");
        // Still serving: stdio servers are ignored, and a session without a server says so.
        let session = raw
            .call(
                "session/new",
                json!({ "cwd": home, "mcpServers": [
                    { "name": "fs", "command": "/bin/true", "args": [], "env": [] },
                ] }),
            )
            .await
            .expect("session/new");
        let id = session["sessionId"].as_str().unwrap().to_owned();
        let (frames, answer) = raw.prompt(&id, "[[mock:call tool=echo]]").await;
        assert_eq!(stop_reason(&answer), "end_turn", "{args:?}");
        assert_eq!(text(&frames), "no MCP server", "{args:?}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, then free it.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/mcp", listener.local_addr().unwrap())
    };
    let entry = json!({ "type": "http", "name": "gone", "url": url, "headers": [] });
    let (mut raw, id) = session(&[], dir.path(), json!([entry])).await;
    let (frames, answer) = raw.prompt(&id, "[[mock:call tool=echo]]").await;
    assert_eq!(stop_reason(&answer), "end_turn");
    assert!(
        text(&frames).starts_with("MCP server gone failed: "),
        "{}",
        text(&frames)
    );
}
