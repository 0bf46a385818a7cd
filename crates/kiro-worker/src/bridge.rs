//! The tool bridge: the client's OpenAI `tools`, served to the ACP agent as an MCP server.
//!
//! An ACP agent can only call tools that an MCP server offers it. So each worker runs one
//! [`Bridge`]: an MCP server (streamable HTTP, the official `rmcp` SDK) on `127.0.0.1` and an
//! ephemeral port, which serves every open session's tools. A turn that carries tools opens a
//! [`BridgeSession`] with them and passes [`BridgeSession::server`] to the agent's ACP
//! `session/new` (`mcpServers`, server name [`drawbridge_acp::CLIENT_TOOLS_SERVER`]).
//!
//! - **Who may call.** Each session has its own token, 256 random bits in hex, which the agent
//!   sends as `Authorization: Bearer <token>`. A request without a token, or with one no open
//!   session has, is answered HTTP 401 before it reaches MCP. Sessions are looked up by the
//!   token's SHA-256, so the lookup's timing says nothing about the token; the header is
//!   removed before the request goes on, and tokens are never logged.
//! - **What it serves.** `tools/list` lists exactly the session's function tools: name,
//!   description, and the function's `parameters` as `inputSchema` (an object; absent or empty
//!   parameters become `{"type":"object","properties":{}}`). `tools/call` of a name the session
//!   does not have is answered at once with an error result (`isError`) naming it.
//! - **Held calls.** A call of one of the session's tools becomes a [`HeldCall`], delivered by
//!   [`BridgeSession::next_call`] in order of arrival (parallel calls included); the agent's MCP
//!   request stays open, with no timeout of its own, until [`HeldCall::answer`]. The HTTP
//!   response is a server-sent event stream: with the protocol revisions that have the
//!   `initialize` handshake (what agents speak today) its headers go out at once and
//!   keep-alive comments flow while the call is held, so clients with a headers or idle
//!   timeout keep waiting. (Under 2026-07-28, rmcp sends the headers with the answer.)
//!   Calls the agent gave up on before they were taken are skipped.
//! - **Lifetimes.** A session is served until its [`BridgeSession`] is dropped; calls still
//!   held then (or dropped unanswered) get the error result "the session ended", and its token
//!   is refused from then on. When the agent stops waiting for a call (it sent
//!   `notifications/cancelled`, or its connection closed), [`HeldCall::is_waiting`] turns false
//!   and [`HeldCall::abandoned`] resolves. The server stops when the `Shutdown` scope given to
//!   [`Bridge::start`] is cancelled.
//!
//! The server is stateless (no MCP session ids): every request stands alone and names its
//! session by its token, so nothing is kept per agent connection.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use drawbridge_acp::{CLIENT_TOOLS_SERVER, HttpMcpServer};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::tools::Tool;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, RequestId, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The path the MCP server answers on.
const PATH: &str = "/mcp";
/// The largest request body accepted (tool call arguments included).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// The text of the result a call gets when its session ended before it was answered.
pub const SESSION_ENDED: &str = "the session ended";

/// A session's key in the bridge: the SHA-256 of its token.
type TokenHash = [u8; 32];

/// One per worker: an MCP server on `127.0.0.1:<ephemeral>`, serving every open session's
/// tools.
pub struct Bridge {
    url: String,
    sessions: Mutex<HashMap<TokenHash, Arc<Entry>>>,
    /// The server's scope: cancelled, it stops and every session's calls end.
    stop: CancellationToken,
}

impl Bridge {
    /// Bind loopback and serve until `shutdown` is cancelled.
    pub async fn start(shutdown: &Shutdown) -> std::io::Result<Arc<Bridge>> {
        Self::start_in_runtime(shutdown)
    }

