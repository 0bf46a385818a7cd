//! The routing state in process ([`BreakerStore`], [`CooldownStore`], [`AffinityStore`]):
//! maps behind one lock. Its clock is tokio's (started from the system clock), so paused-time
//! tests move breakers, cooldowns and bindings on without waiting.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::{millis, system_ms};
use crate::credits::validate_account_id;
use crate::error::StateError;
use crate::registry::StateFuture;
use crate::routing::{
    AffinityStore, BreakerRead, BreakerStore, CooldownStore, Swap, validate_accounts,
    validate_affinity_key, validate_breaker, validate_ttl,
};

/// Bindings kept before expired ones are first swept. After a sweep, the next one waits until
/// the map has doubled (or reached this again), so sweeping costs amortised O(1) per binding
/// however many are live.
const SWEEP_AT: usize = 4096;

#[derive(Debug)]
pub struct EmbeddedRouting {
    state: Mutex<State>,
    /// The clock: the system time at start, moved on by tokio's clock.
    epoch_ms: u64,
    started: Instant,
}

#[derive(Debug)]
struct State {
    breakers: HashMap<String, String>,
    cooldowns: HashMap<String, Instant>,
    affinity: HashMap<String, (String, Instant)>,
    /// The number of bindings at which expired ones are next swept.
    next_sweep: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            breakers: HashMap::new(),
            cooldowns: HashMap::new(),
            affinity: HashMap::new(),
            next_sweep: SWEEP_AT,
        }
    }
}

impl State {
    /// Bind `key` to `account` until `until`, first sweeping expired bindings if it is time.
    fn bind(&mut self, key: &str, account: &str, until: Instant, now: Instant) {
        if self.affinity.len() >= self.next_sweep {
            self.affinity.retain(|_, (_, until)| *until > now);
            self.next_sweep = SWEEP_AT.max(self.affinity.len().saturating_mul(2));
        }
        self.affinity
            .insert(key.to_owned(), (account.to_owned(), until));
    }
}

/// `now + ttl`; a TTL too long for the clock is refused ([`validate_ttl`] refuses those first).
fn deadline(now: Instant, what: &str, ttl: Duration) -> Result<Instant, StateError> {
    now.checked_add(ttl)
        .ok_or_else(|| StateError::Invalid(format!("the {what} {ttl:?} is too long")))
}

impl Default for EmbeddedRouting {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedRouting {
    pub fn new() -> Self {
        EmbeddedRouting {
            state: Mutex::new(State::default()),
            epoch_ms: system_ms(),
            started: Instant::now(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.epoch_ms.saturating_add(millis(self.started.elapsed()))
    }
}

impl BreakerStore for EmbeddedRouting {
    fn breakers<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, BreakerRead> {
        Box::pin(async move {
            validate_accounts(accounts)?;
            let state = self.state();
            Ok(BreakerRead {
                values: accounts
                    .iter()
                    .map(|a| state.breakers.get(a).cloned())
                    .collect(),
                now_ms: self.now_ms(),
            })
        })
    }

    fn swap_breaker<'a>(
        &'a self,
        account: &'a str,
        expected: Option<&'a str>,
        new: &'a str,
    ) -> StateFuture<'a, Swap> {
        Box::pin(async move {
            validate_breaker(account, new)?;
            let mut state = self.state();
            let now_ms = self.now_ms();
            let current = state.breakers.get(account).map(String::as_str);
            if current != expected {
                return Ok(Swap::Conflict {
                    current: current.map(str::to_owned),
                    now_ms,
                });
            }
            state.breakers.insert(account.to_owned(), new.to_owned());
            Ok(Swap::Done { now_ms })
        })
    }
}

impl CooldownStore for EmbeddedRouting {
    fn cool_down<'a>(&'a self, account: &'a str, duration: Duration) -> StateFuture<'a, ()> {
        Box::pin(async move {
            validate_account_id(account)?;
            validate_ttl("cooldown", duration)?;
            let until = deadline(Instant::now(), "cooldown", duration)?;
            let mut state = self.state();
            let end = state.cooldowns.entry(account.to_owned()).or_insert(until);
            *end = (*end).max(until);
            Ok(())
        })
    }

    fn cooldowns<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, Vec<Option<Duration>>> {
        Box::pin(async move {
            validate_accounts(accounts)?;
            let now = Instant::now();
            let mut state = self.state();
            state.cooldowns.retain(|_, until| *until > now);
            Ok(accounts
                .iter()
                .map(|a| state.cooldowns.get(a).map(|until| *until - now))
                .collect())
        })
    }
}

impl AffinityStore for EmbeddedRouting {
    fn affinity<'a>(&'a self, key: &'a str) -> StateFuture<'a, Option<String>> {
        Box::pin(async move {
            validate_affinity_key(key)?;
            let now = Instant::now();
            let state = self.state();
            Ok(state
                .affinity
                .get(key)
                .filter(|(_, until)| *until > now)
                .map(|(account, _)| account.clone()))
        })
    }

    fn set_affinity<'a>(
        &'a self,
        key: &'a str,
        account: &'a str,
        ttl: Duration,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            validate_affinity_key(key)?;
            validate_account_id(account)?;
            validate_ttl("affinity TTL", ttl)?;
            let now = Instant::now();
            let until = deadline(now, "affinity TTL", ttl)?;
            self.state().bind(key, account, until, now);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn expired_bindings_are_swept_when_the_map_reaches_the_mark() {
        let mut state = State::default();
        let now = Instant::now();
        let later = now + 2 * SECOND;
        // Half expire at `now + 1 s`, half stay.
        for i in 0..SWEEP_AT {
            let until = if i % 2 == 0 {
                now + SECOND
            } else {
                now + 3 * SECOND
            };
            state.bind(&format!("k{i}"), "acct", until, now);
        }
        assert_eq!(state.affinity.len(), SWEEP_AT, "no sweep below the mark");
        state.bind("one-more", "acct", later + SECOND, later);
        assert_eq!(
            state.affinity.len(),
            SWEEP_AT / 2 + 1,
            "the expired half went"
        );
        assert!(state.affinity.contains_key("k1"));
        assert!(!state.affinity.contains_key("k0"));
        assert_eq!(state.next_sweep, SWEEP_AT, "never below SWEEP_AT");
    }

    #[test]
    fn with_many_live_bindings_sweeps_are_spaced_out() {
        let mut state = State::default();
        let now = Instant::now();
        let until = now + SECOND;
        for i in 0..=SWEEP_AT {
            state.bind(&format!("k{i}"), "acct", until, now);
        }
        // The sweep at SWEEP_AT found nothing expired: the next waits for twice as many.
        assert_eq!(state.next_sweep, 2 * SWEEP_AT);
        // Until then, bindings past their time stay (reads skip them) and nothing is swept...
        let later = now + 2 * SECOND;
        for i in 0..SWEEP_AT - 2 {
            state.bind(&format!("n{i}"), "acct", later + SECOND, later);
        }
        assert_eq!(state.affinity.len(), 2 * SWEEP_AT - 1);
        // ...and at the mark, the expired ones go.
        state.bind("last", "acct", later + SECOND, later);
        state.bind("after", "acct", later + SECOND, later);
        assert_eq!(state.affinity.len(), SWEEP_AT);
        assert_eq!(state.next_sweep, SWEEP_AT.max(2 * (SWEEP_AT - 1)));
    }
}
