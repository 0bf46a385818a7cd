//! The conformance suite of [`Registry`]: every scenario in `suite` runs against the embedded
//! registry (on paused tokio time: TTLs pass instantly) and against the ValKey registry (two
//! clients, "two nodes", on a real `redis-server`). Then the ValKey-only behaviour: the key
//! layout, pruning of expired ids, corrupt records, and outages.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the suite they call.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

use std::sync::Arc;
use std::time::Duration;

use drawbridge_runtime::Shutdown;
use drawbridge_state::{
    EmbeddedRegistry, PodRecord, PodStatus, Registry, StateError, TopologyEvent, TopologyStream,
    ValkeyOptions, ValkeyRegistry, heartbeat_loop,
};
use drawbridge_types::worker::{AccountSlots, AccountStatus};
use futures::StreamExt;
use test_support::redis::RedisServer;
use test_support::state::{Cleanup, valkey_pair};
use test_support::{PATIENCE, eventually};
use tokio::time::Instant;

/// The usual TTL, long enough never to expire during a test.
const TTL: Duration = Duration::from_secs(15);

/// The registries of two nodes of one deployment. The embedded registry has one node: both are
/// the same registry.
type Nodes = test_support::state::Nodes<dyn Registry>;

async fn open_embedded() -> (Nodes, Cleanup) {
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::new());
    (Nodes::shared(registry), Cleanup::default())
}

async fn open_valkey() -> (Nodes, Cleanup) {
    let (a, b, cleanup) = valkey_pair().await;
    (Nodes { a, b }, cleanup)
}

fn pod(id: &str, models: &[&str]) -> PodRecord {
    PodRecord {
        id: id.to_owned(),
        address: format!("http://{id}.pods:50051"),
        http_address: format!("http://{id}.pods:8090"),
        accounts: vec![AccountSlots {
            account: format!("{id}-acct"),
            default_model: None,
            tools_refused: 0,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            size: 2,
            busy: 0,
            idle: 2,
            starting: 0,
            failed: 0,
            queue_depth: 0,
            credits_used: 0.5,
            last_error: None,
            status: AccountStatus::Healthy,
        }],
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        status: PodStatus::Healthy,
        assignable: false,
        updated_at_ms: 0,
    }
}

/// The records without the store's stamp, after checking that it is one (ms since the epoch).
fn unstamped(records: Vec<PodRecord>) -> Vec<PodRecord> {
    records
        .into_iter()
        .map(|mut record| {
            assert!(
                record.updated_at_ms > 1_600_000_000_000,
                "pod {} has no store timestamp: {}",
                record.id,
                record.updated_at_ms
            );
            record.updated_at_ms = 0;
            record
        })
        .collect()
}

