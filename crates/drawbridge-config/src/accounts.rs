//! `accounts`: the accounts served, and how to start each one's agent processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use drawbridge_types::rules::{self, IdError, MAX_ID_LEN};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{self, PemObject};
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub id: String,
    /// How the account is reached: `acp` (an agent process in a worker's pool, the default),
    /// or an HTTP API called from the engine itself: `openai` (any OpenAI-compatible API),
    /// `anthropic` (the Messages API) or `gemini` (the Gemini API).
    #[serde(default)]
    pub kind: AccountKind,
    /// The upstream of a provider account (`kind: openai | anthropic | gemini`); none for an
    /// `acp` account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderConfig>,
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

/// `accounts[].kind`: what serves the account's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    /// Agent processes over ACP, in a worker's pool.
    #[default]
    Acp,
    /// An OpenAI-compatible HTTP API (`POST {base_url}/chat/completions`), called by the
    /// engine: no worker, no agent process.
    Openai,
    /// Anthropic's Messages API (`POST {base_url}/messages`), called by the engine.
    Anthropic,
    /// Google's Gemini API (`POST {base_url}/models/{model}:streamGenerateContent`), called
    /// by the engine.
    Gemini,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Acp => "acp",
            AccountKind::Openai => "openai",
            AccountKind::Anthropic => "anthropic",
            AccountKind::Gemini => "gemini",
        }
    }

    /// Whether the engine calls the account's HTTP API itself (every kind but `acp`).
    pub fn is_provider(self) -> bool {
        self != AccountKind::Acp
    }

    /// The environment variables a provider account's key is read from when its config has
    /// none, in order (the providers' own conventions); none for `acp`.
    pub fn env_keys(self) -> &'static [&'static str] {
        match self {
            AccountKind::Acp => &[],
            AccountKind::Openai => &["OPENAI_API_KEY"],
            AccountKind::Anthropic => &["ANTHROPIC_API_KEY"],
            AccountKind::Gemini => &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        }
    }
}

/// `accounts[].provider`: where a provider account's API is and how to call it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The API's base URL (`http://` or `https://`), up to its version segment: the part
    /// before `/chat/completions` for `openai` (e.g. `http://vllm:8000/v1`,
    /// `https://api.openai.com/v1`), before `/messages` for `anthropic` (`…/v1`), before
    /// `/models/…` for `gemini` (`…/v1beta`).
    pub base_url: String,
    /// The API key. Absent: the engine's environment variable for the account's kind
    /// ([`AccountKind::env_keys`]: `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`
    /// then `GOOGLE_API_KEY`), else no key is sent (a local server that needs none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Requests in flight at most on this account (what the scheduler counts as its slots).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    #[serde(default)]
    pub timeouts: ProviderTimeouts,
    /// A PEM file of root certificates trusted besides the built-in Mozilla set, for an
    /// `https://` API whose certificate a private CA signed (an internal gateway). Read when
    /// the config is validated and again when the account's client is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn default_max_concurrency() -> u32 {
    32
}

/// `accounts[].provider.timeouts`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderTimeouts {
    /// Connecting to the API.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From the request sent to the answer's head (its status and headers).
    #[serde(with = "humantime_serde")]
    pub first_byte: Duration,
    /// The longest silence between two pieces of the answer's body.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
}

