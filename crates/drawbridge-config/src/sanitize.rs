//! `sanitize`: output sanitization.

use serde::{Deserialize, Serialize};

/// Output sanitization (the worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SanitizeConfig {
    /// `identity` (passthrough), `xml` (strip leaked internal XML blocks) or `full` (also
    /// built-in tool markers and identity lines).
    pub mode: SanitizeModeConfig,
    pub strip_xml_tags: bool,
    pub strip_builtin_tools: bool,
}

impl Default for SanitizeConfig {
    fn default() -> Self {
        SanitizeConfig {
            mode: SanitizeModeConfig::Full,
            strip_xml_tags: true,
            strip_builtin_tools: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SanitizeModeConfig {
    Identity,
    Xml,
    Full,
}
