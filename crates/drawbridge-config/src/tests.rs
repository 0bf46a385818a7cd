//! Tests across sections: the shapes the binaries read, each role's checks, the shipped files.

use std::time::Duration;

use crate::*;

pub(crate) const GOOD: &str = r#"
node: { id: n1 }
gateway:
  listen: 127.0.0.1:0
  api_keys: [{ name: demo, key: db-demo-key-123 }]
accounts:
  - id: pro-1
    pool_size: 2
    tier: pro
    agent: { command: mock-acp-agent, args: [], env: { MOCK_ACP_DELAY_MS: "5" } }
  - id: pro-2
"#;

#[test]
fn parses_the_seed_shape_with_defaults() {
    let config = Config::from_yaml(GOOD).unwrap();
    assert_eq!(config.gateway.responses_ttl, Duration::from_secs(3600));
    config.validate(Role::AllInOne).unwrap();
    assert_eq!(config.accounts[0].pool_size, 2);
    assert_eq!(config.accounts[1].pool_size, 3);
    assert_eq!(config.accounts[1].models, vec!["kiro"]);
    assert_eq!(config.accounts[1].agent.command, "kiro-cli");
    assert_eq!(config.accounts[1].agent.args, vec!["acp"]);
    assert_eq!(config.worker.queue_timeout, Duration::from_secs(30));
    assert_eq!(config.gateway.api_keys[0].key.expose(), "db-demo-key-123");
    assert_eq!(config.continuation.max_rounds, 5);
    assert_eq!(config.continuation.context_threshold, 0.95);
    assert_eq!(config.sanitize.mode, SanitizeModeConfig::Full);
    let seeds = Config::from_yaml(
        "continuation: { enabled: true, max_rounds: 5, context_threshold: 0.95 }\n\
         sanitize: { mode: xml, strip_xml_tags: true, strip_builtin_tools: true }",
    )
    .unwrap();
    assert_eq!(seeds.sanitize.mode, SanitizeModeConfig::Xml);
    let breaker = Config::from_yaml(
        "health: { circuit_breaker: { failure_threshold: 3, reset_timeout: 60s, window_size: 10 } }",
    )
    .unwrap();
    assert_eq!(
        breaker.health.circuit_breaker.reset_timeout,
        Duration::from_secs(60)
    );
}

#[test]
fn credits_are_optional_per_account() {
    let config = Config::from_yaml(
        "accounts: [{ id: metered, credits: 250.5 }, { id: free }]\nengine: { request_cost: 0.25 }",
    )
    .unwrap();
    config.validate(Role::AllInOne).unwrap();
    assert_eq!(config.accounts[0].credits, Some(250.5));
    assert_eq!(config.accounts[1].credits, None);
    assert_eq!(config.engine.request_cost, 0.25);
    assert_eq!(EngineConfig::default().request_cost, 1.0);
    let err = Config::from_yaml("accounts: [{ id: a }]\nengine: { rate_limit_cooldown: 0s }")
        .unwrap()
        .validate(Role::Engine)
        .unwrap_err()
        .to_string();
    assert!(err.contains("engine.rate_limit_cooldown"), "{err}");
    let engine = EngineConfig::default();
    assert_eq!(
        (engine.retries_per_account, engine.max_attempts),
        (0, 3),
        "the retry and rotation budgets"
    );
    for (yaml, key) in [
        ("engine: { idle_timeout: 0s }", "engine.idle_timeout"),
        (
            "engine: { first_byte_timeout: 0s }",
            "engine.first_byte_timeout",
        ),
        ("engine: { request_timeout: 0s }", "engine.request_timeout"),
        (
            "engine: { retries_per_account: 6 }",
            "engine.retries_per_account",
        ),
        (
            "engine: { affinity: { header: 'x session' } }",
            "engine.affinity.header",
        ),
        ("engine: { affinity: { ttl: 0s } }", "engine.affinity.ttl"),
        ("engine: { affinity: { ttl: 31d } }", "engine.affinity.ttl"),
        (
            "engine: { rate_limit_cooldown: 800h }",
            "engine.rate_limit_cooldown",
        ),
    ] {
        let err = Config::from_yaml(&format!("accounts: [{{ id: a }}]\n{yaml}"))
            .unwrap()
            .validate(Role::Engine)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{yaml} → {err}");
    }
}

