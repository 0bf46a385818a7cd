use super::*;

fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml).unwrap()
}

const TWO: &str = "accounts:
  - { id: a }
  - { id: p1, kind: openai, models: [m1], provider: { base_url: 'http://127.0.0.1:9/v1', max_concurrency: 2 } }
  - { id: p2, kind: openai, models: [m2], provider: { base_url: 'http://127.0.0.1:9/v1/' } }
";

async fn slots(conn: &ProviderConn) -> Vec<AccountSlots> {
    conn.slots().await.unwrap().accounts
}

#[tokio::test]
async fn one_slot_entry_per_provider_account() {
    assert!(ProviderConn::from_config(&config("accounts: [{ id: a }]")).is_none());
    let conn = ProviderConn::from_config(&config(TWO)).unwrap();
    let report = slots(&conn).await;
    let ids: Vec<&str> = report.iter().map(|a| a.account.as_str()).collect();
    assert_eq!(ids, ["p1", "p2"], "the ACP account is a worker's");
    assert_eq!((report[0].size, report[0].idle, report[0].busy), (2, 2, 0));
    assert_eq!(report[1].size, 32);
    assert_eq!(report[0].models, ["m1"]);
    let accounts = conn.accounts.load();
    assert_eq!(
        accounts[1].base, "http://127.0.0.1:9/v1",
        "no trailing slash"
    );
}

#[tokio::test]
async fn calls_in_flight_are_counted_up_to_the_limit() {
    let conn = ProviderConn::from_config(&config(TWO)).unwrap();
    let account = Arc::clone(&conn.accounts.load()[0]);
    let first = Busy::take(&account.busy, account.max_concurrency).unwrap();
    let second = Busy::take(&account.busy, account.max_concurrency).unwrap();
    assert!(Busy::take(&account.busy, account.max_concurrency).is_none());
    assert_eq!(slots(&conn).await[0].busy, 2);
    assert_eq!(slots(&conn).await[0].idle, 0);
    drop(first);
    drop(second);
    assert_eq!(slots(&conn).await[0].busy, 0);
}

#[tokio::test]
async fn a_full_account_refuses_with_no_capacity_and_an_unknown_one_is_unavailable() {
    let conn = ProviderConn::from_config(&config(TWO)).unwrap();
    let account = Arc::clone(&conn.accounts.load()[0]);
    let _held = [
        Busy::take(&account.busy, 2).unwrap(),
        Busy::take(&account.busy, 2).unwrap(),
    ];
    let input = |account: &str| PromptInput {
        request_id: "r".into(),
        model: "m1".into(),
        account: Some(account.into()),
        body: drawbridge_types::worker::PromptBody::Text("x".into()),
        max_output_tokens: None,
        tools: Default::default(),
        live_session: None,
        conversation: None,
        params: Default::default(),
    };
    let events: Vec<WorkerEvent> = conn.prompt(input("p1")).collect().await;
    assert!(
        matches!(&events[..], [WorkerEvent::Error(e)] if e.kind == ErrorKind::NoCapacity),
        "{events:?}"
    );
    let events: Vec<WorkerEvent> = conn.prompt(input("nope")).collect().await;
    assert!(
        matches!(&events[..], [WorkerEvent::Error(e)] if e.kind == ErrorKind::Unavailable),
        "{events:?}"
    );
}

#[tokio::test]
async fn https_accounts_trust_their_ca_file_and_one_that_cannot_be_read_is_not_served() {
    let ca =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tls/ca.pem");
    let yaml = |ca: &std::path::Path| {
        format!(
            "accounts: [{{ id: p, kind: openai, provider: {{ base_url: 'https://127.0.0.1:9/v1', ca_file: '{}' }} }}]",
            ca.display()
        )
    };
    let conn = ProviderConn::from_config(&config(&yaml(&ca))).unwrap();
    assert_eq!(slots(&conn).await.len(), 1);
    let with_ca = tls_config(&conn.accounts.load()[0].settings).unwrap();
    let plain = config(TWO);
    let without = tls_config(plain.accounts[1].provider.as_ref().unwrap()).unwrap();
    assert!(
        with_ca.alpn_protocols.is_empty() && without.alpn_protocols.is_empty(),
        "the connector sets ALPN itself"
    );
    // The file went away after the config was validated: the account is left out.
    let gone = ca.with_file_name("gone.pem");
    assert!(ProviderConn::from_config(&config(&yaml(&gone))).is_none());
}

#[test]
fn a_tls_failure_is_told_from_other_transport_errors() {
    use std::io;
    let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    // As the TLS stream and the connector wrap it.
    let wrapped = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, untrusted));
    let found = tls_failure(&wrapped).map(ToString::to_string);
    assert!(
        found.as_deref().is_some_and(|m| m.contains("certificate")),
        "{found:?}"
    );
    let refused = io::Error::other(io::Error::from(io::ErrorKind::ConnectionRefused));
    assert!(tls_failure(&refused).is_none());
    assert!(
        error_chain(&refused).contains("refused"),
        "{}",
        error_chain(&refused)
    );
}

