//! What the agent reported about a turn's cost and context, accumulated per session.

use serde_json::{Map, Value};

use crate::kiro::{self, KiroMetadata};

/// The usage an agent reported during one prompt turn.
///
/// Agents report no token counts (Kiro does not): estimate tokens elsewhere and say so.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct UsageReport {
    /// How full the context window is, 0–100; the last report of the turn wins.
    pub context_usage_percent: Option<f64>,
    /// Credits the turn cost, summed over every metering report of the turn.
    pub credits: Option<f64>,
}

impl UsageReport {
    /// A standard ACP `usage_update` (`used` of `size` tokens in context).
    pub(crate) fn apply_usage_update(&mut self, used: u64, size: u64) {
        if size > 0 {
            #[expect(
                clippy::cast_precision_loss,
                reason = "token counts are far below 2^52; a percentage needs no more precision"
            )]
            let percent = used as f64 / size as f64 * 100.0;
            self.context_usage_percent = Some(percent);
        }
    }

    /// The `_meta` of a `session_info_update`: Kiro v3 puts its metering under `_meta.kiro`.
    pub(crate) fn apply_session_info_meta(&mut self, meta: &Map<String, Value>) {
        let Some(kiro) = meta.get(kiro::META_KEY).and_then(Value::as_object) else {
            return;
        };
        match kiro.get("kind").and_then(Value::as_str) {
            Some(kiro::KIND_CONTEXT_USAGE) => {
                if let Some(percent) = kiro.get("usagePercentage").and_then(Value::as_f64) {
                    self.context_usage_percent = Some(percent);
                }
            }
            Some(kiro::KIND_TURN_COMPLETION) => {
                let summaries = kiro
                    .get("promptTurnSummaries")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for summary in summaries {
                    let unit = summary.get("unit").and_then(Value::as_str);
                    if let Some(usage) = summary.get("usage").and_then(Value::as_f64)
                        && kiro::is_credit_unit(unit)
                    {
                        self.add_credits(usage);
                    }
                }
            }
            _ => {}
        }
    }

    /// Kiro v2's `_kiro.dev/metadata` notification.
    pub(crate) fn apply_kiro_metadata(&mut self, metadata: &KiroMetadata) {
        if let Some(percent) = metadata.context_usage_percentage {
            self.context_usage_percent = Some(percent);
        }
        for metered in metadata.metering_usage.iter().flatten() {
            if kiro::is_credit_unit(metered.unit.as_deref()) {
                self.add_credits(metered.value);
            }
        }
    }

    fn add_credits(&mut self, credits: f64) {
        if credits.is_finite() {
            *self.credits.get_or_insert(0.0) += credits;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiro::MeteringUsage;
    use serde_json::json;

    fn meta(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test meta must be an object"),
        }
    }

    #[test]
    fn usage_update_is_a_percentage() {
        let mut usage = UsageReport::default();
        usage.apply_usage_update(50, 200);
        assert_eq!(usage.context_usage_percent, Some(25.0));
        usage.apply_usage_update(1, 0);
        assert_eq!(usage.context_usage_percent, Some(25.0), "size 0 is ignored");
    }

    #[test]
    fn v3_context_usage_and_turn_completion() {
        let mut usage = UsageReport::default();
        usage.apply_session_info_meta(&kiro::context_usage_meta(41.5));
        usage.apply_session_info_meta(&meta(json!({
            "kiro": {
                "kind": "turn_completion",
                "promptTurnSummaries": [
                    { "usage": 0.5, "unit": "credit" },
                    { "usage": 0.25, "unit": "credit" },
                    { "usage": 9.0, "unit": "USD" },
                ],
            }
        })));
        assert_eq!(
            usage,
            UsageReport {
                context_usage_percent: Some(41.5),
                credits: Some(0.75),
            }
        );
    }

    #[test]
    fn v3_builders_match_the_parser() {
        let mut usage = UsageReport::default();
        usage.apply_session_info_meta(&kiro::turn_completion_meta(0.125));
        assert_eq!(usage.credits, Some(0.125));
    }

    #[test]
    fn unknown_meta_is_ignored() {
        let mut usage = UsageReport::default();
        usage.apply_session_info_meta(&meta(json!({ "other": { "kind": "context_usage" } })));
        usage.apply_session_info_meta(&meta(json!({ "kiro": { "kind": "mystery" } })));
        usage.apply_session_info_meta(&meta(json!({ "kiro": "not an object" })));
        usage.apply_session_info_meta(&meta(
            json!({ "kiro": { "kind": "turn_completion", "promptTurnSummaries": "x" } }),
        ));
        assert_eq!(usage, UsageReport::default());
    }

    #[test]
    fn v2_metadata_sums_credits_and_keeps_the_last_context() {
        let mut usage = UsageReport::default();
        usage.apply_kiro_metadata(&KiroMetadata {
            session_id: "s".to_owned(),
            context_usage_percentage: Some(10.0),
            metering_usage: None,
            turn_duration_ms: None,
        });
        usage.apply_kiro_metadata(&KiroMetadata {
            session_id: "s".to_owned(),
            context_usage_percentage: Some(12.0),
            metering_usage: Some(vec![
                MeteringUsage::credits(0.25),
                MeteringUsage {
                    value: 0.5,
                    unit: Some("credits".to_owned()),
                },
            ]),
            turn_duration_ms: Some(100),
        });
        assert_eq!(
            usage,
            UsageReport {
                context_usage_percent: Some(12.0),
                credits: Some(0.75),
            }
        );
    }
}
