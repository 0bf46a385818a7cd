//! The conformance suite of [`ResponseStore`]: every scenario runs against the embedded store
//! (on paused tokio time: TTLs pass instantly) and against ValKey (two clients, "two gateway
//! nodes", on a real `redis-server`). Then the ValKey key layout.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use drawbridge_state::{
    EmbeddedResponses, MAX_RESPONSE_ID, MAX_ROUTING_TTL, ResponseStore, StateError, ValkeyRegistry,
};
use test_support::redis::RedisServer;
use test_support::state::{Cleanup, outlive, valkey_pair};

/// Two nodes' views of one store (the embedded store has one: both are the same).
type Nodes = test_support::state::Nodes<dyn ResponseStore>;

async fn open_embedded() -> (Nodes, Cleanup) {
    let store: Arc<dyn ResponseStore> = Arc::new(EmbeddedResponses::new());
    (Nodes::shared(store), Cleanup::default())
}

async fn open_valkey() -> (Nodes, Cleanup) {
    let (a, b, cleanup) = valkey_pair().await;
    (Nodes { a, b }, cleanup)
}

mod suite {
    use super::*;

    pub async fn a_response_is_kept_for_its_tenant_until_its_ttl(n: Nodes) {
        let ttl = Duration::from_millis(400);
        let value = r#"{"input":[],"response":{"id":"resp_1","output":["🦀"]}}"#;
        assert_eq!(n.a.response("key-a", "resp_1").await.unwrap(), None);
        n.a.put_response("key-a", "resp_1", value, ttl)
            .await
            .unwrap();
        assert_eq!(
            n.b.response("key-a", "resp_1").await.unwrap().as_deref(),
            Some(value)
        );
        // Another tenant's equal id is another response.
        assert_eq!(n.b.response("key-b", "resp_1").await.unwrap(), None);
        n.b.put_response("key-b", "resp_1", "{}", ttl * 3)
            .await
            .unwrap();
        assert_eq!(
            n.a.response("key-a", "resp_1").await.unwrap().as_deref(),
            Some(value)
        );
        // Tenants are key ids: any text up to the limit, `:` included.
        n.a.put_response("static:ops", "resp_2", "{}", ttl)
            .await
            .unwrap();
        assert_eq!(
            n.b.response("static:ops", "resp_2")
                .await
                .unwrap()
                .as_deref(),
            Some("{}")
        );
        outlive(ttl).await;
        assert_eq!(n.a.response("key-a", "resp_1").await.unwrap(), None);
        assert_eq!(n.a.response("static:ops", "resp_2").await.unwrap(), None);
        assert_eq!(
            n.a.response("key-b", "resp_1").await.unwrap().as_deref(),
            Some("{}"),
            "the longer TTL still runs"
        );
    }

    pub async fn bad_input_is_refused(n: Nodes) {
        let long = "r".repeat(MAX_RESPONSE_ID + 1);
        let second = Duration::from_secs(1);
        for result in [
            n.a.put_response("", "resp_1", "{}", second).await,
            n.a.put_response(&long, "resp_1", "{}", second).await,
            n.a.put_response("t", "", "{}", second).await,
            n.a.put_response("t", &long, "{}", second).await,
            n.a.put_response("t", "resp:1", "{}", second).await,
            n.a.put_response("t", "resp_1", "{}", Duration::ZERO).await,
            n.a.put_response("t", "resp_1", "{}", MAX_ROUTING_TTL + second)
                .await,
            n.a.response("t", "resp 1").await.map(|_| ()),
        ] {
            assert!(matches!(result, Err(StateError::Invalid(_))), "{result:?}");
        }
        assert_eq!(n.b.response("t", "resp_1").await.unwrap(), None);
    }
}

test_support::conformance! {
    scenarios: [
        a_response_is_kept_for_its_tenant_until_its_ttl,
        bad_input_is_refused,
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
        .put_response(
            "static:ops",
            "resp_9",
            r#"{"a":1}"#,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let stored: Option<String> = raw.get("response:resp_9:static:ops").await.unwrap();
    assert_eq!(stored.as_deref(), Some(r#"{"a":1}"#));
    let pttl: i64 = raw.pttl("response:resp_9:static:ops").await.unwrap();
    assert!(pttl > 3_590_000 && pttl <= 3_600_000, "{pttl}");
    store.close().await;
}
