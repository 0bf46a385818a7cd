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
        let cb = &self.circuit_breaker;
        if cb.window_size == 0 || cb.failure_threshold == 0 || cb.failure_threshold > cb.window_size
        {
            return Err(ConfigError::invalid(
                "health.circuit_breaker.failure_threshold",
                "must be between 1 and health.circuit_breaker.window_size",
            ));
        }
        if cb.half_open_probes == 0 {
            return Err(ConfigError::invalid(
                "health.circuit_breaker.half_open_probes",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
