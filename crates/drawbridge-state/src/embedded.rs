//! The registry in process, for the single-node binary and for tests: a map whose entries expire
//! on tokio's clock (so paused-time tests control it) and a broadcast channel for the events.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::clock::system_ms;
use crate::registry::{
    EventKind, PodRecord, Registry, StateFuture, TopologyEvent, TopologyStream, topology_change,
    validate_heartbeat,
};

/// How many events a slow subscriber may fall behind before it gets a
/// [`TopologyEvent::Resync`] instead.
const EVENT_BUFFER: usize = 1024;

/// The registry of one process. Same behaviour as [`crate::ValkeyRegistry`], nothing shared.
#[derive(Debug)]
pub struct EmbeddedRegistry {
    pods: Mutex<HashMap<String, Entry>>,
    events: broadcast::Sender<TopologyEvent>,
}

#[derive(Debug)]
struct Entry {
    record: PodRecord,
    expires_at: Instant,
}

impl Default for EmbeddedRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedRegistry {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        EmbeddedRegistry {
            pods: Mutex::new(HashMap::new()),
            events,
        }
    }

    /// The live pods, expired ones dropped. Events are sent while this lock is held, so their
    /// order is the order of the changes.
    fn live(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        pods.retain(|_, entry| entry.expires_at > now);
        pods
    }

    fn publish(&self, kind: EventKind, pod_id: &str) {
        // No subscriber is not an error.
        let _ = self
            .events
            .send(TopologyEvent::new(kind, pod_id.to_owned()));
    }

    fn sorted(mut records: Vec<PodRecord>) -> Vec<PodRecord> {
        records.sort_by(|a, b| a.id.cmp(&b.id));
        records
    }
}

impl Registry for EmbeddedRegistry {
    fn heartbeat<'a>(&'a self, pod: &'a PodRecord, ttl: Duration) -> StateFuture<'a, ()> {
        Box::pin(async move {
            validate_heartbeat(pod, ttl)?;
            let mut record = pod.clone();
            record.updated_at_ms = system_ms();
            let mut pods = self.live();
            let change = topology_change(pods.get(&pod.id).map(|e| &e.record), &record);
            pods.insert(
                pod.id.clone(),
                Entry {
                    record,
                    expires_at: Instant::now() + ttl,
                },
            );
            if let Some(kind) = change {
                self.publish(kind, &pod.id);
            }
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, pod_id: &'a str) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut pods = self.live();
            pods.remove(pod_id);
            self.publish(EventKind::Leave, pod_id);
            Ok(())
        })
    }

    fn pods(&self) -> StateFuture<'_, Vec<PodRecord>> {
        Box::pin(async move {
            let pods = self.live();
            Ok(Self::sorted(
                pods.values().map(|e| e.record.clone()).collect(),
            ))
        })
    }

    fn pods_for_model<'a>(&'a self, model: &'a str) -> StateFuture<'a, Vec<PodRecord>> {
        Box::pin(async move {
            let pods = self.live();
            Ok(Self::sorted(
                pods.values()
                    .filter(|e| e.record.models.iter().any(|m| m == model))
                    .map(|e| e.record.clone())
                    .collect(),
            ))
        })
    }

    fn subscribe(&self) -> StateFuture<'_, TopologyStream> {
        let receiver = self.events.subscribe();
        Box::pin(async move {
            let stream = futures::stream::unfold(receiver, |mut receiver| async move {
                match receiver.recv().await {
                    Ok(event) => Some((event, receiver)),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "topology subscriber lagged; resynchronising");
                        Some((TopologyEvent::Resync, receiver))
                    }
                    Err(RecvError::Closed) => None,
                }
            });
            Ok(stream.boxed())
        })
    }
}
