//! The gateway's stores: API keys ([`KeyStore`]), per-subject sliding-window rate limits
//! ([`RateLimiter`]), and the usage ledger with per-key quotas ([`UsageStore`]). Two
//! implementations, ValKey ([`crate::ValkeyRegistry`]: shared by every gateway node) and
//! embedded ([`crate::EmbeddedGatewayStore`]: one process, keys and usage in a local data
//! file), pass one conformance suite (`tests/gateway.rs`). The rules they apply are pure
//! functions of `drawbridge_core::limits`.
//!
//! No secret reaches a store: a key is found by the SHA-256 of its secret, which the gateway
//! computes. Ids that become part of a store key (key ids) are checked with [`valid_id`].

use std::collections::BTreeMap;
use std::time::Duration;

pub use drawbridge_core::limits::RateDecision;
use serde::{Deserialize, Serialize};

use crate::clock::millis;
use crate::error::StateError;
use crate::registry::StateFuture;

/// How long usage rows are kept (both stores drop a day's rows this long after its last write:
/// ValKey by the day's TTL, the embedded store when it records usage, at most hourly) and the
/// longest range one [`UsageStore::usage`] query may span, in days.
pub const USAGE_RETENTION_DAYS: i64 = 400;
/// The days a usage query covers when it gives no `from_day`: the last 31, its last day
/// included.
pub const DEFAULT_USAGE_DAYS: i64 = 31;
/// How long a caller (the gateway's end of a request) keeps retrying a charge the store did not
/// answer, from its first try: the horizon within which the same request id may come again
/// (the gateway's `charge.rs` asserts that its retries stop within it).
pub const CHARGE_RETRY_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a recorded request id is remembered: recording it again within this time charges
/// nothing (a retry after a failure whose outcome was unclear cannot charge twice). The retry
/// horizon plus a minute, for the last try's own way to the store (a command times out in
/// seconds).
pub const CHARGE_DEDUP_WINDOW: Duration = Duration::from_secs(CHARGE_RETRY_WINDOW.as_secs() + 60);
/// The most request ids a store remembers for [`CHARGE_DEDUP_WINDOW`] (ValKey: one sorted set,
/// `charged`, for every gateway node; embedded: per process), so memory stays flat under any
/// load: about a minute of charges at 1,500 requests/s, and the whole window below about
/// 150/s. When more ids than this were charged within the window, the oldest is forgotten
/// first, before its window has passed: a retry of a charge that landed, whose answer was
/// lost, and that comes back only after this many newer charges landed, is charged again
/// (once more; the retries of one charge stop at the first answer).
pub const CHARGE_DEDUP_MAX_IDS: usize = 100_000;
const _: () = assert!(CHARGE_RETRY_WINDOW.as_secs() < CHARGE_DEDUP_WINDOW.as_secs());
/// The longest key id (and rate-limit subject) a store accepts, in bytes, and whether a string
/// is an id a store takes: the rule the config applies too, defined once in
/// `drawbridge_types::rules`.
pub use drawbridge_types::rules::{MAX_ID_LEN, valid_id};

/// An API key as stored: everything but its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// `key_` + 16 lowercase hex, made by the gateway; any [`valid_id`] is accepted.
    pub id: String,
    pub name: String,
    /// The first characters of the secret (`db-` + 7), to recognise a key in a list.
    pub prefix: String,
    /// Lowercase hex SHA-256 of the secret: how a request's key is found.
    pub hash: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
    /// The last use recorded by [`KeyStore::touch_key`] (the ValKey store records at most one
    /// use per second per key and gateway process, so this may be up to a second behind).
    #[serde(default)]
    pub last_used_at_ms: Option<u64>,
    #[serde(default)]
    pub limits: KeyLimits,
}

/// A key's own limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyLimits {
    /// Requests per minute; `None`: the gateway's default; `Some(0)`: unlimited.
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub quota: Option<Quota>,
    /// The models the key may use; empty: all.
    #[serde(default)]
    pub models: Vec<String>,
}

/// A key's budget: at most `limit` of `unit` in all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    pub unit: QuotaUnit,
    pub limit: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaUnit {
    /// Prompt plus completion tokens.
    Tokens,
    /// Kiro credits.
    Credits,
}

