//! The gateway's stores on ValKey: API keys, rate-limit windows, quotas and the usage ledger
//! (see `keys.rs`). Whatever changes several keys, or must read ValKey's clock, is one Lua
//! script.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use drawbridge_core::day;
use fred::prelude::HashesInterface;
use fred::types::Value;
use fred::types::scripts::Script;

use super::{ValkeyRegistry, keys};
use crate::error::StateError;
use crate::gateway::{
    ApiKeyRecord, CHARGE_DEDUP_MAX_IDS, CHARGE_DEDUP_WINDOW, KeyLimits, KeyStore, Quota,
    QuotaDecision, RateDecision, RateLimiter, RowKey, RowTotals, Spent, USAGE_RETENTION_DAYS,
    UsageEntry, UsageFilter, UsageRow, UsageStore, check_entry, check_hit, check_id, check_limits,
    check_record, check_reserve, day_range, select_rows, valid_id,
};
use crate::registry::StateFuture;

static CREATE_KEY: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("create_key.lua")));
static KEY_BY_HASH: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("key_by_hash.lua")));
static LIST_KEYS: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("list_keys.lua")));
static UPDATE_KEY: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("update_key.lua")));
static REVOKE_KEY: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("revoke_key.lua")));
static TOUCH_KEY: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("touch_key.lua")));
static RATE_HIT: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("rate_hit.lua")));
static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("reserve.lua")));
static RECORD_USAGE: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("record_usage.lua")));
static USAGE_DAYS: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("usage_days.lua")));
static TIME: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("time.lua")));

/// A key's last use is written at most this often per key by one process.
const TOUCH_INTERVAL_MS: u64 = 1_000;

/// This process's last-use writes, so that [`KeyStore::touch_key`] on every request costs a
/// round trip at most once per second per key.
#[derive(Debug, Default)]
pub(crate) struct TouchThrottle {
    written: Mutex<HashMap<String, u64>>,
}

impl TouchThrottle {
    /// Whether a use at `at_ms` is worth writing: none of this process was written in the
    /// last [`TOUCH_INTERVAL_MS`] before it.
    fn due(&self, id: &str, at_ms: u64) -> bool {
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        written
            .get(id)
            .is_none_or(|&last| at_ms >= last.saturating_add(TOUCH_INTERVAL_MS))
    }

    fn wrote(&self, id: &str, at_ms: u64) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let last = written.entry(id.to_owned()).or_default();
        *last = (*last).max(at_ms);
    }
}

/// Field names of a key's hash (also spelled by the key scripts).
mod field {
    pub const ID: &str = "id";
    pub const NAME: &str = "name";
    pub const PREFIX: &str = "prefix";
    pub const HASH: &str = "hash";
    pub const CREATED: &str = "created_at_ms";
    pub const EXPIRES: &str = "expires_at_ms";
    pub const REVOKED: &str = "revoked_at_ms";
    pub const LAST_USED: &str = "last_used_at_ms";
    pub const LIMITS: &str = "limits";
}

fn limits_json(id: &str, limits: &KeyLimits) -> Result<String, StateError> {
    serde_json::to_string(limits)
        .map_err(|error| StateError::Invalid(format!("limits of key {id}: {error}")))
}

/// A record as the fields and values of its hash (absent options are absent fields).
fn record_fields(record: &ApiKeyRecord) -> Result<Vec<String>, StateError> {
    let mut fields = vec![
        field::ID.to_owned(),
        record.id.clone(),
        field::NAME.to_owned(),
        record.name.clone(),
        field::PREFIX.to_owned(),
        record.prefix.clone(),
        field::HASH.to_owned(),
        record.hash.clone(),
        field::CREATED.to_owned(),
        record.created_at_ms.to_string(),
        field::LIMITS.to_owned(),
        limits_json(&record.id, &record.limits)?,
    ];
    for (name, value) in [
        (field::EXPIRES, record.expires_at_ms),
        (field::REVOKED, record.revoked_at_ms),
        (field::LAST_USED, record.last_used_at_ms),
    ] {
        if let Some(value) = value {
            fields.push(name.to_owned());
            fields.push(value.to_string());
        }
    }
    Ok(fields)
}

