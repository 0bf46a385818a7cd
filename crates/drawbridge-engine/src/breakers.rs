//! Per-account circuit breakers (the state machine is `drawbridge_core::breaker`). An account
//! whose turns keep failing is isolated: the scheduler skips it until `reset_timeout` has
//! passed, then a limited number of probe requests decide whether it is back.
//!
//! The breakers live in this engine's memory for now; sharing them between engines (`cb:{id}`
//! in ValKey) comes with the engine's shared state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drawbridge_core::breaker::{Admission, Breaker, BreakerConfig, Outcome, Transition};

/// Milliseconds since the Unix epoch: the breakers' clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    by_account: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Arc<Self> {
        Arc::new(Breakers {
            config,
            by_account: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `account` can take a request now (without admitting one).
    pub fn is_open(&self, account: &str) -> bool {
        let now = now_ms();
        self.by_account.lock().is_ok_and(|m| {
            m.get(account)
                .is_some_and(|b| b.retry_after_ms(&self.config, now) > 0)
        })
    }

    /// The breaker's state as `closed`, `open` or `half_open` (an account never seen is closed).
    pub fn state_of(&self, account: &str) -> &'static str {
        self.by_account
            .lock()
            .ok()
            .and_then(|m| m.get(account).map(|b| b.state().as_str()))
            .unwrap_or(drawbridge_core::breaker::BreakerState::Closed.as_str())
    }

    /// Admit a request to `account`: a ticket that must be resolved with its outcome, or `None`
    /// when the breaker refuses it.
    pub fn admit(self: &Arc<Self>, account: &str) -> Option<Ticket> {
        let (admission, transition) = {
            let Ok(mut map) = self.by_account.lock() else {
                return None;
            };
            let breaker = map.entry(account.to_owned()).or_default();
            breaker.admit(&self.config, now_ms())
        };
        log(account, transition);
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

fn log(account: &str, transition: Option<Transition>) {
    if let Some(t) = transition {
        tracing::warn!(
            account,
            from = t.from.as_str(),
            to = t.to.as_str(),
            generation = t.generation,
            "circuit breaker transition"
        );
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
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        let transition = self.breakers.by_account.lock().ok().and_then(|mut map| {
            map.get_mut(&self.account)
                .and_then(|b| b.record(&self.breakers.config, now_ms(), outcome, self.probe))
        });
        log(&self.account, transition);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done
            && self.probe
            && let Ok(mut map) = self.breakers.by_account.lock()
            && let Some(breaker) = map.get_mut(&self.account)
        {
            breaker.release_probe();
        }
    }
}
