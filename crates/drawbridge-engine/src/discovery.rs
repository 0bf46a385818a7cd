//! Registry discovery: the engine's worker set follows the registry's live pods.
//!
//! One task per engine keeps a local cache (the [`crate::fleet::WorkerSet`] of the pods seen
//! last): it re-reads `pods()` on every topology event, and every `cluster.sync_interval` in any
//! case (expired pods produce no event). A pod leaves the cache when it deregisters (`Leave`),
//! or when it is absent from the registry and its last call failed: a pod that is absent but
//! still answers (the store restarted empty and it has not heartbeated since) is kept. While the store is unreachable, routing goes on from
//! the cache and the task retries with a doubling backoff (100 ms up to 5 s); the first
//! successful read after an outage resynchronises (logged). After each change the engine polls
//! the workers' `Slots` at once, and then every `engine.refresh_interval` as with static
//! workers: the numbers the scheduler uses come from the workers themselves, never older than
//! one refresh interval, rather than from heartbeats several seconds old.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_state::{PodRecord, Registry, TopologyEvent, TopologyStream};
use drawbridge_telemetry::Shutdown;
use futures::StreamExt;

use crate::Engine;
use crate::workers::{GrpcWorkerConn, WorkerConn};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Follow `registry` until `shutdown`: spawned on its scope.
pub fn spawn(
    engine: Arc<Engine>,
    registry: Arc<dyn Registry>,
    sync_interval: Duration,
    connect_timeout: Duration,
    shutdown: &Shutdown,
) {
    let scope = shutdown.clone();
    shutdown.spawn(async move {
        let mut events: Option<TopologyStream> = None;
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        loop {
            if events.is_none() {
                match registry.subscribe().await {
                    Ok(stream) => events = Some(stream),
                    Err(error) => tracing::debug!(%error, "topology subscription failed"),
                }
            }
            let synced = match registry.pods().await {
                Ok(pods) => {
                    apply(&engine, &pods, connect_timeout).await;
                    if failing {
                        tracing::info!(pods = pods.len(), "registry resynchronised");
                    }
                    failing = false;
                    true
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(
                            %error,
                            "registry unreachable; routing from the cached workers, retrying"
                        );
                    }
                    failing = true;
                    false
                }
            };
            let wait = if synced && events.is_some() {
                backoff = MIN_BACKOFF;
                sync_interval
            } else {
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            };
            let next_event = next_event(&mut events);
            tokio::select! {
                () = scope.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                event = next_event => match event {
                    Some(TopologyEvent::Resync) => {
                        tracing::info!("topology events may have been missed; resynchronising");
                        failing = true;
                    }
                    Some(TopologyEvent::Leave(pod_id)) => {
                        if engine.workers().remove(&pod_id) {
                            tracing::info!(%pod_id, "worker left the registry");
                            engine.refresh().await;
                        }
                    }
                    Some(event) => tracing::debug!(?event, "topology event"),
                    None => events = None,
                },
            }
        }
    });
}

/// Make the engine's worker set match `pods`, then refresh the routes at once.
async fn apply(engine: &Engine, pods: &[PodRecord], connect_timeout: Duration) {
    let changes = engine.workers().sync(pods, |pod| {
        match GrpcWorkerConn::new(&pod.address, connect_timeout) {
            Ok(conn) => Some(Arc::new(conn) as Arc<dyn WorkerConn>),
            Err(error) => {
                tracing::warn!(pod_id = %pod.id, %error, "cannot use this pod's address");
                None
            }
        }
    });
    for pod_id in &changes.joined {
        let address = pods
            .iter()
            .find(|p| &p.id == pod_id)
            .map(|p| p.address.as_str())
            .unwrap_or_default();
        tracing::info!(%pod_id, address, "worker discovered");
    }
    for pod_id in &changes.left {
        tracing::info!(%pod_id, "worker left the registry");
    }
    if !changes.joined.is_empty() || !changes.left.is_empty() {
        engine.refresh().await;
    }
}

/// The next topology event of `events`, or never while there is no subscription.
pub(crate) async fn next_event(events: &mut Option<TopologyStream>) -> Option<TopologyEvent> {
    match events.as_mut() {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}
