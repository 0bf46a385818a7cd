//! The conformance suite of [`CreditStore`]: every scenario runs against the embedded store and
//! against ValKey (two clients, "two engines", on a real `redis-server`). Then the ValKey key
//! layout and the embedded store's snapshot.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]
#![expect(
    clippy::disallowed_methods,
    reason = "charges race from tasks of the test's own runtime, which ends with the test"
)]

mod common;

use std::sync::Arc;

use drawbridge_state::{
    Charge, CreditSnapshot, CreditStore, EmbeddedCredits, EmbeddedGatewayStore, MAX_BALANCE,
    StateError, ValkeyRegistry,
};
use test_support::redis::RedisServer;
use test_support::state::{Cleanup, ids, valkey_pair};

/// Two nodes' views of one store (the embedded store has one: both are the same).
type Nodes = test_support::state::Nodes<dyn CreditStore>;

async fn open_embedded() -> (Nodes, Cleanup) {
    let store: Arc<dyn CreditStore> = Arc::new(EmbeddedCredits::new());
    (Nodes::shared(store), Cleanup::default())
}

/// The single-node binary's store: the gateway's data file keeps the balances.
async fn open_embedded_file() -> (Nodes, Cleanup) {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = drawbridge_runtime::Shutdown::new();
    let file = Arc::new(
        EmbeddedGatewayStore::open(dir.path().join("data.redb"), &shutdown)
            .await
            .unwrap(),
    );
    let mut cleanup = Cleanup::default();
    let closing = Arc::clone(&file);
    cleanup.then(async move { closing.close().await.unwrap() });
    cleanup.keep(dir);
    let store: Arc<dyn CreditStore> = file;
    (Nodes::shared(store), cleanup)
}

async fn open_valkey() -> (Nodes, Cleanup) {
    let (a, b, cleanup) = valkey_pair().await;
    (Nodes { a, b }, cleanup)
}

mod suite {
    use super::*;

    pub async fn charges_take_what_is_left_and_never_go_below_zero(n: Nodes) {
        n.a.set_balance("acct-1", Some(25)).await.unwrap();
        assert_eq!(
            n.b.charge("acct-1", 10).await.unwrap(),
            Some(Charge {
                charged: 10,
                balance: 15
            })
        );
        assert_eq!(
            n.a.charge("acct-1", 40).await.unwrap(),
            Some(Charge {
                charged: 15,
                balance: 0
            }),
            "only what was left is taken"
        );
        assert_eq!(
            n.b.charge("acct-1", 5).await.unwrap(),
            Some(Charge {
                charged: 0,
                balance: 0
            })
        );
        assert_eq!(n.a.balances(&ids(&["acct-1"])).await.unwrap(), [Some(0)]);
    }

    pub async fn concurrent_charges_never_overdraw(n: Nodes) {
        const START: i64 = 1_000;
        const EACH: i64 = 7;
        n.a.set_balance("acct-1", Some(START)).await.unwrap();
        let charges = (0..200).map(|i| {
            let store = if i % 2 == 0 {
                Arc::clone(&n.a)
            } else {
                Arc::clone(&n.b)
            };
            tokio::spawn(async move { store.charge("acct-1", EACH).await.unwrap().unwrap() })
        });
        let mut taken = 0;
        let mut short = 0;
        for charge in futures::future::join_all(charges).await {
            let charge = charge.unwrap();
            assert!(charge.balance >= 0, "{charge:?}");
            assert!(charge.charged <= EACH);
            if charge.charged < EACH {
                short += 1;
            }
            taken += charge.charged;
        }
        assert_eq!(taken, START, "every milli-credit was taken exactly once");
        assert_eq!(n.b.balances(&ids(&["acct-1"])).await.unwrap(), [Some(0)]);
        // 1000 = 142 × 7 + 6: one charge got the last 6, the other 57 got nothing.
        assert_eq!(short, 200 - 142);
    }

    pub async fn unmetered_accounts_are_never_charged(n: Nodes) {
        assert_eq!(n.a.charge("free", 50).await.unwrap(), None);
        assert_eq!(
            n.b.balances(&ids(&["free", "other"])).await.unwrap(),
            [None, None]
        );
        // A top-up meters it from zero; removing the balance unmeters it again.
        assert_eq!(n.a.top_up("free", 30).await.unwrap(), 30);
        assert_eq!(n.b.top_up("free", 12).await.unwrap(), 42);
        assert_eq!(n.a.balances(&ids(&["free"])).await.unwrap(), [Some(42)]);
        n.b.set_balance("free", None).await.unwrap();
        assert_eq!(n.a.charge("free", 50).await.unwrap(), None);
        assert_eq!(n.a.top_up("free", MAX_BALANCE).await.unwrap(), MAX_BALANCE);
        assert_eq!(n.a.top_up("free", 1).await.unwrap(), MAX_BALANCE, "capped");
    }

    pub async fn grants_apply_once_per_change(n: Nodes) {
        let grants = vec![
            ("a".to_owned(), Some(1_000)),
            ("b".to_owned(), None),
            ("c".to_owned(), Some(500)),
        ];
        let applied = n.a.apply_grants(&grants).await.unwrap();
        assert_eq!(applied, ["a", "c"]);
        n.a.charge("a", 400).await.unwrap();
        // Another engine (or a restart) with the same config changes nothing.
        assert!(n.b.apply_grants(&grants).await.unwrap().is_empty());
        assert_eq!(
            n.b.balances(&ids(&["a", "b", "c"])).await.unwrap(),
            [Some(600), None, Some(500)]
        );
        // An edited grant is a top-up (or a reset); a grant removed unmeters the account.
        let edited = vec![("a".to_owned(), Some(2_000)), ("c".to_owned(), None)];
        assert_eq!(n.b.apply_grants(&edited).await.unwrap(), ["a", "c"]);
        assert_eq!(
            n.a.balances(&ids(&["a", "c"])).await.unwrap(),
            [Some(2_000), None]
        );
        // A metered account whose balance went missing gets its grant again.
        n.a.set_balance("a", None).await.unwrap();
        assert_eq!(n.a.apply_grants(&edited).await.unwrap(), ["a"]);
        assert_eq!(n.b.balances(&ids(&["a"])).await.unwrap(), [Some(2_000)]);
    }

