//! Warm sessions: which conversation an agent session holds, and whether a request extends it.
//!
//! After an answer, a worker may keep the agent's session open ("warm"), registered under the
//! [`key`] of the request it answered: the tenant, the tools and the messages. A later request
//! extends that conversation when, split at its last assistant message ([`split_at_answer`]),
//! the messages before it have the same key and the answer is the one the agent gave
//! ([`same_answer`]); then only the messages after the answer are sent to the session.

use drawbridge_types::openai::{ChatMessage, Role};
use drawbridge_types::tools::Tool;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The key of a conversation: SHA-256 (hex) of the tenant, the tools offered and every
/// message (role, name, text, tool calls, tool call id). Equal conversations of one tenant
/// have equal keys; anything else differs.
pub fn key(tenant: &str, tools: &[Tool], messages: &[ChatMessage]) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        tenant: &'a str,
        tools: &'a [Tool],
        messages: Vec<Message<'a>>,
    }
    #[derive(Serialize)]
    struct Message<'a> {
        role: &'a Role,
        name: Option<&'a str>,
        text: String,
        tool_calls: &'a Option<Vec<drawbridge_types::openai::ToolCall>>,
        tool_call_id: Option<&'a str>,
    }
    let canonical = Canonical {
        tenant,
        tools,
        messages: messages
            .iter()
            .map(|m| Message {
                role: &m.role,
                name: m.name.as_deref(),
                text: m.text(),
                tool_calls: &m.tool_calls,
                tool_call_id: m.tool_call_id.as_deref(),
            })
            .collect(),
    };
    // Serializing plain data cannot fail; an empty body would only make keys collide with
    // each other, never with a real one.
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    crate::hex::encode(&Sha256::digest(&bytes))
}

/// A request that continues an answered conversation, split at its last assistant message:
/// the messages before it, the answer, and the new messages after it (at least one, and none
/// of them an assistant's). `None` when there is no such answer or nothing follows it.
pub fn split_at_answer(
    messages: &[ChatMessage],
) -> Option<(&[ChatMessage], &ChatMessage, &[ChatMessage])> {
    let at = messages.iter().rposition(|m| m.role == Role::Assistant)?;
    let (before, rest) = messages.split_at(at);
    let (answer, after) = rest.split_first()?;
    let has_calls = answer.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
    (!after.is_empty() && !has_calls).then_some((before, answer, after))
}

/// Whether `client`, the answer as the client sent it back, is `sent`, the text the agent's
/// session gave: equal but for surrounding whitespace, or for reasoning the engine folded into
/// a leading `<think>…</think>` block.
pub fn same_answer(sent: &str, client: &str) -> bool {
    let client = client.trim();
    if client == sent.trim() {
        return true;
    }
    client
        .strip_prefix("<think>")
        .and_then(|rest| rest.split_once("</think>"))
        .is_some_and(|(_, answer)| answer.trim() == sent.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role, text: &str) -> ChatMessage {
        ChatMessage::new(role, text)
    }

    #[test]
    fn keys_tell_tenants_tools_and_messages_apart() {
        let talk = [m(Role::User, "hi")];
        let base = key("t1", &[], &talk);
        assert_eq!(base, key("t1", &[], &talk));
        assert_eq!(base.len(), 64);
        assert_ne!(base, key("t2", &[], &talk));
        assert_ne!(base, key("t1", &[], &[m(Role::User, "hi!")]));
        assert_ne!(base, key("t1", &[], &[m(Role::System, "hi")]));
        let tool = Tool::function("f", "d", serde_json::json!({"type": "object"}));
        assert_ne!(base, key("t1", &[tool], &talk));
        // Message boundaries count: two messages are not their concatenation.
        assert_ne!(
            key("t1", &[], &[m(Role::User, "ab")]),
            key("t1", &[], &[m(Role::User, "a"), m(Role::User, "b")])
        );
    }

    #[test]
    fn a_follow_up_splits_at_its_last_answer() {
        let talk = [
            m(Role::System, "s"),
            m(Role::User, "one"),
            m(Role::Assistant, "first"),
            m(Role::User, "two"),
        ];
        let (before, answer, after) = split_at_answer(&talk).unwrap();
        assert_eq!(before.len(), 2);
        assert_eq!(answer.text(), "first");
        assert_eq!(after.len(), 1);
        assert!(
            split_at_answer(&talk[..3]).is_none(),
            "nothing after the answer"
        );
        assert!(split_at_answer(&talk[..2]).is_none(), "no answer");
    }

    #[test]
    fn an_answer_is_the_same_when_only_whitespace_or_folded_reasoning_differs() {
        assert!(same_answer("Hello.", "Hello."));
        assert!(same_answer("Hello.", "  Hello.\n"));
        assert!(same_answer("Hello.", "<think>hmm</think>\n\nHello."));
        assert!(!same_answer("Hello.", "Hello!"));
        assert!(!same_answer("Hello.", "<think>hmm</think>\n\nBye."));
        assert!(!same_answer("Hello.", ""));
    }
}
