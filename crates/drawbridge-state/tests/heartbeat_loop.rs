//! `heartbeat_loop` against registries that fail or hang, on paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use drawbridge_runtime::Shutdown;
use drawbridge_state::{
    DEREGISTER_TIMEOUT, EmbeddedRegistry, PodRecord, PodStatus, Registry, StateError, StateFuture,
    TopologyStream, heartbeat_loop,
};
use test_support::{eventually, eventually_within};
use tokio::time::Instant;

fn pod() -> PodRecord {
    PodRecord {
        id: "w1".into(),
        address: "http://w1:50051".into(),
        http_address: "http://w1:8090".into(),
        accounts: Vec::new(),
        models: vec!["kiro".into()],
        status: PodStatus::Healthy,
        assignable: false,
        updated_at_ms: 0,
    }
}

/// An embedded registry whose first `failures` heartbeats fail, and whose deregistration can
/// be made to hang.
struct Flaky {
    inner: EmbeddedRegistry,
    failures: u32,
    heartbeats: AtomicU32,
    hang_on_deregister: bool,
}

impl Registry for Flaky {
    fn heartbeat<'a>(&'a self, pod: &'a PodRecord, ttl: Duration) -> StateFuture<'a, ()> {
        let n = self.heartbeats.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            return Box::pin(async { Err(StateError::Unavailable("down".into())) });
        }
        self.inner.heartbeat(pod, ttl)
    }

    fn deregister<'a>(&'a self, pod_id: &'a str) -> StateFuture<'a, ()> {
        if self.hang_on_deregister {
            return Box::pin(std::future::pending());
        }
        self.inner.deregister(pod_id)
    }

    fn pods(&self) -> StateFuture<'_, Vec<PodRecord>> {
        self.inner.pods()
    }

    fn pods_for_model<'a>(&'a self, model: &'a str) -> StateFuture<'a, Vec<PodRecord>> {
        self.inner.pods_for_model(model)
    }

    fn subscribe(&self) -> StateFuture<'_, TopologyStream> {
        self.inner.subscribe()
    }
}

fn flaky(failures: u32, hang_on_deregister: bool) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: EmbeddedRegistry::new(),
        failures,
        heartbeats: AtomicU32::new(0),
        hang_on_deregister,
    })
}

#[tokio::test(start_paused = true)]
async fn failed_heartbeats_are_retried_on_the_interval() {
    let registry = flaky(3, false);
    let shutdown = Shutdown::new();
    let interval = Duration::from_secs(5);
    let start = Instant::now();
    let task = heartbeat_loop(
        registry.clone(),
        shutdown.clone(),
        interval,
        Duration::from_secs(15),
        pod,
    );
    eventually_within(interval * 10, "the pod is registered", || async {
        !registry.pods().await.unwrap().is_empty()
    })
    .await;
    // Three failures at 0 s, 5 s, 10 s; the fourth heartbeat, at 15 s, lands.
    assert_eq!(start.elapsed().as_secs(), 15);
    assert_eq!(registry.heartbeats.load(Ordering::SeqCst), 4);
    shutdown.cancel();
    task.await.unwrap();
    assert!(registry.pods().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hanging_deregistration_does_not_hold_the_drain() {
    let registry = flaky(0, true);
    let shutdown = Shutdown::new();
    let task = heartbeat_loop(
        registry.clone(),
        shutdown.clone(),
        Duration::from_secs(5),
        Duration::from_secs(15),
        pod,
    );
    eventually("the pod is registered", || async {
        !registry.pods().await.unwrap().is_empty()
    })
    .await;
    let start = Instant::now();
    assert!(shutdown.drain(Duration::from_secs(30)).await);
    assert!(task.is_finished());
    assert_eq!(start.elapsed(), DEREGISTER_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_loop_cancelled_before_its_first_heartbeat_still_deregisters() {
    let registry = flaky(0, false);
    registry
        .inner
        .heartbeat(&pod(), Duration::from_secs(15))
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    shutdown.cancel();
    let task = heartbeat_loop(
        registry.clone(),
        shutdown,
        Duration::from_secs(5),
        Duration::from_secs(15),
        pod,
    );
    task.await.unwrap();
    assert_eq!(registry.heartbeats.load(Ordering::SeqCst), 0);
    assert!(registry.pods().await.unwrap().is_empty());
}
