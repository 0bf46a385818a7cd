//! Drawbridge's shared state, behind traits with two implementations each: ValKey (any
//! Redis-compatible server, through fred) when `redis.url` is set, and an embedded one in process
//! otherwise. Both pass one conformance suite per trait family (`tests/registry.rs`,
//! `tests/control.rs`, `tests/gateway.rs`). This crate is the only place
//! that knows the ValKey key layout (see `valkey/keys.rs`).
//!
//! So far: the worker registry ([`Registry`]), the worker's heartbeat ([`heartbeat_loop`]), the
//! controller's fenced lease ([`LeaseStore`]) and desired accounts ([`AccountStore`]), the
//! accounts' credit balances ([`CreditStore`]), what the engines' schedulers share: circuit
//! breakers ([`BreakerStore`]), rate-limit cooldowns ([`CooldownStore`]) and session affinity
//! ([`AffinityStore`]); and the gateway's API keys ([`KeyStore`]), rate limits ([`RateLimiter`])
//! and usage ledger with quotas ([`UsageStore`]), and the Responses API's stored responses
//! ([`ResponseStore`]); the embedded gateway store keeps keys and usage
//! in a local data file ([`EmbeddedGatewayStore`]).

mod clock;
mod control;
mod credits;
mod data_file;
mod embedded;
mod embedded_control;
mod embedded_credits;
mod embedded_gateway;
mod embedded_routing;
mod error;
mod gateway;
mod heartbeat;
mod registry;
mod responses;
mod routing;
mod stores;
mod valkey;

pub use clock::Clock;
pub use control::{AccountRecord, AccountStore, CONTROLLER_LEASE, Lease, LeaseStore};
pub use credits::{
    Charge, CreditSnapshot, CreditStore, Grant, MAX_BALANCE, MILLI_CREDITS, from_milli, to_milli,
};
pub use embedded::EmbeddedRegistry;
pub use embedded_control::EmbeddedControl;
pub use embedded_credits::EmbeddedCredits;
pub use embedded_gateway::{EmbeddedGatewayStore, FLUSH_INTERVAL};
pub use embedded_routing::EmbeddedRouting;
pub use error::StateError;
pub use gateway::{
    ApiKeyRecord, CHARGE_DEDUP_MAX_IDS, CHARGE_DEDUP_WINDOW, CHARGE_RETRY_WINDOW,
    DEFAULT_USAGE_DAYS, KeyLimits, KeyStore, MAX_ID_LEN, Quota, QuotaDecision, QuotaUnit,
    RateDecision, RateLimiter, Spent, USAGE_RETENTION_DAYS, UsageEntry, UsageFilter, UsageRow,
    UsageStore, valid_id,
};
pub use heartbeat::{DEREGISTER_TIMEOUT, heartbeat_loop};
pub use registry::{PodRecord, PodStatus, Registry, StateFuture, TopologyEvent, TopologyStream};
pub use responses::{EmbeddedResponses, MAX_RESPONSE_ID, ResponseStore, valid_response_id};
pub use routing::{
    AffinityStore, BreakerRead, BreakerStore, CooldownStore, MAX_AFFINITY_KEY, MAX_ROUTING_TTL,
    Swap,
};
pub use stores::{Backing, Stores};
pub use valkey::{ValkeyOptions, ValkeyRegistry, redact_url};
