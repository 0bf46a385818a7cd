//! Loading: YAML, then `DRAWBRIDGE_*` environment variables, through figment.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};

use crate::{Config, ConfigError};

impl Config {
    /// Load `path` (which must exist) and the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Load(format!(
                "config file {}: not found",
                path.display()
            )));
        }
        let mut config = Self::from_figment(
            Figment::from(Yaml::file_exact(path))
                .merge(env_provider())
                .merge(
                    Env::raw()
                        .only(&["DRAWBRIDGE_ADMIN_TOKEN"])
                        .map(|_| "admin.auth_token".into()),
                ),
        )?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parse a YAML document, without the environment (for tests and tools).
    pub fn from_yaml(yaml: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Yaml::string(yaml)))
    }

    /// Extract from any figment (tests layer overrides with `Serialized` pairs).
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        figment
            .extract()
            .map_err(|err| ConfigError::Load(describe(err)))
    }
}

/// `DRAWBRIDGE_A__B=v` → `a.b = v`. `DRAWBRIDGE_ADMIN_TOKEN` is mapped on its own.
fn env_provider() -> Env {
    Env::prefixed("DRAWBRIDGE_")
        .ignore(&["admin_token", "config"])
        .split("__")
}

/// figment's error, with the profile noise removed and every nested error listed. figment
/// already names the key (`for key "default.accounts.0.pool_size"`); say it as `accounts.0...`.
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(source) => format!(" (in {source})"),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            if path.is_empty() {
                format!("config: {}{source}", e.kind)
            } else {
                format!("config key `{path}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::GOOD;
    use figment::providers::Serialized;

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_yaml("gateway: { listne: 1 }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listne"), "{err}");
        let err = Config::from_yaml("accounts: [{ id: a, pool_size: many }]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("accounts.0.pool_size"), "{err}");
    }

    #[test]
    fn overrides_layer_over_the_file() {
        let figment = Figment::from(Yaml::string(GOOD))
            .merge(Serialized::default("gateway.listen", "127.0.0.1:9999"));
        let config = Config::from_figment(figment).unwrap();
        assert_eq!(config.gateway.listen, "127.0.0.1:9999".parse().unwrap());
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(&dir.path().join("nope.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.yaml"), "{err}");
    }
}
