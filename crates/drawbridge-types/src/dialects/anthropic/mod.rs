//! Anthropic's Messages API (`POST /v1/messages`, what Claude Code and the Anthropic SDKs
//! speak), translated both ways: a request body into the canonical request
//! ([`parse_request`]), the canonical events into Anthropic's SSE events ([`StreamEncoder`])
//! or one `message` object ([`MessageCollector`]), and an [`ApiError`](crate::ApiError) into
//! Anthropic's error shape and status ([`error_status`], [`error_body`]). Pure: no I/O, so
//! every translation is checked by golden files.
//!
//! What does not cross: `thinking` and `redacted_thinking` blocks a client sends back are
//! dropped (their signatures are Anthropic's and must never reach an agent as if signed; the
//! agent never needs its own reasoning back); server tools (`web_search_…`, tool search) are
//! left out of the tools, and blocks other than text and images out of tool results. Unknown
//! fields (`thinking`, `context_management`, `output_config`, `cache_control` on blocks and
//! tools, ...) are accepted and ignored.

mod answer;
mod input;
mod message;
mod render;
mod request;

pub use answer::{MessageMeta, error_body, error_status, message_id, stop_reason};
pub use message::MessageCollector;
pub use render::StreamEncoder;
pub use request::{Endpoint, RequestInfo, parse_request};

#[cfg(test)]
mod tests;
