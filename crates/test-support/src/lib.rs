//! Test harness for Drawbridge's end-to-end tests: real binaries, real agent processes, real
//! HTTP. Panics are how it reports trouble: it is only ever used by tests.
#![expect(
    clippy::expect_used,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "a test harness fails loudly and shows the logs of what it started"
)]

pub mod backend;
pub mod chaos;
pub mod clock;
pub mod cluster;
pub mod fake_worker;
pub mod golden;
pub mod http;
pub use ::http::Method;
pub mod process;
pub mod provider;
pub mod redis;
pub mod sdk;
pub mod stack;
pub mod state;
pub mod wait;

pub use backend::{Script, ScriptedBackend};
pub use http::{Client, Reply};
pub use process::{Process, binary, processes_under};
pub use stack::{AccountSpec, Stack, StackOptions, WorkerUnderTest};
pub use wait::{PATIENCE, eventually, eventually_within};
