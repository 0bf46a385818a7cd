//! A worker's side of the registry: heartbeat on an interval, deregister on shutdown.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_runtime::Shutdown;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::registry::{PodRecord, Registry};

/// How long the deregistration at shutdown may take before the loop gives up on it (the record
/// then expires on its own after its TTL).
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Spawn, on `shutdown`'s scope, a task that heartbeats `record()` into `registry` every
/// `interval` (the first one at once) with `ttl`. A failed heartbeat is logged and the loop keeps
/// going; when the scope is cancelled, it deregisters the pod once (bounded by
/// [`DEREGISTER_TIMEOUT`]) and ends. The returned handle resolves when it has.
pub fn heartbeat_loop<F>(
    registry: Arc<dyn Registry>,
    shutdown: Shutdown,
    interval: Duration,
    ttl: Duration,
    record: F,
) -> JoinHandle<()>
where
    F: Fn() -> PodRecord + Send + Sync + 'static,
{
    let scope = shutdown.clone();
    shutdown.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pod_id: Option<String> = None;
        let mut failures: u64 = 0;
        loop {
            tokio::select! {
                biased;
                () = scope.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let pod = record();
            let result = tokio::select! {
                biased;
                () = scope.cancelled() => {
                    pod_id = Some(pod.id);
                    break;
                }
                result = registry.heartbeat(&pod, ttl) => result,
            };
            match result {
                Ok(()) if failures > 0 => {
                    tracing::info!(pod_id = %pod.id, failures, "registry heartbeat recovered");
                    failures = 0;
                }
                Ok(()) => {}
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            pod_id = %pod.id,
                            %error,
                            retryable = error.retryable(),
                            "registry heartbeat failed; retrying every {interval:?}"
                        );
                    } else {
                        tracing::debug!(
                            pod_id = %pod.id,
                            %error,
                            failures,
                            "registry heartbeat failed again"
                        );
                    }
                }
            }
            pod_id = Some(pod.id);
        }
        let pod_id = pod_id.unwrap_or_else(|| record().id);
        match tokio::time::timeout(DEREGISTER_TIMEOUT, registry.deregister(&pod_id)).await {
            Ok(Ok(())) => tracing::info!(%pod_id, "deregistered from the registry"),
            Ok(Err(error)) => {
                tracing::warn!(%pod_id, %error, "deregistration failed; the record will expire")
            }
            Err(_) => tracing::warn!(
                %pod_id,
                "deregistration timed out after {DEREGISTER_TIMEOUT:?}; the record will expire"
            ),
        }
    })
}
