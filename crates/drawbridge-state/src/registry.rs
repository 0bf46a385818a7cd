//! The worker registry: which pods (worker processes) are alive, what they serve, and the
//! topology events that announce changes.

use std::time::Duration;

use drawbridge_types::worker::AccountSlots;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::StateError;

/// A registry operation: boxed so that `Registry` works as `Arc<dyn Registry>`.
pub type StateFuture<'a, T> = BoxFuture<'a, Result<T, StateError>>;

/// The topology events of one subscription, in the order the store applied the changes.
pub type TopologyStream = BoxStream<'static, TopologyEvent>;

/// One worker process as the registry holds it: rewritten by each of its heartbeats, gone when
/// they stop for longer than the TTL or when it deregisters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The pod's id (the worker's `node.id`); unique across the deployment.
    pub id: String,
    /// The worker's gRPC endpoint, as a URL (`http://10.0.0.7:50051`).
    pub address: String,
    /// The worker's HTTP endpoint (`/health`, `/slots`), as a URL.
    pub http_address: String,
    /// Every account pool of the pod, with its slots.
    pub accounts: Vec<AccountSlots>,
    /// The models the pod serves.
    pub models: Vec<String>,
    pub status: PodStatus,
    /// Whether the pod takes account assignments from the reconciler (a worker with
    /// `cluster.assignment: registry`); a pod serving its configured accounts does not.
    #[serde(default)]
    pub assignable: bool,
    /// When the store last took a heartbeat of this pod, in milliseconds since the Unix epoch, on
    /// the store's clock (ValKey's `TIME`), so that every node compares the same clock. Set by
    /// [`Registry::heartbeat`]; whatever the caller puts here is replaced.
    #[serde(default)]
    pub updated_at_ms: u64,
}

/// A pod's status: the status its `/health` reports (`draining`: finishing its in-flight
/// turns, taking no new work), stored under the same lowercase names.
pub use drawbridge_types::HealthStatus as PodStatus;

/// A change of the topology, as published to every subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopologyEvent {
    /// The pod's first heartbeat (no live record of it existed).
    Join(String),
    /// The pod deregistered. A pod whose heartbeats stop and whose record expires produces no
    /// event: readers see it gone from [`Registry::pods`].
    Leave(String),
    /// The pod's status turned `draining`.
    Drain(String),
    /// The pod's routing changed: status (other than to draining), address, HTTP address, or
    /// models. Slot counts change with every heartbeat and are not events: read them from
    /// [`Registry::pods`].
    Update(String),
    /// Events may have been missed (the subscription lagged, or reconnected to the store):
    /// re-read [`Registry::pods`] to resynchronise.
    Resync,
}

impl TopologyEvent {
    /// The pod the event is about; `None` for [`TopologyEvent::Resync`].
    pub fn pod_id(&self) -> Option<&str> {
        match self {
            TopologyEvent::Join(id)
            | TopologyEvent::Leave(id)
            | TopologyEvent::Drain(id)
            | TopologyEvent::Update(id) => Some(id),
            TopologyEvent::Resync => None,
        }
    }

    pub(crate) fn new(kind: EventKind, pod_id: String) -> TopologyEvent {
        match kind {
            EventKind::Join => TopologyEvent::Join(pod_id),
            EventKind::Leave => TopologyEvent::Leave(pod_id),
            EventKind::Drain => TopologyEvent::Drain(pod_id),
            EventKind::Update => TopologyEvent::Update(pod_id),
        }
    }