impl QuotaUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaUnit::Tokens => "tokens",
            QuotaUnit::Credits => "credits",
        }
    }
}

/// The API keys. Every gateway node reads the same store, so a change (a revocation) is
/// effective at once everywhere.
pub trait KeyStore: Send + Sync + 'static {
    /// Store a new key. [`StateError::Invalid`] if the id or the hash is already stored, the id
    /// is not a [`valid_id`], the hash is not 64 lowercase hex digits, or the quota's limit is
    /// not a finite number ≥ 0.
    fn create_key<'a>(&'a self, record: &'a ApiKeyRecord) -> StateFuture<'a, ()>;

    /// The key with this id, if any.
    fn key<'a>(&'a self, id: &'a str) -> StateFuture<'a, Option<ApiKeyRecord>>;

    /// The record whose `hash` is this (revoked and expired ones too: the caller decides).
    fn key_by_hash<'a>(&'a self, hash: &'a str) -> StateFuture<'a, Option<ApiKeyRecord>>;

    /// Every key, oldest first (by `created_at_ms`, then id).
    fn keys(&self) -> StateFuture<'_, Vec<ApiKeyRecord>>;

    /// Replace limits and expiry; `None` if no such key.
    fn update_key<'a>(
        &'a self,
        id: &'a str,
        limits: &'a KeyLimits,
        expires_at_ms: Option<u64>,
    ) -> StateFuture<'a, Option<ApiKeyRecord>>;

    /// Mark revoked at `at_ms` (a second revoke keeps the first time); `None` if no such key.
    /// Effective at once for every reader.
    fn revoke_key<'a>(&'a self, id: &'a str, at_ms: u64) -> StateFuture<'a, Option<ApiKeyRecord>>;

    /// Record a use at `at_ms` (`last_used_at_ms` only moves forward). Called on every request,
    /// so cheap: the embedded store writes it to disk behind, the ValKey store at most once per
    /// second per key and process. A key that does not exist is ignored.
    fn touch_key<'a>(&'a self, id: &'a str, at_ms: u64) -> StateFuture<'a, ()>;
}

/// Sliding-window rate limits, shared by every gateway node (ValKey) or in process (embedded).
pub trait RateLimiter: Send + Sync + 'static {
    /// Sliding window: count one request of `subject` if fewer than `limit` requests of it fall
    /// in the last `window`; a refused request is not counted (see
    /// [`drawbridge_core::limits::sliding_window`] for the fields). ValKey: one Lua script on a
    /// sorted set, stamped with ValKey's `TIME`. Embedded: in process, on the store's clock.
    /// A `limit` of 0 or a window under 1 ms is [`StateError::Invalid`] ("unlimited" is the
    /// caller's decision: it does not call).
    fn hit<'a>(
        &'a self,
        subject: &'a str,
        limit: u32,
        window: Duration,
    ) -> StateFuture<'a, RateDecision>;
}

/// One request's usage, recorded when it ends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageEntry {
    /// The id its reservation was made under: unique per request (the gateway makes its own;
    /// a client-chosen `x-request-id` may repeat, and would let requests share one
    /// reservation).
    pub request_id: String,
    pub key_id: String,
    pub account: String,
    pub model: String,
    /// When the request ended, ms since the epoch: its ledger day is this instant's UTC day.
    pub at_ms: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub credits: f64,
    /// Whether the token counts are estimates (the agent reported none).
    pub tokens_estimated: bool,
}

/// Which ledger rows to read; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageFilter {
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive; `None`: [`DEFAULT_USAGE_DAYS`] days up to
    /// `to_day`.
    #[serde(default)]
    pub from_day: Option<String>,
    /// Last day, inclusive; `None`: today (the store's clock).
    #[serde(default)]
    pub to_day: Option<String>,
}

/// One ledger row: the requests of one key through one account and model on one day.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub day: String,
    pub key_id: String,
    pub account: String,
    pub model: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub credits: f64,
    /// How many of the requests had estimated token counts.
    pub estimated_requests: u64,
}