    /// [`Bridge::start`] for code that is not async but runs inside a tokio runtime (as
    /// `Worker::start` does); an error outside one.
    pub fn start_in_runtime(shutdown: &Shutdown) -> std::io::Result<Arc<Bridge>> {
        // `from_std` needs a runtime's reactor: check rather than panic.
        tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let port = listener.local_addr()?.port();
        let stop = shutdown.token().child_token();
        let bridge = Arc::new(Bridge {
            url: format!("http://127.0.0.1:{port}{PATH}"),
            sessions: Mutex::new(HashMap::new()),
            stop: stop.clone(),
        });
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(["127.0.0.1", "localhost"])
            .with_legacy_session_mode(false)
            .with_json_response(false)
            .with_max_request_body_bytes(MAX_BODY)
            .with_cancellation_token(stop.clone());
        let service = StreamableHttpService::new(
            || Ok(Handler),
            Arc::new(NeverSessionManager::default()),
            config,
        );
        let router =
            Router::new()
                .route_service(PATH, service)
                .layer(axum::middleware::from_fn_with_state(
                    Arc::clone(&bridge),
                    authorize,
                ));
        shutdown.spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                stop.cancelled().await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "tool bridge server failed");
            }
        });
        tracing::debug!(url = bridge.url, "tool bridge listening");
        Ok(bridge)
    }

    /// Serve `tools` for one session until the returned handle is dropped.
    pub fn open(self: &Arc<Self>, tools: Vec<Tool>) -> BridgeSession {
        let token = new_token();
        let key = hash(&token);
        let (calls, receiver) = mpsc::unbounded_channel();
        let entry = Arc::new(Entry {
            tools: tools
                .iter()
                .filter(|t| t.kind == "function")
                .map(mcp_tool)
                .collect(),
            calls,
            ended: CancellationToken::new(),
            waiting: Mutex::new(HashMap::new()),
        });
        self.lock().insert(key, Arc::clone(&entry));
        BridgeSession {
            bridge: Arc::clone(self),
            key,
            token,
            entry,
            calls: receiver,
        }
    }

    /// Sessions open now (for metrics and tests).
    pub fn open_sessions(&self) -> usize {
        self.lock().len()
    }

    /// Where the MCP server answers (`http://127.0.0.1:<port>/mcp`).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Arc<Entry>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open session whose token is `token`.
    fn session(&self, token: &str) -> Option<Arc<Entry>> {
        self.lock().get(&hash(token)).cloned()
    }
}

/// One session's tools, served until it is dropped.
pub struct BridgeSession {
    bridge: Arc<Bridge>,
    key: TokenHash,
    token: String,
    entry: Arc<Entry>,
    calls: mpsc::UnboundedReceiver<HeldCall>,
}

impl BridgeSession {
    /// The `session/new` entry: name `drawbridge`, the bridge's URL, and the header
    /// `Authorization: Bearer <token>`.
    pub fn server(&self) -> HttpMcpServer {
        HttpMcpServer {
            name: CLIENT_TOOLS_SERVER.to_owned(),
            url: self.bridge.url.clone(),
            headers: vec![("Authorization".to_owned(), format!("Bearer {}", self.token))],
        }
    }

    /// The next tool call the agent made in this session and still waits for, in order of
    /// arrival. Cancel-safe (for `tokio::select!`); `None` once the bridge has stopped.
    pub async fn next_call(&mut self) -> Option<HeldCall> {
        loop {
            let call = tokio::select! {
                biased;
                call = self.calls.recv() => call?,
                () = self.bridge.stop.cancelled() => return None,
            };
            if call.is_waiting() {
                return Some(call);
            }
        }
    }
}

impl Drop for BridgeSession {
    fn drop(&mut self) {
        self.bridge.lock().remove(&self.key);
        self.entry.ended.cancel();
    }
}

impl std::fmt::Debug for BridgeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeSession")
            .field("url", &self.bridge.url)
            .field("tools", &self.entry.tools.len())
            .finish_non_exhaustive()
    }
}

/// A tool call the agent made and waits for.
#[derive(Debug)]
pub struct HeldCall {
    /// The tool's (function's) name.
    pub name: String,
    /// The arguments, as JSON object text.
    pub arguments: String,
    reply: oneshot::Sender<Reply>,
    /// Cancelled once the agent no longer waits for the answer.
    gone: CancellationToken,
}

