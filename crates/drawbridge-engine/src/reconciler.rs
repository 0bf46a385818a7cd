//! The reconciler: while this engine leads, it makes the accounts' assignment match the fleet.
//!
//! Desired state: the accounts in `account:{id}` (every engine writes its config's `accounts`
//! there at start, the leader again on every pass, so the desired state comes back after the
//! store lost its data). Actual state: the registry's live pods and the accounts they report.
//! Every `cluster.reconcile_interval`, on every topology event and when this engine becomes the
//! leader, it runs [`drawbridge_core::placement::plan`] and writes each move with the fenced
//! `assign` (a leader that lost its lease meanwhile is refused). The plan also evens out the
//! load, a bounded number of idle accounts per pass: a pod reports an account busy while it has
//! a request in flight or queued for it. Workers in
//! `cluster.assignment: registry` mode read their assignment and start or stop pools.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_core::placement::{self, AccountView, PodView};
use drawbridge_state::{
    AccountRecord, AccountStore, CONTROLLER_LEASE, Lease, PodStatus, Registry, StateError,
    TopologyStream,
};
use drawbridge_telemetry::Shutdown;
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
    /// The desired accounts of `config`, unassigned: its ACP accounts (provider accounts are
    /// served by the engines themselves, never placed on a worker).
    pub fn desired_from(config: &drawbridge_config::Config) -> Vec<AccountRecord> {
        config
            .accounts
            .iter()
            .filter(|a| a.is_acp())
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
                let next_event = crate::discovery::next_event(&mut events);
                tokio::select! {
                    () = scope.cancelled() => break,
                    _ = tick.tick() => {}
                    changed = leadership.changed() => if changed.is_err() { break },
                    event = next_event => if event.is_none() { events = None },
                }
                let lease = leadership.borrow().clone();
                let Some(lease) = lease else {
                    // Not leading: still put back desired accounts the store lost (it
                    // restarted empty), so no engine's accounts wait for the leader.
                    self.republish_lost().await;
                    continue;
                };
                if events.is_none() {
                    events = self.registry.subscribe().await.ok();
                }
                if let Err(error) = self.pass(&lease).await {
                    tracing::warn!(%error, "reconcile pass failed");
                }
            }
        });
    }

    /// Write this engine's desired accounts again if the store lacks any of them.
    async fn republish_lost(&self) {
        let Ok(stored) = self.accounts.accounts().await else {
            return;
        };
        let lost = self
            .desired
            .iter()
            .filter(|d| !stored.iter().any(|s| s.id == d.id))
            .count();
        if lost == 0 {
            return;
        }
        match self.accounts.put_accounts(&self.desired).await {
            Ok(()) => tracing::info!(
                lost,
                "the state store had lost desired accounts; written again"
            ),
            Err(error) => tracing::warn!(%error, "could not write the desired accounts again"),
        }
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
                // A request in flight or queued: not moved to rebalance until idle.
                busy: p
                    .accounts
                    .iter()
                    .filter(|a| a.busy > 0 || a.queue_depth > 0)
                    .map(|a| a.account.clone())
                    .collect(),
            })
            .collect();
        let account_views: Vec<AccountView> = accounts
            .iter()
            .map(|a| AccountView {
                id: a.id.clone(),
                assigned_pod: a.assigned_pod.clone(),
                weight: a.pool_size,
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

#[cfg(test)]
mod tests {
    use drawbridge_state::{EmbeddedControl, EmbeddedRegistry, LeaseStore, PodRecord};
    use tokio::time::Instant;

    use super::*;
    use crate::fleet::StaticDriver;

    const INTERVAL: Duration = Duration::from_secs(30);
    const POD_TTL: Duration = Duration::from_secs(15);

    /// Provider accounts are the engines' own: the reconciler never places them on a worker.
    #[test]
    fn provider_accounts_are_never_placed() {
        let config = drawbridge_config::Config::from_yaml(
            "accounts:\n  - { id: a }\n  - { id: p, kind: openai, models: [m], provider: { base_url: 'http://x/v1' } }\n",
        )
        .unwrap();
        let desired = Reconciler::desired_from(&config);
        let ids: Vec<&str> = desired.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a"]);
    }

    fn pod(id: &str, accounts: &[&str]) -> PodRecord {
        busy_pod(id, accounts, &[])
    }

    /// A pod serving `accounts`, with a request in flight for those in `busy`.
    fn busy_pod(id: &str, accounts: &[&str], busy: &[&str]) -> PodRecord {
        PodRecord {
            id: id.into(),
            address: format!("http://{id}"),
            http_address: String::new(),
            accounts: accounts
                .iter()
                .map(|a| drawbridge_types::worker::AccountSlots {
                    account: (*a).to_owned(),
                    default_model: None,
                    tools_refused: 0,
                    models: vec!["kiro".into()],
                    size: 1,
                    busy: u32::from(busy.contains(a)),
                    idle: u32::from(!busy.contains(a)),
                    starting: 0,
                    failed: 0,
                    queue_depth: 0,
                    credits_used: 0.0,
                    last_error: None,
                    status: drawbridge_types::worker::AccountStatus::Healthy,
                })
                .collect(),
            models: vec!["kiro".into()],
            status: PodStatus::Healthy,
            assignable: true,
            updated_at_ms: 0,
        }
    }

    fn desired(id: &str) -> AccountRecord {
        AccountRecord {
            id: id.into(),
            models: vec!["kiro".into()],
            pool_size: 1,
            assigned_pod: None,
        }
    }

    async fn assignment(control: &EmbeddedControl) -> Vec<(String, Option<String>)> {
        control
            .accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.id, a.assigned_pod))
            .collect()
    }

    /// Poll (on paused time) until `check` holds; how long it took.
    async fn until<F, Fut>(mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !check().await {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "never happened"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_assigns_and_moves_a_dead_pods_accounts_within_one_period() {
        let registry = Arc::new(EmbeddedRegistry::new());
        let control = Arc::new(EmbeddedControl::new());
        registry.heartbeat(&pod("w1", &[]), POD_TTL).await.unwrap();
        registry.heartbeat(&pod("w2", &[]), POD_TTL).await.unwrap();
        let token = control
            .acquire(CONTROLLER_LEASE, "e1", Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        let (_tx, rx) = watch::channel(Some(Lease {
            holder: "e1".into(),
            token,
        }));
        let scope = Shutdown::new();
        Reconciler {
            registry: registry.clone(),
            accounts: control.clone(),
            driver: Arc::new(StaticDriver),
            desired: vec![desired("a"), desired("b")],
            interval: INTERVAL,
            max_per_pod: 0,
        }
        .spawn(rx, &scope);

        until(|| async {
            assignment(&control).await
                == vec![
                    ("a".to_owned(), Some("w1".to_owned())),
                    ("b".to_owned(), Some("w2".to_owned())),
                ]
        })
        .await;

        // w1 dies (no more heartbeats); w2 lives on.
        let keep_alive = {
            let registry = registry.clone();
            scope.spawn(async move {
                loop {
                    registry
                        .heartbeat(&pod("w2", &["b"]), POD_TTL)
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            })
        };
        let took = until(|| async {
            assignment(&control)
                .await
                .iter()
                .all(|(_, pod)| pod.as_deref() == Some("w2"))
        })
        .await;
        assert!(
            took <= POD_TTL + INTERVAL + Duration::from_millis(200),
            "{took:?}"
        );
        keep_alive.abort();
        scope.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_writes_nothing() {
        let registry = Arc::new(EmbeddedRegistry::new());
        let control = Arc::new(EmbeddedControl::new());
        registry.heartbeat(&pod("w1", &[]), POD_TTL).await.unwrap();
        let (_tx, rx) = watch::channel(None);
        let scope = Shutdown::new();
        Reconciler {
            registry,
            accounts: control.clone(),
            driver: Arc::new(StaticDriver),
            desired: vec![desired("a")],
            interval: INTERVAL,
            max_per_pod: 0,
        }
        .spawn(rx, &scope);
        // The desired state is written at start; the assignment is the leader's business.
        until(|| async { !control.accounts().await.unwrap().is_empty() }).await;
        tokio::time::sleep(INTERVAL * 3).await;
        assert_eq!(assignment(&control).await, vec![("a".to_owned(), None)]);
        scope.cancel();
    }

    /// Desired accounts in memory that the test can wipe, as a store that restarted empty.
    #[derive(Default)]
    struct Wipeable(std::sync::Mutex<Vec<AccountRecord>>);

    impl Wipeable {
        fn records(&self) -> std::sync::MutexGuard<'_, Vec<AccountRecord>> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    impl AccountStore for Wipeable {
        fn put_accounts<'a>(
            &'a self,
            accounts: &'a [AccountRecord],
        ) -> drawbridge_state::StateFuture<'a, ()> {
            let mut records = self.records();
            for account in accounts {
                if !records.iter().any(|r| r.id == account.id) {
                    records.push(account.clone());
                }
            }
            Box::pin(async { Ok(()) })
        }

        fn accounts(&self) -> drawbridge_state::StateFuture<'_, Vec<AccountRecord>> {
            let records = self.records().clone();
            Box::pin(async move { Ok(records) })
        }

        fn assign<'a>(
            &'a self,
            _: &'a str,
            _: Option<&'a str>,
            _: &'a str,
            _: &'a Lease,
        ) -> drawbridge_state::StateFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_puts_back_the_accounts_a_store_lost() {
        let store = Arc::new(Wipeable::default());
        let (_tx, rx) = watch::channel(None);
        let scope = Shutdown::new();
        Reconciler {
            registry: Arc::new(EmbeddedRegistry::new()),
            accounts: store.clone(),
            driver: Arc::new(StaticDriver),
            desired: vec![desired("a"), desired("b")],
            interval: INTERVAL,
            max_per_pod: 0,
        }
        .spawn(rx, &scope);
        until(|| async { store.records().len() == 2 }).await;
        // The store restarts empty: within a period the follower writes them again.
        store.records().clear();
        let took = until(|| async { store.records().len() == 2 }).await;
        assert!(took <= INTERVAL + Duration::from_millis(200), "{took:?}");
        scope.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_moves_an_idle_account_from_a_loaded_pod_to_a_new_one() {
        let registry = Arc::new(EmbeddedRegistry::new());
        let control = Arc::new(EmbeddedControl::new());
        let token = control
            .acquire(CONTROLLER_LEASE, "e1", Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        let lease = Lease {
            holder: "e1".into(),
            token,
        };
        let reconciler = Reconciler {
            registry: registry.clone(),
            accounts: control.clone(),
            driver: Arc::new(StaticDriver),
            desired: vec![desired("a"), desired("b"), desired("c")],
            interval: INTERVAL,
            max_per_pod: 0,
        };
        // One worker is back: it gets every account.
        registry.heartbeat(&pod("w1", &[]), POD_TTL).await.unwrap();
        reconciler.pass(&lease).await.unwrap();
        let on = |pod: &str| Some(pod.to_owned());
        assert_eq!(
            assignment(&control).await,
            vec![
                ("a".to_owned(), on("w1")),
                ("b".to_owned(), on("w1")),
                ("c".to_owned(), on("w1")),
            ]
        );
        // w1 serves them, a with a request in flight; w2 joins.
        registry
            .heartbeat(&busy_pod("w1", &["a", "b", "c"], &["a"]), POD_TTL)
            .await
            .unwrap();
        registry.heartbeat(&pod("w2", &[]), POD_TTL).await.unwrap();
        reconciler.pass(&lease).await.unwrap();
        // One idle account moves (not the busy a); 2-1 is even enough.
        let expected = vec![
            ("a".to_owned(), on("w1")),
            ("b".to_owned(), on("w2")),
            ("c".to_owned(), on("w1")),
        ];
        assert_eq!(assignment(&control).await, expected);
        registry
            .heartbeat(&busy_pod("w1", &["a", "c"], &["a"]), POD_TTL)
            .await
            .unwrap();
        registry
            .heartbeat(&pod("w2", &["b"]), POD_TTL)
            .await
            .unwrap();
        reconciler.pass(&lease).await.unwrap();
        assert_eq!(assignment(&control).await, expected);
    }
}