/// The answer to [`UsageStore::reserve`]. `spent`, `reserved` and `in_flight` are the key's
/// before this request (its own reservation not included).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuotaDecision {
    pub allowed: bool,
    /// What the key has spent, in the quota's unit.
    pub spent: f64,
    /// What the key's other requests in flight have reserved.
    pub reserved: f64,
    /// How many of the key's other requests hold a reservation.
    pub in_flight: u32,
}

/// What a key has spent in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// Prompt plus completion tokens.
    pub tokens: u64,
    pub credits: f64,
    pub requests: u64,
}

impl Spent {
    /// The spent amount in a quota's unit.
    pub fn in_unit(&self, unit: QuotaUnit) -> f64 {
        match unit {
            QuotaUnit::Tokens => self.tokens as f64,
            QuotaUnit::Credits => self.credits,
        }
    }
}

/// The usage ledger and the per-key quotas.
pub trait UsageStore: Send + Sync + 'static {
    /// Admit one request of `key_id` against `quota`, reserving `amount` (in the quota's unit)
    /// for it under `request_id` until it is recorded or `ttl` passes (a gateway that died
    /// mid-request does not hold the reservation forever). Allowed iff
    /// [`drawbridge_core::limits::quota_admits`]: `spent < limit && (in_flight == 0 ||
    /// spent + reserved + amount <= limit)`, with spent, reserved and in_flight the key's
    /// before this request. A refused request reserves nothing; reserving again under the same
    /// `request_id` replaces that request's reservation. Atomic (ValKey: one Lua script).
    fn reserve<'a>(
        &'a self,
        key_id: &'a str,
        request_id: &'a str,
        quota: &'a Quota,
        amount: f64,
        ttl: Duration,
    ) -> StateFuture<'a, QuotaDecision>;

    /// A request ended: drop its reservation (if any), add it to the key's spent totals and to
    /// the ledger row (UTC day of `at_ms`, key, account, model); atomic. A second call with the
    /// same request id within [`CHARGE_DEDUP_WINDOW`] charges nothing, so a call whose outcome
    /// is unclear (a timeout) can be retried, unless [`CHARGE_DEDUP_MAX_IDS`] newer ids were
    /// charged since (the store forgets the oldest first: its memory is bounded).
    fn record_usage<'a>(&'a self, entry: &'a UsageEntry) -> StateFuture<'a, ()>;

    /// A request ended with nothing to charge (it failed before any answer reached the
    /// client): drop its reservation, if it still has one. Nothing is added to the ledger.
    fn release<'a>(&'a self, key_id: &'a str, request_id: &'a str) -> StateFuture<'a, ()>;

    /// What the key has spent in all (zero for a key that has recorded nothing).
    fn spent<'a>(&'a self, key_id: &'a str) -> StateFuture<'a, Spent>;

    /// Ledger rows matching the filter, sorted by day, key, account, model. Without `from_day`,
    /// the last [`DEFAULT_USAGE_DAYS`] days up to `to_day` (default today). A malformed day or
    /// a range longer than [`USAGE_RETENTION_DAYS`] is [`StateError::Invalid`]; a range that
    /// ends before it starts is empty.
    fn usage<'a>(&'a self, filter: &'a UsageFilter) -> StateFuture<'a, Vec<UsageRow>>;
}

/// [`valid_id`] as a [`StateError::Invalid`] naming `what` ("a key id", "an account id").
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), StateError> {
    drawbridge_types::rules::check_id(id).map_err(|_| {
        StateError::Invalid(format!(
            "{what} must be 1 to {MAX_ID_LEN} of {}",
            drawbridge_types::rules::ID_CHARS
        ))
    })
}

/// Whether `hash` looks like what the gateway stores: 64 lowercase hex digits. Refusing
/// anything else keeps a secret from being stored by mistake in place of its hash.
pub(crate) fn valid_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) fn check_limits(limits: &KeyLimits) -> Result<(), StateError> {
    match &limits.quota {
        Some(quota) if !(quota.limit.is_finite() && quota.limit >= 0.0) => Err(
            StateError::Invalid("a quota limit must be a finite number ≥ 0".into()),
        ),
        _ => Ok(()),
    }
}

pub(crate) fn check_record(record: &ApiKeyRecord) -> Result<(), StateError> {
    check_id("a key id", &record.id)?;
    if !valid_hash(&record.hash) {
        return Err(StateError::Invalid(format!(
            "key {}: the hash must be 64 lowercase hex digits (SHA-256 of the secret)",
            record.id
        )));
    }
    check_limits(&record.limits)
}