fn ids(records: &[PodRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

async fn next_event(events: &mut TopologyStream) -> TopologyEvent {
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("a topology event in time")
        .expect("the topology stream is open")
}

mod suite {
    use super::*;

    pub async fn heartbeat_then_pods(n: Nodes) {
        assert!(n.a.pods().await.unwrap().is_empty());
        let p1 = pod("p1", &["kiro"]);
        n.a.heartbeat(&p1, TTL).await.unwrap();
        assert_eq!(unstamped(n.a.pods().await.unwrap()), vec![p1.clone()]);

        // A heartbeat replaces the record: slots move.
        let mut busier = p1.clone();
        busier.accounts[0].busy = 2;
        busier.accounts[0].idle = 0;
        n.a.heartbeat(&busier, TTL).await.unwrap();
        assert_eq!(unstamped(n.a.pods().await.unwrap()), vec![busier]);
    }

    pub async fn pods_for_model_filters(n: Nodes) {
        n.a.heartbeat(&pod("p2", &["kiro", "claude"]), TTL)
            .await
            .unwrap();
        n.a.heartbeat(&pod("p1", &["kiro"]), TTL).await.unwrap();
        let kiro = n.a.pods_for_model("kiro").await.unwrap();
        assert_eq!(ids(&kiro), ["p1", "p2"]);
        let claude = n.a.pods_for_model("claude").await.unwrap();
        assert_eq!(unstamped(claude), vec![pod("p2", &["kiro", "claude"])]);
        assert!(n.a.pods_for_model("gpt").await.unwrap().is_empty());
    }

    pub async fn changing_models_moves_the_pod(n: Nodes) {
        n.a.heartbeat(&pod("p1", &["kiro", "claude"]), TTL)
            .await
            .unwrap();
        n.a.heartbeat(&pod("p1", &["claude", "gpt"]), TTL)
            .await
            .unwrap();
        assert!(n.a.pods_for_model("kiro").await.unwrap().is_empty());
        assert_eq!(ids(&n.a.pods_for_model("claude").await.unwrap()), ["p1"]);
        assert_eq!(ids(&n.a.pods_for_model("gpt").await.unwrap()), ["p1"]);
    }

    pub async fn deregister_removes_the_pod(n: Nodes) {
        n.a.heartbeat(&pod("p1", &["kiro"]), TTL).await.unwrap();
        n.a.heartbeat(&pod("p2", &["kiro"]), TTL).await.unwrap();
        n.a.deregister("p1").await.unwrap();
        assert_eq!(ids(&n.a.pods().await.unwrap()), ["p2"]);
        assert_eq!(ids(&n.a.pods_for_model("kiro").await.unwrap()), ["p2"]);
        // Deregistering what is not there is fine.
        n.a.deregister("p1").await.unwrap();
        n.a.deregister("never-seen").await.unwrap();
        // And it can come back.
        n.a.heartbeat(&pod("p1", &["kiro"]), TTL).await.unwrap();
        assert_eq!(
            ids(&n.a.pods_for_model("kiro").await.unwrap()),
            ["p1", "p2"]
        );
    }

    pub async fn silent_pods_expire(n: Nodes) {
        let ttl = Duration::from_secs(1);
        let start = Instant::now();
        n.a.heartbeat(&pod("short", &["kiro"]), ttl).await.unwrap();
        n.a.heartbeat(&pod("long", &["kiro"]), TTL).await.unwrap();
        assert_eq!(ids(&n.b.pods().await.unwrap()), ["long", "short"]);
        eventually("the silent pod expires", || async {
            ids(&n.b.pods().await.unwrap()) == ["long"]
        })
        .await;
        assert!(
            start.elapsed() >= ttl - Duration::from_millis(50),
            "expired after {:?}, before its TTL",
            start.elapsed()
        );
        assert_eq!(ids(&n.b.pods_for_model("kiro").await.unwrap()), ["long"]);
    }

    pub async fn events_announce_changes(n: Nodes) {
        // Subscribed on one node, changed on the other.
        let mut events = n.b.subscribe().await.unwrap();
        let mut p1 = pod("p1", &["kiro"]);
        n.a.heartbeat(&p1, TTL).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Join("p1".into())
        );

        // Another heartbeat of the same pod is no news, slot counts included…
        p1.accounts[0].busy = 1;
        n.a.heartbeat(&p1, TTL).await.unwrap();
        // …so the next event is the drain, not a second join.
        p1.status = PodStatus::Draining;
        n.a.heartbeat(&p1, TTL).await.unwrap();
        n.a.heartbeat(&p1, TTL).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Drain("p1".into())
        );

        // A second pod joins on its own.
        n.a.heartbeat(&pod("p2", &["kiro"]), TTL).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Join("p2".into())
        );

        // Routing changes are updates.
        p1.models.push("claude".into());
        n.a.heartbeat(&p1, TTL).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Update("p1".into())
        );
        p1.status = PodStatus::Healthy;
        n.a.heartbeat(&p1, TTL).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Update("p1".into())
        );

        n.a.deregister("p1").await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Leave("p1".into())
        );

        // A pod that registers again after leaving joins again.
        n.a.heartbeat(&p1, TTL).await.unwrap();
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Join("p1".into())
        );
    }

    pub async fn every_subscriber_sees_every_event(n: Nodes) {
        let mut on_a = n.a.subscribe().await.unwrap();
        let mut on_b = n.b.subscribe().await.unwrap();
        n.b.heartbeat(&pod("p1", &["kiro"]), TTL).await.unwrap();
        n.b.deregister("p1").await.unwrap();
        for events in [&mut on_a, &mut on_b] {
            assert_eq!(next_event(events).await, TopologyEvent::Join("p1".into()));
            assert_eq!(next_event(events).await, TopologyEvent::Leave("p1".into()));
        }
    }

    pub async fn nodes_see_each_others_pods(n: Nodes) {
        n.a.heartbeat(&pod("p1", &["kiro"]), TTL).await.unwrap();
        n.b.heartbeat(&pod("p2", &["kiro"]), TTL).await.unwrap();
        assert_eq!(ids(&n.a.pods().await.unwrap()), ["p1", "p2"]);
        assert_eq!(
            ids(&n.b.pods_for_model("kiro").await.unwrap()),
            ["p1", "p2"]
        );
        n.b.deregister("p1").await.unwrap();
        assert_eq!(ids(&n.a.pods().await.unwrap()), ["p2"]);
    }

    pub async fn heartbeat_loop_registers_renews_and_deregisters(n: Nodes) {
        let mut events = n.b.subscribe().await.unwrap();
        let shutdown = Shutdown::new();
        let ttl = Duration::from_millis(500);
        let interval = Duration::from_millis(100);
        let task = heartbeat_loop(Arc::clone(&n.a), shutdown.clone(), interval, ttl, || {
            pod("looped", &["kiro"])
        });
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Join("looped".into())
        );
        // Alive well past several TTLs: the loop renews it.
        let until = Instant::now() + ttl * 4;
        while Instant::now() < until {
            assert_eq!(ids(&n.b.pods().await.unwrap()), ["looped"]);
            tokio::time::sleep(interval / 2).await;
        }
        shutdown.cancel();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the loop ends after shutdown")
            .unwrap();
        // Deregistered at once, not left to expire.
        assert!(n.b.pods().await.unwrap().is_empty());
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Leave("looped".into())
        );
    }
}

