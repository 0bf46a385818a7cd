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

#[cfg(test)]
mod tests {
    use super::*;
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
