//! `cluster.assignment: registry`: the worker serves the accounts the leader's reconciler
//! assigned it (`assigned_pod` = this worker's `node.id` in `account:{id}`), re-read every
//! `worker.heartbeat_interval`. It stops serving an account only when the account is assigned
//! to another pod: an account it serves whose record is gone or unassigned (the store lost its
//! data) is kept, and the reconciler assigns it back to this worker. How to start an assigned
//! account's agent comes from this worker's own `accounts` (credentials never pass through the
//! store; a reload of the config applies to them); an assigned account missing there is logged
//! and skipped. While the store is unreachable, the worker keeps what it serves.
//!
//! A hand-over is warm where possible: an account assigned away from this worker is served
//! here until the new pod reports it ready (an idle agent in its registry record), at most
//! [`HANDOVER_LIMIT`], so requests in between find a warm agent on one of the two instead of
//! none. (A pod that dies or drains hands over nothing: the new one starts cold.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use drawbridge_config::AccountConfig;
use drawbridge_state::{AccountRecord, AccountStore, PodRecord, Registry};
use drawbridge_telemetry::Shutdown;
use tokio::time::Instant;

use crate::Worker;

/// How long an account assigned away is still served here while its new pod gets ready.
pub const HANDOVER_LIMIT: Duration = Duration::from_secs(30);