/// A record from the fields of its hash; `None` for an empty hash (no such key).
fn record_from(fields: HashMap<String, String>) -> Result<Option<ApiKeyRecord>, StateError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let id = fields.get(field::ID).cloned().unwrap_or_default();
    let corrupt = |what: &str| StateError::Corrupt(format!("api key {id:?}: {what}"));
    let text = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| corrupt(&format!("no {name}")))
    };
    let number = |name: &str| -> Result<Option<u64>, StateError> {
        fields
            .get(name)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| corrupt(&format!("{name} {value:?}")))
            })
            .transpose()
    };
    let limits = match fields.get(field::LIMITS) {
        Some(json) => serde_json::from_str(json).map_err(|error| corrupt(&error.to_string()))?,
        None => KeyLimits::default(),
    };
    Ok(Some(ApiKeyRecord {
        name: text(field::NAME)?,
        prefix: text(field::PREFIX)?,
        hash: text(field::HASH)?,
        created_at_ms: number(field::CREATED)?.ok_or_else(|| corrupt("no created_at_ms"))?,
        expires_at_ms: number(field::EXPIRES)?,
        revoked_at_ms: number(field::REVOKED)?,
        last_used_at_ms: number(field::LAST_USED)?,
        limits,
        id,
    }))
}

/// A flat `HGETALL` array (as a script returns it) as a map.
fn fields_of(value: Value) -> Result<HashMap<String, String>, StateError> {
    value
        .convert()
        .map_err(|error| StateError::Corrupt(format!("a stored hash: {error}")))
}

/// A number as ValKey takes it: Rust's shortest round-trip decimal, never an exponent.
fn decimal(value: f64) -> String {
    format!("{value}")
}

impl ValkeyRegistry {
    /// ValKey's clock, in ms since the epoch.
    async fn server_now_ms(&self) -> Result<u64, StateError> {
        let time: Vec<String> = self.run("time", &TIME, Vec::new(), Vec::new()).await?;
        let part = |i: usize| -> Result<u64, StateError> {
            time.get(i)
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| StateError::Corrupt(format!("TIME answered {time:?}")))
        };
        Ok(part(0)? * 1_000 + part(1)? / 1_000)
    }

    async fn key_script(
        &self,
        op: &str,
        script: &Script,
        id: &str,
        args: Vec<String>,
    ) -> Result<Option<ApiKeyRecord>, StateError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let value: Value = self.run(op, script, vec![keys::api_key(id)], args).await?;
        record_from(fields_of(value)?)
    }
}

impl KeyStore for ValkeyRegistry {
    fn create_key<'a>(&'a self, record: &'a ApiKeyRecord) -> StateFuture<'a, ()> {
        Box::pin(async move {
            check_record(record)?;
            let mut args = vec![
                record.id.clone(),
                record.hash.clone(),
                record.created_at_ms.to_string(),
            ];
            args.extend(record_fields(record)?);
            let stored: i64 = self
                .run(
                    "create_key",
                    &CREATE_KEY,
                    vec![
                        keys::api_key(&record.id),
                        keys::API_KEY_HASHES.to_owned(),
                        keys::API_KEYS.to_owned(),
                    ],
                    args,
                )
                .await?;
            match stored {
                1 => Ok(()),
                -1 => Err(StateError::Invalid(format!(
                    "a key with id {} already exists",
                    record.id
                ))),
                _ => Err(StateError::Invalid(format!(
                    "key {}: another key has the same secret hash",
                    record.id
                ))),
            }
        })
    }

