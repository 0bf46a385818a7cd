//! What the agent reported about a turn's cost and context, accumulated per session.

use serde_json::{Map, Value};

use crate::kiro::{self, KiroMetadata};

/// The usage an agent reported during one prompt turn.
///
/// Everything here is what the agent said, never an estimate. Kiro reports no token counts:
/// when [`UsageReport::tokens`] is `None`, estimate tokens elsewhere and say so.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct UsageReport {
    /// How full the context window is, 0–100; the last report of the turn wins.
    pub context_usage_percent: Option<f64>,
    /// Credits the turn cost, summed over every metering report of the turn.
    pub credits: Option<f64>,
    /// The turn's token counts, as the agent reported them in the prompt result's `usage`.
    pub tokens: Option<TokenUsage>,
    /// The context window as the last `usage_update` reported it.
    pub context_window: Option<ContextWindow>,
}

/// Token counts an agent reported for a turn (ACP `usage`).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenUsage {
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
    /// All tokens; the agent's own total, else input + output.
    pub total_tokens: u64,
    /// Reasoning tokens, when reported.
    pub thought_tokens: Option<u64>,
    /// Tokens read from a prompt cache, when reported.
    pub cached_read_tokens: Option<u64>,
    /// Tokens written to a prompt cache, when reported.
    pub cached_write_tokens: Option<u64>,
}

impl TokenUsage {
    /// Parse ACP `usage` (`inputTokens`, `outputTokens`, `totalTokens`, ...); `None` when it
    /// holds neither input nor output tokens.
    pub(crate) fn from_wire(usage: &Value) -> Option<Self> {
        let count = |key: &str| usage.get(key).and_then(Value::as_u64);
        let input_tokens = count("inputTokens");
        let output_tokens = count("outputTokens");
        if input_tokens.is_none() && output_tokens.is_none() {
            return None;
        }
        let (input_tokens, output_tokens) = (input_tokens.unwrap_or(0), output_tokens.unwrap_or(0));
        Some(Self {
            input_tokens,
            output_tokens,
            total_tokens: count("totalTokens")
                .unwrap_or_else(|| input_tokens.saturating_add(output_tokens)),
            thought_tokens: count("thoughtTokens"),
            cached_read_tokens: count("cachedReadTokens"),
            cached_write_tokens: count("cachedWriteTokens"),
        })
    }
}

/// A context window report: `used` of `size` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextWindow {
    /// Tokens in context.
    pub used: u64,
    /// The window's size.
    pub size: u64,
}

impl UsageReport {
    /// Whether the agent reported token counts (then they are exact, not estimates).
    pub fn tokens_reported(&self) -> bool {
        self.tokens.is_some()
    }

    /// A standard ACP `usage_update` (`used` of `size` tokens in context).
    pub(crate) fn apply_usage_update(&mut self, used: u64, size: u64) {
        self.context_window = Some(ContextWindow { used, size });
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
        assert_eq!(
            usage.context_window,
            Some(ContextWindow { used: 1, size: 0 })
        );
        assert!(!usage.tokens_reported());
    }

    #[test]
    fn token_usage_parses_leniently() {
        let usage = TokenUsage::from_wire(&json!({
            "totalTokens": 30, "inputTokens": 10, "outputTokens": 15, "thoughtTokens": 5,
        }))
        .unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (10, 15, 30)
        );
        assert_eq!(usage.thought_tokens, Some(5));
        let partial = TokenUsage::from_wire(&json!({ "outputTokens": 4 })).unwrap();
        assert_eq!((partial.input_tokens, partial.total_tokens), (0, 4));
        assert_eq!(TokenUsage::from_wire(&json!({ "cost": 1 })), None);
        assert_eq!(TokenUsage::from_wire(&json!("x")), None);
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
                ..UsageReport::default()
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
                ..UsageReport::default()
            }
        );
    }
}
