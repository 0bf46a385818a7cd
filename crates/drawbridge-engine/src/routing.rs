//! The scheduler's view: what every worker serves (refreshed from their `Slots`), with each
//! account's routing inputs (credits, circuit breaker, cooldown, this engine's turns in
//! flight) gathered into one immutable [`View`], swapped whole. [`Routing::pick`] reads one
//! view without taking a lock, so a pick sees every account as of one moment.
//!
//! A view is built after every refresh, and again (on the next read) after any change of the
//! caches it is built from: this engine's own writes (a charge, a rest, a breaker decision) are
//! seen by the next pick, as they were before there was a view.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use drawbridge_core::breaker::Breaker;
use drawbridge_core::route::{self, Strategy};
use drawbridge_core::schedule::{self, Shortage};
use drawbridge_types::worker::{AccountSlots, AccountStatus};
use drawbridge_types::{AccountView, HealthReport, ProviderHealth};
use tokio::time::Instant;

use crate::breakers::Breakers;
use crate::cooldowns::{self, Cooldowns};
use crate::credits::Credits;
use crate::fleet::WorkerSet;
use crate::versioned::Changes;
use crate::workers::WorkerConn;

/// How long one worker may take to answer `Slots`.
const SLOTS_TIMEOUT: Duration = Duration::from_secs(2);

/// How many recent first-event latencies per account `least-latency` routes weigh.
const LATENCY_WINDOW: usize = 32;

/// A model's route resolved for one request (`routes`): its strategy, its targets as account
/// ids (each with its weight and whether its rule matches the request) and the prices.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub strategy: Strategy,
    pub targets: Vec<PlanTarget>,
    /// Each account's blended price (`prices`), for `cost-optimized`.
    pub prices: Arc<BTreeMap<String, f64>>,
}

impl Plan {
    /// Whether the strategy may choose target `index` for this request at all (a
    /// `conditional` route: its rule matches; a `single` one: its first target).
    pub fn may_use(&self, index: usize) -> bool {
        match self.strategy {
            Strategy::Conditional => self.targets.get(index).is_some_and(|t| t.applies),
            Strategy::Single => index == 0,
            _ => index < self.targets.len(),
        }
    }
}

/// One target of a [`Plan`].
#[derive(Debug, Clone)]
pub(crate) struct PlanTarget {
    pub accounts: Vec<String>,
    pub weight: u32,
    pub applies: bool,
    /// Its retry policy (`retry`), if it has one.
    pub retry: Option<drawbridge_config::RetryConfig>,
}

/// One account on one worker, as last reported.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub worker: usize,
    pub draining: bool,
    pub slots: AccountSlots,
}

pub(crate) type RouteKey = (usize, String);

/// One account on one worker with everything the scheduler weighs, as of one moment.
struct Entry {
    route: Route,
    /// The worker's connection when the view was built (`None`: it has left).
    conn: Option<Arc<dyn WorkerConn>>,
    /// Milli-credits (`None`: unmetered).
    credits: Option<i64>,
    breaker: Breaker,
    rests_until: Option<Instant>,
    /// This engine's turns in flight on the route (shared by every view).
    inflight: Arc<AtomicU32>,
}

/// Every route with its routing inputs: built whole, never changed.
#[derive(Default)]
pub(crate) struct View {
    /// The number of the last change of the caches this view saw.
    built_at: u64,
    entries: Vec<Entry>,
}

/// A route chosen by [`Routing::pick`].
pub(crate) struct Picked {
    pub route: Route,
    /// The index of the plan's target it was chosen in (`None` without a plan).
    pub target: Option<usize>,
    inflight: Arc<AtomicU32>,
}

impl Picked {
    pub fn key(&self) -> RouteKey {
        (self.route.worker, self.route.slots.account.clone())
    }

    /// Count a turn on this route in flight until the guard drops.
    pub fn inflight(&self) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        InflightGuard(Arc::clone(&self.inflight))
    }
}