#[tokio::test]
async fn a_reload_keeps_unchanged_accounts_and_replaces_changed_ones() {
    let conn = ProviderConn::from_config(&config(TWO)).unwrap();
    let before = conn.accounts.load_full();
    assert!(!conn.apply(&config(TWO)), "the same config changes nothing");
    let changed = TWO.replace("max_concurrency: 2", "max_concurrency: 5");
    assert!(conn.apply(&config(&changed)));
    let after = conn.accounts.load_full();
    assert!(!Arc::ptr_eq(&before[0], &after[0]), "p1 changed");
    assert!(Arc::ptr_eq(&before[1], &after[1]), "p2 kept");
    assert_eq!(after[0].max_concurrency, 5);
    assert!(conn.apply(&config("accounts: [{ id: a }]")));
    assert!(slots(&conn).await.is_empty());
}

#[test]
fn the_kind_chooses_the_url_the_key_header_and_the_body() {
    let input = PromptInput {
        request_id: "r".into(),
        model: "m-1".into(),
        account: None,
        body: drawbridge_types::worker::PromptBody::Text("x".into()),
        max_output_tokens: None,
        tools: Default::default(),
        live_session: None,
        conversation: None,
        params: Default::default(),
    };
    let key = Secret::new("k-123".to_owned());
    let base = "http://h/v";
    let (url, body) = Wire::Openai.request(base, &input);
    assert_eq!(url, "http://h/v/chat/completions");
    assert!(body.get("messages").is_some());
    let (url, body) = Wire::Anthropic.request(base, &input);
    assert_eq!(url, "http://h/v/messages");
    assert!(body.get("max_tokens").is_some());
    let (url, body) = Wire::Gemini.request(base, &input);
    assert_eq!(url, "http://h/v/models/m-1:streamGenerateContent?alt=sse");
    assert!(body.get("contents").is_some());
    let names = |wire: Wire| -> Vec<(String, String)> {
        wire.headers(Some(&key))
            .into_iter()
            .map(|(n, v)| (n.as_str().to_owned(), v))
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        names(Wire::Openai),
        pairs(&[("authorization", "Bearer k-123")])
    );
    assert_eq!(
        names(Wire::Anthropic),
        pairs(&[("anthropic-version", "2023-06-01"), ("x-api-key", "k-123")])
    );
    assert_eq!(names(Wire::Gemini), pairs(&[("x-goog-api-key", "k-123")]));
    assert!(Wire::Gemini.headers(None).is_empty());
    assert_eq!(Wire::of(AccountKind::Acp), None);
}

#[tokio::test]
async fn every_provider_kind_is_served_and_a_kind_change_replaces_the_account() {
    let yaml = "accounts:
  - { id: o, kind: openai, provider: { base_url: 'http://127.0.0.1:9/v1' } }
  - { id: c, kind: anthropic, provider: { base_url: 'http://127.0.0.1:9/v1' } }
  - { id: g, kind: gemini, provider: { base_url: 'http://127.0.0.1:9/v1beta' } }
";
    let conn = ProviderConn::from_config(&config(yaml)).unwrap();
    let wires: Vec<Wire> = conn.accounts.load().iter().map(|a| a.wire).collect();
    assert_eq!(wires, [Wire::Openai, Wire::Anthropic, Wire::Gemini]);
    let before = conn.accounts.load_full();
    assert!(conn.apply(&config(&yaml.replace("kind: gemini", "kind: openai"))));
    let after = conn.accounts.load_full();
    assert!(Arc::ptr_eq(&before[0], &after[0]));
    assert!(!Arc::ptr_eq(&before[2], &after[2]), "g changed kind");
    assert_eq!(after[2].wire, Wire::Openai);
}

#[test]
fn keys_come_from_each_kinds_variables() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        EnvKeys::from(move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    };
    let keys = env(&[
        ("OPENAI_API_KEY", "o"),
        ("ANTHROPIC_API_KEY", "a"),
        ("GEMINI_API_KEY", " "),
        ("GOOGLE_API_KEY", "g"),
    ]);
    let key = |kind| keys.get(kind).map(|k| k.expose().to_owned());
    assert_eq!(key(AccountKind::Openai).as_deref(), Some("o"));
    assert_eq!(key(AccountKind::Anthropic).as_deref(), Some("a"));
    assert_eq!(
        key(AccountKind::Gemini).as_deref(),
        Some("g"),
        "a blank GEMINI_API_KEY gives way to GOOGLE_API_KEY"
    );
    let keys = env(&[("GEMINI_API_KEY", "first"), ("GOOGLE_API_KEY", "second")]);
    assert_eq!(
        keys.get(AccountKind::Gemini).map(Secret::expose),
        Some("first")
    );
    assert!(keys.get(AccountKind::Anthropic).is_none());
    assert!(keys.get(AccountKind::Acp).is_none());
}