#[test]
fn validation_names_the_key() {
    let cases = [
        (
            "accounts: [{ id: a, pool_size: 0 }]",
            "accounts[0].pool_size",
        ),
        ("accounts: [{ id: a }, { id: a }]", "accounts[1].id"),
        ("accounts: [{ id: '../x' }]", "accounts[0].id"),
        ("accounts: [{ id: a, models: [] }]", "accounts[0].models"),
        ("accounts: []", "accounts"),
        (
            "accounts: [{ id: a }]\ngateway: { api_keys: [{ name: x, key: short }] }",
            "gateway.api_keys[0].key",
        ),
        (
            "accounts: [{ id: a }]\nworker: { accounts: [b] }",
            "worker.accounts[0]",
        ),
        (
            "accounts: [{ id: a }]\nadmin: { auth_token: tiny }",
            "admin.auth_token",
        ),
        ("accounts: [{ id: a, credits: -1 }]", "accounts[0].credits"),
        (
            "accounts: [{ id: a, credits: .inf }]",
            "accounts[0].credits",
        ),
        (
            "accounts: [{ id: a }]\nengine: { request_cost: -0.5 }",
            "engine.request_cost",
        ),
        (
            "accounts: [{ id: a }]\ngateway: { responses_ttl: 0s }",
            "gateway.responses_ttl",
        ),
        (
            "accounts: [{ id: a }]\ngateway: { responses_ttl: 31d }",
            "gateway.responses_ttl",
        ),
    ];
    for (yaml, key) in cases {
        let err = Config::from_yaml(yaml)
            .unwrap()
            .validate(Role::AllInOne)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("`{key}`")), "{yaml} → {err}");
    }
}

#[test]
fn each_role_checks_its_own_sections() {
    let gateway_only = Config::from_yaml("gateway: { engine_url: 'ftp://x' }").unwrap();
    assert!(gateway_only.validate(Role::Engine).is_ok());
    let err = gateway_only
        .validate(Role::Gateway)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gateway.engine_url"), "{err}");
    // A gateway needs no accounts; a worker does.
    let empty = Config::default();
    assert!(empty.validate(Role::Gateway).is_ok());
    assert!(empty.validate(Role::Worker).is_err());
}

/// `gateway.engine_urls` lists the engines in order of preference; `engine_url` stays the
/// one-engine form; with neither, the default engine. Each problem names its key.
#[test]
fn a_gateway_takes_several_engines() {
    let urls = |yaml: &str| {
        let config = Config::from_yaml(yaml).unwrap();
        config.validate(Role::Gateway).unwrap();
        config.gateway.engine_urls()
    };
    assert_eq!(
        urls("gateway: { engine_urls: ['http://e1:8081', 'http://e2:8081'] }"),
        ["http://e1:8081", "http://e2:8081"]
    );
    assert_eq!(
        urls("gateway: { engine_url: 'http://e1:8081' }"),
        ["http://e1:8081"]
    );
    assert_eq!(urls("gateway: {}"), ["http://127.0.0.1:8081"]);
    // An override (the environment's, say) may set the list.
    use figment::providers::Format as _;
    let figment = figment::Figment::from(figment::providers::Yaml::string("gateway: {}")).merge(
        figment::providers::Serialized::default(
            "gateway.engine_urls",
            vec!["http://e1:1", "http://e2:2"],
        ),
    );
    let config = Config::from_figment(figment).unwrap();
    assert_eq!(config.gateway.engine_urls(), ["http://e1:1", "http://e2:2"]);

    let cases = [
        ("gateway: { engine_urls: [] }", "gateway.engine_urls"),
        (
            "gateway: { engine_urls: ['http://e1:1', 'https://e2:2'] }",
            "gateway.engine_urls[1]",
        ),
        (
            "gateway: { engine_urls: ['http://'] }",
            "gateway.engine_urls[0]",
        ),
        (
            "gateway: { engine_urls: ['http://e1:1', 'http://e1:1/'] }",
            "gateway.engine_urls[1]",
        ),
        (
            "gateway: { engine_url: 'http://e1:1', engine_urls: ['http://e2:2'] }",
            "gateway.engine_urls",
        ),
        ("gateway: { engine_url: 'e1:1' }", "gateway.engine_url"),
    ];
    for (yaml, key) in cases {
        let config = Config::from_yaml(yaml).unwrap();
        let err = config.validate(Role::Gateway).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{yaml} → {err}");
        // Only the process that calls the engines checks them.
        config.validate(Role::Engine).unwrap();
    }
    // An existing config's one engine reads back as it was written.
    let config = Config::from_yaml("gateway: { engine_url: 'http://e1:8081' }").unwrap();
    let written = figment::value::Value::serialize(&config.gateway).unwrap();
    assert_eq!(
        written.find_ref("engine_url").and_then(|v| v.as_str()),
        Some("http://e1:8081")
    );
    assert!(written.find_ref("engine_urls").is_none(), "{written:?}");
}

