//! `cluster.assignment: registry`: the worker serves the accounts the leader's reconciler
//! assigned it (`assigned_pod` = this worker's `node.id` in `account:{id}`), re-read every
//! `worker.heartbeat_interval`. How to start an assigned account's agent comes from this
//! worker's own `accounts` (credentials never pass through the store); an assigned account
//! missing there is logged and skipped. While the store is unreachable, the worker keeps what
//! it serves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use drawbridge_config::AccountConfig;
use drawbridge_state::AccountStore;
use drawbridge_telemetry::Shutdown;

use crate::Worker;

pub fn follow(
    store: Arc<dyn AccountStore>,
    worker: Arc<Worker>,
    catalogue: Vec<AccountConfig>,
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
                    let mine: Vec<&AccountConfig> = records
                        .iter()
                        .filter(|r| r.assigned_pod.as_deref() == Some(worker.id()))
                        .filter_map(|r| {
                            let found = catalogue.iter().find(|a| a.id == r.id);
                            if found.is_none() && unknown.insert(r.id.clone()) {
                                tracing::warn!(
                                    account = r.id,
                                    "assigned an account this worker's config does not list"
                                );
                            }
                            found
                        })
                        .collect();
                    worker.assign(&mine).await;
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
