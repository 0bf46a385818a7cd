//! One prompt turn: the scripted behaviours and what they send.

use super::*;

/// How a turn's script ended.
pub(super) enum Finish {
    Stop(StopReason),
    /// Answer the prompt with this JSON-RPC error (code -32603, like Kiro's upstream errors).
    Fail(String),
    Crash,
    Hang,
}

/// What Kiro says when an account's monthly credits are spent.
const QUOTA_MESSAGE: &str = "The monthly usage limit has been reached (request_id: mock)";
/// What Kiro says when an account is rate limited.
const RATE_LIMIT_MESSAGE: &str = "Too many requests, please wait before trying again.";

/// What a tool-less custom agent answers to a directive that needs a tool.
pub(super) const NO_TOOLS_MESSAGE: &str = "I have no tools to run that.";

/// Whether a stream of chunks ran to its end.
pub(super) enum Flow {
    Done,
    Cancelled,
}

pub(super) struct Turn {
    pub(super) cx: ConnectionTo<Client>,
    pub(super) state: Arc<State>,
    pub(super) session_id: SessionId,
    pub(super) turn_id: u64,
    pub(super) cwd: PathBuf,
    pub(super) directive: Directive,
    /// Part of a multi-round truncated answer, when set.
    pub(super) resume: Option<Truncated>,
    pub(super) text: String,
    /// Where the directive stood in `text` (0 without one).
    pub(super) directive_at: usize,
    pub(super) prompt_chars: usize,
    pub(super) delay: Duration,
    pub(super) stop: CancellationToken,
    pub(super) request_cancel: RequestCancellation,
    pub(super) started: Instant,
    /// The Kiro dialect spoken, if any.
    pub(super) engine: Option<KiroEngine>,
    /// The session's model, mode and autopilot when the turn started.
    pub(super) kiro: KiroSession,
    /// The session's HTTP MCP servers.
    pub(super) mcp_servers: Arc<[crate::mcp::HttpServer]>,
}

impl Turn {
    pub(super) async fn run(
        self,
        responder: Responder<PromptResponse>,
    ) -> Result<(), agent_client_protocol::Error> {
        // v3 without `--auth-method cli` asks for a token first and stalls without one.
        if self.needs_token() && !self.authorize().await {
            self.state.end_turn(&self.session_id, self.turn_id);
            if let Err(error) = responder.respond(PromptResponse::new(StopReason::Cancelled)) {
                tracing::debug!(%error, "could not answer the prompt");
            }
            return Ok(());
        }
        // A failed send means the client is gone; the connection ends on its own, so the turn
        // just stops (an error here would shut the whole agent down).
        let finish = match self.turn_start() {
            Ok(()) => self.script().await,
            Err(error) => Err(error),
        };
        let finish = match finish {
            Ok(finish) => finish,
            Err(error) => {
                tracing::debug!(%error, "turn aborted");
                self.state.end_turn(&self.session_id, self.turn_id);
                return Ok(());
            }
        };
        match finish {
            Finish::Stop(stop_reason) => {
                if let Err(error) = self.send_turn_end(stop_reason) {
                    tracing::debug!(%error, "could not send metering");
                }
                self.state.end_turn(&self.session_id, self.turn_id);
                let mut answer = PromptResponse::new(stop_reason);
                if let Some((input, output)) = self.token_usage() {
                    answer = answer.usage(Usage::new(input + output, input, output));
                }
                if let Err(error) = responder.respond(answer) {
                    tracing::debug!(%error, "could not answer the prompt");
                }
            }
            Finish::Fail(message) => {
                self.state.end_turn(&self.session_id, self.turn_id);
                let error = agent_client_protocol::Error::new(INTERNAL_ERROR, message);
                if let Err(error) = responder.respond_with_error(error) {
                    tracing::debug!(%error, "could not answer the prompt");
                }
            }
            Finish::Crash => {
                tracing::warn!("crashing as asked");
                self.cx.send_notification(CrashNow {})?;
                std::future::pending::<()>().await;
            }
            Finish::Hang => {
                tracing::warn!("hanging as asked");
                std::future::pending::<()>().await;
            }
        }
        Ok(())
    }