pub fn follow<S: AccountStore + Registry>(
    store: Arc<S>,
    worker: Arc<Worker>,
    interval: Duration,
    scope: &Shutdown,
) {
    let stop = scope.clone();
    scope.spawn(async move {
        let mut unknown: BTreeSet<String> = BTreeSet::new();
        let mut handovers = Handovers::default();
        let mut failing = false;
        loop {
            match store.accounts().await {
                Ok(records) => {
                    failing = false;
                    // Without the pods, no new pod is known to be ready: hand-overs wait.
                    let pods = store.pods().await.unwrap_or_default();
                    let assignment = Assignment {
                        records: &records,
                        pods: &pods,
                    };
                    for id in worker.take_assignment(&assignment, &mut handovers).await {
                        if unknown.insert(id.clone()) {
                            tracing::warn!(
                                account = id,
                                "assigned an account this worker's config does not list"
                            );
                        }
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "cannot read the assignment; keeping the accounts");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
    });
}

/// What the store says: the desired accounts with their pods, and the live pods.
struct Assignment<'a> {
    records: &'a [AccountRecord],
    pods: &'a [PodRecord],
}

/// The accounts this worker still serves although they are assigned away, since when.
#[derive(Debug, Default)]
struct Handovers(BTreeMap<String, Instant>);

impl Assignment<'_> {
    /// Whether pod `pod` has a ready agent of `account`.
    fn ready_on(&self, pod: &str, account: &str) -> bool {
        self.pods.iter().any(|p| {
            p.id == pod
                && p.accounts
                    .iter()
                    .any(|a| a.account == account && a.idle + a.busy > 0)
        })
    }

    /// What worker `me`, serving `serving`, should serve at `now`: what is assigned to it;
    /// what it serves that no other pod is assigned (the store lost it); and what it serves
    /// that is assigned away while the new pod is not ready yet, for [`HANDOVER_LIMIT`].
    fn wanted(
        &self,
        me: &str,
        serving: &[String],
        handovers: &mut Handovers,
        now: Instant,
    ) -> BTreeSet<String> {
        let mut wanted: BTreeSet<String> = self
            .records
            .iter()
            .filter(|r| r.assigned_pod.as_deref() == Some(me))
            .map(|r| r.id.clone())
            .collect();
        let mut handing_over = BTreeSet::new();
        for id in serving {
            let elsewhere = self
                .records
                .iter()
                .find(|r| &r.id == id)
                .and_then(|r| r.assigned_pod.as_deref())
                .filter(|pod| *pod != me);
            let keep = match elsewhere {
                None => true,
                Some(pod) if self.ready_on(pod, id) => false,
                Some(pod) => {
                    let since = *handovers.0.entry(id.clone()).or_insert_with(|| {
                        tracing::info!(
                            account = id,
                            to = pod,
                            "handing over once the new pod is ready"
                        );
                        now
                    });
                    handing_over.insert(id.clone());
                    now.duration_since(since) < HANDOVER_LIMIT
                }
            };
            if keep {
                wanted.insert(id.clone());
            }
        }
        // A hand-over that ended (the new pod is ready, the account came back, the limit
        // passed and it stopped here) is forgotten.
        handovers
            .0
            .retain(|id, _| handing_over.contains(id) && wanted.contains(id));
        wanted
    }
}

impl Worker {
    /// Serve what the store assigns to this worker (with what it serves that is assigned to no
    /// other pod, and what it hands over while the new pod is not ready); decided and applied
    /// as one change (a reload cannot slip in between). Returns the assigned accounts its
    /// config does not list (they are skipped).
    async fn take_assignment(
        &self,
        assignment: &Assignment<'_>,
        handovers: &mut Handovers,
    ) -> Vec<String> {
        let _changing = self.changes.lock().await;
        let serving = self.serving();
        let wanted = assignment.wanted(self.id(), &serving, handovers, Instant::now());
        let catalogue = self.catalogue();
        let mut unknown = Vec::new();
        let mine: Vec<&AccountConfig> = wanted
            .into_iter()
            .filter_map(|id| {
                let found = catalogue.iter().find(|a| a.id == id);
                if found.is_none() {
                    unknown.push(id);
                }
                found
            })
            .collect();
        self.change_pools(&mine).await;
        unknown
    }
}

#[cfg(test)]
mod tests {
    use drawbridge_state::PodStatus;
    use drawbridge_types::worker::{AccountSlots, AccountStatus};

    use super::*;

    fn record(id: &str, pod: Option<&str>) -> AccountRecord {
        AccountRecord {
            id: id.to_owned(),
            models: vec!["kiro".to_owned()],
            pool_size: 1,
            assigned_pod: pod.map(str::to_owned),
        }
    }

    /// Pod `id` serving `account` with `idle` ready agents (and none busy).
    fn pod(id: &str, account: &str, idle: u32) -> PodRecord {
        PodRecord {
            id: id.to_owned(),
            address: String::new(),
            http_address: String::new(),
            accounts: vec![AccountSlots {
                account: account.to_owned(),
                models: vec!["kiro".to_owned()],
                default_model: None,
                size: 1,
                busy: 0,
                idle,
                starting: 1 - idle.min(1),
                failed: 0,
                queue_depth: 0,
                credits_used: 0.0,
                tools_refused: 0,
                last_error: None,
                status: AccountStatus::Healthy,
            }],
            models: vec!["kiro".to_owned()],
            status: PodStatus::Healthy,
            assignable: true,
            updated_at_ms: 0,
        }
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn an_account_assigned_away_is_served_until_its_new_pod_is_ready() {
        let records = [record("a", Some("w2")), record("b", Some("w1"))];
        let serving = ["a".to_owned()];
        let mut handovers = Handovers::default();
        let t0 = Instant::now();
        // w2 is still starting a's agent: w1 keeps a, and takes b.
        let starting = [pod("w2", "a", 0)];
        let assignment = Assignment {
            records: &records,
            pods: &starting,
        };
        let wanted = assignment.wanted("w1", &serving, &mut handovers, t0);
        assert_eq!(wanted, set(&["a", "b"]));
        // A pass later w2 has a ready agent: w1 lets a go, and forgets the hand-over.
        let ready = [pod("w2", "a", 1)];
        let assignment = Assignment {
            records: &records,
            pods: &ready,
        };
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            assignment.wanted("w1", &serving, &mut handovers, later),
            set(&["b"])
        );
        assert!(handovers.0.is_empty());
    }

    #[test]
    fn a_new_pod_that_never_gets_ready_takes_the_account_after_the_limit() {
        let records = [record("a", Some("w2"))];
        let serving = ["a".to_owned()];
        let mut handovers = Handovers::default();
        let t0 = Instant::now();
        let assignment = Assignment {
            records: &records,
            pods: &[],
        };
        assert_eq!(
            assignment.wanted("w1", &serving, &mut handovers, t0),
            set(&["a"])
        );
        let almost = t0 + HANDOVER_LIMIT - Duration::from_millis(1);
        assert_eq!(
            assignment.wanted("w1", &serving, &mut handovers, almost),
            set(&["a"]),
            "the first pass's time counts, not the latest"
        );
        assert_eq!(
            assignment.wanted("w1", &serving, &mut handovers, t0 + HANDOVER_LIMIT),
            set(&[])
        );
        assert!(handovers.0.is_empty());
    }

    #[test]
    fn what_the_store_lost_is_kept_and_what_comes_back_ends_a_hand_over() {
        let serving = ["a".to_owned(), "lost".to_owned()];
        let mut handovers = Handovers::default();
        let t0 = Instant::now();
        let away = [record("a", Some("w2"))];
        let assignment = Assignment {
            records: &away,
            pods: &[],
        };
        assert_eq!(
            assignment.wanted("w1", &serving, &mut handovers, t0),
            set(&["a", "lost"])
        );
        assert_eq!(handovers.0.len(), 1);
        // The reconciler gives a back to w1 before w2 was ready.
        let back = [record("a", Some("w1"))];
        let assignment = Assignment {
            records: &back,
            pods: &[],
        };
        assert_eq!(
            assignment.wanted("w1", &serving, &mut handovers, t0),
            set(&["a", "lost"])
        );
        assert!(handovers.0.is_empty(), "no hand-over any more");
    }
}
