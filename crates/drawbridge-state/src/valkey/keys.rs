//! The ValKey key layout. Nothing outside this crate knows it; inside, only this module and the
//! Lua scripts (which take prefixes from here as arguments) spell a key.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `pod:{pod_id}` | string, TTL | the pod's JSON record ([`crate::PodRecord`]) |
//! | `pods` | set | every registered pod id (expired ones until a reader prunes them) |
//! | `model:{name}:pods` | set | the pods serving the model (pruned the same way) |
//! | `drawbridge:topology` | channel | `{"kind":"join"\|"leave"\|"drain"\|"update","pod_id":…}` |
//! | `leader:{name}` | string, TTL | `TOKEN:HOLDER` of the lease `name` (`leader:controller`) |
//! | `leader:{name}:epoch` | integer | the last fencing token handed out for `name` |
//! | `account:{id}` | string | a desired account's JSON ([`crate::AccountRecord`]: id, models, pool size, `assigned_pod`) |
//! | `accounts` | set | every desired account id |
//! | `credits:{id}` | integer | the account's balance in milli-credits (absent: unmetered) |
//! | `credits:{id}:grant` | integer | the last configured grant applied to the balance |
//! | `cb:{id}` | string | the account's circuit breaker, JSON (`drawbridge_core::breaker::Breaker`) |
//! | `cooldown:{id}` | string, TTL | present while the account rests after a rate-limit error |
//! | `affinity:{key}` | string, TTL | the account a conversation key sticks to |

/// Prefix of a pod's record.
pub(crate) const POD_PREFIX: &str = "pod:";
/// The set of every registered pod id.
pub(crate) const PODS: &str = "pods";
/// A model's set of pods is `MODEL_PREFIX + name + MODEL_SUFFIX`.
pub(crate) const MODEL_PREFIX: &str = "model:";
pub(crate) const MODEL_SUFFIX: &str = ":pods";
/// The pub/sub channel of topology events.
pub(crate) const TOPOLOGY_CHANNEL: &str = "drawbridge:topology";

pub(crate) fn pod(pod_id: &str) -> String {
    format!("{POD_PREFIX}{pod_id}")
}

pub(crate) fn model_pods(model: &str) -> String {
    format!("{MODEL_PREFIX}{model}{MODEL_SUFFIX}")
}

/// Prefix of a lease (`leader:controller`).
pub(crate) const LEASE_PREFIX: &str = "leader:";
/// Prefix of a desired account's record.
pub(crate) const ACCOUNT_PREFIX: &str = "account:";
/// The set of every desired account id.
pub(crate) const ACCOUNTS: &str = "accounts";

pub(crate) fn lease(name: &str) -> String {
    format!("{LEASE_PREFIX}{name}")
}

pub(crate) fn lease_epoch(name: &str) -> String {
    format!("{LEASE_PREFIX}{name}:epoch")
}

pub(crate) fn account(id: &str) -> String {
    format!("{ACCOUNT_PREFIX}{id}")
}

/// An account's balance, in milli-credits.
pub(crate) fn credits(id: &str) -> String {
    format!("credits:{id}")
}

/// The last configured grant applied to an account's balance (account ids hold no `:`, so
/// this never names another account's balance).
pub(crate) fn credit_grant(id: &str) -> String {
    format!("credits:{id}:grant")
}

/// An account's circuit breaker.
pub(crate) fn breaker(id: &str) -> String {
    format!("cb:{id}")
}

/// Present (with a TTL) while an account rests after a rate-limit error.
pub(crate) fn cooldown(id: &str) -> String {
    format!("cooldown:{id}")
}

/// The account a conversation key sticks to (with a TTL).
pub(crate) fn affinity(key: &str) -> String {
    format!("affinity:{key}")
}
