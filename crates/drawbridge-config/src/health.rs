//! `health`: account health as the engine judges it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Account health as the engine judges it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub circuit_breaker: CircuitBreakerConfig,
}

/// Per-account circuit breaker: `failure_threshold` failures among the last `window_size`
/// outcomes open it; after `reset_timeout`, `half_open_probes` requests test the account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    pub failure_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub reset_timeout: Duration,
    pub window_size: u32,
    pub half_open_probes: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 3,
            reset_timeout: Duration::from_secs(60),
            window_size: 10,
            half_open_probes: 1,
        }
    }
}

impl HealthConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.circuit_breaker.validate("health.circuit_breaker")
    }
}

impl CircuitBreakerConfig {
    /// Check the settings given under `key` (`health.circuit_breaker`, or a route target's
    /// override once applied over it).
    pub(crate) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.window_size == 0
            || self.failure_threshold == 0
            || self.failure_threshold > self.window_size
        {
            return Err(ConfigError::invalid(
                format!("{key}.failure_threshold"),
                format!(
                    "must be between 1 and the window size (`window_size`: {})",
                    self.window_size
                ),
            ));
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.half_open_probes"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
