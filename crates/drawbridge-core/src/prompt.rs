//! Chat messages → one ACP prompt.
//!
//! An ACP agent takes a single prompt per turn, and every request runs in a fresh session, so
//! the whole conversation is rendered into that prompt. The format is deterministic (the same
//! messages always give the same text) and documented in `docs/internals.md`:
//!
//! - A conversation that is a single user message is sent as that message's text, unchanged.
//! - Anything else is a transcript: one block per message, in order, separated by a blank
//!   line. Each block is a header line, then the message text:
//!   - `[System]`, `[Developer]`, `[User]`, `[Assistant]` for those roles; a `name` is added as
//!     `[User: alice]`;
//!   - an assistant's tool calls each add a block `[Assistant called tool NAME (id ID)]`
//!     followed by the call's JSON arguments;
//!   - `[Tool result (id ID)]` for a tool or function message (`[Tool result: NAME]` when
//!     only a name is known).
//!
//!   Text is passed through as is (no escaping): the agent reads it as prose.
//!
//! When an answer broke off on one account and is resumed on another ([`render_resume`]), the
//! fresh agent gets the transcript (always in the block form), then the partial answer as a
//! block headed `[Assistant (cut off)]`, then the continuation instruction of
//! [`crate::continuation::continuation_prompt`].

use drawbridge_types::openai::{ChatMessage, Role};

/// Render `messages` into the text of one ACP prompt.
pub fn render(messages: &[ChatMessage]) -> String {
    if let [only] = messages
        && only.role == Role::User
        && only.name.is_none()
    {
        return only.text();
    }
    transcript(messages)
}

/// The header of the partial answer in a resume prompt.
pub const CUT_OFF_HEADER: &str = "[Assistant (cut off)]";

/// The prompt that asks a fresh agent to finish an answer that `partial` began elsewhere.
pub fn render_resume(messages: &[ChatMessage], partial: &str) -> String {
    let mut out = transcript(messages);
    block(&mut out, CUT_OFF_HEADER, partial);
    out.push_str("\n\n");
    out.push_str(&crate::continuation::continuation_prompt(partial));
    out
}

/// Every message as a block.
fn transcript(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for message in messages {
        match message.role {
            Role::Tool | Role::Function => {
                let header = match (&message.tool_call_id, &message.name) {
                    (Some(id), _) => format!("[Tool result (id {id})]"),
                    (None, Some(name)) => format!("[Tool result: {name}]"),
                    (None, None) => "[Tool result]".to_owned(),
                };
                block(&mut out, &header, &message.text());
            }
            role => {
                let title = match role {
                    Role::System => "System",
                    Role::Developer => "Developer",
                    Role::User => "User",
                    _ => "Assistant",
                };
                let header = match &message.name {
                    Some(name) => format!("[{title}: {name}]"),
                    None => format!("[{title}]"),
                };
                let text = message.text();
                let calls = message.tool_calls.as_deref().unwrap_or_default();
                if !text.is_empty() || calls.is_empty() {
                    block(&mut out, &header, &text);
                }
                for call in calls {
                    let header = format!(
                        "[Assistant called tool {} (id {})]",
                        call.function.name, call.id
                    );
                    block(&mut out, &header, &call.function.arguments);
                }
            }
        }
    }
    out
}

fn block(out: &mut String, header: &str, text: &str) {
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(header);
    out.push('\n');
    out.push_str(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use drawbridge_types::openai::{ChatCompletionRequest, Role};

    fn messages(json: &str) -> Vec<ChatMessage> {
        let body = format!(r#"{{"model":"m","messages":{json}}}"#);
        ChatCompletionRequest::from_json(body.as_bytes())
            .unwrap()
            .messages
    }

    #[test]
    fn a_single_user_message_is_sent_as_is() {
        let m = [ChatMessage::new(Role::User, "Hello\n  world")];
        assert_eq!(render(&m), "Hello\n  world");
    }

    #[test]
    fn a_conversation_becomes_a_transcript() {
        let m = messages(
            r#"[{"role":"system","content":"Be brief."},
                {"role":"developer","content":"Use French."},
                {"role":"user","name":"alice","content":"What's the weather?"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"sunny"},
                {"role":"assistant","content":"Il fait beau."},
                {"role":"user","content":[{"type":"text","text":"Merci"},{"type":"text","text":"!"}]}]"#,
        );
        let expected = "[System]\nBe brief.\n\n\
                        [Developer]\nUse French.\n\n\
                        [User: alice]\nWhat's the weather?\n\n\
                        [Assistant called tool weather (id c1)]\n{\"city\":\"Paris\"}\n\n\
                        [Tool result (id c1)]\nsunny\n\n\
                        [Assistant]\nIl fait beau.\n\n\
                        [User]\nMerci\n\n!";
        assert_eq!(render(&m), expected);
    }

    #[test]
    fn rendering_is_deterministic() {
        let m = messages(r#"[{"role":"system","content":"s"},{"role":"user","content":"u"}]"#);
        assert_eq!(render(&m), render(&m.clone()));
        assert_eq!(render(&m), "[System]\ns\n\n[User]\nu");
    }

    #[test]
    fn a_resume_prompt_carries_the_conversation_and_the_partial_answer() {
        let m = [ChatMessage::new(Role::User, "Count to ten.")];
        let prompt = render_resume(&m, "one two three");
        assert!(
            prompt.starts_with("[User]\nCount to ten.\n\n[Assistant (cut off)]\none two three\n\n"),
            "{prompt}"
        );
        assert!(prompt.ends_with(&crate::continuation::continuation_prompt("one two three")));
    }

    #[test]
    fn a_lone_system_message_still_gets_its_header() {
        let m = messages(r#"[{"role":"system","content":"s"}]"#);
        assert_eq!(render(&m), "[System]\ns");
    }
}
