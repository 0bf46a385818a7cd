//! `continuation`: auto-continuation of truncated answers.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Auto-continuation of truncated answers (the worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinuationConfig {
    pub enabled: bool,
    /// Continuation prompts per request at most.
    pub max_rounds: u32,
    /// Context use (0–1) above which an answer counts as cut off.
    pub context_threshold: f64,
    /// Answers longer than this (characters) that end mid-sentence count as cut off.
    pub min_chars: usize,
}

impl Default for ContinuationConfig {
    fn default() -> Self {
        ContinuationConfig {
            enabled: true,
            max_rounds: 5,
            context_threshold: 0.95,
            min_chars: 4000,
        }
    }
}

impl ContinuationConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.context_threshold > 0.0 && self.context_threshold <= 1.0) {
            return Err(ConfigError::invalid(
                "continuation.context_threshold",
                "must be a fraction in (0, 1], e.g. 0.95",
            ));
        }
        if self.max_rounds > 20 {
            return Err(ConfigError::invalid(
                "continuation.max_rounds",
                "must be at most 20",
            ));
        }
        Ok(())
    }
}
