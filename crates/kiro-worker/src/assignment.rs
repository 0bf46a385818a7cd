//! `cluster.assignment: registry`: the worker serves the accounts the leader's reconciler
//! assigned it (`assigned_pod` = this worker's `node.id` in `account:{id}`), re-read every
//! `worker.heartbeat_interval`. It stops serving an account only when the account is assigned
//! to another pod: an account it serves whose record is gone or unassigned (the store lost its
//! data) is kept, and the reconciler assigns it back to this worker. How to start an assigned account's agent comes from this
//! worker's own `accounts` (credentials never pass through the store; a reload of the config
//! applies to them); an assigned account
//! missing there is logged and skipped. While the store is unreachable, the worker keeps what
//! it serves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use drawbridge_config::AccountConfig;
use drawbridge_state::{AccountRecord, AccountStore};
use drawbridge_telemetry::Shutdown;

use crate::Worker;

pub fn follow(
    store: Arc<dyn AccountStore>,
    worker: Arc<Worker>,
    interval: Duration,
    scope: &Shutdown,
) {
    let stop = scope.clone();
    scope.spawn(async move {
        let mut unknown: BTreeSet<String> = BTreeSet::new();
        let mut failing = false;
        loop {
            match store.accounts().await {
                Ok(records) => {
                    failing = false;
                    for id in worker.take_assignment(&records).await {
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

impl Worker {
    /// Serve what `records` assign to this worker, plus what it serves that is assigned to no
    /// other pod; decided and applied as one change (a reload cannot slip in between). Returns
    /// the assigned accounts its config does not list (they are skipped).
    async fn take_assignment(&self, records: &[AccountRecord]) -> Vec<String> {
        let _changing = self.changes.lock().await;
        let serving = self.serving();
        let mut wanted: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.assigned_pod.as_deref() == Some(self.id()))
            .map(|r| r.id.as_str())
            .collect();
        for id in &serving {
            let elsewhere = records
                .iter()
                .any(|r| &r.id == id && r.assigned_pod.is_some());
            if !elsewhere {
                wanted.insert(id);
            }
        }
        let catalogue = self.catalogue();
        let mut unknown = Vec::new();
        let mine: Vec<&AccountConfig> = wanted
            .into_iter()
            .filter_map(|id| {
                let found = catalogue.iter().find(|a| a.id == id);
                if found.is_none() {
                    unknown.push(id.to_owned());
                }
                found
            })
            .collect();
        self.change_pools(&mine).await;
        unknown
    }
}
