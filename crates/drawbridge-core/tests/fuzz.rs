//! The prompt renderer and the conversation key fed arbitrary conversations: no panic, the same
//! messages always give the same prompt and key, and every message's text reaches the prompt.
//! (The sanitizer and the tagged tool-call scanner have property tests of their own.)

use drawbridge_core::{conversation, prompt};
use drawbridge_types::openai::{ChatMessage, FunctionCall, MessageContent, Role, ToolCall};
use proptest::prelude::*;

fn message() -> impl Strategy<Value = ChatMessage> {
    let role = prop::sample::select(vec![
        Role::System,
        Role::Developer,
        Role::User,
        Role::Assistant,
        Role::Tool,
        Role::Function,
    ]);
    (
        role,
        proptest::option::of(".{0,40}"),
        proptest::option::of("[a-z]{1,8}"),
        proptest::option::of(prop::collection::vec(
            ("[a-z_]{1,8}", "[a-z0-9_]{1,10}", ".{0,20}"),
            0..3,
        )),
        proptest::option::of("[a-z0-9_]{1,10}"),
    )
        .prop_map(|(role, text, name, calls, call_id)| ChatMessage {
            role,
            content: text.map(MessageContent::Text),
            name,
            tool_calls: calls.map(|calls| {
                calls
                    .into_iter()
                    .map(|(name, id, arguments)| ToolCall {
                        id,
                        kind: "function".to_owned(),
                        function: FunctionCall { name, arguments },
                    })
                    .collect()
            }),
            tool_call_id: call_id,
        })
}

proptest! {
    // At least 512 cases; more when PROPTEST_CASES asks (`make fuzz`).
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(512), ..ProptestConfig::default() })]

    #[test]
    fn any_conversation_renders_the_same_way_twice(
        messages in prop::collection::vec(message(), 1..8),
        partial in ".{0,30}",
    ) {
        let rendered = prompt::render(&messages);
        prop_assert_eq!(&rendered, &prompt::render(&messages));
        for m in &messages {
            prop_assert!(rendered.contains(&m.text()), "{:?} lost from {:?}", m.text(), rendered);
        }
        let resumed = prompt::render_resume(&messages, &partial);
        prop_assert!(resumed.contains(&partial));
        let key = conversation::key("t", &[], &messages);
        prop_assert_eq!(key.len(), 64);
        prop_assert_eq!(key, conversation::key("t", &[], &messages));
        let _ = conversation::split_at_answer(&messages);
    }
}
