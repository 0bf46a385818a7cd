//! What a ValKey restart keeps: with persistence on (AOF, as the compose file runs ValKey),
//! API keys, the usage ledger, what each key spent and the accounts' credits are all there
//! again after `redis-server` is killed and started on the same data directory; without it
//! (how `scripts/cluster.sh` and the tests run it), nothing is, and the store says so.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use drawbridge_state::{
    ApiKeyRecord, CreditStore, KeyLimits, KeyStore, UsageEntry, UsageFilter, UsageStore,
    ValkeyRegistry,
};
use test_support::redis::RedisServer;
use test_support::state::wall_ms;

fn record(id: &str, created_at_ms: u64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        name: format!("{id} for tests"),
        prefix: "db-persist".to_owned(),
        // The store checks only the shape: 64 lowercase hex digits.
        hash: format!("{:064x}", u128::from(id.len() as u32) << 64 | 0xfeed),
        created_at_ms,
        expires_at_ms: None,
        revoked_at_ms: None,
        last_used_at_ms: None,
        limits: KeyLimits {
            rpm: Some(30),
            quota: None,
            models: vec!["kiro".into()],
        },
    }
}

fn entry(request_id: &str, at_ms: u64) -> UsageEntry {
    UsageEntry {
        request_id: request_id.to_owned(),
        key_id: "key_persist".to_owned(),
        account: "acct-a".to_owned(),
        model: "kiro".to_owned(),
        at_ms,
        prompt_tokens: 10,
        completion_tokens: 20,
        credits: 0.5,
        tokens_estimated: false,
    }
}

/// Write keys, usage and credits; kill and restart the server; read them back (`None` when the
/// key is gone).
async fn write_restart_read(
    server: &mut RedisServer,
) -> (
    Option<bool>,
    Option<ApiKeyRecord>,
    usize,
    u64,
    Vec<Option<i64>>,
) {
    let now = wall_ms();
    let store = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let persists = store.persists().await;
    store.create_key(&record("key_persist", now)).await.unwrap();
    store.record_usage(&entry("req-1", now)).await.unwrap();
    store.record_usage(&entry("req-2", now + 1)).await.unwrap();
    store
        .apply_grants(&[("acct-a".to_owned(), Some(1_000))])
        .await
        .unwrap();
    store.charge("acct-a", 400).await.unwrap();
    store.close().await;

    server.restart(); // SIGKILL, then the same port and data directory

    let store = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let key = store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == "key_persist");
    let rows = store.usage(&UsageFilter::default()).await.unwrap().len();
    let spent = store.spent("key_persist").await.unwrap().requests;
    let balances = store.balances(&["acct-a".to_owned()]).await.unwrap();
    store.close().await;
    (persists, key, rows, spent, balances)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_usage_and_credits_survive_a_restart_with_persistence() {
    // `appendfsync always`: every write is on disk before the reply, so SIGKILL loses nothing
    // (compose's `everysec` may lose the last second).
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (persists, key, rows, spent, balances) = write_restart_read(&mut server).await;
    assert_eq!(persists, Some(true));
    let key = key.expect("the API key is still there");
    assert_eq!(key.limits.rpm, Some(30));
    assert_eq!(key.limits.models, ["kiro"]);
    assert_eq!(rows, 1, "one usage row (a key, an account, a model, a day)");
    assert_eq!(spent, 2, "both charged requests");
    assert_eq!(balances, [Some(600)], "the grant less the charge");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_a_restart_keeps_nothing_and_the_store_says_so() {
    let mut server = RedisServer::start();
    let (persists, key, rows, spent, balances) = write_restart_read(&mut server).await;
    assert_eq!(
        persists,
        Some(false),
        "the warning at start comes from this"
    );
    assert!(key.is_none());
    assert_eq!((rows, spent), (0, 0));
    assert_eq!(balances, [None]);
    server.stop();
}
