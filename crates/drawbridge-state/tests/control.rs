//! The conformance suite of [`LeaseStore`] and [`AccountStore`]: every scenario runs against the
//! embedded store (on paused tokio time: TTLs pass instantly) and against ValKey (two clients,
//! "two engines", on a real `redis-server`). Then the ValKey key layout.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use drawbridge_state::{
    AccountRecord, AccountStore, CONTROLLER_LEASE, EmbeddedControl, Lease, LeaseStore, StateError,
    ValkeyRegistry,
};
use test_support::redis::RedisServer;
use test_support::state::{Cleanup, outlive, valkey_pair};

const TTL: Duration = Duration::from_secs(15);

/// Two nodes' views of one store (the embedded store has one: both are the same).
type Nodes = test_support::state::Nodes<dyn Both>;

trait Both: LeaseStore + AccountStore {}
impl<T: LeaseStore + AccountStore> Both for T {}

fn account(id: &str) -> AccountRecord {
    AccountRecord {
        id: id.to_owned(),
        models: vec!["kiro".to_owned()],
        pool_size: 2,
        assigned_pod: None,
    }
}

async fn open_embedded() -> (Nodes, Cleanup) {
    let store: Arc<dyn Both> = Arc::new(EmbeddedControl::new());
    (Nodes::shared(store), Cleanup::default())
}

async fn open_valkey() -> (Nodes, Cleanup) {
    let (a, b, cleanup) = valkey_pair().await;
    (Nodes { a, b }, cleanup)
}

mod suite {
    use super::*;

    pub async fn one_holder_at_a_time(n: Nodes) {
        let token = n.a.acquire(CONTROLLER_LEASE, "e1", TTL).await.unwrap();
        let token = token.expect("a free lease is taken");
        assert_eq!(
            n.b.acquire(CONTROLLER_LEASE, "e2", TTL).await.unwrap(),
            None
        );
        assert_eq!(
            n.a.acquire(CONTROLLER_LEASE, "e1", TTL).await.unwrap(),
            None
        );
        let lease = Lease {
            holder: "e1".into(),
            token,
        };
        assert_eq!(
            n.b.holder(CONTROLLER_LEASE).await.unwrap(),
            Some(lease.clone())
        );
        assert!(n.a.renew(CONTROLLER_LEASE, &lease, TTL).await.unwrap());
        let impostor = Lease {
            holder: "e2".into(),
            token,
        };
        assert!(!n.b.renew(CONTROLLER_LEASE, &impostor, TTL).await.unwrap());
        assert!(!n.b.release(CONTROLLER_LEASE, &impostor).await.unwrap());
        assert!(n.a.release(CONTROLLER_LEASE, &lease).await.unwrap());
        assert_eq!(n.b.holder(CONTROLLER_LEASE).await.unwrap(), None);
        let next = n.b.acquire(CONTROLLER_LEASE, "e2", TTL).await.unwrap();
        assert!(next.unwrap() > token, "tokens only grow");
    }

    pub async fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced(n: Nodes) {
        let short = Duration::from_millis(300);
        n.a.put_accounts(&[account("acct-1")]).await.unwrap();
        let old = Lease {
            holder: "e1".into(),
            token: n
                .a
                .acquire(CONTROLLER_LEASE, "e1", short)
                .await
                .unwrap()
                .unwrap(),
        };
        n.a.assign("acct-1", Some("w1"), CONTROLLER_LEASE, &old)
            .await
            .unwrap();
        outlive(short).await;
        assert_eq!(n.b.holder(CONTROLLER_LEASE).await.unwrap(), None);
        let new = Lease {
            holder: "e2".into(),
            token: n
                .b
                .acquire(CONTROLLER_LEASE, "e2", TTL)
                .await
                .unwrap()
                .unwrap(),
        };
        assert!(new.token > old.token);
        assert!(!n.a.renew(CONTROLLER_LEASE, &old, TTL).await.unwrap());
        let refused =
            n.a.assign("acct-1", Some("w9"), CONTROLLER_LEASE, &old)
                .await;
        assert!(matches!(refused, Err(StateError::Fenced(_))), "{refused:?}");
        n.b.assign("acct-1", Some("w2"), CONTROLLER_LEASE, &new)
            .await
            .unwrap();
        let accounts = n.a.accounts().await.unwrap();
        assert_eq!(accounts[0].assigned_pod.as_deref(), Some("w2"));
    }

