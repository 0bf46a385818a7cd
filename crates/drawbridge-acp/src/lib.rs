//! ACP client over an agent child process's stdio.
//!
//! One [`AgentProcess`] is one child (for example `kiro-cli acp`) spawned in its own process
//! group with a controlled environment, spoken to with the official `agent-client-protocol`
//! crate (protocol v1, JSON-RPC lines over stdin/stdout).
//!
//! - [`AgentProcess::start`] spawns the child and performs the `initialize` handshake, which
//!   tells the [`Engine`] (Kiro v2, Kiro v3, or another ACP agent).
//! - [`AgentProcess::new_session`] opens a session and reads the model catalogue it announces
//!   ([`ModelCatalogue`]: Kiro v2 `models`, or a `configOptions` model option; also kept as
//!   [`AgentProcess::models`]); [`AgentProcess::set_model`] chooses the session's model;
//!   [`AgentProcess::prompt_in`] runs a turn on it; [`AgentProcess::delete_session`] deletes
//!   it on agents that persist sessions (Kiro v3, `_kiro/session/delete`).
//! - [`AgentProcess::prompt`] does all of that for one throwaway session (no model choice):
//!   `session/new`, `session/prompt`, delete. Every frame of the session is streamed to a
//!   channel as an [`AgentEvent`] (text, thought, or [`Activity`] for tool calls, plans,
//!   metadata, usage...), and the turn returns its stop reason and the usage the agent
//!   reported ([`UsageReport`]: Kiro's credits and context use, token counts only when the
//!   agent reported them).
//! - Dropping an `AgentProcess` SIGKILLs the whole process group; [`AgentProcess::shutdown`]
//!   closes stdin first and waits for a grace period.
//!
//! What the agent asks of the client is refused: permission requests get a reject option (or
//! `cancelled`) unless a [`PermissionPolicy`] allows the offered kind, and each refusal reaches
//! the turn as [`AgentEvent::ToolRefused`]; every other request (`fs/*` and `terminal/*`,
//! which the client does not advertise; Kiro v3's `_kiro/auth/getAccessToken`) is answered
//! with JSON-RPC "method not found", logged (method only), remembered as
//! [`AgentProcess::unserved_request`], and told to every turn in progress as
//! [`AgentEvent::Unserved`]. [`AgentProcess::set_mode`] and
//! [`AgentProcess::set_config_option`] configure a session (Kiro v3: a custom agent as mode,
//! `autopilot` off).
//!
//! Events are sent to the caller's channel from the connection's dispatch loop, awaiting each
//! send: a slow consumer slows the agent down (backpressure through the pipe). Consume the
//! events concurrently with awaiting `prompt`, never after it, or a small channel deadlocks.

mod connection;
mod engine;
mod error;
mod events;
pub mod kiro;
mod permission;
mod process;
mod session;
mod spec;
mod stderr;
mod stdin;
mod usage;
mod wire;

pub use connection::GET_ACCESS_TOKEN_METHOD;
pub use engine::{AgentModel, Engine, ModelCatalogue, ModelSelector, SESSION_DELETE_METHOD};
pub use error::AcpError;
pub use events::{Activity, AgentEvent, StopReason};
pub use permission::{CLIENT_TOOLS_SERVER, PermissionPolicy};
pub use process::AgentProcess;
pub use session::{HttpMcpServer, PromptOutcome, Session};
pub use spec::AgentSpec;
pub use usage::{ContextWindow, TokenUsage, UsageReport};
