//! The canonical events written as Anthropic's SSE events.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::openai::ToolCall;
use crate::stream::{CompletionEvent, Finish};

use super::answer::{MessageMeta, error_body, stop_reason, usage};

/// One SSE event: `event: <type>\ndata: <json>\n\n`.
fn frame(out: &mut BytesMut, event: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

/// The kind of the content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
}

/// Writes one answer as Anthropic's SSE events: `message_start` and a `ping` first
/// ([`StreamEncoder::start`]), then per event its content blocks, numbered from 0 in order (a
/// text or thinking block stays open while the same kind goes on; each tool call is a block of
/// its own), then `message_delta` and `message_stop`, or an `error` event.
#[derive(Debug)]
pub struct StreamEncoder {
    meta: MessageMeta,
    open: Option<Open>,
    next_index: u32,
}

impl StreamEncoder {
    /// The encoder of the answer `meta` names; nothing is written yet.
    pub fn new(meta: MessageMeta) -> Self {
        StreamEncoder {
            meta,
            open: None,
            next_index: 0,
        }
    }

    /// The identity of the answer being written.
    pub fn meta(&self) -> &MessageMeta {
        &self.meta
    }

    /// `message_start` (the message with no content yet) and a `ping`.
    pub fn start(&self) -> Bytes {
        let mut out = BytesMut::new();
        let message = json!({
            "id": self.meta.id,
            "type": "message",
            "role": "assistant",
            "model": self.meta.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage(self.meta.input_tokens, 0, 0),
        });
        frame(
            &mut out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        frame(&mut out, "ping", &json!({"type": "ping"}));
        out.freeze()
    }

    /// Close the open text or thinking block, if any.
    fn close(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            self.stop_block(out);
        }
    }

    /// `content_block_stop` for the current block; the next block gets the next index.
    fn stop_block(&mut self, out: &mut BytesMut) {
        frame(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": self.next_index}),
        );
        self.next_index += 1;
    }

    /// Stream `text` in a block of `kind`, opening it (and closing another) first.
    fn text(&mut self, out: &mut BytesMut, kind: Open, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.open != Some(kind) {
            self.close(out);
            let block = match kind {
                Open::Text => json!({"type": "text", "text": ""}),
                Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            };
            frame(
                out,
                "content_block_start",
                &json!({"type": "content_block_start", "index": self.next_index, "content_block": block}),
            );
            self.open = Some(kind);
        }
        let delta = match kind {
            Open::Text => json!({"type": "text_delta", "text": text}),
            Open::Thinking => json!({"type": "thinking_delta", "thinking": text}),
        };
        frame(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.next_index, "delta": delta}),
        );
    }

    /// The frames of one event of the answer.
    pub fn event(&mut self, event: &CompletionEvent) -> Bytes {
        let mut out = BytesMut::new();
        match event {
            CompletionEvent::Delta(text) => self.text(&mut out, Open::Text, text),
            CompletionEvent::Reasoning(text) => self.text(&mut out, Open::Thinking, text),
            CompletionEvent::KeepAlive => frame(&mut out, "ping", &json!({"type": "ping"})),
            CompletionEvent::ToolCall { call, .. } => self.tool_call(&mut out, call),
            CompletionEvent::Finish(finish) => self.finish(&mut out, finish),
        }
        out.freeze()
    }

    fn tool_call(&mut self, out: &mut BytesMut, call: &ToolCall) {
        self.close(out);
        let index = self.next_index;
        frame(
            out,
            "content_block_start",
            &json!({
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": call.id, "name": call.function.name, "input": {}},
            }),
        );
        let arguments = call.function.arguments.trim();
        if !arguments.is_empty() {
            frame(
                out,
                "content_block_delta",
                &json!({
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": arguments},
                }),
            );
        }
        self.stop_block(out);
    }

    fn finish(&mut self, out: &mut BytesMut, finish: &Finish) {
        self.close(out);
        let mut usage = json!({
            "input_tokens": finish.usage.prompt_tokens,
            "output_tokens": finish.usage.completion_tokens,
        });
        if let Some(details) = finish.usage.prompt_tokens_details {
            usage["input_tokens"] = json!(
                finish
                    .usage
                    .prompt_tokens
                    .saturating_sub(details.cached_tokens)
            );
            usage["cache_read_input_tokens"] = json!(details.cached_tokens);
        }
        frame(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(finish.finish_reason), "stop_sequence": null},
                "usage": usage,
            }),
        );
        frame(out, "message_stop", &json!({"type": "message_stop"}));
    }

    /// The end of an answer that could not be completed: the open block closed, then an
    /// `error` event.
    pub fn error(&mut self, error: &ApiError) -> Bytes {
        let mut out = BytesMut::new();
        self.close(&mut out);
        frame(&mut out, "error", &error_body(error));
        out.freeze()
    }
}