    /// The event as published on the topology channel: `{"kind":"join","pod_id":"…"}`.
    pub(crate) fn to_json(kind: EventKind, pod_id: &str) -> String {
        let wire = WireEventRef { kind, pod_id };
        // A struct of an enum and a string always serializes.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Parse a published event; `None` if it is not one.
    pub(crate) fn from_json(text: &str) -> Option<TopologyEvent> {
        let wire: WireEvent = serde_json::from_str(text).ok()?;
        Some(TopologyEvent::new(wire.kind, wire.pod_id))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventKind {
    Join,
    Leave,
    Drain,
    Update,
}

#[derive(Serialize)]
struct WireEventRef<'a> {
    kind: EventKind,
    pod_id: &'a str,
}

#[derive(Deserialize)]
struct WireEvent {
    kind: EventKind,
    pod_id: String,
}

/// The event a heartbeat publishes, given the pod's live record before it (if any). The ValKey
/// implementation runs the same rule in `scripts/heartbeat.lua`; the conformance suite holds the
/// two together.
pub(crate) fn topology_change(prev: Option<&PodRecord>, next: &PodRecord) -> Option<EventKind> {
    let Some(prev) = prev else {
        return Some(EventKind::Join);
    };
    if next.status == PodStatus::Draining && prev.status != PodStatus::Draining {
        Some(EventKind::Drain)
    } else if prev.status != next.status
        || prev.address != next.address
        || prev.http_address != next.http_address
        || prev.models != next.models
    {
        Some(EventKind::Update)
    } else {
        None
    }
}

/// Check what every implementation refuses alike.
pub(crate) fn validate_heartbeat(pod: &PodRecord, ttl: Duration) -> Result<(), StateError> {
    if pod.id.is_empty() {
        return Err(StateError::Invalid("a pod id must not be empty".into()));
    }
    if ttl.as_millis() == 0 {
        return Err(StateError::Invalid(format!(
            "the TTL of pod {} must be at least 1 ms",
            pod.id
        )));
    }
    Ok(())
}

/// Where the workers are. Two implementations, [`crate::ValkeyRegistry`] (shared by every node)
/// and [`crate::EmbeddedRegistry`] (one process), pass the same conformance suite.
pub trait Registry: Send + Sync + 'static {
    /// Store `pod` for `ttl` (replacing its previous record), index it under each of its models
    /// (and out of models it no longer serves), and publish the event the change calls for:
    /// `Join` on the first heartbeat, `Drain` when the status turns draining, `Update` when its
    /// routing changed (see [`TopologyEvent`]).
    fn heartbeat<'a>(&'a self, pod: &'a PodRecord, ttl: Duration) -> StateFuture<'a, ()>;

    /// Remove the pod and its model index entries, and publish `Leave`. Removing a pod that is
    /// not registered is not an error (and still publishes `Leave`).
    fn deregister<'a>(&'a self, pod_id: &'a str) -> StateFuture<'a, ()>;

    /// Every live pod, by id.
    fn pods(&self) -> StateFuture<'_, Vec<PodRecord>>;

    /// The live pods that serve `model`, by id.
    fn pods_for_model<'a>(&'a self, model: &'a str) -> StateFuture<'a, Vec<PodRecord>>;

    /// Topology events from now on. Resolves once the subscription is active: a change made
    /// after it returns is seen. Delivery is at most once (a store outage loses events, and
    /// says so with [`TopologyEvent::Resync`]); a cache built on it also re-reads
    /// [`Registry::pods`] now and then.
    fn subscribe(&self) -> StateFuture<'_, TopologyStream>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: PodStatus, models: &[&str]) -> PodRecord {
        PodRecord {
            id: "p1".into(),
            address: "http://127.0.0.1:50051".into(),
            http_address: "http://127.0.0.1:8090".into(),
            accounts: Vec::new(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            status,
            assignable: false,
            updated_at_ms: 0,
        }
    }

    /// The status is stored (in ValKey's JSON, read by `heartbeat.lua`) under the names a
    /// worker's `/health` reports.
    #[test]
    fn statuses_keep_their_stored_names() {
        for (status, name) in [
            (PodStatus::Healthy, "healthy"),
            (PodStatus::Degraded, "degraded"),
            (PodStatus::Draining, "draining"),
            (PodStatus::Unhealthy, "unhealthy"),
        ] {
            let json = serde_json::to_value(pod(status, &["m"])).unwrap();
            assert_eq!(json["status"], name);
            let back: PodRecord = serde_json::from_value(json).unwrap();
            assert_eq!(back.status, status);
        }
    }

    #[test]
    fn the_first_heartbeat_joins() {
        let next = pod(PodStatus::Healthy, &["m"]);
        assert_eq!(topology_change(None, &next), Some(EventKind::Join));
    }

    #[test]
    fn an_unchanged_pod_publishes_nothing() {
        let prev = pod(PodStatus::Healthy, &["m"]);
        let mut next = prev.clone();
        next.updated_at_ms = 42;
        assert_eq!(topology_change(Some(&prev), &next), None);
    }

    #[test]
    fn turning_draining_drains_once() {
        let healthy = pod(PodStatus::Healthy, &["m"]);
        let draining = pod(PodStatus::Draining, &["m"]);
        assert_eq!(
            topology_change(Some(&healthy), &draining),
            Some(EventKind::Drain)
        );
        assert_eq!(topology_change(Some(&draining), &draining), None);
        assert_eq!(
            topology_change(Some(&draining), &healthy),
            Some(EventKind::Update)
        );
    }

    #[test]
    fn routing_changes_update() {
        let prev = pod(PodStatus::Healthy, &["m"]);
        for next in [
            pod(PodStatus::Degraded, &["m"]),
            pod(PodStatus::Healthy, &["m", "n"]),
            PodRecord {
                address: "http://10.0.0.1:50051".into(),
                ..prev.clone()
            },
            PodRecord {
                http_address: "http://10.0.0.1:8090".into(),
                ..prev.clone()
            },
        ] {
            assert_eq!(topology_change(Some(&prev), &next), Some(EventKind::Update));
        }
    }

    #[test]
    fn events_have_one_wire_form() {
        let json = TopologyEvent::to_json(EventKind::Drain, "p/1");
        assert_eq!(json, r#"{"kind":"drain","pod_id":"p/1"}"#);
        assert_eq!(
            TopologyEvent::from_json(&json),
            Some(TopologyEvent::Drain("p/1".into()))
        );
        assert_eq!(TopologyEvent::from_json(r#"{"kind":"explode"}"#), None);
    }

    #[test]
    fn statuses_serialize_lowercase() {
        let json = serde_json::to_string(&PodStatus::Draining).ok();
        assert_eq!(json.as_deref(), Some(r#""draining""#));
    }
}