pub(crate) fn check_hit(subject: &str, limit: u32, window: Duration) -> Result<u64, StateError> {
    if subject.is_empty() || subject.len() > MAX_ID_LEN {
        return Err(StateError::Invalid(format!(
            "a rate-limit subject must be 1 to {MAX_ID_LEN} bytes"
        )));
    }
    if limit == 0 {
        return Err(StateError::Invalid(format!(
            "rate limit of {subject}: a limit must be at least 1"
        )));
    }
    let window_ms = millis(window);
    if window_ms == 0 {
        return Err(StateError::Invalid(format!(
            "rate limit of {subject}: the window must be at least 1 ms"
        )));
    }
    Ok(window_ms)
}

pub(crate) fn check_reserve(
    key_id: &str,
    request_id: &str,
    quota: &Quota,
    amount: f64,
    ttl: Duration,
) -> Result<u64, StateError> {
    check_id("a key id", key_id)?;
    if request_id.is_empty() {
        return Err(StateError::Invalid("a request id must not be empty".into()));
    }
    if !(quota.limit.is_finite() && quota.limit >= 0.0) {
        return Err(StateError::Invalid(format!(
            "quota of {key_id}: the limit must be a finite number ≥ 0"
        )));
    }
    if !(amount.is_finite() && amount >= 0.0) {
        return Err(StateError::Invalid(format!(
            "quota of {key_id}: the amount must be a finite number ≥ 0"
        )));
    }
    let ttl_ms = millis(ttl);
    if ttl_ms == 0 {
        return Err(StateError::Invalid(format!(
            "quota of {key_id}: a reservation TTL must be at least 1 ms"
        )));
    }
    Ok(ttl_ms)
}

pub(crate) fn check_entry(entry: &UsageEntry) -> Result<(), StateError> {
    check_id("a key id", &entry.key_id)?;
    if entry.request_id.is_empty() {
        return Err(StateError::Invalid("a request id must not be empty".into()));
    }
    if !(entry.credits.is_finite() && entry.credits >= 0.0) {
        return Err(StateError::Invalid(format!(
            "usage of {}: credits must be a finite number ≥ 0",
            entry.request_id
        )));
    }
    Ok(())
}

/// The days a filter covers, as day numbers (`from > to`: none), given today's.
pub(crate) fn day_range(filter: &UsageFilter, today: i64) -> Result<(i64, i64), StateError> {
    let parse = |name: &str, text: &Option<String>| -> Result<Option<i64>, StateError> {
        text.as_deref()
            .map(|day| {
                drawbridge_core::day::parse_day(day).ok_or_else(|| {
                    StateError::Invalid(format!("{name} must be a date as YYYY-MM-DD"))
                })
            })
            .transpose()
    };
    let to = parse("to_day", &filter.to_day)?.unwrap_or(today);
    let from = parse("from_day", &filter.from_day)?.unwrap_or(to - (DEFAULT_USAGE_DAYS - 1));
    if to - from + 1 > USAGE_RETENTION_DAYS {
        return Err(StateError::Invalid(format!(
            "a usage range spans at most {USAGE_RETENTION_DAYS} days"
        )));
    }
    Ok((from, to))
}

/// Which ledger row a usage entry lands in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RowKey {
    pub day: String,
    pub key_id: String,
    pub account: String,
    pub model: String,
}

impl RowKey {
    pub(crate) fn of(entry: &UsageEntry) -> RowKey {
        RowKey {
            day: drawbridge_core::day::utc_day(entry.at_ms),
            key_id: entry.key_id.clone(),
            account: entry.account.clone(),
            model: entry.model.clone(),
        }
    }

    pub(crate) fn matches(&self, filter: &UsageFilter) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&filter.key_id, &self.key_id)
            && is(&filter.account, &self.account)
            && is(&filter.model, &self.model)
    }
}

/// The counters of one ledger row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RowTotals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub credits: f64,
    pub estimated_requests: u64,
}

