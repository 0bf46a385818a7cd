//! Per-account circuit breakers (the state machine is `drawbridge_core::breaker`), shared by
//! every engine through the [`BreakerStore`] (`cb:{id}` in ValKey). An account whose turns keep
//! failing is isolated: the scheduler skips it until `reset_timeout` has passed, then a limited
//! number of probe requests decide whether it is back.
//!
//! # Sharing, and the fast path
//!
//! The scheduler reads a cache of the stored breakers, re-read with every refresh (every
//! `engine.refresh_interval`), so it never waits for the store: a transition made by another
//! engine is seen here within one refresh interval. Changes go to the store as a
//! compare-and-set of the whole JSON value, computed on the store's clock (estimated from the
//! clock readings of the last store answer): when another engine wrote first, the breaker is
//! computed again from what it wrote. Only the engine whose write made a transition logs and
//! counts it.
//!
//! What costs a store round trip: admitting a request to an account whose breaker is not
//! closed (a probe slot must be taken in the shared state), and recording a failure, a probe's
//! outcome, or a success while the window holds failures. A healthy account (closed, no
//! failures in its window) costs nothing: its successes change nothing that matters.
//!
//! While the store is unreachable, each engine goes on with its own copy (the last value it
//! read, changed locally) and writes again once the store answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use drawbridge_core::breaker::{
    Admission, Breaker, BreakerConfig, BreakerState, Outcome, Transition,
};
use drawbridge_state::{BreakerStore, Swap};
use drawbridge_telemetry::{Metrics, Shutdown};
use tokio::time::Instant;

use crate::settings::Settings;
use crate::versioned::{Changes, Versioned};

/// How many compare-and-set rounds one change makes before it settles for the local result.
const MAX_SWAPS: usize = 8;

/// One account's breaker as last read from (or written to) the store.
#[derive(Debug, Clone, Default)]
struct Cached {
    /// The stored JSON exactly as read: what a compare-and-set compares with.
    raw: Option<String>,
    breaker: Breaker,
}

impl Cached {
    fn from_raw(account: &str, raw: Option<String>) -> Cached {
        let breaker = match raw.as_deref().map(serde_json::from_str::<Breaker>) {
            None => Breaker::default(),
            Some(Ok(breaker)) => breaker,
            Some(Err(error)) => {
                // Overwritten by the next change (the compare-and-set compares the raw text).
                tracing::warn!(account, %error, "unreadable circuit breaker; starting afresh");
                Breaker::default()
            }
        };
        Cached { raw, breaker }
    }
}

