//! The answer written back: the `response` object and its stream of typed events.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ErrorKind};
use crate::openai::{FinishReason, ToolCall};
use crate::stream::{CompletionEvent, Finish};

/// A fresh response id, `resp_` and 32 hex digits.
pub fn new_response_id() -> String {
    format!("resp_{}", uuid::Uuid::new_v4().simple())
}

/// The item being written: text or reasoning grows while its events arrive.
#[derive(Debug)]
enum Open {
    Message { id: String, text: String },
    Reasoning { id: String, text: String },
}

/// Writes one answer as the Responses API does: [`ResponseEncoder::start`], then each event
/// ([`ResponseEncoder::push`]), then [`ResponseEncoder::finish`] or [`ResponseEncoder::fail`];
/// [`ResponseEncoder::response`] is the `response` object at any point (whole after the end).
/// Every event carries a `sequence_number` counted from 0.
#[derive(Debug)]
pub struct ResponseEncoder {
    response: Map<String, Value>,
    /// The id's hex part: item ids are made from it.
    stem: String,
    sequence: u64,
    output: Vec<Value>,
    open: Option<Open>,
}

impl ResponseEncoder {
    /// An answer with id `id` created at `created_at` (Unix seconds), echoing `template`.
    pub fn new(template: Map<String, Value>, id: &str, created_at: u64) -> Self {
        let mut response = Map::new();
        response.insert("id".to_owned(), json!(id));
        response.insert("object".to_owned(), json!("response"));
        response.insert("created_at".to_owned(), json!(created_at));
        response.insert("status".to_owned(), json!("in_progress"));
        response.insert("error".to_owned(), Value::Null);
        response.insert("incomplete_details".to_owned(), Value::Null);
        response.extend(template);
        response.insert("output".to_owned(), json!([]));
        response.insert("usage".to_owned(), Value::Null);
        ResponseEncoder {
            response,
            stem: id.strip_prefix("resp_").unwrap_or(id).to_owned(),
            sequence: 0,
            output: Vec::new(),
            open: None,
        }
    }

    /// The response object as it stands (complete once the answer has ended).
    pub fn response(&self) -> Value {
        let mut response = self.response.clone();
        response.insert("output".to_owned(), Value::Array(self.output.clone()));
        Value::Object(response)
    }

