//! `log`: logs and traces.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `drawbridge_engine=debug,info`; `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector (e.g. `http://otel-collector:4317`).
    pub otlp_endpoint: Option<String>,
    /// The share of new traces recorded (0.0–1.0); a trace begun upstream keeps its decision.
    pub trace_sample_ratio: f64,
    /// Log the messages of every chat request at the gateway (off: no message content is
    /// ever logged).
    pub messages: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
            messages: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(ConfigError::invalid(
                "log.trace_sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "log.otlp_endpoint",
                "must be an http:// or https:// URL of an OTLP/gRPC collector",
            ));
        }
        Ok(())
    }
}
