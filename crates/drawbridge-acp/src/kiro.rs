//! Kiro's ACP extensions: the metering it reports, in both engine shapes.
//!
//! - Engine v2 sends the extension notification `_kiro.dev/metadata`
//!   (`{sessionId, contextUsagePercentage, meteringUsage: [{value, unit: "credit"}],
//!   turnDurationMs}`), modelled by [`KiroMetadata`].
//! - Engine v3 sends `session/update` `session_info_update` notifications whose `_meta.kiro`
//!   object has `kind: "context_usage"` (`usagePercentage`) or `kind: "turn_completion"`
//!   (`promptTurnSummaries: [{usage, unit: "credit"}]`); [`turn_completion_meta`] and
//!   [`context_usage_meta`] build those `_meta` objects.
//!
//! The mock agent uses the same types to send what the client parses.
//!
//! [`account_limit`] reads what an agent's error says about its account's limits: Kiro answers
//! a prompt with an error whose text says the monthly (or daily) usage limit is reached, or that
//! there are too many requests.

use agent_client_protocol::JsonRpcNotification;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The JSON-RPC method of Kiro v2's metering notification.
pub const METADATA_METHOD: &str = "_kiro.dev/metadata";
/// The key under `_meta` that holds Kiro v3's metering.
pub const META_KEY: &str = "kiro";
/// `_meta.kiro.kind` of a v3 context-usage update.
pub const KIND_CONTEXT_USAGE: &str = "context_usage";
/// `_meta.kiro.kind` of a v3 turn summary.
pub const KIND_TURN_COMPLETION: &str = "turn_completion";
/// The unit Kiro meters in.
pub const CREDIT_UNIT: &str = "credit";

/// Kiro v2's `_kiro.dev/metadata` notification.
///
/// Every field but the session id is optional when parsing: Kiro sends partial updates (a
/// context percentage mid-turn, the metering at the end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonRpcNotification)]
#[notification(method = "_kiro.dev/metadata")]
#[serde(rename_all = "camelCase")]
pub struct KiroMetadata {
    /// The ACP session the numbers belong to.
    pub session_id: String,
    /// How full the context window is, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_usage_percentage: Option<f64>,
    /// What the turn cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering_usage: Option<Vec<MeteringUsage>>,
    /// How long the turn took (any JSON number is accepted, rounded to whole milliseconds).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_millis"
    )]
    pub turn_duration_ms: Option<u64>,
}

/// A duration in ms from any JSON number; a negative, fractional-overflow or non-number value
/// is dropped rather than failing the whole notification.
fn lenient_millis<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.as_ref().and_then(|value| {
        value.as_u64().or_else(|| {
            value
                .as_f64()
                .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 1e15)
                .map(|ms| {
                    #[expect(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "checked finite, non-negative and below 2^53 just above"
                    )]
                    let whole = ms.round() as u64;
                    whole
                })
        })
    }))
}

/// One metered amount in [`KiroMetadata::metering_usage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeteringUsage {
    /// The amount.
    pub value: f64,
    /// Its unit; Kiro says `"credit"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl MeteringUsage {
    /// An amount of credits.
    pub fn credits(value: f64) -> Self {
        Self {
            value,
            unit: Some(CREDIT_UNIT.to_owned()),
        }
    }
}

/// Whether a unit names credits (`credit`, `credits`, any case); a missing unit counts as
/// credits because credits are all Kiro meters.
pub fn is_credit_unit(unit: Option<&str>) -> bool {
    unit.is_none_or(|unit| unit.to_ascii_lowercase().starts_with(CREDIT_UNIT))
}

/// The `_meta` of a Kiro v3 `session_info_update` that ends a turn costing `credits`.
pub fn turn_completion_meta(credits: f64) -> Map<String, Value> {
    kiro_meta(json!({
        "kind": KIND_TURN_COMPLETION,
        "promptTurnSummaries": [{ "usage": credits, "unit": CREDIT_UNIT }],
    }))
}

/// The `_meta` of a Kiro v3 `session_info_update` reporting context usage in percent.
pub fn context_usage_meta(percent: f64) -> Map<String, Value> {
    kiro_meta(json!({ "kind": KIND_CONTEXT_USAGE, "usagePercentage": percent }))
}

fn kiro_meta(kiro: Value) -> Map<String, Value> {
    Map::from_iter([(META_KEY.to_owned(), kiro)])
}

/// What an agent's error says about its account's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountLimit {
    /// The account's quota is spent (Kiro's monthly or daily usage limit, its credits): no
    /// use trying it again until it is topped up or its period resets.
    QuotaExhausted,
    /// The provider asks the account to slow down, for `retry_after` when it said how long.
    RateLimited {
        retry_after: Option<std::time::Duration>,
    },
}

/// Phrases of an agent error that mean the account's quota is spent (lowercase).
const QUOTA_PHRASES: [&str; 8] = [
    "usage limit",
    "credit limit",
    "monthly limit",
    "monthly quota",
    "quota has been reached",
    "insufficient credit",
    "out of credits",
    "no credits left",
];

/// Phrases of an agent error that mean the account is rate limited (lowercase).
const RATE_PHRASES: [&str; 6] = [
    "too many requests",
    "rate limit",
    "throttl",
    "quota exceeded",
    "slow down",
    "please wait",
];