impl HeldCall {
    /// Answer the agent's MCP call: `text` as its text content; `is_error` sets `isError`.
    pub fn answer(self, text: String, is_error: bool) {
        // The agent may have stopped waiting: then nobody reads the answer.
        let _ = self.reply.send(Reply { text, is_error });
    }

    /// Whether the agent still waits (it may have cancelled or disconnected).
    pub fn is_waiting(&self) -> bool {
        !self.gone.is_cancelled()
    }

    /// Resolves once the agent no longer waits for this call (cancel-safe).
    pub async fn abandoned(&self) {
        self.gone.cancelled().await;
    }
}

/// What a held call is answered with.
#[derive(Debug)]
struct Reply {
    text: String,
    is_error: bool,
}

/// One open session, shared by its [`BridgeSession`] and the requests naming its token.
struct Entry {
    tools: Vec<rmcp::model::Tool>,
    calls: mpsc::UnboundedSender<HeldCall>,
    /// Cancelled when the [`BridgeSession`] is dropped.
    ended: CancellationToken,
    /// The held calls by JSON-RPC request id (as JSON text), for `notifications/cancelled`;
    /// each with a serial number so a call removes only its own registration.
    waiting: Mutex<HashMap<String, (u64, CancellationToken)>>,
}

/// Gives each held call its registration's serial number.
static SERIAL: AtomicU64 = AtomicU64::new(0);

impl Entry {
    /// Run one `tools/call`: refuse an unknown tool, else hold it until it is answered, the
    /// session ends, or the agent stops waiting (`cancelled`).
    async fn call(
        &self,
        request: CallToolRequestParams,
        id: &RequestId,
        cancelled: CancellationToken,
    ) -> CallToolResult {
        let name = request.name.as_ref();
        if !self.tools.iter().any(|t| t.name == name) {
            tracing::debug!(tool = name, "agent called a tool the client did not offer");
            let offered: Vec<&str> = self.tools.iter().map(|t| t.name.as_ref()).collect();
            return error_result(format!(
                "Unknown tool '{name}': this session offers {}.",
                if offered.is_empty() {
                    "no tools".to_owned()
                } else {
                    offered.join(", ")
                }
            ));
        }
        if self.ended.is_cancelled() {
            return error_result(SESSION_ENDED.to_owned());
        }
        let arguments = Value::Object(request.arguments.unwrap_or_default()).to_string();
        let gone = CancellationToken::new();
        // However this call ends, the agent no longer waits for it afterwards.
        let _gone_on_exit = gone.clone().drop_guard();
        let _registered = self.register(id, gone.clone());
        let (reply, answer) = oneshot::channel();
        let held = HeldCall {
            name: name.to_owned(),
            arguments,
            reply,
            gone: gone.clone(),
        };
        if self.calls.send(held).is_err() {
            return error_result(SESSION_ENDED.to_owned());
        }
        tracing::debug!(tool = name, "tool call held for the client");
        tokio::select! {
            biased;
            answer = answer => match answer {
                Ok(Reply { text, is_error: true }) => error_result(text),
                Ok(Reply { text, is_error: false }) => {
                    CallToolResult::success(vec![ContentBlock::text(text)])
                }
                // Dropped unanswered: its session went away with it.
                Err(_) => error_result(SESSION_ENDED.to_owned()),
            },
            () = self.ended.cancelled() => error_result(SESSION_ENDED.to_owned()),
            () = cancelled.cancelled() => error_result("the call was cancelled".to_owned()),
            () = gone.cancelled() => error_result("the call was cancelled".to_owned()),
        }
    }

