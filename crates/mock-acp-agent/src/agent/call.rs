//! The `call` directive: the agent as a real MCP client. It calls tools of the session's
//! first HTTP MCP server (the way Kiro names and runs MCP tools), all at once, holds the calls
//! open as long as the server does, and replies with their results; or, given a transcript
//! with `[Tool result (id ID)]` blocks after the directive, replies from those instead.

use agent_client_protocol::v1::schema::{ToolCall, ToolCallStatus, ToolKind};
use serde_json::Value;

use super::turn::Finish;
use super::*;
use crate::mcp;

/// The tag a prompt that describes tools in text (a gateway's emulated tool calling) asks
/// calls to be written in: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
const TOOL_TAG: &str = "<tool_call>";

/// What became of one listed tool.
enum Verdict {
    /// The server does not offer it.
    Missing,
    /// The client refused the permission asked for it.
    Refused,
    /// Called: the result's text, or the error's.
    Called(Result<String, String>),
}

impl Turn {
    pub(super) async fn run_call(&self) -> Result<Finish, agent_client_protocol::Error> {
        let transcript = self.text.get(self.directive_at..).unwrap_or_default();
        let results = mcp::tool_results(transcript);
        if !results.is_empty() {
            let lines: Vec<String> = results
                .into_iter()
                .map(|(id, text)| format!("result {id}: {text}"))
                .collect();
            return self.reply_lines(&lines);
        }
        let Some(server) = self.mcp_servers.first() else {
            // Emulated tools: the prompt describes them and asks for tagged calls.
            if self.text.contains(TOOL_TAG) {
                let args = Value::Object(self.directive.args.clone().unwrap_or_default());
                let lines: Vec<String> = self
                    .directive
                    .tools
                    .iter()
                    .map(|name| {
                        let call = serde_json::json!({"name": name, "arguments": args});
                        format!("{TOOL_TAG}{call}</tool_call>")
                    })
                    .collect();
                return self.reply_lines(&lines);
            }
            return self.reply_lines(&["no MCP server".to_owned()]);
        };
        let connected = tokio::select! {
            connected = async {
                let client = mcp::connect(server).await?;
                let offered = mcp::tool_names(&client).await?;
                Ok::<_, String>((client, offered))
            } => connected,
            () = self.wait_stopped() => return Ok(Finish::Stop(StopReason::Cancelled)),
        };
        let (client, offered) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                return self.reply_lines(&[format!("MCP server {} failed: {error}", server.name)]);
            }
        };
        let args = self.directive.args.clone().unwrap_or_default();
        let raw_input = Value::Object(args.clone());
        let tools = &self.directive.tools;
        let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(tools.len());
        // Announce each offered tool (and ask for it), then call all the allowed ones.
        let mut allowed = Vec::new();
        for (index, tool) in tools.iter().enumerate() {
            if !offered.contains(tool) {
                verdicts.push(Some(Verdict::Missing));
                continue;
            }
            let id = format!("mcp-{}-{index}", self.turn_id);
            let title = format!("mcp__{}__{tool}", server.name);
            self.update(SessionUpdate::ToolCall(
                ToolCall::new(id.clone(), title.clone())
                    .kind(ToolKind::Other)
                    .status(ToolCallStatus::Pending)
                    .raw_input(raw_input.clone()),
            ))?;
            if self.directive.ask {
                match self.ask_for_tool(&id, &title, &raw_input).await? {
                    Some(true) => {}
                    Some(false) => {
                        self.tool_status(&id, ToolCallStatus::Failed)?;
                        verdicts.push(Some(Verdict::Refused));
                        continue;
                    }
                    None => return Ok(Finish::Stop(StopReason::Cancelled)),
                }
            }
            self.tool_status(&id, ToolCallStatus::InProgress)?;
            verdicts.push(None);
            allowed.push((index, id));
        }
        // Send every call, then wait for all the answers. No timeout: the server may hold a
        // call open for minutes.
        let mut pending = Vec::with_capacity(allowed.len());
        for (index, _) in &allowed {
            pending.push(mcp::start_call(&client, &tools[*index], args.clone()).await);
        }
        let ids: Vec<_> = pending
            .iter()
            .filter_map(|call| call.as_ref().ok().map(|call| call.id.clone()))
            .collect();
        let waits = pending.into_iter().map(|call| async move {
            match call {
                Ok(call) => mcp::finish_call(call).await,
                Err(error) => Err(error),
            }
        });
        let answers = tokio::select! {
            answers = futures::future::join_all(waits) => Some(answers),
            () = self.wait_stopped() => None,
        };
        // Close the connection in the background, without holding the answer up; after a
        // cancel, the server is told first which calls were abandoned.
        let abandoned = if answers.is_some() { Vec::new() } else { ids };
        self.cx.spawn(async move {
            mcp::cancel_calls(&client, abandoned).await;
            if let Err(error) = client.cancel().await {
                tracing::debug!(%error, "MCP client did not close cleanly");
            }
            Ok(())
        })?;
        let Some(answers) = answers else {
            return Ok(Finish::Stop(StopReason::Cancelled));
        };
        for ((index, id), answer) in allowed.into_iter().zip(answers) {
            let status = if answer.is_ok() {
                ToolCallStatus::Completed
            } else {
                ToolCallStatus::Failed
            };
            self.tool_status(&id, status)?;
            if let Some(verdict) = verdicts.get_mut(index) {
                *verdict = Some(Verdict::Called(answer));
            }
        }
        let lines: Vec<String> = tools
            .iter()
            .zip(verdicts)
            .map(|(tool, verdict)| match verdict {
                Some(Verdict::Missing) => format!("no tool {tool} offered"),
                Some(Verdict::Refused) => format!("permission refused for {tool}"),
                Some(Verdict::Called(Ok(text))) => format!("{tool}: {text}"),
                Some(Verdict::Called(Err(text))) => format!("{tool} failed: {text}"),
                None => format!("{tool} failed: no answer"),
            })
            .collect();
        self.reply_lines(&lines)
    }

    /// Ask `session/request_permission` for an MCP tool call: `Some(allowed)`, or `None` when
    /// the turn was cancelled meanwhile. Anything but an `allow` option refuses.
    async fn ask_for_tool(
        &self,
        id: &str,
        title: &str,
        raw_input: &Value,
    ) -> Result<Option<bool>, agent_client_protocol::Error> {
        let request = RequestPermissionRequest::new(
            self.session_id.clone(),
            ToolCallUpdate::new(
                id.to_owned(),
                ToolCallUpdateFields::new()
                    .title(title.to_owned())
                    .kind(ToolKind::Other)
                    .raw_input(raw_input.clone()),
            ),
            vec![
                PermissionOption::new("allow_once", "Yes", PermissionOptionKind::AllowOnce),
                PermissionOption::new("reject_once", "No", PermissionOptionKind::RejectOnce),
            ],
        );
        let answer = tokio::select! {
            answer = self.cx.send_request(request).block_task() => answer,
            () = self.wait_stopped() => return Ok(None),
        };
        Ok(Some(match answer {
            Ok(response) => matches!(
                response.outcome,
                RequestPermissionOutcome::Selected(selected)
                    if selected.option_id.to_string().starts_with("allow")
            ),
            Err(_) => false,
        }))
    }

    fn tool_status(
        &self,
        id: &str,
        status: ToolCallStatus,
    ) -> Result<(), agent_client_protocol::Error> {
        self.update(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
            id.to_owned(),
            ToolCallUpdateFields::new().status(status),
        )))
    }

    /// The reply: one chunk per line (each but the last ending in a newline), `end_turn`.
    fn reply_lines(&self, lines: &[String]) -> Result<Finish, agent_client_protocol::Error> {
        for (index, line) in lines.iter().enumerate() {
            if index + 1 < lines.len() {
                self.message(&format!("{line}\n"))?;
            } else {
                self.message(line)?;
            }
        }
        Ok(Finish::Stop(StopReason::EndTurn))
    }
}