    fn key<'a>(&'a self, id: &'a str) -> StateFuture<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            if !valid_id(id) {
                return Ok(None);
            }
            let fields: HashMap<String, String> = self
                .bounded("key", self.client.hgetall(keys::api_key(id)))
                .await?;
            record_from(fields)
        })
    }

    fn key_by_hash<'a>(&'a self, hash: &'a str) -> StateFuture<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            let value: Value = self
                .run(
                    "key_by_hash",
                    &KEY_BY_HASH,
                    vec![keys::API_KEY_HASHES.to_owned()],
                    vec![hash.to_owned(), keys::API_KEY_PREFIX.to_owned()],
                )
                .await?;
            record_from(fields_of(value)?)
        })
    }

    fn keys(&self) -> StateFuture<'_, Vec<ApiKeyRecord>> {
        Box::pin(async move {
            let stored: Vec<Value> = self
                .run(
                    "keys",
                    &LIST_KEYS,
                    vec![keys::API_KEYS.to_owned()],
                    vec![keys::API_KEY_PREFIX.to_owned()],
                )
                .await?;
            let mut records = Vec::with_capacity(stored.len());
            for value in stored {
                match fields_of(value).and_then(record_from) {
                    Ok(Some(record)) => records.push(record),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(store = %self.target, %error, "skipping an unreadable api key");
                    }
                }
            }
            Ok(records)
        })
    }

    fn update_key<'a>(
        &'a self,
        id: &'a str,
        limits: &'a KeyLimits,
        expires_at_ms: Option<u64>,
    ) -> StateFuture<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            check_limits(limits)?;
            let args = vec![
                limits_json(id, limits)?,
                expires_at_ms.map(|ms| ms.to_string()).unwrap_or_default(),
            ];
            self.key_script("update_key", &UPDATE_KEY, id, args).await
        })
    }

    fn revoke_key<'a>(&'a self, id: &'a str, at_ms: u64) -> StateFuture<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            self.key_script("revoke_key", &REVOKE_KEY, id, vec![at_ms.to_string()])
                .await
        })
    }

    fn touch_key<'a>(&'a self, id: &'a str, at_ms: u64) -> StateFuture<'a, ()> {
        Box::pin(async move {
            if !valid_id(id) || !self.touched.due(id, at_ms) {
                return Ok(());
            }
            let _: i64 = self
                .run(
                    "touch_key",
                    &TOUCH_KEY,
                    vec![keys::api_key(id)],
                    vec![at_ms.to_string()],
                )
                .await?;
            self.touched.wrote(id, at_ms);
            Ok(())
        })
    }
}

impl RateLimiter for ValkeyRegistry {
    fn hit<'a>(
        &'a self,
        subject: &'a str,
        limit: u32,
        window: Duration,
    ) -> StateFuture<'a, RateDecision> {
        Box::pin(async move {
            let window_ms = check_hit(subject, limit, window)?;
            let reply: Vec<i64> = self
                .run(
                    "rate_limit",
                    &RATE_HIT,
                    vec![keys::rate_limit(subject)],
                    vec![limit.to_string(), window_ms.to_string()],
                )
                .await?;
            let number = |i: usize| -> Result<u64, StateError> {
                reply
                    .get(i)
                    .and_then(|&n| u64::try_from(n).ok())
                    .ok_or_else(|| StateError::Corrupt(format!("rate limit answered {reply:?}")))
            };
            Ok(RateDecision {
                allowed: number(0)? == 1,
                limit,
                remaining: u32::try_from(number(1)?).unwrap_or(u32::MAX),
                reset_at_ms: number(2)?,
                retry_after_ms: number(3)?,
            })
        })
    }
}

