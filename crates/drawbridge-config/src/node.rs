//! `node`: this node's identity.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's id in the registry and in logs.
    pub id: String,
    /// The address other nodes reach this one at (defaults to the listen address).
    pub address: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: "node-1".to_owned(),
            address: None,
        }
    }
}

impl NodeConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.id.trim().is_empty() {
            return Err(ConfigError::invalid("node.id", "must not be empty"));
        }
        Ok(())
    }
}