test_support::conformance! {
    scenarios: [
        heartbeat_then_pods,
        pods_for_model_filters,
        changing_models_moves_the_pod,
        deregister_removes_the_pod,
        silent_pods_expire,
        events_announce_changes,
        every_subscriber_sees_every_event,
        nodes_see_each_others_pods,
        heartbeat_loop_registers_renews_and_deregisters,
    ],
    embedded(start_paused = true) => open_embedded,
    valkey() => open_valkey,
}

/// ValKey-only: the layout other crates must not know, but that the workers and engines of one
/// deployment share; pruning; outages.
mod valkey_only {
    use fred::prelude::{Builder, Client, ClientLike, Config, KeysInterface, SetsInterface};

    use super::*;

    async fn raw(server: &RedisServer) -> Client {
        let client = Builder::from_config(Config::from_url(&server.url()).unwrap())
            .build()
            .unwrap();
        client.init().await.unwrap();
        client
    }

    fn quick() -> ValkeyOptions {
        ValkeyOptions {
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            max_reconnect_delay: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn key_layout() {
        let server = RedisServer::start();
        let registry = ValkeyRegistry::connect(&server.url()).await.unwrap();
        let raw = raw(&server).await;
        registry
            .heartbeat(&pod("p1", &["kiro", "claude"]), TTL)
            .await
            .unwrap();

        let stored: Option<String> = raw.get("pod:p1").await.unwrap();
        let record: PodRecord = serde_json::from_str(&stored.unwrap()).unwrap();
        assert_eq!(
            unstamped(vec![record]),
            vec![pod("p1", &["kiro", "claude"])]
        );
        let pttl: i64 = raw.pttl("pod:p1").await.unwrap();
        assert!(pttl > 0 && pttl <= 15_000, "PTTL pod:p1 = {pttl}");
        for set in ["pods", "model:kiro:pods", "model:claude:pods"] {
            let members: Vec<String> = raw.smembers(set).await.unwrap();
            assert_eq!(members, ["p1"], "{set}");
        }

        registry.deregister("p1").await.unwrap();
        let exists: i64 = raw.exists("pod:p1").await.unwrap();
        assert_eq!(exists, 0);
        for set in ["pods", "model:kiro:pods", "model:claude:pods"] {
            let members: Vec<String> = raw.smembers(set).await.unwrap();
            assert!(members.is_empty(), "{set} still holds {members:?}");
        }
    }

    #[tokio::test]
    async fn readers_prune_ids_whose_record_expired() {
        let server = RedisServer::start();
        let registry = ValkeyRegistry::connect(&server.url()).await.unwrap();
        let raw = raw(&server).await;
        registry
            .heartbeat(&pod("gone", &["kiro"]), TTL)
            .await
            .unwrap();
        registry
            .heartbeat(&pod("here", &["kiro"]), TTL)
            .await
            .unwrap();
        // What expiry does: the record goes, the set members stay.
        let _: i64 = raw.del("pod:gone").await.unwrap();

        assert_eq!(
            ids(&registry.pods_for_model("kiro").await.unwrap()),
            ["here"]
        );
        let members: Vec<String> = raw.smembers("model:kiro:pods").await.unwrap();
        assert_eq!(members, ["here"]);
        assert_eq!(ids(&registry.pods().await.unwrap()), ["here"]);
        let members: Vec<String> = raw.smembers("pods").await.unwrap();
        assert_eq!(members, ["here"]);
    }

    #[tokio::test]
    async fn a_corrupt_record_is_skipped_and_overwritten() {
        let server = RedisServer::start();
        let registry = ValkeyRegistry::connect(&server.url()).await.unwrap();
        let raw = raw(&server).await;
        registry
            .heartbeat(&pod("good", &["kiro"]), TTL)
            .await
            .unwrap();
        let _: () = raw
            .set("pod:bad", "{not json", None, None, false)
            .await
            .unwrap();
        let _: i64 = raw.sadd("pods", "bad").await.unwrap();
        assert_eq!(ids(&registry.pods().await.unwrap()), ["good"]);

        // The pod's next heartbeat replaces it, as a join.
        let mut events = registry.subscribe().await.unwrap();
        registry
            .heartbeat(&pod("bad", &["kiro"]), TTL)
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Join("bad".into())
        );
        assert_eq!(ids(&registry.pods().await.unwrap()), ["bad", "good"]);
    }

    #[tokio::test]
    async fn heartbeat_loop_keeps_the_key_alive() {
        let server = RedisServer::start();
        let registry: Arc<dyn Registry> =
            Arc::new(ValkeyRegistry::connect(&server.url()).await.unwrap());
        let raw = raw(&server).await;
        let shutdown = Shutdown::new();
        let ttl = Duration::from_millis(400);
        let task = heartbeat_loop(
            registry,
            shutdown.clone(),
            Duration::from_millis(100),
            ttl,
            || pod("looped", &["kiro"]),
        );
        eventually("the loop registers the pod", || async {
            raw.exists::<i64, _>("pod:looped").await.unwrap() == 1
        })
        .await;
        let until = Instant::now() + ttl * 4;
        while Instant::now() < until {
            let pttl: i64 = raw.pttl("pod:looped").await.unwrap();
            assert!(pttl > 0 && pttl <= 400, "PTTL pod:looped = {pttl}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
        let exists: i64 = raw.exists("pod:looped").await.unwrap();
        assert_eq!(exists, 0, "deregistered on shutdown");
    }

    #[tokio::test]
    async fn an_outage_is_reported_quickly_and_survived() {
        let mut server = RedisServer::start();
        let registry = ValkeyRegistry::connect_with(&server.url(), quick())
            .await
            .unwrap();
        let mut events = registry.subscribe().await.unwrap();
        registry
            .heartbeat(&pod("p1", &["kiro"]), TTL)
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Join("p1".into())
        );

        server.stop();
        for _ in 0..2 {
            let started = Instant::now();
            let error = tokio::time::timeout(Duration::from_secs(3), registry.pods())
                .await
                .expect("an answer, not a hang")
                .unwrap_err();
            assert!(
                matches!(error, StateError::Unavailable(_)) && error.retryable(),
                "{error:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
            let error = registry
                .heartbeat(&pod("p1", &["kiro"]), TTL)
                .await
                .unwrap_err();
            assert!(error.retryable(), "{error:?}");
        }

        // Same port, empty server: the registry reconnects on its own…
        server.restart();
        eventually("the registry reconnects", || async {
            registry.pods().await.is_ok()
        })
        .await;
        // …and so does the subscription, which says that it may have missed events.
        assert_eq!(next_event(&mut events).await, TopologyEvent::Resync);
        registry
            .heartbeat(&pod("p1", &["kiro"]), TTL)
            .await
            .unwrap();
        assert_eq!(ids(&registry.pods().await.unwrap()), ["p1"]);
        assert_eq!(
            next_event(&mut events).await,
            TopologyEvent::Join("p1".into())
        );
        registry.close().await;
    }

    #[tokio::test]
    async fn no_server_fails_fast() {
        let mut server = RedisServer::start();
        let url = server.url();
        server.stop();
        let started = Instant::now();
        let error = ValkeyRegistry::connect_with(&url, quick())
            .await
            .unwrap_err();
        assert!(matches!(error, StateError::Unavailable(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_bad_url_is_a_config_error_without_the_password() {
        let error = ValkeyRegistry::connect("redis://:s3cret@cache:notaport")
            .await
            .unwrap_err();
        assert!(matches!(error, StateError::Config(_)), "{error:?}");
        assert!(!error.retryable());
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[tokio::test]
    async fn passwords_work_and_stay_out_of_errors() {
        let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
        let with = |password: &str| {
            server
                .url()
                .replace("redis://", &format!("redis://:{password}@"))
        };

        let registry = ValkeyRegistry::connect_with(&with("s3cret"), quick())
            .await
            .unwrap();
        assert!(!format!("{registry:?}").contains("s3cret"), "{registry:?}");
        registry
            .heartbeat(&pod("p1", &["kiro"]), TTL)
            .await
            .unwrap();
        assert_eq!(ids(&registry.pods().await.unwrap()), ["p1"]);
        registry.close().await;

        let error = ValkeyRegistry::connect_with(&with("wr0ng"), quick())
            .await
            .unwrap_err();
        assert!(matches!(error, StateError::Config(_)), "{error:?}");
        assert!(!error.retryable());
        assert!(!format!("{error:?}").contains("wr0ng"), "{error:?}");
    }
}
