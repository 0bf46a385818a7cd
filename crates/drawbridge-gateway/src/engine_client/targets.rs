//! The engine set: one [`Target`] per engine with its rest after failures, and the order a call
//! tries them in.

use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use super::{HttpEngine, MAX_REST, REST};

/// One engine, and how its last calls went.
pub(super) struct Target {
    pub(super) base: String,
    rest: Mutex<Rest>,
}

#[derive(Debug, Default)]
pub(super) struct Rest {
    /// Failures in a row (0: its last call was answered).
    pub(super) failures: u32,
    /// Until when it is passed over (after a failure).
    until: Option<Instant>,
}

impl Target {
    pub(super) fn new(base: &str) -> Self {
        Target {
            base: base.trim_end_matches('/').to_owned(),
            rest: Mutex::new(Rest::default()),
        }
    }

    pub(super) fn rest(&self) -> std::sync::MutexGuard<'_, Rest> {
        // The state is two plain numbers, valid whatever a panicking holder left.
        self.rest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Until when it rests, if it does at `now`.
    pub(super) fn resting_until(&self, now: Instant) -> Option<Instant> {
        self.rest().until.filter(|until| *until > now)
    }

    /// A call failed at `now`: it rests. Failures of calls that were under way together count
    /// once: while it already rests, its rest is not lengthened.
    pub(super) fn failed(&self, now: Instant) {
        let mut rest = self.rest();
        if rest.until.is_some_and(|until| until > now) {
            return;
        }
        rest.failures = rest.failures.saturating_add(1);
        let doublings = rest.failures.saturating_sub(1).min(16);
        let length = REST.saturating_mul(1 << doublings).min(MAX_REST);
        rest.until = Some(now + length);
    }

    /// It answered: it is preferred again.
    pub(super) fn answered(&self) {
        *self.rest() = Rest::default();
    }
}

impl HttpEngine {
    /// The engines' indexes in the order a call tries them now: those not resting in order of
    /// preference, then the resting ones, the one whose rest ends first first.
    pub(super) fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let mut ready = Vec::with_capacity(self.engines.len());
        let mut resting = Vec::new();
        for (i, engine) in self.engines.iter().enumerate() {
            match engine.resting_until(now) {
                None => ready.push(i),
                Some(until) => resting.push((until, i)),
            }
        }
        resting.sort();
        ready.extend(resting.into_iter().map(|(_, i)| i));
        ready
    }
}
