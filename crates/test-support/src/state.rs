//! The harness the state crate's conformance suites share: every scenario of a suite runs
//! against each implementation (embedded, ValKey, …) through one macro, [`conformance!`](crate::conformance),
//! on stores the suite's setup functions open and a [`Cleanup`] closes.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use drawbridge_state::ValkeyRegistry;
use futures::future::BoxFuture;

use crate::redis::RedisServer;

/// Two nodes' views of one store (an embedded store has one view: both are the same).
pub struct Nodes<S: ?Sized> {
    pub a: Arc<S>,
    pub b: Arc<S>,
}

impl<S: ?Sized> Nodes<S> {
    /// Both nodes on the one `store`.
    pub fn shared(store: Arc<S>) -> Self {
        Nodes {
            a: Arc::clone(&store),
            b: store,
        }
    }
}

/// What a scenario's stores need once it is over: steps to run in order, and things (a
/// server, a directory) to keep alive until then.
#[derive(Default)]
pub struct Cleanup {
    steps: Vec<BoxFuture<'static, ()>>,
    keep: Vec<Box<dyn Any + Send>>,
}

impl Cleanup {
    /// Run `step` when the scenario is over (after the steps added before it).
    pub fn then(&mut self, step: impl Future<Output = ()> + Send + 'static) {
        self.steps.push(Box::pin(step));
    }

    /// Keep `value` alive until every step has run.
    pub fn keep(&mut self, value: impl Any + Send) {
        self.keep.push(Box::new(value));
    }

    pub async fn run(self) {
        for step in self.steps {
            step.await;
        }
        drop(self.keep);
    }
}

/// Two connections to one fresh ValKey server, as two nodes of a deployment see it; the
/// cleanup closes both and then stops the server.
pub async fn valkey_pair() -> (Arc<ValkeyRegistry>, Arc<ValkeyRegistry>, Cleanup) {
    let server = RedisServer::start();
    let connect = || async {
        Arc::new(
            ValkeyRegistry::connect(&server.url())
                .await
                .expect("connect to the test's ValKey"),
        )
    };
    let (a, b) = (connect().await, connect().await);
    let mut cleanup = Cleanup::default();
    let (close_a, close_b) = (Arc::clone(&a), Arc::clone(&b));
    cleanup.then(async move {
        close_a.close().await;
        close_b.close().await;
    });
    cleanup.keep(server);
    (a, b, cleanup)
}

/// Wait `ttl` plus a margin: instant on paused time, a real wait on ValKey (short TTLs only).
pub async fn outlive(ttl: Duration) {
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
}

/// Owned ids from names.
pub fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Milliseconds since the Unix epoch on this machine.
pub fn wall_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

/// Run every scenario of the calling file's `suite` module against each implementation:
/// one module per implementation, named as given, with one test per scenario. Each
/// implementation names the `#[tokio::test]` arguments it needs and an async setup function
/// returning `(nodes, Cleanup)`; the scenario gets the nodes, then the cleanup runs.
///
/// ```ignore
/// test_support::conformance! {
///     scenarios: [one_holder_at_a_time, without_the_lease_nothing_is_written],
///     embedded(start_paused = true) => embedded,
///     valkey() => valkey,
/// }
/// ```
#[macro_export]
macro_rules! conformance {
    (
        scenarios: $scenarios:tt,
        $($module:ident $test:tt => $setup:path),+ $(,)?
    ) => {
        $( $crate::conformance!(@backend $module $test $setup $scenarios); )+
    };
    (@backend $module:ident $test:tt $setup:path [$($scenario:ident),* $(,)?]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test $test]
                async fn $scenario() {
                    let (nodes, cleanup) = $setup().await;
                    suite::$scenario(nodes).await;
                    cleanup.run().await;
                }
            )*
        }
    };
}
