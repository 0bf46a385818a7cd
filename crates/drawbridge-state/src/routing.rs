//! What the engines' schedulers share besides credits: each account's circuit breaker
//! ([`BreakerStore`]), its rate-limit cooldown ([`CooldownStore`]) and which account each
//! conversation sticks to ([`AffinityStore`]). Two implementations, ValKey
//! ([`crate::ValkeyRegistry`]) and embedded ([`crate::EmbeddedRouting`]), pass one conformance
//! suite (`tests/routing.rs`).
//!
//! Times are the store's: ValKey's `TIME` (every engine reads one clock), or this process's
//! clock for the embedded store.

use std::time::Duration;

use crate::credits::validate_account_id;
use crate::error::StateError;
use crate::registry::StateFuture;

/// Stored breakers, as read at one instant of the store's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerRead {
    /// Each account's breaker as stored (the JSON text of `drawbridge_core::breaker::Breaker`,
    /// opaque to the store), `None` when it was never written.
    pub values: Vec<Option<String>>,
    /// The store's clock at the read, in ms since the Unix epoch.
    pub now_ms: u64,
}

/// How a compare-and-set ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// The new value is stored.
    Done { now_ms: u64 },
    /// Another writer changed the value first: this is what is stored now.
    Conflict {
        current: Option<String>,
        now_ms: u64,
    },
}

impl Swap {
    /// The store's clock when the swap ran, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            Swap::Done { now_ms } | Swap::Conflict { now_ms, .. } => *now_ms,
        }
    }
}

/// Each account's circuit breaker (`cb:{id}`), one value shared by every engine. The store
/// does not interpret it: writers read it, compute the next state, and write it back with
/// [`BreakerStore::swap_breaker`], which refuses if anyone wrote in between (then they read
/// the new value and compute again).
pub trait BreakerStore: Send + Sync + 'static {
    /// The breakers of `accounts`, in order, and the store's clock.
    fn breakers<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, BreakerRead>;

    /// Store `new` as `account`'s breaker if the stored value is still exactly `expected`
    /// (`None`: nothing stored).
    fn swap_breaker<'a>(
        &'a self,
        account: &'a str,
        expected: Option<&'a str>,
        new: &'a str,
    ) -> StateFuture<'a, Swap>;
}

/// Accounts resting after a rate-limit error (`cooldown:{id}`, with a TTL): the scheduler
/// skips them until the time they asked for has passed.
pub trait CooldownStore: Send + Sync + 'static {
    /// Rest `account` for `duration` from now; a longer cooldown already running is kept.
    fn cool_down<'a>(&'a self, account: &'a str, duration: Duration) -> StateFuture<'a, ()>;

    /// How long each of `accounts` still rests, in order (`None`: not cooling down).
    fn cooldowns<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, Vec<Option<Duration>>>;
}

/// Session affinity (`affinity:{key}`, with a TTL): the account a conversation key last
/// used.
pub trait AffinityStore: Send + Sync + 'static {
    /// The account `key` sticks to, if its binding has not expired.
    fn affinity<'a>(&'a self, key: &'a str) -> StateFuture<'a, Option<String>>;

    /// Bind `key` to `account` for `ttl` from now (replacing any binding).
    fn set_affinity<'a>(
        &'a self,
        key: &'a str,
        account: &'a str,
        ttl: Duration,
    ) -> StateFuture<'a, ()>;
}

/// The longest conversation key the stores take.
pub const MAX_AFFINITY_KEY: usize = 256;

pub(crate) fn validate_affinity_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() || key.len() > MAX_AFFINITY_KEY {
        return Err(StateError::Invalid(format!(
            "a conversation key must be 1 to {MAX_AFFINITY_KEY} bytes"
        )));
    }
    Ok(())
}

pub(crate) fn validate_breaker(account: &str, value: &str) -> Result<(), StateError> {
    validate_account_id(account)?;
    if value.is_empty() {
        return Err(StateError::Invalid(
            "a breaker value must not be empty".into(),
        ));
    }
    Ok(())
}

/// The longest cooldown or affinity TTL the stores take (30 days), the cap the config applies
/// too (defined once in `drawbridge_types::rules`).
pub use drawbridge_types::rules::MAX_ROUTING_TTL;

pub(crate) fn validate_ttl(what: &str, ttl: Duration) -> Result<(), StateError> {
    if ttl.as_millis() == 0 {
        return Err(StateError::Invalid(format!(
            "the {what} must be at least 1 ms"
        )));
    }
    if ttl > MAX_ROUTING_TTL {
        return Err(StateError::Invalid(format!(
            "the {what} must be at most {} days, not {ttl:?}",
            MAX_ROUTING_TTL.as_secs() / 86_400
        )));
    }
    Ok(())
}

pub(crate) fn validate_accounts(accounts: &[String]) -> Result<(), StateError> {
    accounts.iter().try_for_each(|a| validate_account_id(a))
}