pub struct Breakers {
    /// `breaker` and `breakers` (per account): follow the configuration (a reload changes
    /// them for the next admission).
    settings: Settings,
    store: Arc<dyn BreakerStore>,
    /// A read that began before this engine's own write or decision does not undo it.
    cache: Versioned<Cached>,
    /// This process's clock: the system time at start, moved on by tokio's clock.
    epoch_ms: u64,
    started: Instant,
    /// The store's clock minus this process's, in ms, from the last store answer.
    offset_ms: AtomicI64,
    /// Transitions this engine made, by account and the state entered.
    transitions: Mutex<BTreeMap<(String, &'static str), u64>>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

impl Breakers {
    pub fn new(
        settings: Settings,
        store: Arc<dyn BreakerStore>,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
        changes: Changes,
    ) -> Arc<Self> {
        Arc::new(Breakers {
            settings,
            store,
            cache: Versioned::new(changes),
            epoch_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            started: Instant::now(),
            offset_ms: AtomicI64::new(0),
            transitions: Mutex::new(BTreeMap::new()),
            metrics,
            shutdown,
        })
    }

    /// The breaker settings of `account` (a route target's for it, else the default).
    pub(crate) fn config(&self, account: &str) -> BreakerConfig {
        self.settings.get().breaker_for(account)
    }

    fn local_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.epoch_ms.saturating_add(elapsed)
    }

    /// The store's clock now, as estimated from its last answer.
    pub(crate) fn now_ms(&self) -> u64 {
        self.local_ms()
            .saturating_add_signed(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Learn the store's clock from a reading it just gave.
    fn observe_clock(&self, store_ms: u64) {
        let offset = i128::from(store_ms) - i128::from(self.local_ms());
        let offset = i64::try_from(offset).unwrap_or(0);
        self.offset_ms.store(offset, Ordering::Relaxed);
    }

    fn cached(&self, account: &str) -> Cached {
        self.cache.get(account).unwrap_or_default()
    }

    /// Every breaker known.
    pub(crate) fn all(&self) -> HashMap<String, Breaker> {
        self.cache
            .all()
            .into_iter()
            .map(|(account, cached)| (account, cached.breaker))
            .collect()
    }

    /// Re-read the breakers of `accounts` from the store (the scheduler's view); on failure
    /// the cache stays as it was.
    pub async fn refresh(&self, accounts: &[String]) {
        let began = self.cache.began();
        match self.store.breakers(accounts).await {
            Ok(read) => {
                self.observe_clock(read.now_ms);
                // An unchanged value is not parsed again (nor a local decision taken while
                // the store was away, made on that value, undone).
                let changed = accounts
                    .iter()
                    .zip(read.values)
                    .filter(|(account, raw)| self.cache.get(account).is_none_or(|c| c.raw != *raw))
                    .map(|(account, raw)| (account.clone(), Cached::from_raw(account, raw)))
                    .collect::<Vec<_>>();
                self.cache.refreshed(began, changed, |_, _| false);
            }
            Err(error) => tracing::debug!(%error, "could not read the circuit breakers"),
        }
    }

    /// Whether `account` refuses traffic now (without admitting anything).
    #[cfg(test)]
    fn is_open(&self, account: &str) -> bool {
        let now = self.now_ms();
        self.cache
            .get(account)
            .is_some_and(|c| c.breaker.retry_after_ms(&self.config(account), now) > 0)
    }

    /// The breaker's state as `closed`, `open` or `half_open` (an account never seen is closed).
    #[cfg(test)]
    fn state_of(&self, account: &str) -> &'static str {
        self.cache
            .get(account)
            .map_or(BreakerState::Closed, |c| c.breaker.state())
            .as_str()
    }

    /// Transitions this engine made since it started: `(account, state entered, count)`, for
    /// the metrics.
    pub fn transitions(&self) -> Vec<(String, &'static str, u64)> {
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((account, to), n)| (account.clone(), *to, *n))
            .collect()
    }

    fn note(&self, account: &str, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        tracing::warn!(
            account,
            from = t.from.as_str(),
            to = t.to.as_str(),
            generation = t.generation,
            "circuit breaker transition"
        );
        *self
            .transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((account.to_owned(), t.to.as_str()))
            .or_default() += 1;
        self.metrics.record_transition(account, t.to.as_str());
    }

    /// Apply `op` to `account`'s shared breaker: computed on the cached value, written with a
    /// compare-and-set, computed again from the stored value when another engine wrote first.
    async fn update<R>(
        &self,
        account: &str,
        mut op: impl FnMut(&mut Breaker, u64) -> (R, Option<Transition>),
    ) -> R {
        let mut current = self.cached(account);
        let mut now = self.now_ms();
        let mut swaps = 0;
        loop {
            let mut next = current.breaker.clone();
            let (result, transition) = op(&mut next, now);
            if next == current.breaker {
                return result;
            }
            let json = match serde_json::to_string(&next) {
                Ok(json) => json,
                Err(error) => {
                    tracing::error!(account, %error, "a circuit breaker does not serialize");
                    return result;
                }
            };
            swaps += 1;
            let swap = if swaps > MAX_SWAPS {
                tracing::warn!(
                    account,
                    "circuit breaker kept changing under us; deciding locally"
                );
                None
            } else {
                match self
                    .store
                    .swap_breaker(account, current.raw.as_deref(), &json)
                    .await
                {
                    Ok(swap) => Some(swap),
                    Err(error) => {
                        tracing::warn!(account, %error, "circuit breaker not shared; deciding locally");
                        None
                    }
                }
            };
            match swap {
                Some(Swap::Done { now_ms }) => {
                    self.observe_clock(now_ms);
                    self.cache.write(
                        account,
                        Cached {
                            raw: Some(json),
                            breaker: next,
                        },
                    );
                    self.note(account, transition);
                    return result;
                }
                Some(Swap::Conflict {
                    current: raw,
                    now_ms,
                }) => {
                    self.observe_clock(now_ms);
                    now = now_ms;
                    current = Cached::from_raw(account, raw);
                    self.cache.write(account, current.clone());
                }
                None => {
                    // Keep what the store holds as the base of the next compare-and-set.
                    self.cache.write(
                        account,
                        Cached {
                            raw: current.raw,
                            breaker: next,
                        },
                    );
                    self.note(account, transition);
                    return result;
                }
            }
        }
    }

    /// Admit a request to `account`: a ticket that must be resolved with its outcome, or
    /// `None` when the breaker refuses it. A closed breaker admits without a store round trip.
    pub async fn admit(self: &Arc<Self>, account: &str) -> Option<Ticket> {
        let closed = self.cached(account).breaker.state() == BreakerState::Closed;
        let admission = if closed {
            Admission::Allowed
        } else {
            let config = self.config(account);
            self.update(account, |b, now| b.admit(&config, now)).await
        };
        match admission {
            Admission::Allowed | Admission::Probe => Some(Ticket {
                breakers: Arc::clone(self),
                account: account.to_owned(),
                probe: admission.is_probe(),
                done: false,
            }),
            Admission::Rejected { .. } => None,
        }
    }
}

/// One admitted request. Resolve it with [`Ticket::record`]; a ticket dropped unresolved (the
/// client went away) counts for nothing, and gives a probe slot back.
pub struct Ticket {
    breakers: Arc<Breakers>,
    account: String,
    probe: bool,
    done: bool,
}

impl Ticket {
    /// Record how the request ended; the shared breaker is written in the background.
    pub fn record(self, outcome: Outcome) {
        let shutdown = self.breakers.shutdown.clone();
        shutdown.spawn(self.finish(outcome));
    }