impl Default for ProviderTimeouts {
    fn default() -> Self {
        ProviderTimeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(120),
        }
    }
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
    /// Whether a worker serves this account (an ACP account); provider accounts are served
    /// by the engine.
    pub fn is_acp(&self) -> bool {
        self.kind == AccountKind::Acp
    }

    /// Everything but the id (checked with the other accounts' by this module's `validate`).
    fn validate(&self, key: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        match (self.kind, &self.provider) {
            (AccountKind::Acp, Some(_)) => {
                return Err(ConfigError::invalid(
                    key("provider"),
                    "only a provider account has a provider section: set `kind: openai` (or \
                     `anthropic`, `gemini`), or remove `provider`",
                ));
            }
            (AccountKind::Acp, None) => {}
            (kind, None) => {
                return Err(ConfigError::invalid(
                    key("provider"),
                    format!(
                        "a provider account (`kind: {}`) needs `provider: {{ base_url: ... }}`",
                        kind.as_str()
                    ),
                ));
            }
            (kind, Some(provider)) => provider.validate(kind, &key)?,
        }
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

impl ProviderConfig {
    /// Whether `base_url` is an `https://` URL.
    pub fn is_https(&self) -> bool {
        self.base_url.trim().starts_with("https://")
    }

    /// The certificates of `ca_file` (none without one): an error says why the file cannot
    /// serve (missing, unreadable, not PEM, or holding no certificate).
    pub fn extra_roots(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let Some(path) = &self.ca_file else {
            return Ok(Vec::new());
        };
        let shown = path.display();
        let problem = |e| match e {
            pem::Error::Io(io) => format!("cannot read {shown}: {io}"),
            other => format!("{shown} is not a PEM file: {other}"),
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(problem)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(problem)?;
        if certs.is_empty() {
            return Err(format!(
                "{shown} holds no certificate (a PEM file of `BEGIN CERTIFICATE` blocks)"
            ));
        }
        Ok(certs)
    }

    fn validate(
        &self,
        kind: AccountKind,
        key: &impl Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        let url = self.base_url.trim();
        let Some(rest) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        else {
            return Err(ConfigError::invalid(
                key("provider.base_url"),
                "must be an http:// or https:// URL",
            ));
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || url.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid(
                key("provider.base_url"),
                "must be an http:// or https:// URL with a host",
            ));
        }
        if self.ca_file.is_some() {
            if !self.is_https() {
                return Err(ConfigError::invalid(
                    key("provider.ca_file"),
                    "only an https:// base_url uses it: remove it, or use https://",
                ));
            }
            if let Err(problem) = self.extra_roots() {
                return Err(ConfigError::invalid(key("provider.ca_file"), problem));
            }
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError::invalid(
                key("provider.max_concurrency"),
                "must be at least 1",
            ));
        }
        for (name, value) in [
            ("connect", self.timeouts.connect),
            ("first_byte", self.timeouts.first_byte),
            ("idle", self.timeouts.idle),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(
                    key(&format!("provider.timeouts.{name}")),
                    "must be longer than 0",
                ));
            }
        }
        if self
            .api_key
            .as_ref()
            .is_some_and(|k| k.expose().trim().is_empty())
        {
            return Err(ConfigError::invalid(
                key("provider.api_key"),
                format!(
                    "must not be empty (leave it out to use {})",
                    kind.env_keys().join(" or ")
                ),
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

    const PROVIDER: &str = "accounts:
  - id: p1
    kind: openai
    models: [gpt-4o-mini]
    provider: { base_url: 'http://127.0.0.1:9000/v1', api_key: sk-secret-123 }
";

    #[test]
    fn provider_accounts_parse_with_defaults() {
        let config = Config::from_yaml(PROVIDER).unwrap();
        config.validate(Role::AllInOne).unwrap();
        let account = &config.accounts[0];
        assert_eq!(account.kind, AccountKind::Openai);
        assert!(!account.is_acp());
        let provider = account.provider.as_ref().unwrap();
        assert_eq!(provider.max_concurrency, 32);
        assert_eq!(provider.timeouts, ProviderTimeouts::default());
        assert_eq!(provider.api_key.as_ref().unwrap().expose(), "sk-secret-123");
        // Existing configs are ACP accounts, unchanged.
        let acp = Config::from_yaml("accounts: [{ id: a }]").unwrap();
        assert_eq!(acp.accounts[0].kind, AccountKind::Acp);
        assert!(acp.accounts[0].provider.is_none());
        // The key never prints.
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-secret-123"), "{debug}");
    }

    #[test]
    fn provider_accounts_are_not_a_workers() {
        let mut config = Config::from_yaml(&format!("{PROVIDER}  - {{ id: a }}\n")).unwrap();
        let ids: Vec<&str> = config
            .worker_accounts()
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(ids, ["a"]);
        config.validate(Role::Worker).unwrap();
        config.worker.accounts = vec!["p1".to_owned()];
        let err = config.validate(Role::Worker).unwrap_err().to_string();
        assert!(err.contains("`worker.accounts[0]`"), "{err}");
        assert!(err.contains("provider account"), "{err}");
        // A single node may serve provider accounts only; a worker may not.
        let only = Config::from_yaml(PROVIDER).unwrap();
        only.validate(Role::AllInOne).unwrap();
        only.validate(Role::Engine).unwrap();
        assert!(only.validate(Role::Worker).is_err());
    }

    #[test]
    fn provider_sections_are_checked() {
        let invalid = |yaml: &str| {
            Config::from_yaml(yaml)
                .unwrap()
                .validate(Role::AllInOne)
                .unwrap_err()
                .to_string()
        };
        let err = invalid("accounts: [{ id: p, kind: openai }]");
        assert!(err.contains("`accounts[0].provider`"), "{err}");
        let err = invalid("accounts: [{ id: a, provider: { base_url: 'http://x' } }]");
        assert!(err.contains("`accounts[0].provider`"), "{err}");
        assert!(err.contains("kind: openai"), "{err}");
        for url in ["ftp://x", "x:80", "http://", "http:///v1", "http://a b"] {
            let err = invalid(&format!(
                "accounts: [{{ id: p, kind: openai, provider: {{ base_url: '{url}' }} }}]"
            ));
            assert!(
                err.contains("`accounts[0].provider.base_url`"),
                "{url}: {err}"
            );
        }
        let err = invalid(
            "accounts: [{ id: p, kind: openai, provider: { base_url: 'http://x', max_concurrency: 0 } }]",
        );
        assert!(
            err.contains("`accounts[0].provider.max_concurrency`"),
            "{err}"
        );
        let err = invalid(
            "accounts: [{ id: p, kind: openai, provider: { base_url: 'http://x', timeouts: { idle: 0s } } }]",
        );
        assert!(
            err.contains("`accounts[0].provider.timeouts.idle`"),
            "{err}"
        );
        let err = invalid(
            "accounts: [{ id: p, kind: openai, provider: { base_url: 'http://x', api_key: '' } }]",
        );
        assert!(err.contains("`accounts[0].provider.api_key`"), "{err}");
        assert!(
            Config::from_yaml("accounts: [{ id: p, kind: mistral }]").is_err(),
            "unknown kinds are refused"
        );
    }

    /// The test CA the end-to-end TLS tests trust.
    fn test_ca() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tls/ca.pem")
    }

    fn https_account(ca_file: Option<&std::path::Path>) -> String {
        let ca = ca_file.map_or(String::new(), |p| format!(", ca_file: '{}'", p.display()));
        format!(
            "accounts: [{{ id: p, kind: openai, provider: {{ base_url: 'https://127.0.0.1:9/v1'{ca} }} }}]"
        )
    }

    #[test]
    fn https_base_urls_are_served_with_an_optional_ca_file() {
        let config = Config::from_yaml(&https_account(None)).unwrap();
        config.validate(Role::AllInOne).unwrap();
        let provider = config.accounts[0].provider.as_ref().unwrap();
        assert!(provider.is_https());
        assert!(provider.extra_roots().unwrap().is_empty());
        let config = Config::from_yaml(&https_account(Some(&test_ca()))).unwrap();
        config.validate(Role::AllInOne).unwrap();
        let roots = config.accounts[0].provider.as_ref().unwrap().extra_roots();
        assert_eq!(roots.unwrap().len(), 1, "the test CA");
    }

    #[test]
    fn a_ca_file_that_cannot_serve_is_a_config_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let garbled = dir.path().join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        for (path, says) in [
            (&missing, "cannot read"),
            (&dir.path().to_path_buf(), "cannot read"),
            (&empty, "holds no certificate"),
            (&key_only, "holds no certificate"),
            (&garbled, "is not a PEM file"),
        ] {
            let err = Config::from_yaml(&https_account(Some(path)))
                .unwrap()
                .validate(Role::AllInOne)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`accounts[0].provider.ca_file`"),
                "{}: {err}",
                path.display()
            );
            assert!(err.contains(says), "{}: {err}", path.display());
        }
        // A CA file on an http:// URL would be ignored: refused instead.
        let yaml = format!(
            "accounts: [{{ id: p, kind: openai, provider: {{ base_url: 'http://x', ca_file: '{}' }} }}]",
            test_ca().display()
        );
        let err = Config::from_yaml(&yaml)
            .unwrap()
            .validate(Role::AllInOne)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`accounts[0].provider.ca_file`"), "{err}");
        assert!(err.contains("only an https://"), "{err}");
    }

    #[test]
    fn anthropic_and_gemini_accounts_are_provider_accounts() {
        let config = Config::from_yaml(
            "accounts:
  - { id: c, kind: anthropic, models: [claude-x], provider: { base_url: 'http://127.0.0.1:9/v1' } }
  - { id: g, kind: gemini, models: [gemini-x], provider: { base_url: 'http://127.0.0.1:9/v1beta', api_key: k } }
",
        )
        .unwrap();
        config.validate(Role::AllInOne).unwrap();
        assert_eq!(config.accounts[0].kind, AccountKind::Anthropic);
        assert_eq!(config.accounts[1].kind, AccountKind::Gemini);
        assert!(config.accounts.iter().all(|a| !a.is_acp()));
        assert!(config.worker_accounts().is_empty(), "no worker serves them");
        assert_eq!(AccountKind::Anthropic.env_keys(), ["ANTHROPIC_API_KEY"]);
        assert_eq!(
            AccountKind::Gemini.env_keys(),
            ["GEMINI_API_KEY", "GOOGLE_API_KEY"]
        );
        assert!(AccountKind::Acp.env_keys().is_empty());
        let invalid = |yaml: &str| {
            Config::from_yaml(yaml)
                .unwrap()
                .validate(Role::AllInOne)
                .unwrap_err()
                .to_string()
        };
        for kind in ["anthropic", "gemini"] {
            let err = invalid(&format!("accounts: [{{ id: p, kind: {kind} }}]"));
            assert!(err.contains("`accounts[0].provider`"), "{err}");
            assert!(err.contains(&format!("(`kind: {kind}`) needs")), "{err}");
            let err = invalid(&format!(
                "accounts: [{{ id: p, kind: {kind}, provider: {{ base_url: 'ftp://x' }} }}]"
            ));
            assert!(err.contains("`accounts[0].provider.base_url`"), "{err}");
        }
        let err = invalid(
            "accounts: [{ id: p, kind: gemini, provider: { base_url: 'http://x', api_key: ' ' } }]",
        );
        assert!(err.contains("GEMINI_API_KEY or GOOGLE_API_KEY"), "{err}");
    }
}
