use std::time::Duration;

use crate::{
    BreakerOverride, CircuitBreakerConfig, Config, PriceConfig, RetryConfig, Role, RouteStrategy,
    WhenConfig, breaker_overrides,
};

const ACCOUNTS: &str = "
accounts:
  - { id: kiro-1, models: [claude-sonnet-4.6] }
  - { id: kiro-2, models: [claude-sonnet-4.6] }
  - id: openai-main
    kind: openai
    models: [claude-sonnet-4.6]
    provider: { base_url: 'http://127.0.0.1:9000/v1' }
";

fn config(rest: &str) -> Result<Config, String> {
    let config = Config::from_yaml(&format!("{ACCOUNTS}{rest}")).map_err(|e| e.to_string())?;
    config.validate(Role::AllInOne).map_err(|e| e.to_string())?;
    Ok(config)
}

#[test]
fn routes_parse_with_their_defaults() {
    let config = config(
        "
routes:
  claude-sonnet-4.6:
    strategy: fallback
    targets:
      - { accounts: [kiro-1, kiro-2] }
      - { accounts: [openai-main] }
  plain:
    targets: [{ accounts: [kiro-1] }]
  split:
    strategy: loadbalance
    targets: [{ accounts: [kiro-1], weight: 70 }, { accounts: [openai-main], weight: 30 }]
  by-key:
    strategy: conditional
    targets:
      - { accounts: [openai-main], when: { key: batch } }
      - { accounts: [kiro-1] }
  cheap:
    strategy: cost-optimized
    targets: [{ accounts: [kiro-1] }, { accounts: [openai-main] }]
  fast: { strategy: least-latency, targets: [{ accounts: [kiro-1] }] }
  one: { strategy: single, targets: [{ accounts: [kiro-2] }] }
prices:
  kiro-1: { input: 0, output: 0 }
  openai-main: { input: 2.5, output: 10 }
",
    )
    .unwrap();
    let route = &config.routes["claude-sonnet-4.6"];
    assert_eq!(route.strategy, RouteStrategy::Fallback);
    assert_eq!(route.targets[0].accounts, ["kiro-1", "kiro-2"]);
    assert_eq!(config.routes["plain"].strategy, RouteStrategy::CreditAware);
    assert_eq!(config.routes["split"].targets[1].weight, Some(30));
    assert_eq!(config.routes["fast"].strategy, RouteStrategy::LeastLatency);
    assert_eq!(config.prices["openai-main"].blended(), 12.5);
    assert_eq!(config.prices["kiro-1"], PriceConfig::default());
    let when = config.routes["by-key"].targets[0].when.clone().unwrap();
    assert!(when.matches("anything", "static.batch"));
    assert!(when.matches("anything", "batch"));
    assert!(!when.matches("anything", "static.other"));
}

#[test]
fn rules_match_on_every_field_given() {
    let when = WhenConfig {
        model: None,
        model_prefix: Some("gpt-".to_owned()),
        key: Some("team-a".to_owned()),
    };
    assert!(when.matches("gpt-4o", "static.team-a"));
    assert!(!when.matches("gpt-4o", "static.team-b"));
    assert!(!when.matches("claude", "static.team-a"));
    let exact = WhenConfig {
        model: Some("cheap".to_owned()),
        ..WhenConfig::default()
    };
    assert!(exact.matches("cheap", "key_1"));
    assert!(!exact.matches("cheaper", "key_1"));
}