    /// [`Ticket::record`], waiting for the write.
    pub async fn finish(mut self, outcome: Outcome) {
        self.done = true;
        let breakers = Arc::clone(&self.breakers);
        let cached = breakers.cached(&self.account).breaker;
        // A success of a closed breaker with no failure in its window changes nothing that
        // matters (only failures count): no write.
        let nothing_to_say = match outcome {
            Outcome::Ignored => !self.probe,
            Outcome::Success => {
                !self.probe
                    && cached.state() == BreakerState::Closed
                    && cached.failures_in_window() == 0
            }
            Outcome::Failure => false,
        };
        if nothing_to_say {
            return;
        }
        let (config, probe) = (breakers.config(&self.account), self.probe);
        breakers
            .update(&self.account, |b, now| {
                ((), b.record(&config, now, outcome, probe))
            })
            .await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done && self.probe {
            let breakers = Arc::clone(&self.breakers);
            let account = std::mem::take(&mut self.account);
            self.breakers.shutdown.spawn(async move {
                breakers
                    .update(&account, |b, _| {
                        b.release_probe();
                        ((), None)
                    })
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drawbridge_state::EmbeddedRouting;
    use std::time::Duration;

    const RESET: Duration = Duration::from_secs(60);

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 2,
            window_size: 10,
            reset_timeout: RESET,
            half_open_probes: 1,
        }
    }

    /// Two engines on one store.
    fn engines() -> (Arc<Breakers>, Arc<Breakers>, Arc<EmbeddedRouting>) {
        let store = Arc::new(EmbeddedRouting::new());
        let engine = |store: &Arc<EmbeddedRouting>| {
            Breakers::new(
                Settings::new(crate::EngineSettings {
                    breaker: config(),
                    ..crate::EngineSettings::default()
                }),
                Arc::clone(store) as Arc<dyn BreakerStore>,
                Arc::new(Metrics::new()),
                Shutdown::new(),
                Changes::default(),
            )
        };
        (engine(&store), engine(&store), store)
    }

    fn acct() -> Vec<String> {
        vec!["acct-1".to_owned()]
    }

    async fn fail(b: &Arc<Breakers>) {
        let ticket = b.admit("acct-1").await.expect("admitted");
        ticket.finish(Outcome::Failure).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_opened_by_one_engine_is_open_for_the_other() {
        let (a, b, _store) = engines();
        fail(&a).await;
        fail(&b).await;
        // Neither has seen both failures in its cache before writing: the second write was a
        // compare-and-set against the first, so the window holds both and the breaker opened.
        assert_eq!(b.state_of("acct-1"), "open");
        assert!(!a.is_open("acct-1"), "a has not re-read the store yet");
        a.refresh(&acct()).await;
        assert!(a.is_open("acct-1"));
        assert_eq!(a.state_of("acct-1"), "open");
        assert!(a.admit("acct-1").await.is_none());
        assert_eq!(b.transitions(), [("acct-1".to_owned(), "open", 1)]);
        assert!(a.transitions().is_empty(), "only the writer counts it");
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_engine_gets_the_probe_and_its_success_closes_the_breaker() {
        let (a, b, _store) = engines();
        fail(&a).await;
        fail(&a).await;
        b.refresh(&acct()).await;
        assert!(b.is_open("acct-1"));
        tokio::time::advance(RESET).await;
        assert!(!a.is_open("acct-1") && !b.is_open("acct-1"));
        let probe = b.admit("acct-1").await.expect("the first asker probes");
        assert!(probe.probe);
        // a's cache still says open-and-expired: its compare-and-set meets b's write, and the
        // recomputed admission finds the only probe slot taken.
        assert!(a.admit("acct-1").await.is_none());
        assert_eq!(a.state_of("acct-1"), "half_open");
        probe.finish(Outcome::Success).await;
        a.refresh(&acct()).await;
        assert_eq!(a.state_of("acct-1"), "closed");
        assert!(a.admit("acct-1").await.is_some());
        assert_eq!(
            b.transitions(),
            [
                ("acct-1".to_owned(), "closed", 1),
                ("acct-1".to_owned(), "half_open", 1)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_and_a_lost_probe_gives_its_slot_back() {
        let (a, b, _store) = engines();
        fail(&a).await;
        fail(&a).await;
        tokio::time::advance(RESET).await;
        let probe = a.admit("acct-1").await.expect("probe");
        drop(probe); // the client went away: the slot is given back in the background
        let held = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                b.refresh(&acct()).await;
                if let Some(ticket) = b.admit("acct-1").await {
                    break ticket;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the released slot is free for another engine");
        assert!(held.probe);
        // b's probe never reports: after reset_timeout its slot is presumed lost, and a
        // probe of a's fails, which opens the breaker again.
        tokio::time::advance(RESET).await;
        let probe = a.admit("acct-1").await.expect("probe after expiry");
        probe.finish(Outcome::Failure).await;
        assert_eq!(a.state_of("acct-1"), "open");
        assert!(a.is_open("acct-1"));
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_successes_write_nothing() {
        let (a, _b, store) = engines();
        for _ in 0..5 {
            let ticket = a.admit("acct-1").await.expect("closed");
            ticket.finish(Outcome::Success).await;
        }
        let read = store.breakers(&acct()).await.expect("read");
        assert_eq!(
            read.values,
            [None],
            "nothing was stored for a healthy account"
        );
        // One failure is stored; the next success pushes into the window (stored too).
        fail(&a).await;
        a.admit("acct-1")
            .await
            .expect("closed")
            .finish(Outcome::Success)
            .await;
        let read = store.breakers(&acct()).await.expect("read");
        let stored: Breaker =
            serde_json::from_str(read.values[0].as_deref().expect("stored")).expect("json");
        assert_eq!(
            (stored.failures_in_window(), stored.outcomes_in_window()),
            (1, 2)
        );
    }
}
