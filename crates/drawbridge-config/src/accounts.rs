//! `accounts`: the accounts served, and how to start each one's agent processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use drawbridge_types::rules::{self, IdError, MAX_ID_LEN};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub id: String,
    /// Agent processes kept warm for this account; each serves one request at a time.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    #[serde(default)]
    pub tier: Option<String>,
    /// Model names this account serves (`GET /v1/models` lists their union).
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    #[serde(default)]
    pub agent: AgentConfig,
    /// The account's credit grant (Kiro credits; fractions allowed): its balance is set to
    /// this when the account has none yet or when this value changes (a top-up or a reset);
    /// every finished turn is charged against it and at 0 the account gets no traffic.
    /// Absent: unmetered (never exhausted).
    #[serde(default)]
    pub credits: Option<f64>,
}

/// The largest credit grant `accounts[].credits` takes: the largest balance a store holds.
pub use drawbridge_types::rules::MAX_CREDITS;

fn default_pool_size() -> u32 {
    3
}

fn default_models() -> Vec<String> {
    vec!["kiro".to_owned()]
}

/// How to start one of the account's agent processes. No shell is involved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// A path, or a name looked up on `PATH` and then beside the running binary.
    pub command: String,
    pub args: Vec<String>,
    /// Working directory (default: `<data_dir>/<account>/work`).
    pub cwd: Option<PathBuf>,
    /// The account's HOME (default: `<data_dir>/<account>/home`): holds its credentials.
    pub home: Option<PathBuf>,
    /// Extra environment; nothing else of the worker's environment is passed on.
    pub env: BTreeMap<String, String>,
    /// Tools the agent may run when it asks (`session/request_permission`): ACP tool kinds
    /// (`read`, `search`, `fetch`, `edit`, `execute`, ...) or exact tool titles. Empty (the
    /// default): every request is rejected. Needs `tools: builtin`.
    pub allow_tools: Vec<String>,
    /// Whether the agent keeps its built-in tools (shell, file writes, web), which run on the
    /// worker's host. `none` (the default): Kiro agents run a tool-less agent profile that
    /// Drawbridge writes into the account's home, and every permission request is refused.
    /// `builtin`: the agent's own tools stay; Kiro v3 autopilot is still turned off, so they
    /// ask first, and only `allow_tools` are allowed.
    pub tools: AgentTools,
    /// How a request's own tools (OpenAI `tools`) reach the agent: `auto` (the default) serves
    /// them over MCP to agents that announce HTTP MCP support and describes them in the prompt
    /// (tagged calls parsed out of the answer) to the others; `mcp` and `emulated` force one.
    pub client_tools: ClientTools,
}

/// `accounts[].agent.client_tools`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTools {
    #[default]
    Auto,
    /// Always over MCP (an agent that cannot load it never calls them).
    Mcp,
    /// Always in the prompt, as tagged calls in the answer.
    Emulated,
}

/// `accounts[].agent.tools`: which tools an account's agent has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentTools {
    /// No built-in tools (the safe default for a gateway).
    #[default]
    None,
    /// The agent's built-in tools, each asking permission (see `allow_tools`).
    Builtin,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            command: "kiro-cli".to_owned(),
            args: vec!["acp".to_owned()],
            cwd: None,
            home: None,
            env: BTreeMap::new(),
            allow_tools: Vec::new(),
            tools: AgentTools::None,
            client_tools: ClientTools::Auto,
        }
    }
}

/// Check every account; the ids, for the sections that name accounts.
pub(crate) fn validate(accounts: &[AccountConfig]) -> Result<BTreeSet<&str>, ConfigError> {
    let mut ids = BTreeSet::new();
    for (i, account) in accounts.iter().enumerate() {
        let key = |field: &str| format!("accounts[{i}].{field}");
        if account.id.trim().is_empty() {
            return Err(ConfigError::invalid(key("id"), "must not be empty"));
        }
        // The stores' id rule, and no leading '.' (the id names a directory).
        match rules::check_id(&account.id) {
            Err(IdError::TooLong) => {
                return Err(ConfigError::invalid(
                    key("id"),
                    format!("must be at most {MAX_ID_LEN} characters (the stores' longest id)"),
                ));
            }
            Err(_) => return Err(bad_id(key("id"))),
            Ok(()) if account.id.starts_with('.') => return Err(bad_id(key("id"))),
            Ok(()) => {}
        }
        if !ids.insert(account.id.as_str()) {
            return Err(ConfigError::invalid(
                key("id"),
                format!("duplicate account id '{}'", account.id),
            ));
        }
        account.validate(key)?;
    }
    Ok(ids)
}

