//! ACP messages whose answers we parse leniently (or which the crate does not model).

use agent_client_protocol::v1::schema::{NewSessionRequest, PromptRequest, SessionId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `session/prompt` with a lenient answer: an unknown stop reason must not fail the turn.
#[derive(Debug, Clone, Serialize, Deserialize, agent_client_protocol::JsonRpcRequest)]
#[request(method = "session/prompt", response = PromptReply)]
#[serde(transparent)]
pub(crate) struct PromptCall(pub(crate) PromptRequest);

#[derive(Debug, Clone, Serialize, Deserialize, agent_client_protocol::JsonRpcResponse)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptReply {
    #[serde(default)]
    pub(crate) stop_reason: Option<String>,
    /// The turn's token usage, when the agent reports it (ACP `usage`).
    #[serde(default)]
    pub(crate) usage: Option<Value>,
}

/// `session/new` with an answer that keeps what the crate's type drops: Kiro v2's
/// non-standard `models`, and `configOptions` as sent (any shape).
#[derive(Debug, Clone, Serialize, Deserialize, agent_client_protocol::JsonRpcRequest)]
#[request(method = "session/new", response = NewSessionReply)]
#[serde(transparent)]
pub(crate) struct NewSessionCall(pub(crate) NewSessionRequest);

#[derive(Debug, Clone, Serialize, Deserialize, agent_client_protocol::JsonRpcResponse)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewSessionReply {
    pub(crate) session_id: SessionId,
    #[serde(default)]
    pub(crate) models: Option<Value>,
    #[serde(default)]
    pub(crate) config_options: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_client_protocol::JsonRpcMessage as _;
    use agent_client_protocol::JsonRpcResponse as _;
    use agent_client_protocol::v1::schema::{ContentBlock, TextContent};

    #[test]
    fn new_session_reply_keeps_kiro_models() {
        let reply = NewSessionReply::from_json(
            "session/new",
            serde_json::json!({ "sessionId": "s", "models": { "availableModels": [] }, "modes": {} }),
        )
        .unwrap();
        assert_eq!(reply.session_id.to_string(), "s");
        assert!(reply.models.is_some());
        assert!(reply.config_options.is_none());
    }

    #[test]
    fn prompt_reply_is_lenient() {
        let reply = PromptReply::from_json(
            "session/prompt",
            serde_json::json!({ "stopReason": "brand_new", "extra": 1 }),
        )
        .unwrap();
        assert_eq!(reply.stop_reason.as_deref(), Some("brand_new"));
        let reply = PromptReply::from_json("session/prompt", serde_json::json!({})).unwrap();
        assert_eq!(reply.stop_reason, None);
        assert_eq!(reply.usage, None);
    }

    #[test]
    fn prompt_call_serializes_as_a_prompt_request() {
        let call = PromptCall(PromptRequest::new(
            "s1",
            vec![ContentBlock::Text(TextContent::new("hi"))],
        ));
        let untyped = call.to_untyped_message().unwrap();
        assert_eq!(untyped.method(), "session/prompt");
        assert_eq!(
            untyped.params(),
            &serde_json::json!({
                "sessionId": "s1",
                "prompt": [{ "type": "text", "text": "hi" }],
            })
        );
    }
}
