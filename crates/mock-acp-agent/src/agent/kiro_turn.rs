//! What a turn sends besides its answer: Kiro v3's turn frames, tool calls, the shell tool
//! that asks permission, token usage.

use agent_client_protocol::v1::schema::{ToolCall, ToolCallStatus, ToolKind};
use serde_json::{Map, Value};

use super::turn::{Finish, Flow};
use super::*;

/// The context window the mock reports token usage against.
const CONTEXT_WINDOW: u64 = 200_000;

fn kiro_meta(kiro: Value) -> Map<String, Value> {
    Map::from_iter([(kiro::META_KEY.to_owned(), kiro)])
}

impl Turn {
    pub(super) fn v3(&self) -> bool {
        self.engine == Some(KiroEngine::V3)
    }

    /// A v3 `session_info_update` whose `_meta.kiro` is `kiro`.
    pub(super) fn kiro_frame(&self, kiro: Value) -> Result<(), agent_client_protocol::Error> {
        self.update(SessionUpdate::SessionInfoUpdate(
            SessionInfoUpdate::new().meta(kiro_meta(kiro)),
        ))
    }

    /// v3 opens every turn with `turn_start`.
    pub(super) fn turn_start(&self) -> Result<(), agent_client_protocol::Error> {
        if self.v3() {
            self.kiro_frame(json!({ "kind": "turn_start" }))?;
        }
        Ok(())
    }

    /// The end of an answered turn: token usage when asked for, metering, v3 `turn_end`.
    pub(super) fn send_turn_end(
        &self,
        stop_reason: StopReason,
    ) -> Result<(), agent_client_protocol::Error> {
        if let Some((input, output)) = self.token_usage() {
            self.update(SessionUpdate::UsageUpdate(UsageUpdate::new(
                input + output,
                CONTEXT_WINDOW,
            )))?;
        }
        self.send_metering()?;
        if self.v3() {
            let stop_reason = serde_json::to_value(stop_reason).unwrap_or(Value::Null);
            self.kiro_frame(json!({ "kind": "turn_end", "stopReason": stop_reason }))?;
        }
        Ok(())
    }

    /// The token usage the directive asks to report (input, output).
    pub(super) fn token_usage(&self) -> Option<(u64, u64)> {
        let directive = &self.directive;
        (directive.input_tokens.is_some() || directive.output_tokens.is_some()).then(|| {
            (
                directive.input_tokens.unwrap_or(0),
                directive.output_tokens.unwrap_or(0),
            )
        })
    }

    /// Wait the turn's delay; `false` when the turn was cancelled meanwhile.
    pub(super) async fn pause(&self) -> bool {
        if self.delay.is_zero() {
            return !self.stopped();
        }
        tokio::select! {
            () = tokio::time::sleep(self.delay) => true,
            () = self.wait_stopped() => false,
        }
    }

    /// `n` tool calls, each announced (v2: `_kiro.dev/session/update` `tool_call_chunk`), then
    /// `tool_call` in progress, a progress frame, and `tool_call_update` completed, the turn's
    /// delay between frames.
    pub(super) async fn run_tools(&self, n: u64) -> Result<Flow, agent_client_protocol::Error> {
        for i in 0..n {
            let id = format!("tool-{i}");
            if self.engine == Some(KiroEngine::V2) {
                self.cx.send_notification(UntypedMessage::new(
                    "_kiro.dev/session/update",
                    json!({
                        "sessionId": self.session_id.to_string(),
                        "update": {
                            "sessionUpdate": "tool_call_chunk",
                            "toolCallId": id,
                            "title": "fs_read",
                            "kind": "read",
                        },
                    }),
                )?)?;
            }
            self.update(SessionUpdate::ToolCall(
                ToolCall::new(id.clone(), format!("Reading file {i}"))
                    .kind(ToolKind::Read)
                    .status(ToolCallStatus::InProgress),
            ))?;
            if !self.pause().await {
                return Ok(Flow::Cancelled);
            }
            if self.v3() {
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "a handful of tool calls, far below 2^52"
                )]
                let percent = 1.0 + i as f64 / 10.0;
                self.kiro_frame(json!({ "kind": "context_usage", "usagePercentage": percent }))?;
            }
            self.update(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
                id,
                ToolCallUpdateFields::new().status(ToolCallStatus::Completed),
            )))?;
            if !self.pause().await {
                return Ok(Flow::Cancelled);
            }
        }
        Ok(Flow::Done)
    }

    /// A shell tool. Under v3 autopilot it runs without asking; otherwise it asks
    /// `session/request_permission` (options `allow_once`, `reject_once`, `reject_always`)
    /// and runs only when allowed. Replies `shell: ran without asking`, `shell: allowed
    /// (OPTION)` or `shell: refused (OPTION or cancelled); the command was not run` (plain
    /// mode: without `; the command was not run`).
    pub(super) async fn run_shell(&self) -> Result<Finish, agent_client_protocol::Error> {
        let id = "shell-1";
        self.update(SessionUpdate::ToolCall(
            ToolCall::new(id, "Running: ls")
                .kind(ToolKind::Execute)
                .status(ToolCallStatus::Pending)
                .raw_input(json!({ "command": "ls" })),
        ))?;
        let verdict = if self.kiro.autopilot {
            Ok("ran without asking".to_owned())
        } else {
            let request = RequestPermissionRequest::new(
                self.session_id.clone(),
                ToolCallUpdate::new(
                    id,
                    ToolCallUpdateFields::new()
                        .title("Running: ls")
                        .kind(ToolKind::Execute)
                        .raw_input(json!({ "command": "ls" })),
                ),
                vec![
                    PermissionOption::new("allow_once", "Yes", PermissionOptionKind::AllowOnce),
                    PermissionOption::new("reject_once", "No", PermissionOptionKind::RejectOnce),
                    PermissionOption::new(
                        "reject_always",
                        "Never",
                        PermissionOptionKind::RejectAlways,
                    ),
                ],
            )
            .meta(kiro_meta(json!({ "consent": { "toolName": "shell" } })));
            let answer = tokio::select! {
                answer = self.cx.send_request(request).block_task() => answer,
                () = self.wait_stopped() => return Ok(Finish::Stop(StopReason::Cancelled)),
            };
            match answer {
                Ok(response) => match response.outcome {
                    RequestPermissionOutcome::Selected(selected)
                        if selected.option_id.to_string().starts_with("allow") =>
                    {
                        Ok(format!("allowed ({})", selected.option_id))
                    }
                    RequestPermissionOutcome::Selected(selected) => {
                        Err(format!("refused ({})", selected.option_id))
                    }
                    _ => Err("refused (cancelled)".to_owned()),
                },
                Err(error) => Err(format!("refused (error {})", i32::from(error.code))),
            }
            // Kiro says the command did not run (plain mode keeps its old reply).
            .map_err(|refused| match self.engine {
                Some(_) => format!("{refused}; the command was not run"),
                None => refused,
            })
        };
        let status = if verdict.is_ok() {
            ToolCallStatus::Completed
        } else {
            ToolCallStatus::Failed
        };
        self.update(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
            id,
            ToolCallUpdateFields::new().status(status),
        )))?;
        let (Ok(verdict) | Err(verdict)) = verdict;
        self.message(&format!("shell: {verdict}"))?;
        Ok(Finish::Stop(StopReason::EndTurn))
    }
}
