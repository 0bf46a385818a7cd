//! The workers the engine routes to, and how the fleet of workers comes to exist.
//!
//! [`WorkerSet`] gives every worker a stable index (what a route holds): a worker configured in
//! `engine.workers` keeps its index for the engine's life; a worker discovered in the registry
//! keeps its pod's index across leaves and re-joins, and its slot is emptied (connection
//! dropped) while the pod is gone.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use drawbridge_state::PodRecord;
use futures::future::BoxFuture;

use crate::workers::WorkerConn;

#[derive(Default)]
pub struct WorkerSet {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Option<Member>>,
    /// Discovered pods by id → their index.
    by_pod: HashMap<String, usize>,
}

struct Member {
    address: String,
    conn: Arc<dyn WorkerConn>,
}

/// What [`WorkerSet::sync`] changed, for logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncChanges {
    pub joined: Vec<String>,
    pub left: Vec<String>,
}

impl WorkerSet {
    /// A fixed set (`engine.workers`, or the in-process worker).
    pub fn fixed(workers: Vec<Arc<dyn WorkerConn>>) -> Self {
        let slots = workers
            .into_iter()
            .map(|conn| {
                Some(Member {
                    address: conn.name().to_owned(),
                    conn,
                })
            })
            .collect();
        WorkerSet {
            inner: RwLock::new(Inner {
                slots,
                by_pod: HashMap::new(),
            }),
        }
    }

    pub fn get(&self, index: usize) -> Option<Arc<dyn WorkerConn>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .slots
            .get(index)
            .and_then(|m| m.as_ref().map(|m| Arc::clone(&m.conn)))
    }

    /// Every present worker with its index.
    pub fn snapshot(&self) -> Vec<(usize, Arc<dyn WorkerConn>)> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().map(|m| (i, Arc::clone(&m.conn))))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.slots.iter().all(Option::is_none)
    }

    /// Whether the worker at `index` is present and answered its last call.
    pub fn reachable(&self, index: usize) -> bool {
        self.get(index).is_some_and(|w| w.reachable())
    }

    /// Drop the pod `pod_id` (it deregistered). Whether it was present.
    pub fn remove(&self, pod_id: &str) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let Some(index) = inner.by_pod.get(pod_id).copied() else {
            return false;
        };
        inner
            .slots
            .get_mut(index)
            .is_some_and(|slot| slot.take().is_some())
    }

    /// Make the set match the registry's live pods: connect (lazily, through `connect`) to new
    /// pods and to pods whose address changed, drop the connections of pods that are gone
    /// (absent and unreachable).
    pub fn sync(
        &self,
        pods: &[PodRecord],
        connect: impl Fn(&PodRecord) -> Option<Arc<dyn WorkerConn>>,
    ) -> SyncChanges {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut changes = SyncChanges::default();
        let live: HashMap<&str, &PodRecord> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
        let known: Vec<(String, usize)> = inner
            .by_pod
            .iter()
            .map(|(id, i)| (id.clone(), *i))
            .collect();
        for (id, index) in known {
            // Absent from the registry and not answering either: gone. Absent but answering
            // (the store lost its data, or the pod has not re-registered yet): kept until its
            // `Slots` fails or it leaves for good.
            if !live.contains_key(id.as_str())
                && let Some(slot) = inner.slots.get_mut(index)
                && slot.as_ref().is_some_and(|m| !m.conn.reachable())
                && slot.take().is_some()
            {
                changes.left.push(id);
            }
        }
        for pod in pods {
            let index = match inner.by_pod.get(&pod.id) {
                Some(index) => *index,
                None => {
                    inner.slots.push(None);
                    let index = inner.slots.len() - 1;
                    inner.by_pod.insert(pod.id.clone(), index);
                    index
                }
            };
            let current = inner.slots.get(index).and_then(Option::as_ref);
            if current.is_some_and(|m| m.address == pod.address) {
                continue;
            }
            let Some(conn) = connect(pod) else { continue };
            if current.is_none() {
                changes.joined.push(pod.id.clone());
            }
            if let Some(slot) = inner.slots.get_mut(index) {
                *slot = Some(Member {
                    address: pod.address.clone(),
                    conn,
                });
            }
        }
        changes.joined.sort();
        changes.left.sort();
        changes
    }
}

/// How workers come to exist. The reconciler calls it once per pass, as the leader, with the
/// live pods; a driver that starts workers (local processes, containers) brings their number to
/// what it wants. Accounts are assigned by the reconciler, whatever the driver.
pub trait FleetDriver: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    fn ensure<'a>(&'a self, pods: &'a [PodRecord]) -> BoxFuture<'a, ()>;
}

