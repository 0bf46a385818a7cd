//! The conformance suite of [`BreakerStore`], [`CooldownStore`] and [`AffinityStore`]: every
//! scenario runs against the embedded store (on paused tokio time: TTLs pass instantly) and
//! against ValKey (two clients, "two engines", on a real `redis-server`). Then the ValKey key
//! layout.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use drawbridge_state::{
    AffinityStore, BreakerStore, CooldownStore, EmbeddedRouting, MAX_ROUTING_TTL, StateError, Swap,
    ValkeyRegistry,
};
use test_support::redis::RedisServer;
use test_support::state::{Cleanup, ids, outlive, valkey_pair, wall_ms};

trait Routing: BreakerStore + CooldownStore + AffinityStore {}
impl<T: BreakerStore + CooldownStore + AffinityStore> Routing for T {}

/// Two nodes' views of one store (the embedded store has one: both are the same).
type Nodes = test_support::state::Nodes<dyn Routing>;

async fn open_embedded() -> (Nodes, Cleanup) {
    let store: Arc<dyn Routing> = Arc::new(EmbeddedRouting::new());
    (Nodes::shared(store), Cleanup::default())
}

async fn open_valkey() -> (Nodes, Cleanup) {
    let (a, b, cleanup) = valkey_pair().await;
    (Nodes { a, b }, cleanup)
}

mod suite {
    use super::*;

    pub async fn a_breaker_is_swapped_only_from_what_is_stored(n: Nodes) {
        let read = n.a.breakers(&ids(&["x", "y"])).await.unwrap();
        assert_eq!(read.values, [None, None]);
        // The stores' clock is a wall clock in ms (ValKey's TIME, or this process's).
        assert!(read.now_ms.abs_diff(wall_ms()) < 60_000, "{}", read.now_ms);

        let first = r#"{"state":"closed","window":[true]}"#;
        let swap = n.a.swap_breaker("x", None, first).await.unwrap();
        assert!(matches!(swap, Swap::Done { .. }), "{swap:?}");
        // b computed from "nothing stored" too: refused, and told what is there now.
        let late = n.b.swap_breaker("x", None, "{}").await.unwrap();
        assert_eq!(
            late,
            Swap::Conflict {
                current: Some(first.to_owned()),
                now_ms: late.now_ms()
            }
        );
        let second = r#"{"state":"open","opened_at_ms":5}"#;
        let swap = n.b.swap_breaker("x", Some(first), second).await.unwrap();
        assert!(matches!(swap, Swap::Done { .. }), "{swap:?}");
        // a's stale base is refused in turn.
        let stale = n.a.swap_breaker("x", Some(first), "{}").await.unwrap();
        assert!(
            matches!(&stale, Swap::Conflict { current: Some(c), .. } if c == second),
            "{stale:?}"
        );
        let read = n.a.breakers(&ids(&["y", "x"])).await.unwrap();
        assert_eq!(read.values, [None, Some(second.to_owned())]);
    }

    pub async fn cooldowns_run_out_and_the_longer_one_wins(n: Nodes) {
        let short = Duration::from_millis(300);
        let long = Duration::from_millis(900);
        n.a.cool_down("x", long).await.unwrap();
        n.b.cool_down("x", short).await.unwrap();
        n.b.cool_down("y", short).await.unwrap();
        let left = n.a.cooldowns(&ids(&["x", "y", "z"])).await.unwrap();
        let x = left[0].unwrap();
        assert!(x > short && x <= long, "{x:?}: the longer rest was kept");
        assert!(left[1].unwrap() <= short);
        assert_eq!(left[2], None);
        outlive(short).await;
        let left = n.b.cooldowns(&ids(&["x", "y"])).await.unwrap();
        assert!(left[0].is_some());
        assert_eq!(left[1], None, "y's rest is over");
        outlive(long - short).await;
        assert_eq!(n.a.cooldowns(&ids(&["x"])).await.unwrap(), [None]);
    }

    pub async fn affinity_binds_until_its_ttl(n: Nodes) {
        let ttl = Duration::from_millis(400);
        assert_eq!(n.a.affinity("conv-1").await.unwrap(), None);
        n.a.set_affinity("conv-1", "acct-1", ttl).await.unwrap();
        assert_eq!(
            n.b.affinity("conv-1").await.unwrap().as_deref(),
            Some("acct-1")
        );
        // A rebinding replaces the account and renews the TTL.
        n.b.set_affinity("conv-1", "acct-2", ttl).await.unwrap();
        assert_eq!(
            n.a.affinity("conv-1").await.unwrap().as_deref(),
            Some("acct-2")
        );
        // Keys are the client's: any text up to the limit.
        let odd = "user: 🦀 alice@example.com";
        n.a.set_affinity(odd, "acct-1", ttl).await.unwrap();
        assert_eq!(n.b.affinity(odd).await.unwrap().as_deref(), Some("acct-1"));
        outlive(ttl).await;
        assert_eq!(n.a.affinity("conv-1").await.unwrap(), None);
        assert_eq!(n.a.affinity(odd).await.unwrap(), None);
    }