    fn item_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}{:03}", self.stem, self.output.len())
    }

    fn output_index(&self) -> usize {
        self.output.len()
    }

    /// One event frame: `event: <type>` and its JSON with `type` and `sequence_number`.
    fn event(&mut self, out: &mut BytesMut, kind: &str, fields: Value) {
        let mut event = Map::new();
        event.insert("type".to_owned(), json!(kind));
        event.insert("sequence_number".to_owned(), json!(self.sequence));
        if let Value::Object(fields) = fields {
            event.extend(fields);
        }
        self.sequence += 1;
        // Plain values: serializing cannot fail.
        let json = serde_json::to_vec(&Value::Object(event)).unwrap_or_default();
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(&json);
        out.put_slice(b"\n\n");
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        let response = self.response();
        self.event(
            &mut out,
            "response.created",
            json!({ "response": response }),
        );
        self.event(
            &mut out,
            "response.in_progress",
            json!({ "response": response }),
        );
        out.freeze()
    }

    /// The frames of one event of the answer (`Finish` is [`ResponseEncoder::finish`]'s).
    pub fn push(&mut self, event: &CompletionEvent) -> Bytes {
        let mut out = BytesMut::new();
        match event {
            CompletionEvent::Delta(text) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.close(&mut out, "completed");
                    self.open_message(&mut out);
                }
                let output_index = self.output_index();
                if let Some(Open::Message { id, text: all }) = &mut self.open {
                    all.push_str(text);
                    let id = id.clone();
                    self.event(
                        &mut out,
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": output_index, "content_index": 0,
                               "delta": text, "logprobs": []}),
                    );
                }
            }
            CompletionEvent::Reasoning(text) => {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    self.close(&mut out, "completed");
                    self.open_reasoning(&mut out);
                }
                let output_index = self.output_index();
                if let Some(Open::Reasoning { id, text: all }) = &mut self.open {
                    all.push_str(text);
                    let id = id.clone();
                    self.event(
                        &mut out,
                        "response.reasoning_summary_text.delta",
                        json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                               "delta": text}),
                    );
                }
            }
            CompletionEvent::ToolCall { call, .. } => {
                self.close(&mut out, "completed");
                self.function_call(&mut out, call);
            }
            CompletionEvent::KeepAlive => out.put_slice(&crate::sse::keepalive_frame()),
            CompletionEvent::Finish(finish) => out.put_slice(&self.finish(finish)),
        }
        out.freeze()
    }

    fn open_message(&mut self, out: &mut BytesMut) {
        let id = self.item_id("msg");
        let output_index = self.output_index();
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": {"id": id, "type": "message",
                   "status": "in_progress", "content": [], "role": "assistant"}}),
        );
        self.event(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": output_index, "content_index": 0,
                   "part": {"type": "output_text", "annotations": [], "text": ""}}),
        );
        self.open = Some(Open::Message {
            id,
            text: String::new(),
        });
    }

    fn open_reasoning(&mut self, out: &mut BytesMut) {
        let id = self.item_id("rs");
        let output_index = self.output_index();
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": {"id": id, "type": "reasoning",
                   "summary": []}}),
        );
        self.event(
            out,
            "response.reasoning_summary_part.added",
            json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                   "part": {"type": "summary_text", "text": ""}}),
        );
        self.open = Some(Open::Reasoning {
            id,
            text: String::new(),
        });
    }

    /// End the open item (if any) with `status`, and add it to the output.
    fn close(&mut self, out: &mut BytesMut, status: &str) {
        let output_index = self.output_index();
        let item = match self.open.take() {
            None => return,
            Some(Open::Message { id, text }) => {
                let part = json!({"type": "output_text", "annotations": [], "text": text});
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0,
                           "part": part}),
                );
                json!({"id": id, "type": "message", "status": status, "content": [part],
                       "role": "assistant"})
            }
            Some(Open::Reasoning { id, text }) => {
                let part = json!({"type": "summary_text", "text": text});
                self.event(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                           "text": text}),
                );
                self.event(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                           "part": part}),
                );
                json!({"id": id, "type": "reasoning", "summary": [part]})
            }
        };
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
    }

    fn function_call(&mut self, out: &mut BytesMut, call: &ToolCall) {
        let id = self.item_id("fc");
        let output_index = self.output_index();
        let item = |status: &str, arguments: &str| {
            json!({"id": id, "type": "function_call", "status": status,
                   "arguments": arguments, "call_id": call.id, "name": call.function.name})
        };
        let added = item("in_progress", "");
        let done = item("completed", &call.function.arguments);
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": added}),
        );
        self.event(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": output_index,
                   "delta": call.function.arguments}),
        );
        self.event(
            out,
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": output_index, "name": call.function.name,
                   "arguments": call.function.arguments}),
        );
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": done}),
        );
        self.output.push(done);
    }

    /// The end of an answer: the open item's end, then `response.completed`, or
    /// `response.incomplete` when the answer was cut off (by the output limit or a filter).
    /// The response object is whole before the frames are returned: store it, then send them.
    pub fn finish(&mut self, finish: &Finish) -> Bytes {
        let mut out = BytesMut::new();
        let (status, reason) = match finish.finish_reason {
            FinishReason::Stop | FinishReason::ToolCalls => ("completed", None),
            FinishReason::Length => ("incomplete", Some("max_output_tokens")),
            FinishReason::ContentFilter => ("incomplete", Some("content_filter")),
            FinishReason::Error => {
                return self.fail(&ApiError::upstream("The answer ended with an error."));
            }
        };
        self.close(
            &mut out,
            if reason.is_some() {
                "incomplete"
            } else {
                "completed"
            },
        );
        let usage = &finish.usage;
        self.response.insert("status".to_owned(), json!(status));
        self.response.insert(
            "incomplete_details".to_owned(),
            reason.map_or(Value::Null, |reason| json!({ "reason": reason })),
        );
        self.response.insert(
            "usage".to_owned(),
            json!({
                "input_tokens": usage.prompt_tokens,
                "input_tokens_details": {
                    "cached_tokens": usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
                },
                "output_tokens": usage.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.total_tokens,
            }),
        );
        let response = self.response();
        self.event(
            &mut out,
            &format!("response.{status}"),
            json!({ "response": response }),
        );
        out.freeze()
    }

    /// The end of an answer that failed (an error, or a stream that broke off): the open
    /// item ends `incomplete`, then `response.failed` with the error.
    pub fn fail(&mut self, error: &ApiError) -> Bytes {
        let mut out = BytesMut::new();
        self.close(&mut out, "incomplete");
        let code = match error.kind {
            ErrorKind::RateLimited | ErrorKind::AccountRateLimited => "rate_limit_exceeded",
            _ => "server_error",
        };
        self.response.insert("status".to_owned(), json!("failed"));
        self.response.insert(
            "error".to_owned(),
            json!({"code": code, "message": error.message}),
        );
        let response = self.response();
        self.event(&mut out, "response.failed", json!({ "response": response }));
        out.freeze()
    }

    /// The end of a stream that broke off before its finish.
    pub fn broken_off(&mut self) -> Bytes {
        self.fail(&ApiError::upstream(
            "The answer ended before it was complete.",
        ))
    }

    /// Whether the answer ended `completed` or `incomplete` (not failed, not still going).
    pub fn ended_well(&self) -> bool {
        matches!(
            self.response.get("status").and_then(Value::as_str),
            Some("completed" | "incomplete")
        )
    }
}