/// What `message` (an agent's error text) says about the account's limits, if anything. A
/// rate limit's wait is read from phrases like "retry after 30 seconds", "try again in 2
/// minutes" or "Retry-After: 10".
pub fn account_limit(message: &str) -> Option<AccountLimit> {
    let text = message.to_lowercase();
    if QUOTA_PHRASES.iter().any(|p| text.contains(p)) {
        return Some(AccountLimit::QuotaExhausted);
    }
    if RATE_PHRASES.iter().any(|p| text.contains(p)) {
        return Some(AccountLimit::RateLimited {
            retry_after: retry_after(&text),
        });
    }
    None
}

/// The wait a lowercase message asks for: a number after "retry after", "retry-after:" or
/// "try again in", with an optional unit (ms, s, seconds, m, minutes, h, hours; seconds when
/// none).
fn retry_after(text: &str) -> Option<std::time::Duration> {
    const CUES: [&str; 3] = ["retry after", "retry-after:", "try again in"];
    CUES.iter().find_map(|cue| {
        let rest = &text[text.find(cue)? + cue.len()..];
        let rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let amount: f64 = rest[..digits].parse().ok()?;
        let unit: String = rest[digits..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        let seconds = match unit.as_str() {
            "ms" | "millisecond" | "milliseconds" => amount / 1000.0,
            "m" | "min" | "mins" | "minute" | "minutes" => amount * 60.0,
            "h" | "hour" | "hours" => amount * 3600.0,
            _ => amount,
        };
        (seconds.is_finite() && seconds > 0.0 && seconds < 7.0 * 86_400.0)
            .then(|| std::time::Duration::from_secs_f64(seconds))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_limits_are_read_from_agent_errors() {
        use std::time::Duration;
        let quota = Some(AccountLimit::QuotaExhausted);
        let rate = |secs: Option<u64>| {
            Some(AccountLimit::RateLimited {
                retry_after: secs.map(Duration::from_secs),
            })
        };
        let table = [
            (
                "The monthly usage limit has been reached (request_id: 0e06d8cd)",
                quota,
            ),
            (
                "You've reached your monthly usage limit. Please return next month to continue building.",
                quota,
            ),
            (
                "You've reached your daily usage limit. Please return tomorrow to continue building.",
                quota,
            ),
            ("Insufficient credits for this request", quota),
            (
                "Too many requests, please wait before trying again.",
                rate(None),
            ),
            (
                "Kiro rate limit reached: Request quota exceeded. Please wait a moment and try again.",
                rate(None),
            ),
            ("The request was throttled by the service", rate(None)),
            ("Too many requests. Retry after 30 seconds.", rate(Some(30))),
            ("rate limited; try again in 2 minutes", rate(Some(120))),
            ("Throttled (Retry-After: 7)", rate(Some(7))),
            (
                "rate limit, retry after 1500ms",
                Some(AccountLimit::RateLimited {
                    retry_after: Some(Duration::from_millis(1500)),
                }),
            ),
            ("The agent crashed", None),
            ("Internal error", None),
        ];
        for (message, expected) in table {
            assert_eq!(account_limit(message), expected, "{message}");
        }
    }
    use agent_client_protocol::JsonRpcMessage;

    #[test]
    fn metadata_round_trips_through_the_wire_shape() {
        let wire = json!({
            "sessionId": "s1",
            "contextUsagePercentage": 12.5,
            "meteringUsage": [{ "value": 0.02, "unit": "credit" }],
            "turnDurationMs": 830,
        });
        let parsed = KiroMetadata::parse_message(METADATA_METHOD, &wire).unwrap();
        assert_eq!(parsed.session_id, "s1");
        assert_eq!(parsed.context_usage_percentage, Some(12.5));
        assert_eq!(
            parsed.metering_usage,
            Some(vec![MeteringUsage::credits(0.02)])
        );
        assert_eq!(parsed.turn_duration_ms, Some(830));
        let untyped = parsed.to_untyped_message().unwrap();
        assert_eq!(untyped.method(), METADATA_METHOD);
    }

    #[test]
    fn turn_duration_is_lenient() {
        let parse = |ms: Value| {
            KiroMetadata::parse_message(
                METADATA_METHOD,
                &json!({ "sessionId": "s", "turnDurationMs": ms }),
            )
            .unwrap()
            .turn_duration_ms
        };
        assert_eq!(parse(json!(12.6)), Some(13));
        assert_eq!(parse(json!(-1)), None);
        assert_eq!(parse(json!("soon")), None);
        assert_eq!(parse(Value::Null), None);
    }

    #[test]
    fn partial_metadata_parses() {
        let parsed =
            KiroMetadata::parse_message(METADATA_METHOD, &json!({ "sessionId": "s" })).unwrap();
        assert_eq!(parsed.context_usage_percentage, None);
        assert_eq!(parsed.metering_usage, None);
    }

    #[test]
    fn credit_units() {
        assert!(is_credit_unit(Some("credit")));
        assert!(is_credit_unit(Some("Credits")));
        assert!(is_credit_unit(None));
        assert!(!is_credit_unit(Some("USD")));
    }
}