    pub async fn bad_input_is_refused(n: Nodes) {
        for result in [
            n.a.charge("acct-1", -1).await.map(|_| ()),
            n.a.charge("a:b", 1).await.map(|_| ()),
            n.a.top_up("acct-1", -5).await.map(|_| ()),
            n.a.set_balance("acct-1", Some(-1)).await,
            n.a.set_balance("", Some(1)).await,
            n.a.apply_grants(&[("x y".to_owned(), Some(1))])
                .await
                .map(|_| ()),
        ] {
            assert!(matches!(result, Err(StateError::Invalid(_))), "{result:?}");
        }
        assert_eq!(n.b.balances(&ids(&["acct-1"])).await.unwrap(), [None]);
    }
}

test_support::conformance! {
    scenarios: [
        charges_take_what_is_left_and_never_go_below_zero,
        concurrent_charges_never_overdraw,
        unmetered_accounts_are_never_charged,
        grants_apply_once_per_change,
        bad_input_is_refused,
    ],
    embedded(flavor = "multi_thread", worker_threads = 2) => open_embedded,
    embedded_file(flavor = "multi_thread", worker_threads = 2) => open_embedded_file,
    valkey(flavor = "multi_thread", worker_threads = 2) => open_valkey,
}

#[tokio::test]
async fn valkey_key_layout() {
    use fred::prelude::KeysInterface;
    let server = RedisServer::start();
    let store = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let raw = common::raw_client(&server).await;
    store
        .apply_grants(&[("acct-1".to_owned(), Some(2_500))])
        .await
        .unwrap();
    store.charge("acct-1", 500).await.unwrap();
    let balance: Option<i64> = raw.get("credits:acct-1").await.unwrap();
    assert_eq!(balance, Some(2_000));
    let grant: Option<i64> = raw.get("credits:acct-1:grant").await.unwrap();
    assert_eq!(grant, Some(2_500));
    // What another tool writes with INCRBY is what the engines read.
    let _: i64 = raw.incr_by("credits:acct-1", 5).await.unwrap();
    assert_eq!(
        store.balances(&["acct-1".to_owned()]).await.unwrap(),
        [Some(2_005)]
    );
    let () = raw
        .set("credits:acct-2", "lots", None, None, false)
        .await
        .unwrap();
    let corrupt = store.balances(&["acct-2".to_owned()]).await;
    assert!(
        matches!(corrupt, Err(StateError::Corrupt(_))),
        "{corrupt:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn the_embedded_store_restores_from_its_snapshot() {
    let store = EmbeddedCredits::new();
    store
        .apply_grants(&[("a".to_owned(), Some(100)), ("b".to_owned(), Some(7))])
        .await
        .unwrap();
    store.charge("a", 30).await.unwrap();
    store.top_up("c", 5).await.unwrap();
    let snapshot = store.snapshot();
    assert_eq!(
        snapshot,
        CreditSnapshot {
            balances: vec![("a".into(), 70), ("b".into(), 7), ("c".into(), 5)],
            grants: vec![("a".into(), 100), ("b".into(), 7)],
        }
    );
    assert_eq!(store.all_balances(), snapshot.balances);
    let json = serde_json::to_string(&snapshot).unwrap();
    let restored = EmbeddedCredits::restore(serde_json::from_str(&json).unwrap());
    // The same config after a restart changes nothing: what was spent stays spent.
    assert!(
        restored
            .apply_grants(&[("a".to_owned(), Some(100))])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        CreditStore::balances(&restored, &ids(&["a", "b", "c"]))
            .await
            .unwrap(),
        [Some(70), Some(7), Some(5)]
    );
}

/// The single-node binary restarts: its balances (and the grants already applied) are read back
/// from the data file, so a restart does not refill a spent account.
#[tokio::test]
async fn the_data_file_keeps_balances_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    let shutdown = drawbridge_runtime::Shutdown::new();
    let store = EmbeddedGatewayStore::open(&path, &shutdown).await.unwrap();
    store
        .apply_grants(&[("a".to_owned(), Some(1_000)), ("b".to_owned(), Some(50))])
        .await
        .unwrap();
    store.charge("a", 400).await.unwrap();
    store.top_up("c", 9).await.unwrap();
    store.set_balance("b", None).await.unwrap();
    store.close().await.unwrap();

    let store = EmbeddedGatewayStore::open(&path, &shutdown).await.unwrap();
    let ids = ["a", "b", "c"].map(str::to_owned);
    assert_eq!(
        store.balances(&ids).await.unwrap(),
        [Some(600), None, Some(9)]
    );
    assert!(
        store
            .apply_grants(&[("a".to_owned(), Some(1_000))])
            .await
            .unwrap()
            .is_empty(),
        "the same grant after a restart changes nothing"
    );
    assert_eq!(store.balances(&ids[..1]).await.unwrap(), [Some(600)]);
    store.close().await.unwrap();
}
