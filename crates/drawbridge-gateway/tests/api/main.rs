//! The gateway's public API and admin API through its router, in process (`oneshot`, no
//! socket), on a scripted backend and an in-memory store, on paused time.

#![expect(
    clippy::unwrap_used,
    reason = "the harness fails the test loudly on what it cannot read"
)]

mod admin;
mod common;
mod public;
mod responses;
