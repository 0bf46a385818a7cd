//! The OpenAI Responses API (`POST /v1/responses`), as Codex and the official SDKs speak it:
//! the request read into the canonical request, and the canonical events written back as a
//! `response` object or its stream of typed events.
//!
//! A request is read in two steps: [`ResponsesRequest::from_json`] (the body's shape), then
//! [`ResponsesRequest::translate`] with the stored response its `previous_response_id` names,
//! if any (loading it is the caller's I/O). The conversation sent upstream is the
//! `instructions` (a system message), the previous response's input and output items, then
//! this request's input items. `reasoning` items are kept in the stored conversation but never
//! sent upstream. Tools other than `function` tools (hosted tools Drawbridge cannot run) are
//! ignored: they are echoed on the response but not offered to the model.
//!
//! [`ResponseEncoder`] writes one answer: the stream's events (each with its
//! `sequence_number`), and the final `response` object, which the caller stores before the
//! last event leaves so that a client chaining at once finds it.

mod items;
mod render;
mod request;
mod stored;

pub use render::{ResponseEncoder, new_response_id};
pub use request::{ResponsesRequest, Translated};
pub use stored::{StoredResponse, previous_not_found, response_not_found};

#[cfg(test)]
mod tests;
