//! The client dialects' translations, pure and I/O-free: each maps its wire request to the
//! canonical request ([`ChatCompletionRequest`](crate::ChatCompletionRequest)) and the
//! canonical events ([`CompletionEvent`](crate::CompletionEvent)) to its wire answer. The
//! OpenAI chat dialect needs none: its wire format is the canonical one
//! ([`ChunkEncoder`](crate::ChunkEncoder), [`Collector`](crate::Collector)).

pub mod anthropic;
pub mod completions;
pub mod responses;