impl RowTotals {
    pub(crate) fn add(&mut self, entry: &UsageEntry) {
        self.requests += 1;
        self.prompt_tokens = self.prompt_tokens.saturating_add(entry.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(entry.completion_tokens);
        self.credits += entry.credits;
        self.estimated_requests += u64::from(entry.tokens_estimated);
    }

    pub(crate) fn row(&self, key: &RowKey) -> UsageRow {
        UsageRow {
            day: key.day.clone(),
            key_id: key.key_id.clone(),
            account: key.account.clone(),
            model: key.model.clone(),
            requests: self.requests,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            credits: self.credits,
            estimated_requests: self.estimated_requests,
        }
    }
}

impl Spent {
    pub(crate) fn add(&mut self, entry: &UsageEntry) {
        self.tokens = self
            .tokens
            .saturating_add(entry.prompt_tokens)
            .saturating_add(entry.completion_tokens);
        self.credits += entry.credits;
        self.requests += 1;
    }
}

/// The rows of `rows` that match `filter` in its day range, in order.
pub(crate) fn select_rows<'a>(
    rows: impl IntoIterator<Item = (&'a RowKey, &'a RowTotals)>,
    filter: &UsageFilter,
    (from, to): (i64, i64),
) -> Vec<UsageRow> {
    let first = drawbridge_core::day::format_day(from);
    let last = drawbridge_core::day::format_day(to);
    let selected: BTreeMap<&RowKey, &RowTotals> = rows
        .into_iter()
        .filter(|(key, _)| key.day >= first && key.day <= last && key.matches(filter))
        .collect();
    selected
        .into_iter()
        .map(|(key, totals)| totals.row(key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stores apply the id rule of `drawbridge_types::rules`, the one the config applies:
    /// an account id the config refuses for its length is refused here too, and the longest
    /// it accepts is taken.
    #[test]
    fn ids_follow_the_shared_rule() {
        let long = "a".repeat(200);
        assert!(drawbridge_types::rules::check_id(&long).is_err());
        let Err(StateError::Invalid(message)) = crate::credits::validate_account_id(&long) else {
            panic!("a 200-character account id was taken");
        };
        assert_eq!(
            message,
            "an account id must be 1 to 128 of A-Z a-z 0-9 _ - ."
        );
        for id in ["", "a:b", "a b", &long, &"a".repeat(MAX_ID_LEN)] {
            assert_eq!(
                check_id("a key id", id).is_ok(),
                drawbridge_types::rules::valid_id(id),
                "{id}"
            );
        }
    }

    #[test]
    fn only_hashes_are_stored_as_hashes() {
        assert!(valid_hash(&"ab".repeat(32)));
        assert!(!valid_hash(&"AB".repeat(32)));
        assert!(!valid_hash("db-0123456789abcdef0123456789abcdef"));
        assert!(!valid_hash(&"ab".repeat(33)));
    }

    #[test]
    fn day_ranges_default_to_the_last_31_days() {
        let today = drawbridge_core::day::parse_day("2026-03-31").unwrap();
        let range = |from: Option<&str>, to: Option<&str>| {
            day_range(
                &UsageFilter {
                    from_day: from.map(Into::into),
                    to_day: to.map(Into::into),
                    ..UsageFilter::default()
                },
                today,
            )
            .map(|(f, t)| {
                (
                    drawbridge_core::day::format_day(f),
                    drawbridge_core::day::format_day(t),
                )
            })
        };
        let pair = |a: &str, b: &str| Ok((a.to_owned(), b.to_owned()));
        assert_eq!(range(None, None), pair("2026-03-01", "2026-03-31"));
        assert_eq!(
            range(None, Some("2026-02-28")),
            pair("2026-01-29", "2026-02-28")
        );
        assert_eq!(
            range(Some("2026-03-30"), None),
            pair("2026-03-30", "2026-03-31")
        );
        assert!(matches!(
            range(Some("2026-3-30"), None),
            Err(StateError::Invalid(_))
        ));
        assert!(matches!(
            range(Some("2024-01-01"), None),
            Err(StateError::Invalid(_))
        ));
        // Backwards: an empty range, not an error.
        let (from, to) = day_range(
            &UsageFilter {
                from_day: Some("2026-04-02".into()),
                ..UsageFilter::default()
            },
            today,
        )
        .unwrap();
        assert!(from > to);
    }
}
