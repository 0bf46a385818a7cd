//! `admin`: the admin API.

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Enables the admin API; also `DRAWBRIDGE_ADMIN_TOKEN`.
    pub auth_token: Option<Secret>,
}

impl AdminConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.auth_token
            && token.expose().len() < 16
        {
            return Err(ConfigError::invalid(
                "admin.auth_token",
                "must be at least 16 characters",
            ));
        }
        Ok(())
    }
}