    /// Register a held call under its request id until the returned guard is dropped.
    fn register(&self, id: &RequestId, gone: CancellationToken) -> Registration<'_> {
        let key = request_key(id);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        self.lock_waiting().insert(key.clone(), (serial, gone));
        Registration {
            entry: self,
            key,
            serial,
        }
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, CancellationToken)>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply the `notifications/cancelled` in a request body (a message or a batch), if any.
    fn apply_cancellations(&self, body: &[u8]) {
        const METHOD: &[u8] = b"notifications/cancelled";
        if !body.windows(METHOD.len()).any(|w| w == METHOD) {
            return;
        }
        let Ok(message) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let messages = match &message {
            Value::Array(batch) => batch.iter().collect(),
            single => vec![single],
        };
        for message in messages {
            if message.get("method").and_then(Value::as_str) != Some("notifications/cancelled") {
                continue;
            }
            let Some(id) = message.pointer("/params/requestId") else {
                continue;
            };
            if let Some((_, gone)) = self.lock_waiting().get(&id.to_string()) {
                gone.cancel();
            }
        }
    }
}

/// A held call's entry in [`Entry::waiting`]; removes it when dropped.
struct Registration<'a> {
    entry: &'a Entry,
    key: String,
    serial: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiting = self.entry.lock_waiting();
        if waiting
            .get(&self.key)
            .is_some_and(|(serial, _)| *serial == self.serial)
        {
            waiting.remove(&self.key);
        }
    }
}

/// A JSON-RPC request id as JSON text (`7`, `"abc"`), as `notifications/cancelled` names it.
fn request_key(id: &RequestId) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

