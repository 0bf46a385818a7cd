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
//! | `apikey:{id}` | hash | an API key ([`crate::ApiKeyRecord`]): `id`, `name`, `prefix`, `hash`, `created_at_ms`, `expires_at_ms`?, `revoked_at_ms`?, `last_used_at_ms`?, `limits` (JSON) |
//! | `apikeys` | sorted set | every key id, scored by `created_at_ms` |
//! | `apikeys:hash` | hash | SHA-256 of a key's secret → its id |
//! | `ratelimit:{subject}` | sorted set, TTL | one member per counted request, scored by its ValKey `TIME` in ms; TTL one window |
//! | `quota:{key_id}` | hash | what the key has spent: `tokens`, `credits`, `requests` |
//! | `quota:{key_id}:reserved` | hash, TTL | the key's requests in flight: request id → `EXPIRES_MS:AMOUNT` |
//! | `usage:{day}` | hash, TTL 400 days | the ledger of a UTC day: `METRIC:["key_id","account","model"]` → counter (`requests`, `prompt_tokens`, `completion_tokens`, `credits`, `estimated_requests`) |
//! | `charged` | sorted set, TTL | the request ids charged in the last 11 minutes, at most 100,000 (the oldest forgotten first), scored by ValKey `TIME` in ms: a retried charge is not counted twice |
//! | `credits:{id}` | integer | the account's balance in milli-credits (absent: unmetered) |
//! | `credits:{id}:grant` | integer | the last configured grant applied to the balance |
//! | `cb:{id}` | string | the account's circuit breaker, JSON (`drawbridge_core::breaker::Breaker`) |
//! | `cooldown:{id}` | string, TTL | present while the account rests after a rate-limit error |
//! | `affinity:{key}` | string, TTL | the account a conversation key sticks to |
//! | `response:{id}:{tenant}` | string, TTL | a stored Responses API response, JSON (ids hold no `:`) |

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

/// Prefix of an API key's hash.
pub(crate) const API_KEY_PREFIX: &str = "apikey:";
/// The sorted set of every API key id, by creation time.
pub(crate) const API_KEYS: &str = "apikeys";
/// The index from the SHA-256 of a key's secret to the key's id.
pub(crate) const API_KEY_HASHES: &str = "apikeys:hash";
/// Prefix of a rate-limit window.
pub(crate) const RATE_LIMIT_PREFIX: &str = "ratelimit:";
/// Prefix of a key's spent totals (and, with [`RESERVED_SUFFIX`], its reservations).
pub(crate) const QUOTA_PREFIX: &str = "quota:";
pub(crate) const RESERVED_SUFFIX: &str = ":reserved";
/// Prefix of a day's usage ledger.
pub(crate) const USAGE_PREFIX: &str = "usage:";
/// The sorted set of the request ids charged in the last
/// [`crate::gateway::CHARGE_DEDUP_WINDOW`] (at most [`crate::gateway::CHARGE_DEDUP_MAX_IDS`]),
/// scored by ValKey's `TIME` in ms: one key however many requests are served.
pub(crate) const CHARGED: &str = "charged";

pub(crate) fn api_key(id: &str) -> String {
    format!("{API_KEY_PREFIX}{id}")
}

pub(crate) fn rate_limit(subject: &str) -> String {
    format!("{RATE_LIMIT_PREFIX}{subject}")
}

pub(crate) fn quota_spent(key_id: &str) -> String {
    format!("{QUOTA_PREFIX}{key_id}")
}

pub(crate) fn quota_reserved(key_id: &str) -> String {
    format!("{QUOTA_PREFIX}{key_id}{RESERVED_SUFFIX}")
}

pub(crate) fn usage_day(day: &str) -> String {
    format!("{USAGE_PREFIX}{day}")
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

/// A tenant's stored response (with a TTL). Response ids hold no `:`, so the tenant after it
/// never makes two pairs one key.
pub(crate) fn response(tenant: &str, id: &str) -> String {
    format!("response:{id}:{tenant}")
}
