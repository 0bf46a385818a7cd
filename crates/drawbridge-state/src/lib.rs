//! Drawbridge's shared state, behind traits with two implementations each: ValKey (any
//! Redis-compatible server, through fred) when `redis.url` is set, and an embedded one in process
//! otherwise. Both pass one conformance suite (`tests/registry.rs`). This crate is the only place
//! that knows the ValKey key layout (see `valkey/keys.rs`).
//!
//! So far: the worker registry ([`Registry`]), the worker's heartbeat ([`heartbeat_loop`]), the
//! controller's fenced lease ([`LeaseStore`]) and desired accounts ([`AccountStore`]), and the
//! accounts' credit balances ([`CreditStore`]).

mod control;
mod credits;
mod embedded;
mod embedded_control;
mod embedded_credits;
mod error;
mod heartbeat;
mod registry;
mod valkey;

pub use control::{AccountRecord, AccountStore, CONTROLLER_LEASE, Lease, LeaseStore};
pub use credits::{
    Charge, CreditSnapshot, CreditStore, Grant, MAX_BALANCE, MILLI_CREDITS, from_milli, to_milli,
};
pub use embedded::EmbeddedRegistry;
pub use embedded_control::EmbeddedControl;
pub use embedded_credits::EmbeddedCredits;
pub use error::StateError;
pub use heartbeat::{DEREGISTER_TIMEOUT, heartbeat_loop};
pub use registry::{PodRecord, PodStatus, Registry, StateFuture, TopologyEvent, TopologyStream};
pub use valkey::{ValkeyOptions, ValkeyRegistry, redact_url};
