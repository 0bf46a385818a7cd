//! The `busy` directive: a long tool phase of non-text frames only, the way a Kiro turn can
//! work for minutes before its first word (a client must count any frame as liveness).

use agent_client_protocol::v1::schema::{ToolCall, ToolCallStatus, ToolKind};

use super::turn::Flow;
use super::*;

/// The interval between frames when `every_ms` is not given.
const DEFAULT_EVERY: Duration = Duration::from_millis(500);
/// The phase's length when `secs` is not given.
const DEFAULT_SECS: u64 = 1;
const BUSY_TOOL_ID: &str = "busy-1";

impl Turn {
    /// `secs` seconds of frames, one every `every_ms`: (v2: a `_kiro.dev/session/update`
    /// `tool_call_chunk`,) a `tool_call` in progress, then `tool_call_update`s in progress
    /// (v2: each after a `tool_call_chunk`), and at the end one completed. v3's `turn_start`
    /// has already gone out. A cancel ends the phase at once.
    pub(super) async fn run_busy(&self) -> Result<Flow, agent_client_protocol::Error> {
        let every = self
            .directive
            .every_ms
            .map_or(DEFAULT_EVERY, Duration::from_millis);
        let length = Duration::from_secs(self.directive.secs.unwrap_or(DEFAULT_SECS));
        let deadline = Instant::now() + length;
        self.tool_call_chunk()?;
        self.update(SessionUpdate::ToolCall(
            ToolCall::new(BUSY_TOOL_ID, "Searching the workspace")
                .kind(ToolKind::Search)
                .status(ToolCallStatus::InProgress),
        ))?;
        let mut tick = Instant::now();
        loop {
            tick += every;
            let wake = tick.min(deadline);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.wait_stopped() => return Ok(Flow::Cancelled),
            }
            if wake >= deadline {
                break;
            }
            self.tool_call_chunk()?;
            self.update(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
                BUSY_TOOL_ID,
                ToolCallUpdateFields::new().status(ToolCallStatus::InProgress),
            )))?;
        }
        self.update(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
            BUSY_TOOL_ID,
            ToolCallUpdateFields::new().status(ToolCallStatus::Completed),
        )))?;
        Ok(Flow::Done)
    }

    /// v2's tool announcement frame (nothing on other dialects).
    fn tool_call_chunk(&self) -> Result<(), agent_client_protocol::Error> {
        if self.engine != Some(KiroEngine::V2) {
            return Ok(());
        }
        self.cx.send_notification(UntypedMessage::new(
            "_kiro.dev/session/update",
            json!({
                "sessionId": self.session_id.to_string(),
                "update": {
                    "sessionUpdate": "tool_call_chunk",
                    "toolCallId": BUSY_TOOL_ID,
                    "title": "grep",
                    "kind": "search",
                },
            }),
        )?)
    }
}