#[test]
fn bad_routes_are_errors_naming_the_field() {
    let table = [
        (
            "routes: { m: { targets: [] } }",
            "`routes.m.targets`",
            "at least one target",
        ),
        (
            "routes: { m: { targets: [{ accounts: [] }] } }",
            "`routes.m.targets[0].accounts`",
            "at least one account",
        ),
        (
            "routes: { m: { targets: [{ accounts: [kiro-1, ghost] }] } }",
            "`routes.m.targets[0].accounts[1]`",
            "'ghost'",
        ),
        (
            "routes: { m: { strategy: fallback, targets: [{ accounts: [kiro-1], weight: 3 }] } }",
            "`routes.m.targets[0].weight`",
            "loadbalance",
        ),
        (
            "routes: { m: { strategy: single, targets: [{ accounts: [kiro-1] }, { accounts: [kiro-2] }] } }",
            "`routes.m.targets`",
            "exactly one target",
        ),
        (
            "routes: { m: { targets: [{ accounts: [kiro-1], when: { key: a } }] } }",
            "`routes.m.targets[0].when`",
            "conditional",
        ),
        (
            "routes: { m: { strategy: conditional, targets: [{ accounts: [kiro-1], when: {} }] } }",
            "`routes.m.targets[0].when`",
            "at least one of",
        ),
        (
            "routes: { m: { strategy: loadbalance, targets: [{ accounts: [kiro-1], weight: 0 }] } }",
            "`routes.m.targets`",
            "weight above 0",
        ),
        (
            "routes: { m: { strategy: cost-optimized, targets: [{ accounts: [kiro-1] }] } }",
            "`routes.m.targets[0].accounts[0]`",
            "`prices`",
        ),
        (
            "prices: { ghost: { input: 1 } }",
            "`prices.ghost`",
            "'ghost'",
        ),
        (
            "prices: { kiro-1: { input: -1 } }",
            "`prices.kiro-1.input`",
            "0 or more",
        ),
    ];
    for (yaml, key, words) in table {
        let err = config(yaml).unwrap_err();
        assert!(err.contains(key), "{yaml}: {err}");
        assert!(err.contains(words), "{yaml}: {err}");
    }
    // Unknown strategies and fields are refused by the parser.
    for yaml in [
        "routes: { m: { strategy: random, targets: [{ accounts: [kiro-1] }] } }",
        "routes: { m: { targets: [{ accounts: [kiro-1], retry: 3 }] } }",
        "routes: { m: { targets: [{ accounts: [kiro-1], retry: { tries: 3 } }] } }",
        "routes: { m: { targets: [{ accounts: [kiro-1], retry: { attempts: -1 } }] } }",
        "routes: { m: { targets: [{ accounts: [kiro-1], retry: { backoff: soon } }] } }",
        "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: { threshold: 2 } }] } }",
        "routes: { m: { targets: [{ accounts: [kiro-1], when: { header: x } }] } }",
    ] {
        assert!(config(yaml).is_err(), "{yaml}");
    }
}

#[test]
fn target_overrides_parse_with_their_defaults() {
    let config = config(
        "
health: { circuit_breaker: { failure_threshold: 4, window_size: 8 } }
routes:
  m:
    strategy: fallback
    targets:
      - accounts: [kiro-1, kiro-2]
        retry: { attempts: 3, on_status: [429, 503], backoff: 200ms }
        circuit_breaker: { failure_threshold: 2, reset_timeout: 5s }
      - { accounts: [openai-main], retry: { backoff: 1s } }
      - { accounts: [kiro-1] }
",
    )
    .unwrap();
    let targets = &config.routes["m"].targets;
    assert_eq!(
        targets[0].retry,
        Some(RetryConfig {
            attempts: Some(3),
            on_status: Some(vec![429, 503]),
            backoff: Duration::from_millis(200),
        })
    );
    // Unset: no limit of the target's own, the retryable failures, no wait.
    let plain = targets[1].retry.clone().unwrap();
    assert_eq!((plain.attempts, plain.on_status), (None, None));
    assert_eq!(targets[2].retry, None);
    assert_eq!(targets[2].circuit_breaker, None);
    // The override applies over health.circuit_breaker, field by field.
    let overrides = breaker_overrides(&config.routes, &config.health.circuit_breaker);
    let over = CircuitBreakerConfig {
        failure_threshold: 2,
        window_size: 8,
        reset_timeout: Duration::from_secs(5),
        half_open_probes: 1,
    };
    assert_eq!(overrides.len(), 2, "{overrides:?}");
    assert_eq!(overrides["kiro-1"], over);
    assert_eq!(overrides["kiro-2"], over);
    assert!(!overrides.contains_key("openai-main"));
    // It serialises back to what was written.
    let again: crate::TargetConfig =
        figment::Figment::from(figment::providers::Serialized::defaults(&targets[0]))
            .extract()
            .unwrap();
    assert_eq!(again, targets[0]);
}

