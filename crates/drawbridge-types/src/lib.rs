//! OpenAI wire types, SSE framing, the classified API error and the completion event stream.
//! Everything here is plain data and pure functions: no I/O, no runtime.

pub mod dialects;
pub mod error;
pub mod health;
pub mod openai;
pub mod rules;
pub mod sse;
pub mod stream;
pub mod tools;
mod validate;
pub mod worker;

pub use error::{ApiError, ErrorBody, ErrorKind, ErrorObject};
pub use health::{AccountView, CreditChange, HealthReport, HealthStatus, ProviderHealth};
pub use openai::{
    ChatCompletionRequest, ChatMessage, FinishReason, MessageContent, PromptTokensDetails, Role,
    Usage,
};
pub use stream::{
    ChunkEncoder, ChunkReader, Collector, CompletionEvent, CompletionMeta, Finish, Metering,
    unix_now,
};
pub use tools::{Tool, ToolChoice};