#[test]
fn the_shipped_configs_are_valid() {
    let demo = Config::from_yaml(include_str!("../../../config/demo.yaml")).unwrap();
    demo.validate(Role::AllInOne).unwrap();
    let kiro = Config::from_yaml(include_str!("../../../config/kiro.example.yaml")).unwrap();
    for role in [Role::AllInOne, Role::Gateway, Role::Engine, Role::Worker] {
        kiro.validate(role).unwrap();
    }
    assert_eq!(kiro.accounts[0].agent.command, "kiro-cli");
    let cluster = Config::from_yaml(include_str!("../../../config/cluster.yaml")).unwrap();
    for role in [Role::Gateway, Role::Engine, Role::Worker] {
        cluster.validate(role).unwrap();
    }
    assert_eq!(cluster.cluster.assignment, AssignmentMode::Registry);
    let providers =
        Config::from_yaml(include_str!("../../../config/providers.example.yaml")).unwrap();
    for role in [Role::AllInOne, Role::Engine, Role::Worker] {
        providers.validate(role).unwrap();
    }
    let kinds: Vec<crate::AccountKind> = providers.accounts.iter().map(|a| a.kind).collect();
    for kind in [
        crate::AccountKind::Acp,
        crate::AccountKind::Openai,
        crate::AccountKind::Anthropic,
        crate::AccountKind::Gemini,
    ] {
        assert!(kinds.contains(&kind), "an example of every kind: {kinds:?}");
    }
    assert_eq!(
        providers.worker_accounts().len(),
        1,
        "the worker serves kiro-1 only"
    );
    // One route per strategy.
    let mut strategies: Vec<String> = providers
        .routes
        .values()
        .map(|r| format!("{:?}", r.strategy))
        .collect();
    strategies.sort();
    strategies.dedup();
    assert_eq!(strategies.len(), 7, "{strategies:?}");
    // And one example of each per-target override.
    let targets = || providers.routes.values().flat_map(|r| &r.targets);
    assert!(targets().any(|t| t.retry.is_some()));
    assert!(targets().any(|t| t.circuit_breaker.is_some()));
}

#[test]
fn worker_accounts_filters_by_assignment() {
    let mut config = Config::from_yaml(GOOD).unwrap();
    assert_eq!(config.worker_accounts().len(), 2);
    config.worker.accounts = vec!["pro-2".to_owned()];
    let ids: Vec<&str> = config
        .worker_accounts()
        .iter()
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(ids, vec!["pro-2"]);
}

#[test]
fn an_engine_with_redis_needs_no_static_workers() {
    let yaml =
        format!("{GOOD}redis: {{ url: \"redis://127.0.0.1:6379\" }}\nengine: {{ workers: [] }}\n");
    let config = Config::from_yaml(&yaml).unwrap();
    config.validate(Role::Engine).unwrap();
    let config = Config::from_yaml(&format!("{GOOD}engine: {{ workers: [] }}\n")).unwrap();
    let err = config.validate(Role::Engine).unwrap_err().to_string();
    assert!(err.contains("engine.workers"), "{err}");
}

#[test]
fn an_engine_with_provider_accounts_needs_no_worker() {
    let providers_only = "node: { id: n }\nengine: { workers: [] }\naccounts:\n  - id: up\n    kind: openai\n    models: [gpt-test]\n    provider: { base_url: \"http://127.0.0.1:9/v1\" }\n";
    let config = Config::from_yaml(providers_only).unwrap();
    config.validate(Role::Engine).unwrap();
}

#[test]
fn model_aliases_resolve_in_one_step() {
    let config = Config::from_yaml(&format!(
        "{GOOD}model_aliases: {{ gpt-4o: claude-sonnet-4.6, claude-sonnet: claude-sonnet-4.6 }}\n"
    ))
    .unwrap();
    config.validate(Role::AllInOne).unwrap();
    assert_eq!(config.model_aliases["gpt-4o"], "claude-sonnet-4.6");
    let long = "m".repeat(129);
    let cases = [
        (
            "model_aliases: { kiro: kiro }".to_owned(),
            "model_aliases.kiro",
        ),
        (
            "model_aliases: { a: b, b: claude }".to_owned(),
            "model_aliases.a",
        ),
        ("model_aliases: { a: '' }".to_owned(), "model_aliases.a"),
        ("model_aliases: { '': kiro }".to_owned(), "model_aliases"),
        (format!("model_aliases: {{ a: {long} }}"), "model_aliases.a"),
    ];
    for (yaml, key) in cases {
        let err = Config::from_yaml(&format!("{GOOD}{yaml}\n"))
            .unwrap()
            .validate(Role::AllInOne)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("`{key}`")), "{yaml} → {err}");
    }
}

#[test]
fn keepalive_and_reasoning_have_defaults_and_checks() {
    let config = Config::from_yaml(GOOD).unwrap();
    assert_eq!(config.engine.keepalive_interval, Duration::from_secs(10));
    assert_eq!(config.engine.reasoning, ReasoningMode::On);
    let fold = Config::from_yaml(&format!(
        "{GOOD}engine: {{ reasoning: fold, keepalive_interval: 3s }}\n"
    ))
    .unwrap();
    fold.validate(Role::AllInOne).unwrap();
    assert_eq!(fold.engine.reasoning, ReasoningMode::Fold);
    assert_eq!(fold.engine.keepalive_interval, Duration::from_secs(3));
    assert!(Config::from_yaml(&format!("{GOOD}engine: {{ reasoning: loud }}\n")).is_err());
    let err = Config::from_yaml(&format!("{GOOD}engine: {{ keepalive_interval: 0s }}\n"))
        .unwrap()
        .validate(Role::AllInOne)
        .unwrap_err()
        .to_string();
    assert!(err.contains("engine.keepalive_interval"), "{err}");
}