    pub async fn desired_accounts_keep_their_assignment(n: Nodes) {
        n.a.put_accounts(&[account("b"), account("a")])
            .await
            .unwrap();
        let lease = Lease {
            holder: "e1".into(),
            token: n
                .a
                .acquire(CONTROLLER_LEASE, "e1", TTL)
                .await
                .unwrap()
                .unwrap(),
        };
        n.a.assign("a", Some("w1"), CONTROLLER_LEASE, &lease)
            .await
            .unwrap();
        // Another engine writes its config: sizes change, the assignment stays.
        let mut bigger = account("a");
        bigger.pool_size = 5;
        n.b.put_accounts(&[bigger]).await.unwrap();
        let accounts = n.b.accounts().await.unwrap();
        assert_eq!(
            accounts,
            vec![
                AccountRecord {
                    pool_size: 5,
                    assigned_pod: Some("w1".into()),
                    ..account("a")
                },
                account("b"),
            ]
        );
        n.a.assign("a", None, CONTROLLER_LEASE, &lease)
            .await
            .unwrap();
        assert_eq!(n.b.accounts().await.unwrap()[0].assigned_pod, None);
        let missing = n.a.assign("zz", Some("w1"), CONTROLLER_LEASE, &lease).await;
        assert!(
            matches!(missing, Err(StateError::Invalid(_))),
            "{missing:?}"
        );
    }

    pub async fn without_the_lease_nothing_is_written(n: Nodes) {
        n.a.put_accounts(&[account("a")]).await.unwrap();
        let never = Lease {
            holder: "e1".into(),
            token: 1,
        };
        let refused = n.a.assign("a", Some("w1"), CONTROLLER_LEASE, &never).await;
        assert!(matches!(refused, Err(StateError::Fenced(_))), "{refused:?}");
        assert_eq!(n.b.accounts().await.unwrap()[0].assigned_pod, None);
    }
}

test_support::conformance! {
    scenarios: [
        one_holder_at_a_time,
        an_expired_lease_is_taken_over_and_the_old_holder_is_fenced,
        desired_accounts_keep_their_assignment,
        without_the_lease_nothing_is_written,
    ],
    embedded(start_paused = true) => open_embedded,
    valkey() => open_valkey,
}

#[tokio::test]
async fn valkey_key_layout() {
    use fred::prelude::{KeysInterface, SetsInterface};
    let server = RedisServer::start();
    let store = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let raw = common::raw_client(&server).await;
    let token = store
        .acquire(CONTROLLER_LEASE, "engine-1", TTL)
        .await
        .unwrap()
        .unwrap();
    let held: Option<String> = raw.get("leader:controller").await.unwrap();
    assert_eq!(held, Some(format!("{token}:engine-1")));
    let pttl: i64 = raw.pttl("leader:controller").await.unwrap();
    assert!(pttl > 0 && pttl <= 15_000, "{pttl}");
    let epoch: Option<String> = raw.get("leader:controller:epoch").await.unwrap();
    assert_eq!(epoch, Some(token.to_string()));

    store.put_accounts(&[account("acct-1")]).await.unwrap();
    let ids: Vec<String> = raw.smembers("accounts").await.unwrap();
    assert_eq!(ids, ["acct-1"]);
    let stored: Option<String> = raw.get("account:acct-1").await.unwrap();
    let record: AccountRecord = serde_json::from_str(&stored.unwrap()).unwrap();
    assert_eq!(record, account("acct-1"));
    store.close().await;
}

/// ValKey restarted empty between two leaders (its data, the epoch key included, lost): the
/// new leader's fencing token is still greater than the old one's.
#[tokio::test]
async fn fencing_tokens_grow_across_valkey_data_loss() {
    use fred::prelude::ClientLike;
    let server = RedisServer::start();
    let store = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let raw = common::raw_client(&server).await;
    let old = store
        .acquire(CONTROLLER_LEASE, "engine-1", TTL)
        .await
        .unwrap()
        .unwrap();
    let _: () = raw.flushall(false).await.unwrap();
    let new = store
        .acquire(CONTROLLER_LEASE, "engine-2", TTL)
        .await
        .unwrap()
        .expect("the lease is free after the data loss");
    assert!(new > old, "old {old}, new {new}");
    store.close().await;
}

/// A server without AOF or save points is reported as keeping nothing (the store warns at
/// connect); one with AOF on as persistent.
#[tokio::test]
async fn the_store_tells_whether_valkey_persists() {
    use fred::prelude::ClientLike;
    use fred::types::CustomCommand;
    let server = RedisServer::start();
    let store = ValkeyRegistry::connect(&server.url()).await.unwrap();
    assert_eq!(store.persists().await, Some(false));
    let raw = common::raw_client(&server).await;
    let _: String = raw
        .custom(
            CustomCommand::new_static("CONFIG", None::<u16>, false),
            vec!["SET", "appendonly", "yes"],
        )
        .await
        .unwrap();
    assert_eq!(store.persists().await, Some(true));
    store.close().await;
}
