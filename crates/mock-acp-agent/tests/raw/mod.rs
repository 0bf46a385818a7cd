//! A minimal ACP client speaking JSON-RPC lines to the real mock binary, for what
//! `drawbridge-acp` does not expose: `session/set_mode`, `_meta` in `session/new`, the
//! agent's own requests (permission options, token requests) and every frame on the wire.

#![allow(dead_code, reason = "each test binary uses part of the client")]

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// An upper bound on anything a test waits for; tests finish far sooner.
pub const GUARD: std::time::Duration = std::time::Duration::from_secs(10);

pub const MOCK: &str = env!("CARGO_BIN_EXE_mock-acp-agent");

/// How the client answers a request from the agent: the reply's `result` or `error`
/// member (`{"result": ...}` or `{"error": {...}}`).
pub type Answer = Box<dyn FnMut(&Value) -> Value + Send>;

/// Answer every agent request with "method not found", like a client without extensions.
pub fn refuse_all() -> Answer {
    Box::new(|_| json!({ "error": { "code": -32601, "message": "Method not found" } }))
}

/// Select the permission option `option` and refuse any other request.
pub fn select(option: &'static str) -> Answer {
    Box::new(move |request| match request["method"].as_str() {
        Some("session/request_permission") => {
            json!({ "result": { "outcome": { "outcome": "selected", "optionId": option } } })
        }
        _ => json!({ "error": { "code": -32601, "message": "Method not found" } }),
    })
}

pub struct Raw {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Every message received so far, in order (agent requests included).
    pub log: Vec<Value>,
    /// How agent requests are answered.
    pub answer: Answer,
}

/// The mock with `args`, `HOME` at `home`, initialized.
pub async fn start(args: &[&str], home: &Path) -> Raw {
    start_program(MOCK, args, home, &[]).await
}

/// [`start`] with another build of the mock (`program`) and more environment (`env`).
pub async fn start_program(program: &str, args: &[&str], home: &Path, env: &[(&str, &str)]) -> Raw {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .env("HOME", home)
        .env_remove("MOCK_ACP_BEHAVIOR")
        .env_remove("MOCK_ACP_KIRO_ENGINE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the mock");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let lines = BufReader::new(stdout).lines();
    let mut raw = Raw {
        child,
        stdin,
        lines,
        next_id: 0,
        log: Vec::new(),
        answer: refuse_all(),
    };
    raw.call(
        "initialize",
        json!({ "protocolVersion": 1, "clientCapabilities": {} }),
    )
    .await
    .expect("initialize");
    raw
}

/// What a frame is: a `session/update`'s `sessionUpdate`, else the method.
pub fn kind(message: &Value) -> &str {
    match message["method"].as_str() {
        Some("session/update") => message["params"]["update"]["sessionUpdate"]
            .as_str()
            .unwrap_or_default(),
        Some(method) => method,
        None => "",
    }
}

/// The joined text of the `agent_message_chunk`s in `frames`.
pub fn text(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|frame| kind(frame) == "agent_message_chunk")
        .filter_map(|frame| frame["params"]["update"]["content"]["text"].as_str())
        .collect()
}

impl Raw {
    /// The mock's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn write(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the mock");
    }

    pub async fn send_request(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.write(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await;
        id
    }

    pub async fn notify(&mut self, method: &str, params: Value) {
        self.write(json!({ "jsonrpc": "2.0", "method": method, "params": params }))
            .await;
    }

    /// The next message (logged); an agent request is answered by [`Raw::answer`] first.
    pub async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(GUARD, self.lines.next_line())
            .await
            .expect("the mock went quiet")
            .expect("read the mock's stdout")
            .expect("the mock closed stdout");
        let message: Value = serde_json::from_str(&line).expect("one JSON message a line");
        if message.get("method").is_some() && message.get("id").is_some() {
            let mut reply = (self.answer)(&message);
            reply["jsonrpc"] = json!("2.0");
            reply["id"] = message["id"].clone();
            self.write(reply).await;
        }
        self.log.push(message.clone());
        message
    }

    /// Wait for the answer to request `id`: its `result` or its `error`.
    pub async fn response(&mut self, id: u64) -> Result<Value, Value> {
        loop {
            let message = self.recv().await;
            if message.get("method").is_none() && message["id"] == json!(id) {
                return match message.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(message["result"].clone()),
                };
            }
        }
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.send_request(method, params).await;
        self.response(id).await
    }

    /// `session/new` in `cwd` with `meta` as `_meta` (when not null).
    pub async fn new_session(&mut self, cwd: &Path, meta: Value) -> Value {
        let mut params = json!({ "cwd": cwd, "mcpServers": [] });
        if !meta.is_null() {
            params["_meta"] = meta;
        }
        self.call("session/new", params).await.expect("session/new")
    }

    /// One prompt: every message received until its answer, and the answer.
    pub async fn prompt(
        &mut self,
        session: &str,
        text: &str,
    ) -> (Vec<Value>, Result<Value, Value>) {
        let start = self.log.len();
        let answer = self
            .call(
                "session/prompt",
                json!({ "sessionId": session, "prompt": [{ "type": "text", "text": text }] }),
            )
            .await;
        (self.log[start..].to_vec(), answer)
    }
}