    async fn script(&self) -> Result<Finish, agent_client_protocol::Error> {
        let directive = &self.directive;
        let numbered = |count: Option<u64>| {
            (0..count.unwrap_or(DEFAULT_CHUNKS))
                .map(|i| format!("chunk {i} "))
                .collect::<Vec<_>>()
        };
        if let Some(resume) = self.resume {
            let chunks: Vec<String> = (resume.next..resume.next + resume.n)
                .map(|i| format!("chunk {i} "))
                .collect();
            let stop = if resume.rounds_left > 1 {
                StopReason::MaxTokens
            } else {
                StopReason::EndTurn
            };
            return self.stream_or_cancel(chunks, stop).await;
        }
        // A tool-less custom agent cannot run a tool: it says so instead.
        if self.kiro.tool_less()
            && matches!(
                directive.behavior,
                Behavior::Tools | Behavior::Shell | Behavior::Busy
            )
        {
            self.message(NO_TOOLS_MESSAGE)?;
            return Ok(Finish::Stop(StopReason::EndTurn));
        }
        let finish = match directive.behavior {
            Behavior::Echo => {
                let tag = self
                    .state
                    .config
                    .echo_model
                    .then(|| format!("[{}] ", self.kiro.model));
                let mut chunks = directive::word_chunks(&self.text);
                if let Some(tag) = &tag {
                    chunks.insert(0, tag);
                }
                self.stream_or_cancel(chunks, StopReason::EndTurn).await?
            }
            Behavior::Stream => {
                // Asked to finish an answer another agent began: carry on from its last chunk.
                let start = resume_offset(&self.text);
                let chunks: Vec<String> = (start..directive.n.unwrap_or(DEFAULT_CHUNKS))
                    .map(|i| format!("chunk {i} "))
                    .collect();
                self.stream_or_cancel(chunks, StopReason::EndTurn).await?
            }
            Behavior::MaxTokens => {
                self.stream_or_cancel(numbered(directive.n), StopReason::MaxTokens)
                    .await?
            }
            Behavior::Crash => {
                self.stream(numbered(directive.after), false).await?;
                Finish::Crash
            }
            Behavior::Hang => {
                self.stream(numbered(directive.after), false).await?;
                Finish::Hang
            }
            Behavior::Quota => {
                self.stream(numbered(directive.after.or(Some(0))), false)
                    .await?;
                Finish::Fail(QUOTA_MESSAGE.to_owned())
            }
            Behavior::RateLimit => {
                self.stream(numbered(directive.after.or(Some(0))), false)
                    .await?;
                Finish::Fail(match directive.retry_after {
                    Some(secs) => format!("{RATE_LIMIT_MESSAGE} Retry after {secs} seconds."),
                    None => RATE_LIMIT_MESSAGE.to_owned(),
                })
            }
            Behavior::Artifacts => {
                self.stream_or_cancel(ARTIFACT_CHUNKS, StopReason::EndTurn)
                    .await?
            }
            Behavior::Refusal => {
                self.message("I can't help with that.")?;
                Finish::Stop(StopReason::Refusal)
            }
            Behavior::Env => {
                self.message(&self.env_report())?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Permission => self.ask_permission().await?,
            Behavior::Thought => {
                for index in 0..directive.n.unwrap_or(1) {
                    if index > 0 && !self.pause().await {
                        return Ok(Finish::Stop(StopReason::Cancelled));
                    }
                    self.update(SessionUpdate::AgentThoughtChunk(chunk("thinking...")))?;
                }
                self.message("done")?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Fs => {
                self.try_client_capabilities().await?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Noise => {
                self.send_noise()?;
                self.message("ok")?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Tools => {
                let n = directive.n.unwrap_or(1);
                if let Flow::Cancelled = self.run_tools(n).await? {
                    return Ok(Finish::Stop(StopReason::Cancelled));
                }
                let chunks = directive::word_chunks(&self.text);
                self.stream_or_cancel(chunks, StopReason::EndTurn).await?
            }
            Behavior::Shell => self.run_shell().await?,
            Behavior::Call => self.run_call().await?,
            Behavior::Busy => {
                if let Flow::Cancelled = self.run_busy().await? {
                    return Ok(Finish::Stop(StopReason::Cancelled));
                }
                let chunks = directive::word_chunks(&self.text);
                self.stream_or_cancel(chunks, StopReason::EndTurn).await?
            }
            Behavior::Auth => {
                let answer = self
                    .ask(UntypedMessage::new(
                        mock_kiro::GET_ACCESS_TOKEN_METHOD,
                        json!({ "sessionId": self.session_id.to_string() }),
                    )?)
                    .await;
                self.message(&format!("auth: {answer}"))?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Model => {
                self.message(&format!("model: {}", self.kiro.model))?;
                Finish::Stop(StopReason::EndTurn)
            }
            Behavior::Stats => {
                let stats = json!({
                    "prompts": self.state.prompts.load(Ordering::Relaxed),
                    "prompt_bytes": self.state.prompt_bytes.load(Ordering::Relaxed),
                    "cancels": self.state.cancels.load(Ordering::Relaxed),
                    "active_turns": self.state.active_turns(),
                });
                self.message(&stats.to_string())?;
                Finish::Stop(StopReason::EndTurn)
            }
        };
        Ok(finish)
    }

    pub(super) fn update(&self, update: SessionUpdate) -> Result<(), agent_client_protocol::Error> {
        self.cx
            .send_notification(SessionNotification::new(self.session_id.clone(), update))
    }

    pub(super) fn message(&self, text: &str) -> Result<(), agent_client_protocol::Error> {
        self.update(SessionUpdate::AgentMessageChunk(chunk(text)))
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.is_cancelled() || self.request_cancel.is_cancelled()
    }

    pub(super) async fn wait_stopped(&self) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = self.request_cancel.cancelled() => {}
        }
    }

    /// Stream `chunks`, then stop with `stop_reason`, or with `cancelled` if cancelled first.
    async fn stream_or_cancel<S: AsRef<str>>(
        &self,
        chunks: impl IntoIterator<Item = S>,
        stop_reason: StopReason,
    ) -> Result<Finish, agent_client_protocol::Error> {
        Ok(match self.stream(chunks, true).await? {
            Flow::Done => Finish::Stop(stop_reason),
            Flow::Cancelled => Finish::Stop(StopReason::Cancelled),
        })
    }

    /// Send `chunks` as message chunks with the turn's delay between them.
    async fn stream<S: AsRef<str>>(
        &self,
        chunks: impl IntoIterator<Item = S>,
        cancellable: bool,
    ) -> Result<Flow, agent_client_protocol::Error> {
        for (index, text) in chunks.into_iter().enumerate() {
            if index > 0 && !self.delay.is_zero() {
                if cancellable {
                    tokio::select! {
                        () = tokio::time::sleep(self.delay) => {}
                        () = self.wait_stopped() => return Ok(Flow::Cancelled),
                    }
                } else {
                    tokio::time::sleep(self.delay).await;
                }
            }
            if cancellable && self.stopped() {
                return Ok(Flow::Cancelled);
            }
            self.message(text.as_ref())?;
        }
        Ok(Flow::Done)
    }

    fn env_report(&self) -> String {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .map(|(key, value)| {
                (
                    key.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let cwd = std::env::current_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_default();
        json!({
            "cwd": cwd,
            "session_cwd": self.cwd.display().to_string(),
            "home": env.get("HOME"),
            "env": env,
        })
        .to_string()
    }

    async fn ask_permission(&self) -> Result<Finish, agent_client_protocol::Error> {
        let request = RequestPermissionRequest::new(
            self.session_id.clone(),
            ToolCallUpdate::new(
                "mock-tool-1",
                ToolCallUpdateFields::new()
                    .title("mock tool wants to run")
                    .kind(agent_client_protocol::v1::schema::ToolKind::Read),
            ),
            vec![
                PermissionOption::new("allow-once", "Allow once", PermissionOptionKind::AllowOnce),
                PermissionOption::new(
                    "reject-once",
                    "Reject once",
                    PermissionOptionKind::RejectOnce,
                ),
            ],
        );
        let answer = tokio::select! {
            answer = self.cx.send_request(request).block_task() => answer,
            () = self.wait_stopped() => return Ok(Finish::Stop(StopReason::Cancelled)),
        };
        let selected = match answer {
            Ok(response) => match response.outcome {
                RequestPermissionOutcome::Selected(selected) => selected.option_id.to_string(),
                _ => "cancelled".to_owned(),
            },
            Err(error) => format!("error {}", i32::from(error.code)),
        };
        self.message(&format!("permission: {selected}"))?;
        Ok(Finish::Stop(StopReason::EndTurn))
    }

    async fn try_client_capabilities(&self) -> Result<(), agent_client_protocol::Error> {
        let read = self
            .ask(ReadTextFileRequest::new(
                self.session_id.clone(),
                "/etc/hostname",
            ))
            .await;
        let terminal = self
            .ask(CreateTerminalRequest::new(self.session_id.clone(), "true"))
            .await;
        self.message(&format!(
            "fs/read_text_file: {read}; terminal/create: {terminal}"
        ))
    }

    /// Send a request to the client and describe the answer: `ok` or `error CODE`.
    pub(super) async fn ask<R: JsonRpcRequest>(&self, request: R) -> String {
        match self.cx.send_request(request).block_task().await {
            Ok(_) => "ok".to_owned(),
            Err(error) => format!("error {}", i32::from(error.code)),
        }
    }

    fn send_noise(&self) -> Result<(), agent_client_protocol::Error> {
        let session_id = self.session_id.to_string();
        self.cx.send_notification(UntypedMessage::new(
            "_kiro.dev/commands/available",
            json!({ "sessionId": session_id, "commands": [] }),
        )?)?;
        self.cx.send_notification(UntypedMessage::new(
            "session/update",
            json!({
                "sessionId": session_id,
                "update": { "sessionUpdate": "mystery_update", "payload": 1 },
            }),
        )?)?;
        self.cx.send_notification(SessionNotification::new(
            "not-a-session-of-this-client",
            SessionUpdate::AgentMessageChunk(chunk("leaked from elsewhere")),
        ))?;
        self.update(SessionUpdate::UsageUpdate(UsageUpdate::new(50, 200)))
    }

    /// Report usage the way kiro-cli does, v2 or v3.
    pub(super) fn send_metering(&self) -> Result<(), agent_client_protocol::Error> {
        let v3 = self.directive.v3 || self.engine == Some(KiroEngine::V3);
        #[expect(
            clippy::cast_precision_loss,
            reason = "prompt sizes are far below 2^52 characters"
        )]
        let default_context = (self.prompt_chars as f64 / 2000.0).min(100.0);
        let context = self.directive.context.unwrap_or(default_context);
        let credits = self.directive.credits.unwrap_or(DEFAULT_CREDITS);
        if v3 {
            self.update(SessionUpdate::SessionInfoUpdate(
                SessionInfoUpdate::new().meta(kiro::turn_completion_meta(credits)),
            ))?;
            self.update(SessionUpdate::SessionInfoUpdate(
                SessionInfoUpdate::new().meta(kiro::context_usage_meta(context)),
            ))
        } else {
            let elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.cx.send_notification(KiroMetadata {
                session_id: self.session_id.to_string(),
                context_usage_percentage: Some(context),
                metering_usage: Some(vec![MeteringUsage::credits(credits)]),
                turn_duration_ms: Some(elapsed_ms),
            })
        }
    }
}

/// The header under which Drawbridge puts a partial answer it asks an agent to finish
/// (`drawbridge_core::prompt::CUT_OFF_HEADER`).
const CUT_OFF_HEADER: &str = "[Assistant (cut off)]\n";

/// How many `chunk N ` pieces the partial answer in a resume prompt already holds (0 when the
/// prompt is not a resume).
fn resume_offset(text: &str) -> u64 {
    let Some(start) = text.find(CUT_OFF_HEADER) else {
        return 0;
    };
    let block = &text[start + CUT_OFF_HEADER.len()..];
    let block = block.split("\n\n").next().unwrap_or_default();
    block.matches("chunk ").count() as u64
}

fn chunk(text: &str) -> ContentChunk {
    ContentChunk::new(ContentBlock::Text(TextContent::new(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_prompt_continues_the_numbering() {
        assert_eq!(resume_offset("plain prompt"), 0);
        let prompt = "[User]\ngo\n\n[Assistant (cut off)]\nchunk 0 chunk 1 \n\nYour previous reply...chunk 1";
        assert_eq!(resume_offset(prompt), 2);
    }

    /// Serve one in-memory mock, open a session and send `prompts` in turn: the text each
    /// answer streamed.
    async fn answers(prompts: &[&str]) -> Vec<String> {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, DuplexStream, Lines};
        use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};

        async fn send(
            to_agent: &mut DuplexStream,
            id: u64,
            method: &str,
            params: serde_json::Value,
        ) {
            let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            to_agent
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
        }
        /// Read until the answer to `id`; the text of the message chunks before it.
        async fn until(
            lines: &mut Lines<BufReader<DuplexStream>>,
            id: u64,
        ) -> (serde_json::Value, String) {
            let mut text = String::new();
            loop {
                let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                    .await
                    .expect("the agent answers in time")
                    .unwrap()
                    .expect("the agent is still there");
                let message: serde_json::Value = serde_json::from_str(&line).unwrap();
                if message["id"] == id {
                    return (message, text);
                }
                if let Some(chunk) = message["params"]["update"]["content"]["text"].as_str() {
                    text.push_str(chunk);
                }
            }
        }

        let (mut to_agent, agent_in) = tokio::io::duplex(1 << 16);
        let (agent_out, from_agent) = tokio::io::duplex(1 << 16);
        let server = super::super::serve(
            agent_in.compat(),
            agent_out.compat_write(),
            MockConfig::default(),
        );
        let client = async move {
            let mut lines = BufReader::new(from_agent).lines();
            send(
                &mut to_agent,
                1,
                "initialize",
                json!({"protocolVersion": 1}),
            )
            .await;
            until(&mut lines, 1).await;
            send(
                &mut to_agent,
                2,
                "session/new",
                json!({"cwd": "/", "mcpServers": []}),
            )
            .await;
            let (session, _) = until(&mut lines, 2).await;
            let session_id = session["result"]["sessionId"].clone();
            let mut out = Vec::new();
            for (id, prompt) in (3..).zip(prompts) {
                let prompt = json!([{"type": "text", "text": prompt}]);
                let params = json!({"sessionId": session_id, "prompt": prompt});
                send(&mut to_agent, id, "session/prompt", params).await;
                let (answer, text) = until(&mut lines, id).await;
                assert!(answer["result"]["stopReason"].is_string(), "{answer}");
                out.push(text);
            }
            out
        };
        tokio::select! {
            out = client => out,
            ended = server => panic!("the agent stopped serving: {ended:?}"),
        }
    }

    #[tokio::test]
    async fn stats_count_the_bytes_of_prompt_text() {
        let stats = "[[mock:stats]]";
        // 2 bytes for `é`: bytes, not characters.
        let first = "héllo [[mock:stream n=2]]";
        let answers = answers(&[stats, first, stats]).await;
        let before: serde_json::Value = serde_json::from_str(&answers[0]).unwrap();
        let after: serde_json::Value = serde_json::from_str(&answers[2]).unwrap();
        assert_eq!(answers[1], "chunk 0 chunk 1 ");
        // Each stats prompt counts itself.
        assert_eq!(before["prompt_bytes"], stats.len());
        assert_eq!(before["prompts"], 1);
        assert_eq!(after["prompt_bytes"], 2 * stats.len() + first.len());
        assert_eq!(first.len(), 26);
        assert_eq!(after["prompts"], 3);
    }

    #[test]
    fn artifacts_split_inside_tags() {
        let reply = ARTIFACT_CHUNKS.concat();
        assert_eq!(
            reply,
            r#"Here is the answer.<thinking>internal reasoning</thinking> The result is 42.<tool_use>{"name":"fs_read"}</tool_use>"#
        );
    }
}
