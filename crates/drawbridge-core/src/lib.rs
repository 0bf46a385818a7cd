//! Drawbridge's domain logic. Nothing here does I/O or reads a clock: time, randomness and
//! state come in as arguments, so every rule is tested without sockets or sleeps.

pub mod breaker;
#[cfg(test)]
mod chunks;
pub mod continuation;
pub mod conversation;
pub mod day;
pub mod hex;
pub mod limits;
pub mod placement;
pub mod prompt;
pub mod route;
pub mod sanitize;
pub mod schedule;
pub mod tokens;
pub mod tool_tags;
