//! The reconciler: while this engine leads, it makes the accounts' assignment match the fleet.
//!
//! Desired state: the accounts in `account:{id}` (every engine writes its config's `accounts`
//! there at start, the leader again on every pass, so the desired state comes back after the
//! store lost its data). Actual state: the registry's live pods and the accounts they report.
//! Every `cluster.reconcile_interval`, on every topology event and when this engine becomes the
//! leader, it runs [`drawbridge_core::placement::plan`] and writes each move with the fenced
//! `assign` (a leader that lost its lease meanwhile is refused). Workers in
//! `cluster.assignment: registry` mode read their assignment and start or stop pools.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_core::placement::{self, AccountView, PodView};
use drawbridge_state::{
    AccountRecord, AccountStore, CONTROLLER_LEASE, Lease, PodStatus, Registry, StateError,
    TopologyStream,
};
use drawbridge_telemetry::Shutdown;
use futures::StreamExt;
use tokio::sync::watch;

use crate::fleet::FleetDriver;

pub struct Reconciler {
    pub registry: Arc<dyn Registry>,
    pub accounts: Arc<dyn AccountStore>,
    pub driver: Arc<dyn FleetDriver>,
    /// This engine's config's accounts.
    pub desired: Vec<AccountRecord>,
    pub interval: Duration,
    /// 0: no limit.
    pub max_per_pod: usize,
}

impl Reconciler {
    /// The desired accounts of `config`, unassigned.
    pub fn desired_from(config: &drawbridge_config::Config) -> Vec<AccountRecord> {
        config
            .accounts
            .iter()
            .map(|a| AccountRecord {
                id: a.id.clone(),
                models: a.models.clone(),
                pool_size: a.pool_size,
                assigned_pod: None,
            })
            .collect()
    }

    /// Run until `shutdown`, reconciling while `leadership` holds a lease.
    pub fn spawn(self, mut leadership: watch::Receiver<Option<Lease>>, shutdown: &Shutdown) {
        let scope = shutdown.clone();
        shutdown.spawn(async move {
            if let Err(error) = self.accounts.put_accounts(&self.desired).await {
                tracing::warn!(%error, "could not write the desired accounts; the leader will");
            }
            let mut events: Option<TopologyStream> = None;
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let next_event = async {
                    match events.as_mut() {
                        Some(stream) => stream.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = scope.cancelled() => break,
                    _ = tick.tick() => {}
                    changed = leadership.changed() => if changed.is_err() { break },
                    event = next_event => if event.is_none() { events = None },
                }
                let lease = leadership.borrow().clone();
                let Some(lease) = lease else { continue };
                if events.is_none() {
                    events = self.registry.subscribe().await.ok();
                }
                if let Err(error) = self.pass(&lease).await {
                    tracing::warn!(%error, "reconcile pass failed");
                }
            }
        });
    }

    /// One pass: desired vs actual, and the moves.
    async fn pass(&self, lease: &Lease) -> Result<(), StateError> {
        self.accounts.put_accounts(&self.desired).await?;
        let accounts = self.accounts.accounts().await?;
        let pods = self.registry.pods().await?;
        self.driver.ensure(&pods).await;
        let pod_views: Vec<PodView> = pods
            .iter()
            .map(|p| PodView {
                id: p.id.clone(),
                assignable: p.assignable,
                accepting: !matches!(p.status, PodStatus::Draining | PodStatus::Unhealthy),
                serving: p.accounts.iter().map(|a| a.account.clone()).collect(),
            })
            .collect();
        let account_views: Vec<AccountView> = accounts
            .iter()
            .map(|a| AccountView {
                id: a.id.clone(),
                assigned_pod: a.assigned_pod.clone(),
            })
            .collect();
        for m in placement::plan(&account_views, &pod_views, self.max_per_pod) {
            self.accounts
                .assign(&m.account, m.to.as_deref(), CONTROLLER_LEASE, lease)
                .await?;
            tracing::info!(
                account = m.account,
                from = m.from.as_deref().unwrap_or("-"),
                to = m.to.as_deref().unwrap_or("-"),
                token = lease.token,
                "account assigned"
            );
        }
        Ok(())
    }
}