    pub async fn bad_input_is_refused(n: Nodes) {
        let long_key = "k".repeat(drawbridge_state::MAX_AFFINITY_KEY + 1);
        for result in [
            n.a.swap_breaker("a:b", None, "{}").await.map(|_| ()),
            n.a.swap_breaker("x", None, "").await.map(|_| ()),
            n.a.breakers(&ids(&["ok", "not ok"])).await.map(|_| ()),
            n.a.cool_down("x", Duration::ZERO).await,
            n.a.cool_down("", Duration::from_secs(1)).await,
            n.a.set_affinity("", "acct-1", Duration::from_secs(1)).await,
            n.a.set_affinity(&long_key, "acct-1", Duration::from_secs(1))
                .await,
            n.a.set_affinity("k", "acct 1", Duration::from_secs(1))
                .await,
            n.a.set_affinity("k", "acct-1", Duration::ZERO).await,
        ] {
            assert!(matches!(result, Err(StateError::Invalid(_))), "{result:?}");
        }
        assert_eq!(n.b.affinity("k").await.unwrap(), None);
    }

    /// A TTL longer than `MAX_ROUTING_TTL` (say, a worker's absurd `retry_after`) is refused
    /// alike by both stores, and changes nothing; up to it is taken.
    pub async fn absurd_ttls_are_refused(n: Nodes) {
        let too_long = MAX_ROUTING_TTL + Duration::from_millis(1);
        for ttl in [too_long, Duration::from_secs(u64::MAX), Duration::MAX] {
            let refused = n.a.cool_down("x", ttl).await;
            assert!(
                matches!(refused, Err(StateError::Invalid(_))),
                "{refused:?}"
            );
            let refused = n.a.set_affinity("k", "acct-1", ttl).await;
            assert!(
                matches!(refused, Err(StateError::Invalid(_))),
                "{refused:?}"
            );
        }
        assert_eq!(n.b.cooldowns(&ids(&["x"])).await.unwrap(), [None]);
        assert_eq!(n.b.affinity("k").await.unwrap(), None);
        n.a.cool_down("x", MAX_ROUTING_TTL).await.unwrap();
        n.a.set_affinity("k", "acct-1", MAX_ROUTING_TTL)
            .await
            .unwrap();
        let left = n.b.cooldowns(&ids(&["x"])).await.unwrap()[0].unwrap();
        assert!(left > MAX_ROUTING_TTL - Duration::from_secs(60), "{left:?}");
        assert_eq!(n.b.affinity("k").await.unwrap().as_deref(), Some("acct-1"));
    }
}

test_support::conformance! {
    scenarios: [
        a_breaker_is_swapped_only_from_what_is_stored,
        cooldowns_run_out_and_the_longer_one_wins,
        affinity_binds_until_its_ttl,
        bad_input_is_refused,
        absurd_ttls_are_refused,
    ],
    embedded(start_paused = true) => open_embedded,
    valkey() => open_valkey,
}

#[tokio::test]
async fn valkey_key_layout() {
    use fred::prelude::KeysInterface;
    let server = RedisServer::start();
    let store = ValkeyRegistry::connect(&server.url()).await.unwrap();
    let raw = common::raw_client(&server).await;
    store
        .swap_breaker("acct-1", None, r#"{"state":"open"}"#)
        .await
        .unwrap();
    let stored: Option<String> = raw.get("cb:acct-1").await.unwrap();
    assert_eq!(stored.as_deref(), Some(r#"{"state":"open"}"#));
    store
        .cool_down("acct-1", Duration::from_secs(30))
        .await
        .unwrap();
    let pttl: i64 = raw.pttl("cooldown:acct-1").await.unwrap();
    assert!(pttl > 25_000 && pttl <= 30_000, "{pttl}");
    store
        .set_affinity("conv-9", "acct-2", Duration::from_secs(3600))
        .await
        .unwrap();
    let bound: Option<String> = raw.get("affinity:conv-9").await.unwrap();
    assert_eq!(bound.as_deref(), Some("acct-2"));
    let pttl: i64 = raw.pttl("affinity:conv-9").await.unwrap();
    assert!(pttl > 3_590_000, "{pttl}");
    // A breaker another tool wrote is read as stored.
    let () = raw.set("cb:acct-3", "{}", None, None, false).await.unwrap();
    let read = store.breakers(&["acct-3".to_owned()]).await.unwrap();
    assert_eq!(read.values, [Some("{}".to_owned())]);
    store.close().await;
}