/// An MCP error result (`isError: true`) with one text block.
fn error_result(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// The session a request was authorized for (put in the request's extensions by
/// [`authorize`]).
#[derive(Clone)]
struct Authorized(Arc<Entry>);

/// Refuse requests without an open session's token (HTTP 401); pass the others on with their
/// session and without the token, after noting the cancellations they carry.
async fn authorize(State(bridge): State<Arc<Bridge>>, request: Request, next: Next) -> Response {
    let Some(entry) = bearer(request.headers()).and_then(|token| bridge.session(token)) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "A valid bearer token is required.",
        )
            .into_response();
    };
    let (mut parts, body) = request.into_parts();
    parts.headers.remove(header::AUTHORIZATION);
    let body = if parts.method == Method::POST {
        // Read whole here (rmcp reads it whole too) to see `notifications/cancelled`: a
        // stateless MCP server has no session to deliver them to.
        let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The request body is too large.",
                )
                    .into_response();
            }
        };
        entry.apply_cancellations(&bytes);
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(Authorized(entry));
    next.run(Request::from_parts(parts, body)).await
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A new session token: 256 random bits, in hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    if let Err(error) = getrandom::fill(&mut bytes) {
        // Never seen on a working system; two v4 UUIDs are still 244 random bits.
        tracing::warn!(%error, "no OS randomness; the tool bridge token comes from UUIDs");
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    bytes.iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A client function tool as an MCP tool: its `parameters` are its input schema.
fn mcp_tool(tool: &Tool) -> rmcp::model::Tool {
    let function = &tool.function;
    let mut schema: JsonObject = match &function.parameters {
        Some(Value::Object(schema)) if !schema.is_empty() => schema.clone(),
        _ => JsonObject::from_iter([
            ("type".to_owned(), Value::from("object")),
            ("properties".to_owned(), Value::Object(JsonObject::new())),
        ]),
    };
    schema
        .entry("type")
        .or_insert_with(|| Value::from("object"));
    rmcp::model::Tool::new_with_raw(
        function.name.clone(),
        function.description.clone().map(Into::into),
        schema,
    )
}

/// The MCP side: serves the tools of the session its request was authorized for.
struct Handler;

/// The session of the request `context` belongs to.
fn session_of(context: &RequestContext<RoleServer>) -> Result<Arc<Entry>, ErrorData> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Authorized>())
        .map(|authorized| Arc::clone(&authorized.0))
        .ok_or_else(|| ErrorData::invalid_request("The request names no session.", None))
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new(CLIENT_TOOLS_SERVER, env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let entry = session_of(&context)?;
        Ok(ListToolsResult::with_all_items(entry.tools.clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let entry = session_of(&context)?;
        Ok(entry
            .call(request, &context.id, context.ct.clone())
            .await
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};
    use serde_json::json;

    #[test]
    fn parameters_become_the_input_schema() {
        let given = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let tool = mcp_tool(&Tool::function("weather", "The weather.", given.clone()));
        assert_eq!(tool.name, "weather");
        assert_eq!(tool.description.as_deref(), Some("The weather."));
        assert_eq!(Value::Object((*tool.input_schema).clone()), given);
    }

    #[test]
    fn missing_or_empty_parameters_become_an_empty_object_schema() {
        let empty = json!({"type": "object", "properties": {}});
        let mut tool = Tool::function("now", "The time.", json!({}));
        assert_eq!(
            Value::Object((*mcp_tool(&tool).input_schema).clone()),
            empty
        );
        tool.function.parameters = None;
        assert_eq!(
            Value::Object((*mcp_tool(&tool).input_schema).clone()),
            empty
        );
        tool.function.parameters = Some(json!("not a schema"));
        assert_eq!(
            Value::Object((*mcp_tool(&tool).input_schema).clone()),
            empty
        );
        tool.function.parameters = Some(json!({"properties": {"a": {"type": "number"}}}));
        assert_eq!(
            mcp_tool(&tool).input_schema.get("type"),
            Some(&json!("object"))
        );
    }

    #[test]
    fn tokens_are_256_random_bits_in_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn bearer_reads_only_bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn cancellations_reach_the_call_they_name() {
        let (calls, _receiver) = mpsc::unbounded_channel();
        let entry = Entry {
            tools: Vec::new(),
            calls,
            ended: CancellationToken::new(),
            waiting: Mutex::new(HashMap::new()),
        };
        let (seven, abc) = (CancellationToken::new(), CancellationToken::new());
        let _seven = entry.register(&RequestId::Number(7), seven.clone());
        let _abc = entry.register(&RequestId::String("abc".into()), abc.clone());
        let cancel = |id: Value| {
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": id}})
            .to_string()
        };
        entry.apply_cancellations(cancel(json!(8)).as_bytes());
        entry.apply_cancellations(cancel(json!("7")).as_bytes());
        assert!(!seven.is_cancelled() && !abc.is_cancelled());
        entry.apply_cancellations(cancel(json!(7)).as_bytes());
        assert!(seven.is_cancelled() && !abc.is_cancelled());
        entry.apply_cancellations(format!("[{}]", cancel(json!("abc"))).as_bytes());
        assert!(abc.is_cancelled());
    }

    #[tokio::test]
    async fn calls_given_up_before_they_are_taken_are_skipped() {
        let bridge = Arc::new(Bridge {
            url: "http://127.0.0.1:9/mcp".to_owned(),
            sessions: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
        });
        let mut session = bridge.open(vec![Tool::function("f", "F.", json!({}))]);
        let mut answers = Vec::new();
        for (name, waiting) in [("given up", false), ("waited for", true)] {
            let (reply, answer) = oneshot::channel();
            let gone = CancellationToken::new();
            if !waiting {
                gone.cancel();
            }
            let call = HeldCall {
                name: name.to_owned(),
                arguments: "{}".to_owned(),
                reply,
                gone,
            };
            assert!(session.entry.calls.send(call).is_ok());
            answers.push(answer);
        }
        let call = session.next_call().await.expect("a call");
        assert_eq!(call.name, "waited for");
        assert_eq!(bridge.open_sessions(), 1);
        drop(session);
        assert_eq!(bridge.open_sessions(), 0);
    }

    #[test]
    fn a_registration_removes_only_itself() {
        let (calls, _receiver) = mpsc::unbounded_channel();
        let entry = Entry {
            tools: Vec::new(),
            calls,
            ended: CancellationToken::new(),
            waiting: Mutex::new(HashMap::new()),
        };
        let first = entry.register(&RequestId::Number(1), CancellationToken::new());
        let second = entry.register(&RequestId::Number(1), CancellationToken::new());
        drop(first);
        assert_eq!(entry.lock_waiting().len(), 1);
        drop(second);
        assert!(entry.lock_waiting().is_empty());
    }
}
