//! The canonical events gathered into one Anthropic `message` object (the whole answer).

use serde_json::{Value, json};

use crate::openai::ToolCall;
use crate::stream::{CompletionEvent, Finish};

use super::answer::{MessageMeta, cached, stop_reason, tool_input, usage};

/// One content block of a gathered answer.
#[derive(Debug)]
enum OutBlock {
    Text(String),
    Thinking(String),
    ToolUse(ToolCall),
}

/// Gathers an answer into one Anthropic `message` object.
#[derive(Debug)]
pub struct MessageCollector {
    meta: MessageMeta,
    blocks: Vec<OutBlock>,
}

impl MessageCollector {
    /// A collector of the answer `meta` names, with no content yet.
    pub fn new(meta: MessageMeta) -> Self {
        MessageCollector {
            meta,
            blocks: Vec::new(),
        }
    }

    /// Add one event of the answer; the finish (or an error) is the caller's to handle.
    pub fn push_event(&mut self, event: &CompletionEvent) {
        match event {
            CompletionEvent::Delta(text) if !text.is_empty() => match self.blocks.last_mut() {
                Some(OutBlock::Text(open)) => open.push_str(text),
                _ => self.blocks.push(OutBlock::Text(text.clone())),
            },
            CompletionEvent::Reasoning(text) if !text.is_empty() => match self.blocks.last_mut() {
                Some(OutBlock::Thinking(open)) => open.push_str(text),
                _ => self.blocks.push(OutBlock::Thinking(text.clone())),
            },
            CompletionEvent::ToolCall { call, .. } => {
                self.blocks.push(OutBlock::ToolUse(call.clone()));
            }
            _ => {}
        }
    }

    /// The `message` object of the finished answer.
    pub fn finish(self, finish: &Finish) -> Value {
        let content: Vec<Value> = self
            .blocks
            .into_iter()
            .map(|block| match block {
                OutBlock::Text(text) => json!({"type": "text", "text": text}),
                OutBlock::Thinking(thinking) => {
                    json!({"type": "thinking", "thinking": thinking, "signature": ""})
                }
                OutBlock::ToolUse(call) => json!({
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.function.name,
                    "input": tool_input(&call.function.arguments),
                }),
            })
            .collect();
        json!({
            "id": self.meta.id,
            "type": "message",
            "role": "assistant",
            "model": self.meta.model,
            "content": content,
            "stop_reason": stop_reason(finish.finish_reason),
            "stop_sequence": null,
            "usage": usage(
                finish.usage.prompt_tokens,
                finish.usage.completion_tokens,
                cached(&finish.usage),
            ),
        })
    }
}