/// One turn in flight on a route.
pub(crate) struct InflightGuard(Arc<AtomicU32>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        // Never below 0 (a failed update changes nothing).
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

pub(crate) struct Routing {
    workers: Arc<WorkerSet>,
    credits: Arc<Credits>,
    breakers: Arc<Breakers>,
    cooldowns: Arc<Cooldowns>,
    changes: Changes,
    /// What the workers reported at the last refresh.
    reports: ArcSwap<Vec<Route>>,
    view: ArcSwap<View>,
    /// Turns in flight per route; held while a view is built (one build at a time).
    inflight: Mutex<HashMap<RouteKey, Arc<AtomicU32>>>,
    rotation: AtomicUsize,
    /// The last [`LATENCY_WINDOW`] times to a first event per account, in milliseconds.
    latencies: Mutex<HashMap<String, VecDeque<f64>>>,
}

impl Routing {
    pub fn new(
        workers: Arc<WorkerSet>,
        credits: Arc<Credits>,
        breakers: Arc<Breakers>,
        cooldowns: Arc<Cooldowns>,
        changes: Changes,
    ) -> Self {
        Routing {
            workers,
            credits,
            breakers,
            cooldowns,
            changes,
            reports: ArcSwap::from_pointee(Vec::new()),
            view: ArcSwap::from_pointee(View::default()),
            inflight: Mutex::new(HashMap::new()),
            rotation: AtomicUsize::new(0),
            latencies: Mutex::new(HashMap::new()),
        }
    }

    pub fn workers(&self) -> &WorkerSet {
        &self.workers
    }

    /// Ask every worker what it serves (a worker that does not answer drops out of the view
    /// until it does), re-read the accounts' shared state, and build the view.
    pub async fn refresh(&self) {
        let reports = futures::future::join_all(self.workers.snapshot().into_iter().map(
            |(i, worker)| async move {
                match tokio::time::timeout(SLOTS_TIMEOUT, worker.slots()).await {
                    Ok(Ok(report)) => Some((i, report)),
                    Ok(Err(error)) => {
                        tracing::debug!(worker = worker.name(), %error, "worker did not report");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(worker = worker.name(), "worker slots timed out");
                        None
                    }
                }
            },
        ))
        .await;
        let routes: Vec<Route> = reports
            .into_iter()
            .flatten()
            .flat_map(|(worker, report)| {
                let draining = report.draining;
                report.accounts.into_iter().map(move |slots| Route {
                    worker,
                    draining,
                    slots,
                })
            })
            .collect();
        let mut accounts: Vec<String> = routes.iter().map(|r| r.slots.account.clone()).collect();
        accounts.sort();
        accounts.dedup();
        self.reports.store(Arc::new(routes));
        self.changes.next();
        futures::join!(
            self.credits.refresh(&accounts),
            self.breakers.refresh(&accounts),
            self.cooldowns.refresh(&accounts),
        );
        self.view();
    }

    /// The current view: the last one built, or a new one when the caches changed since.
    fn view(&self) -> Arc<View> {
        let view = self.view.load_full();
        if view.built_at == self.changes.current() {
            return view;
        }
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        // Another read may have built it while this one waited.
        let view = self.view.load_full();
        let built_at = self.changes.current();
        if view.built_at == built_at {
            return view;
        }
        let credits = self.credits.balances();
        let breakers = self.breakers.all();
        let rests = self.cooldowns.ends();
        let entries = self
            .reports
            .load()
            .iter()
            .map(|route| {
                let account = &route.slots.account;
                let key = (route.worker, account.clone());
                Entry {
                    conn: self.workers.get(route.worker),
                    credits: credits.get(account).copied().flatten(),
                    breaker: breakers.get(account).cloned().unwrap_or_default(),
                    rests_until: rests.get(account).copied(),
                    inflight: Arc::clone(inflight.entry(key).or_default()),
                    route: route.clone(),
                }
            })
            .collect();
        let view = Arc::new(View { built_at, entries });
        self.view.store(Arc::clone(&view));
        view
    }

    /// Whether the breaker of `entry` refuses traffic now (under its account's settings).
    fn breaker_open(&self, entry: &Entry) -> bool {
        entry.breaker.retry_after_ms(
            &self.breakers.config(&entry.route.slots.account),
            self.breakers.now_ms(),
        ) > 0
    }

    /// Note how long `account` took to send a turn's first event (`least-latency` routes).
    pub fn record_latency(&self, account: &str, took: Duration) {
        let mut latencies = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let window = latencies.entry(account.to_owned()).or_default();
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(took.as_secs_f64() * 1000.0);
    }

    /// The median of `account`'s recent first-event latencies, in milliseconds (`None`: not
    /// measured yet).
    pub fn latency_p50(&self, account: &str) -> Option<f64> {
        let latencies = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        latencies
            .get(account)
            .and_then(|w| route::p50(&w.iter().copied().collect::<Vec<f64>>()))
    }

    /// Pick the best route for `model`, skipping routes already tried and preferring the
    /// account `bound` (session affinity) while it is a candidate; when there is none, why
    /// (see [`drawbridge_core::schedule`]). With a `plan` (the model's route), only the
    /// accounts of its targets are candidates and its strategy chooses among them (see
    /// [`drawbridge_core::route`]).
    pub fn pick(
        &self,
        model: &str,
        tried: &HashSet<RouteKey>,
        bound: Option<&str>,
        plan: Option<&Plan>,
    ) -> Result<Picked, Shortage> {
        let view = self.view();
        let accounts: Vec<schedule::Account<usize>> = view
            .entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let slots = &entry.route.slots;
                let mine = entry.inflight.load(Ordering::SeqCst);
                let busy = slots.busy.max(mine);
                schedule::Account {
                    serves_model: slots.models.iter().any(|m| m == model),
                    tried: tried.contains(&(entry.route.worker, slots.account.clone())),
                    reachable: entry.conn.as_ref().is_some_and(|w| w.reachable()),
                    draining: entry.route.draining,
                    unhealthy: slots.status == AccountStatus::Unhealthy,
                    breaker_open: self.breaker_open(entry),
                    cooldown: cooldowns::left(entry.rests_until),
                    credits: entry.credits.map(drawbridge_state::from_milli),
                    available_slots: slots.size.saturating_sub(busy),
                    queue_depth: slots.queue_depth + mine.saturating_sub(slots.size),
                    key: i,
                }
            })
            .collect();
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let account_of = |i: usize| view.entries[i].route.slots.account.as_str();
        let chosen = match (plan, bound) {
            (Some(plan), bound) => self
                .pick_routed(plan, &accounts, &account_of, bound, rotation)
                .map(|c| (c.account, Some(c.target))),
            (None, Some(bound)) => {
                schedule::pick_bound(&accounts, rotation, |i| account_of(*i) == bound)
                    .map(|i| (i, None))
            }
            (None, None) => schedule::pick(&accounts, rotation).map(|i| (i, None)),
        };
        chosen.map(|(i, target)| {
            let entry = &view.entries[accounts[i].key];
            Picked {
                route: entry.route.clone(),
                target,
                inflight: Arc::clone(&entry.inflight),
            }
        })
    }

    /// [`Routing::pick`] under a route: the bound account while it is a candidate of a target
    /// the route may use, else the strategy's choice.
    fn pick_routed<'v>(
        &self,
        plan: &Plan,
        accounts: &[schedule::Account<usize>],
        account_of: &impl Fn(usize) -> &'v str,
        bound: Option<&str>,
        rotation: usize,
    ) -> Result<route::Choice, Shortage> {
        let targets: Vec<route::Target> = plan
            .targets
            .iter()
            .map(|t| route::Target {
                accounts: (0..accounts.len())
                    .filter(|&i| t.accounts.iter().any(|a| a == account_of(i)))
                    .collect(),
                weight: t.weight,
                applies: t.applies,
            })
            .collect();
        if let Some(bound) = bound {
            let usable = targets
                .iter()
                .enumerate()
                .take(if plan.strategy == Strategy::Single {
                    1
                } else {
                    usize::MAX
                })
                .filter(|(_, t)| t.applies || plan.strategy != Strategy::Conditional)
                .flat_map(|(n, t)| t.accounts.iter().map(move |&i| (n, i)))
                .find(|&(_, i)| account_of(i) == bound && accounts[i].exclusion().is_none());
            if let Some((target, account)) = usable {
                return Ok(route::Choice { account, target });
            }
        }
        let measure = |i: usize| match plan.strategy {
            Strategy::LeastLatency => self.latency_p50(account_of(i)),
            Strategy::CostOptimized => plan.prices.get(account_of(i)).copied(),
            _ => None,
        };
        route::pick_in_target(plan.strategy, accounts, &targets, measure, rotation)
    }

    /// Every model some account serves, sorted.
    pub fn model_ids(&self) -> Vec<String> {
        let view = self.view();
        let mut ids: Vec<String> = view
            .entries
            .iter()
            .flat_map(|e| e.route.slots.models.iter().cloned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        ids.sort();
        ids
    }

    /// Whether a worker is known and serves some model (a model nobody serves is then a 404,
    /// not an outage).
    pub fn serving_any(&self) -> bool {
        !self.workers.is_empty() && !self.model_ids().is_empty()
    }

    /// Whether some worker serves `account`.
    pub fn serves(&self, account: &str) -> bool {
        self.view()
            .entries
            .iter()
            .any(|e| e.route.slots.account == account)
    }

    /// Health as the engine sees it: an account whose circuit breaker is open counts as
    /// unhealthy (and its slots as unavailable), whatever its worker reports.
    pub fn health_report(&self, draining: bool) -> HealthReport {
        let view = self.view();
        let accounts: Vec<AccountSlots> = view
            .entries
            .iter()
            .map(|entry| {
                let mut slots = entry.route.slots.clone();
                if self.breaker_open(entry) {
                    slots.status = AccountStatus::Unhealthy;
                }
                slots
            })
            .collect();
        let mut report = HealthReport::from_accounts(&accounts, draining);
        report.providers = view
            .entries
            .iter()
            .filter_map(|entry| {
                let conn = entry.conn.as_ref()?;
                let slots = &entry.route.slots;
                let kind = conn.provider_kind(&slots.account)?;
                let busy = slots.busy.max(entry.inflight.load(Ordering::SeqCst));
                Some(ProviderHealth {
                    id: slots.account.clone(),
                    kind: kind.to_owned(),
                    available: conn.reachable()
                        && slots.status != AccountStatus::Unhealthy
                        && !self.breaker_open(entry)
                        && cooldowns::left(entry.rests_until).is_none()
                        && busy < slots.size,
                    latency_p50_ms: self.latency_p50(&slots.account),
                })
            })
            .collect();
        report
    }

    /// Every account as the engine sees it, for `/admin/accounts` and the per-account metrics.
    pub fn account_views(&self) -> Vec<AccountView> {
        let view = self.view();
        view.entries
            .iter()
            .map(|entry| {
                let open = self.breaker_open(entry);
                let r = entry.route.clone();
                AccountView {
                    worker: self
                        .workers
                        .get(r.worker)
                        .map(|w| w.name().to_owned())
                        .unwrap_or_default(),
                    breaker: entry.breaker.state().as_str().to_owned(),
                    status: if open {
                        AccountStatus::Unhealthy
                    } else {
                        r.slots.status
                    },
                    credits: entry.credits,
                    slots: r.slots.size,
                    busy: r.slots.busy,
                    queue_depth: r.slots.queue_depth,
                    draining: r.draining,
                    models: r.slots.models,
                    default_model: r.slots.default_model,
                    tools_refused: r.slots.tools_refused,
                    last_error: r.slots.last_error,
                    account: r.slots.account,
                }
            })
            .collect()
    }
}
