//! The routing state in process ([`BreakerStore`], [`CooldownStore`], [`AffinityStore`]):
//! maps behind one lock. Its clock is tokio's (started from the system clock), so paused-time
//! tests move breakers, cooldowns and bindings on without waiting.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::credits::validate_account_id;
use crate::registry::StateFuture;
use crate::routing::{
    AffinityStore, BreakerRead, BreakerStore, CooldownStore, Swap, validate_accounts,
    validate_affinity_key, validate_breaker, validate_ttl,
};

/// Bindings kept before expired ones are swept.
const SWEEP_AT: usize = 4096;

#[derive(Debug)]
pub struct EmbeddedRouting {
    state: Mutex<State>,
    /// The clock: the system time at start, moved on by tokio's clock.
    epoch_ms: u64,
    started: Instant,
}

#[derive(Debug, Default)]
struct State {
    breakers: HashMap<String, String>,
    cooldowns: HashMap<String, Instant>,
    affinity: HashMap<String, (String, Instant)>,
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
            epoch_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            started: Instant::now(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.epoch_ms.saturating_add(elapsed)
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
            let until = Instant::now() + duration;
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
            let mut state = self.state();
            if state.affinity.len() >= SWEEP_AT {
                state.affinity.retain(|_, (_, until)| *until > now);
            }
            state
                .affinity
                .insert(key.to_owned(), (account.to_owned(), now + ttl));
            Ok(())
        })
    }
}