impl UsageStore for ValkeyRegistry {
    fn reserve<'a>(
        &'a self,
        key_id: &'a str,
        request_id: &'a str,
        quota: &'a Quota,
        amount: f64,
        ttl: Duration,
    ) -> StateFuture<'a, QuotaDecision> {
        Box::pin(async move {
            let ttl_ms = check_reserve(key_id, request_id, quota, amount, ttl)?;
            let reply: Vec<String> = self
                .run(
                    "reserve",
                    &RESERVE,
                    vec![keys::quota_spent(key_id), keys::quota_reserved(key_id)],
                    vec![
                        request_id.to_owned(),
                        quota.unit.as_str().to_owned(),
                        decimal(quota.limit),
                        decimal(amount),
                        ttl_ms.to_string(),
                    ],
                )
                .await?;
            let corrupt = || StateError::Corrupt(format!("reserve answered {reply:?}"));
            let float = |i: usize| -> Result<f64, StateError> {
                reply
                    .get(i)
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(corrupt)
            };
            Ok(QuotaDecision {
                allowed: reply.first().map(String::as_str) == Some("1"),
                spent: float(1)?,
                reserved: float(2)?,
                in_flight: reply
                    .get(3)
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(corrupt)?,
            })
        })
    }

    fn record_usage<'a>(&'a self, entry: &'a UsageEntry) -> StateFuture<'a, ()> {
        Box::pin(async move {
            check_entry(entry)?;
            let row = RowKey::of(entry);
            let identity = serde_json::to_string(&[&row.key_id, &row.account, &row.model])
                .map_err(|error| StateError::Invalid(format!("usage row: {error}")))?;
            let retention_secs = USAGE_RETENTION_DAYS * 86_400;
            let _: i64 = self
                .run(
                    "record_usage",
                    &RECORD_USAGE,
                    vec![
                        keys::quota_spent(&entry.key_id),
                        keys::quota_reserved(&entry.key_id),
                        keys::usage_day(&row.day),
                        keys::CHARGED.to_owned(),
                    ],
                    vec![
                        entry.request_id.clone(),
                        entry.prompt_tokens.to_string(),
                        entry.completion_tokens.to_string(),
                        entry
                            .prompt_tokens
                            .saturating_add(entry.completion_tokens)
                            .to_string(),
                        decimal(entry.credits),
                        if entry.tokens_estimated { "1" } else { "0" }.to_owned(),
                        identity,
                        retention_secs.to_string(),
                        CHARGE_DEDUP_WINDOW.as_millis().to_string(),
                        CHARGE_DEDUP_MAX_IDS.to_string(),
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn release<'a>(&'a self, key_id: &'a str, request_id: &'a str) -> StateFuture<'a, ()> {
        Box::pin(async move {
            if check_id("a key id", key_id).is_err() {
                return Ok(());
            }
            let _removed: i64 = self
                .bounded(
                    "release",
                    self.client.hdel(keys::quota_reserved(key_id), request_id),
                )
                .await?;
            Ok(())
        })
    }

    fn spent<'a>(&'a self, key_id: &'a str) -> StateFuture<'a, Spent> {
        Box::pin(async move {
            if check_id("a key id", key_id).is_err() {
                return Ok(Spent::default());
            }
            let fields: HashMap<String, String> = self
                .bounded("spent", self.client.hgetall(keys::quota_spent(key_id)))
                .await?;
            let corrupt = |name: &str| StateError::Corrupt(format!("spent {name} of {key_id}"));
            let get = |name: &str| fields.get(name).map(String::as_str).unwrap_or("0");
            Ok(Spent {
                tokens: get("tokens").parse().map_err(|_| corrupt("tokens"))?,
                credits: get("credits").parse().map_err(|_| corrupt("credits"))?,
                requests: get("requests").parse().map_err(|_| corrupt("requests"))?,
            })
        })
    }

    fn usage<'a>(&'a self, filter: &'a UsageFilter) -> StateFuture<'a, Vec<UsageRow>> {
        Box::pin(async move {
            let today = day::day_number(self.server_now_ms().await?);
            let (from, to) = day_range(filter, today)?;
            if from > to {
                return Ok(Vec::new());
            }
            let days: Vec<String> = (from..=to).map(day::format_day).collect();
            let ledgers: Vec<Value> = self
                .run(
                    "usage",
                    &USAGE_DAYS,
                    days.iter().map(|d| keys::usage_day(d)).collect(),
                    Vec::new(),
                )
                .await?;
            let mut rows: BTreeMap<RowKey, RowTotals> = BTreeMap::new();
            for (day, ledger) in days.iter().zip(ledgers) {
                for (name, value) in fields_of(ledger)? {
                    if let Err(error) = add_field(&mut rows, day, &name, &value) {
                        tracing::warn!(store = %self.target, %error, "skipping an unreadable usage field");
                    }
                }
            }
            Ok(select_rows(&rows, filter, (from, to)))
        })
    }
}

/// Add one field of a day's ledger (`METRIC:["key","account","model"]` → value) to its row.
fn add_field(
    rows: &mut BTreeMap<RowKey, RowTotals>,
    day: &str,
    name: &str,
    value: &str,
) -> Result<(), StateError> {
    let corrupt = || StateError::Corrupt(format!("usage field {name:?} of {day}"));
    let (metric, identity) = name.split_once(':').ok_or_else(corrupt)?;
    let [key_id, account, model]: [String; 3] =
        serde_json::from_str(identity).map_err(|_| corrupt())?;
    let totals = rows
        .entry(RowKey {
            day: day.to_owned(),
            key_id,
            account,
            model,
        })
        .or_default();
    let count = || value.parse::<u64>().map_err(|_| corrupt());
    match metric {
        "requests" => totals.requests = count()?,
        "prompt_tokens" => totals.prompt_tokens = count()?,
        "completion_tokens" => totals.completion_tokens = count()?,
        "estimated_requests" => totals.estimated_requests = count()?,
        "credits" => totals.credits = value.parse().map_err(|_| corrupt())?,
        _ => return Err(corrupt()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::QuotaUnit;

    fn record() -> ApiKeyRecord {
        ApiKeyRecord {
            id: "key_0123456789abcdef".into(),
            name: "ci: nightly".into(),
            prefix: "db-abcdefg".into(),
            hash: "ab".repeat(32),
            created_at_ms: 1_767_225_600_000,
            expires_at_ms: Some(1_767_225_700_000),
            revoked_at_ms: None,
            last_used_at_ms: Some(1_767_225_650_000),
            limits: KeyLimits {
                rpm: Some(0),
                quota: Some(Quota {
                    unit: QuotaUnit::Credits,
                    limit: 12.5,
                }),
                models: vec!["kiro".into()],
            },
        }
    }

    #[test]
    fn a_record_round_trips_through_its_hash() {
        let fields = record_fields(&record()).unwrap();
        let map: HashMap<String, String> = fields
            .chunks(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        assert!(
            !map.contains_key(field::REVOKED),
            "absent options stay absent"
        );
        assert_eq!(record_from(map).unwrap(), Some(record()));
        assert_eq!(record_from(HashMap::new()).unwrap(), None);
        let mut broken: HashMap<String, String> = HashMap::new();
        broken.insert(field::ID.into(), "k".into());
        assert!(matches!(record_from(broken), Err(StateError::Corrupt(_))));
    }

    #[test]
    fn ledger_fields_name_their_row() {
        let mut rows = BTreeMap::new();
        add_field(
            &mut rows,
            "2026-01-01",
            r#"requests:["k","a:1","m|x"]"#,
            "3",
        )
        .unwrap();
        add_field(
            &mut rows,
            "2026-01-01",
            r#"credits:["k","a:1","m|x"]"#,
            "0.25",
        )
        .unwrap();
        let (key, totals) = rows.iter().next().unwrap();
        assert_eq!(key.account, "a:1");
        assert_eq!(key.model, "m|x");
        assert_eq!(totals.requests, 3);
        assert!((totals.credits - 0.25).abs() < f64::EPSILON);
        assert!(add_field(&mut rows, "2026-01-01", "requests", "1").is_err());
        assert!(add_field(&mut rows, "2026-01-01", r#"bogus:["k","a","m"]"#, "1").is_err());
    }

    #[test]
    fn numbers_go_to_valkey_without_exponents() {
        assert_eq!(decimal(1e-7), "0.0000001");
        assert_eq!(decimal(100.0), "100");
        assert_eq!(decimal(0.1), "0.1");
    }

    #[test]
    fn one_process_writes_a_use_at_most_once_a_second() {
        let throttle = TouchThrottle::default();
        assert!(throttle.due("k", 10_000));
        throttle.wrote("k", 10_000);
        assert!(!throttle.due("k", 10_999));
        assert!(throttle.due("k", 11_000));
        assert!(throttle.due("other", 10_001));
    }
}