fn bad_id(key: String) -> ConfigError {
    ConfigError::invalid(
        key,
        "use letters, digits, '-', '_' and '.' only (it names a directory)",
    )
}

impl AccountConfig {
    /// Everything but the id (checked with the other accounts' by this module's `validate`).
    fn validate(&self, key: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.pool_size == 0 {
            return Err(ConfigError::invalid(key("pool_size"), "must be at least 1"));
        }
        if self.models.is_empty() || self.models.iter().any(|m| m.trim().is_empty()) {
            return Err(ConfigError::invalid(
                key("models"),
                "list at least one non-empty model name",
            ));
        }
        if let Some(credits) = self.credits
            && !(credits.is_finite() && (0.0..=MAX_CREDITS).contains(&credits))
        {
            return Err(ConfigError::invalid(
                key("credits"),
                "must be a number of credits between 0 and 1e12 (leave it out: unmetered)",
            ));
        }
        if !self.agent.allow_tools.is_empty() && self.agent.tools != AgentTools::Builtin {
            return Err(ConfigError::invalid(
                key("agent.allow_tools"),
                "allows tools of an agent that has none: set `agent.tools: builtin` to give \
                 the agent its built-in tools (they run on the worker's host), or remove \
                 `allow_tools`",
            ));
        }
        if self.agent.command.trim().is_empty() {
            return Err(ConfigError::invalid(
                key("agent.command"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Role};

    /// An account id the config takes is one the stores take: the rule is
    /// `drawbridge_types::rules`, which the stores apply too.
    #[test]
    fn ids_follow_the_stores_rule() {
        let long = "a".repeat(200);
        assert!(!rules::valid_id(&long), "the stores refuse it");
        let err = Config::from_yaml(&format!("accounts: [{{ id: {long} }}]"))
            .unwrap()
            .validate(Role::AllInOne)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`accounts[0].id`"), "{err}");
        assert!(err.contains("at most 128 characters"), "{err}");
        let longest = "a".repeat(MAX_ID_LEN);
        Config::from_yaml(&format!("accounts: [{{ id: {longest} }}]"))
            .unwrap()
            .validate(Role::AllInOne)
            .unwrap();
        for id in ["a:b", "a b", ".hidden"] {
            let err = Config::from_yaml(&format!("accounts: [{{ id: '{id}' }}]"))
                .unwrap()
                .validate(Role::AllInOne)
                .unwrap_err()
                .to_string();
            assert!(err.contains("it names a directory"), "{id} → {err}");
        }
    }

    #[test]
    fn tools_default_to_none_and_allow_tools_needs_builtin() {
        let config = Config::from_yaml("accounts: [{ id: a }]").unwrap();
        assert_eq!(config.accounts[0].agent.tools, AgentTools::None);
        config.validate(Role::AllInOne).unwrap();
        let err = Config::from_yaml("accounts: [{ id: a, agent: { allow_tools: [read] } }]")
            .unwrap()
            .validate(Role::AllInOne)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`accounts[0].agent.allow_tools`"), "{err}");
        assert!(err.contains("tools: builtin"), "{err}");
        let config = Config::from_yaml(
            "accounts: [{ id: a, agent: { tools: builtin, allow_tools: [read] } }]",
        )
        .unwrap();
        assert_eq!(config.accounts[0].agent.tools, AgentTools::Builtin);
        config.validate(Role::AllInOne).unwrap();
        assert!(Config::from_yaml("accounts: [{ id: a, agent: { tools: all } }]").is_err());
    }
}