#[test]
fn the_backoff_doubles_from_the_second_try_up_to_its_cap() {
    let retry = RetryConfig {
        backoff: Duration::from_millis(100),
        ..RetryConfig::default()
    };
    let waits: Vec<u64> = (1..=8)
        .map(|n| u64::try_from(retry.wait_before(n).as_millis()).unwrap())
        .collect();
    assert_eq!(waits, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
    assert_eq!(RetryConfig::default().wait_before(5), Duration::ZERO);
    assert_eq!(retry.wait_before(u32::MAX), Duration::from_secs(1));
}

#[test]
fn bad_target_overrides_are_errors_naming_the_field() {
    let table = [
        (
            "routes: { m: { targets: [{ accounts: [kiro-1] }, { accounts: [kiro-2], retry: { attempts: 0 } }] } }",
            "`routes.m.targets[1].retry.attempts`",
            "at least 1",
        ),
        (
            "routes: { m: { targets: [{ accounts: [kiro-1], retry: { on_status: [503, 200] } }] } }",
            "`routes.m.targets[0].retry.on_status[1]`",
            "400 to 599",
        ),
        (
            "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: {} }] } }",
            "`routes.m.targets[0].circuit_breaker`",
            "at least one of",
        ),
        (
            "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: { failure_threshold: 11 } }] } }",
            "`routes.m.targets[0].circuit_breaker.failure_threshold`",
            "between 1 and the window size (`window_size`: 10)",
        ),
        (
            "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: { window_size: 0 } }] } }",
            "`routes.m.targets[0].circuit_breaker.failure_threshold`",
            "between 1 and",
        ),
        (
            "routes: { m: { targets: [{ accounts: [kiro-1], circuit_breaker: { half_open_probes: 0 } }] } }",
            "`routes.m.targets[0].circuit_breaker.half_open_probes`",
            "at least 1",
        ),
        (
            "health: { circuit_breaker: { failure_threshold: 0 } }",
            "`health.circuit_breaker.failure_threshold`",
            "between 1 and",
        ),
    ];
    for (yaml, key, words) in table {
        let err = config(yaml).unwrap_err();
        assert!(err.contains(key), "{yaml}: {err}");
        assert!(err.contains(words), "{yaml}: {err}");
    }
}

#[test]
fn two_targets_giving_an_account_different_breakers_is_an_error_naming_both() {
    let err = config(
        "
routes:
  a: { targets: [{ accounts: [kiro-1], circuit_breaker: { failure_threshold: 2 } }] }
  b:
    strategy: fallback
    targets:
      - { accounts: [kiro-2] }
      - { accounts: [openai-main, kiro-1], circuit_breaker: { failure_threshold: 5 } }
",
    )
    .unwrap_err();
    assert!(
        err.contains("`routes.b.targets[1].circuit_breaker`")
            && err.contains("routes.a.targets[0].circuit_breaker")
            && err.contains("'kiro-1'"),
        "{err}"
    );
    // The same settings, however written, agree; a target without an override leaves
    // the account's breaker to the one that has it.
    let config = config(
            "
routes:
  a: { targets: [{ accounts: [kiro-1], circuit_breaker: { failure_threshold: 2, window_size: 10 } }] }
  b: { targets: [{ accounts: [kiro-1], circuit_breaker: { failure_threshold: 2 } }] }
  c: { targets: [{ accounts: [kiro-1] }] }
",
        )
        .unwrap();
    let overrides = breaker_overrides(&config.routes, &config.health.circuit_breaker);
    assert_eq!(overrides["kiro-1"].failure_threshold, 2);
    assert_eq!(
        BreakerOverride::default().over(&config.health.circuit_breaker),
        config.health.circuit_breaker
    );
}
