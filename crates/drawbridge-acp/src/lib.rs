//! ACP client over an agent child process's stdio.
//!
//! One [`AgentProcess`] is one child (for example `kiro-cli acp`) spawned in its own process
//! group with a controlled environment, spoken to with the official `agent-client-protocol`
//! crate (protocol v1, JSON-RPC lines over stdin/stdout).
//!
//! - [`AgentProcess::start`] spawns the child and performs the `initialize` handshake.
//! - [`AgentProcess::prompt`] runs one request as one fresh ACP session (`session/new`, then
//!   `session/prompt`), streaming the session's text and thought chunks to a channel and
//!   returning the stop reason and the usage the agent reported (Kiro metering included).
//! - Dropping an `AgentProcess` SIGKILLs the whole process group; [`AgentProcess::shutdown`]
//!   closes stdin first and waits for a grace period.
//!
//! What the agent asks of the client is refused: permission requests get a reject option (or
//! `cancelled`) unless a [`PermissionPolicy`] allows the offered kind, and `fs/*` and
//! `terminal/*` requests are answered with JSON-RPC "method not found" by the ACP crate, because
//! the client advertises neither capability.
//!
//! Events are sent to the caller's channel from the connection's dispatch loop, awaiting each
//! send: a slow consumer slows the agent down (backpressure through the pipe). Consume the
//! events concurrently with awaiting `prompt`, never after it, or a small channel deadlocks.

mod error;
pub mod kiro;
mod permission;
mod process;
mod spec;
mod stderr;
mod stdin;
mod usage;

pub use error::AcpError;
pub use permission::PermissionPolicy;
pub use process::{AgentEvent, AgentProcess, PromptOutcome, Session, StopReason};
pub use spec::AgentSpec;
pub use usage::UsageReport;