/// Workers are started by someone else (compose replicas, systemd units, a person): nothing to
/// start or stop; the reconciler only assigns accounts to the workers that registered.
pub struct StaticDriver;

impl FleetDriver for StaticDriver {
    fn name(&self) -> &'static str {
        "static"
    }

    fn ensure<'a>(&'a self, _pods: &'a [PodRecord]) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use drawbridge_state::PodStatus;
    use drawbridge_types::ApiError;
    use drawbridge_types::worker::{PromptInput, SlotsReport, WorkerEvent};
    use futures::stream::BoxStream;

    use super::*;

    struct Fake {
        name: String,
        up: Arc<AtomicBool>,
    }

    impl WorkerConn for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        fn prompt(&self, _input: PromptInput) -> BoxStream<'static, WorkerEvent> {
            Box::pin(futures::stream::empty())
        }
        fn slots(&self) -> BoxFuture<'_, Result<SlotsReport, ApiError>> {
            Box::pin(std::future::ready(Err(ApiError::unavailable("fake"))))
        }
        fn reachable(&self) -> bool {
            self.up.load(Ordering::SeqCst)
        }
    }

    fn pod(id: &str, address: &str) -> PodRecord {
        PodRecord {
            id: id.into(),
            address: address.into(),
            http_address: String::new(),
            accounts: Vec::new(),
            models: Vec::new(),
            status: PodStatus::Healthy,
            assignable: false,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn pods_join_keep_their_index_and_leave_when_gone_and_silent() {
        let set = WorkerSet::default();
        let up = Arc::new(AtomicBool::new(true));
        let connect = |p: &PodRecord| {
            Some(Arc::new(Fake {
                name: p.address.clone(),
                up: Arc::clone(&up),
            }) as Arc<dyn WorkerConn>)
        };
        let changes = set.sync(&[pod("b", "http://b"), pod("a", "http://a")], connect);
        assert_eq!(changes.joined, ["a", "b"]);
        let index_of = |name: &str| {
            set.snapshot()
                .into_iter()
                .find(|(_, w)| w.name() == name)
                .map(|(i, _)| i)
        };
        let b = index_of("http://b").unwrap();

        // Absent but answering (the store lost its data): kept.
        let changes = set.sync(&[pod("a", "http://a")], connect);
        assert!(changes.left.is_empty());
        assert_eq!(set.snapshot().len(), 2);
        // Absent and silent: gone.
        up.store(false, Ordering::SeqCst);
        let changes = set.sync(&[pod("a", "http://a")], connect);
        assert_eq!(changes.left, ["b"]);
        assert!(set.get(b).is_none());
        // Back at a new address: same index, new connection.
        up.store(true, Ordering::SeqCst);
        let changes = set.sync(&[pod("a", "http://a"), pod("b", "http://b2")], connect);
        assert_eq!(changes.joined, ["b"]);
        assert_eq!(index_of("http://b2"), Some(b));
        // Deregistered: gone at once.
        assert!(set.remove("a"));
        assert!(!set.remove("a"));
        assert_eq!(set.snapshot().len(), 1);
        assert!(!set.is_empty());
    }

    /// A cluster engine's own connection (its provider accounts) sits beside the discovered
    /// pods and never leaves with them.
    #[test]
    fn a_fixed_connection_stays_beside_discovered_pods() {
        let up = Arc::new(AtomicBool::new(false));
        let own: Arc<dyn WorkerConn> = Arc::new(Fake {
            name: "providers".into(),
            up: Arc::clone(&up),
        });
        let set = WorkerSet::fixed(vec![own]);
        let connect = |p: &PodRecord| {
            Some(Arc::new(Fake {
                name: p.address.clone(),
                up: Arc::clone(&up),
            }) as Arc<dyn WorkerConn>)
        };
        let changes = set.sync(&[pod("a", "http://a")], connect);
        assert_eq!(changes.joined, ["a"]);
        assert_eq!(
            set.get(0).map(|w| w.name().to_owned()).as_deref(),
            Some("providers")
        );
        // Every pod gone (and silent): the fixed connection remains.
        let changes = set.sync(&[], connect);
        assert_eq!(changes.left, ["a"]);
        let names: Vec<String> = set
            .snapshot()
            .iter()
            .map(|(_, w)| w.name().to_owned())
            .collect();
        assert_eq!(names, ["providers"]);
    }
}
