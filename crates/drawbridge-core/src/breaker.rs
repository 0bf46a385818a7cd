//! Per-account circuit breaker: isolate an account that keeps failing, probe it after a
//! while, and give it its traffic back once it answers again.
//!
//! # States
//!
//! - [`BreakerState::Closed`]: every request is admitted ([`Admission::Allowed`]). The outcome
//!   of each request ([`Outcome::Success`] or [`Outcome::Failure`]) is pushed into a sliding
//!   window of the last `window_size` outcomes (a count, not a time span: an old failure
//!   leaves the window only when `window_size` newer outcomes have come in). As soon as the
//!   window holds `failure_threshold` failures the breaker opens.
//! - [`BreakerState::Open`]: every request is rejected ([`Admission::Rejected`], with the time
//!   left) until `reset_timeout` has passed since it opened. The first [`Breaker::admit`] at
//!   or after `opened_at + reset_timeout` (exactly that instant included) turns it half-open
//!   and is admitted as a probe.
//! - [`BreakerState::HalfOpen`]: at most `half_open_probes` requests are in flight at once,
//!   each admitted as [`Admission::Probe`]; others are rejected. A probe that fails opens the
//!   breaker again (for another `reset_timeout`, counted from that failure); once
//!   `half_open_probes` probes have succeeded the breaker closes.
//!
//! Every transition clears the window and the probe counters and bumps [`Breaker::generation`]
//! by one, and is returned as a [`Transition`] so the caller can log it and count it.
//!
//! # Outcomes that do not count
//!
//! [`Outcome::Ignored`] (see [`classify`]: the client's own errors, a client that went away, a
//! busy or draining worker, limits handled elsewhere) never changes the state, the window or
//! the generation; the only thing it does is give a probe's slot back (as
//! [`Breaker::release_probe`] does). Outcomes recorded while the breaker is open are late
//! answers of requests admitted before it opened, and are ignored as well; so are non-probe
//! outcomes recorded while it is half-open (the same late answers: a half-open breaker admits
//! only probes).
//!
//! # Probes that never report
//!
//! A probe whose answer is never recorded (its engine crashed, or the caller lost it) must not
//! keep the breaker half-open forever. Two ways out:
//!
//! - the caller gives the slot back with [`Breaker::release_probe`] (or records the probe's
//!   outcome as [`Outcome::Ignored`]) when a probe ends without telling anything about the
//!   account;
//! - probes expire: when [`Breaker::admit`] finds the breaker half-open and `reset_timeout`
//!   has passed since the last probe was admitted, every probe still in flight is presumed
//!   lost and its slot is free again. A slow probe that does report later still counts (its
//!   success or failure is real news about the account); it only frees a slot it no longer
//!   holds, so at worst one more probe goes out than `half_open_probes`.
//!
//! # Time and sharing
//!
//! The breaker reads no clock: every operation takes `now_ms`, milliseconds since the Unix
//! epoch, and the instants it keeps are in the same unit, so its state is plain data that
//! serializes with serde (the engine stores it as the JSON value of `cb:{id}` in ValKey, and
//! every engine sees the same breaker). All engines should read the same clock (ValKey's
//! `TIME`, or well-synchronised system clocks): a node whose clock is behind sees an open
//! breaker stay open longer. Time going backwards never panics; all time arithmetic
//! saturates.
//!
//! # Configuration values out of range
//!
//! A `failure_threshold`, `window_size` or `half_open_probes` of 0 acts as 1. A
//! `failure_threshold` above `window_size` can never be reached: such a breaker never opens
//! (config validation should refuse it).

use std::collections::VecDeque;
use std::time::Duration;

use drawbridge_types::ErrorKind;
use serde::{Deserialize, Serialize};

/// The breaker settings (`health.circuit_breaker` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in the window that open the breaker.
    pub failure_threshold: u32,
    /// How many of the latest outcomes the window holds.
    pub window_size: u32,
    /// How long an open breaker rejects before it lets a probe through; also how long a
    /// probe may stay unreported before its slot is presumed lost.
    pub reset_timeout: Duration,
    /// How many probes a half-open breaker lets through at once, and how many must succeed
    /// before it closes.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            window_size: 10,
            reset_timeout: Duration::from_secs(60),
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    fn threshold(&self) -> u32 {
        self.failure_threshold.max(1)
    }

    fn window(&self) -> usize {
        usize::try_from(self.window_size)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    fn probes(&self) -> u32 {
        self.half_open_probes.max(1)
    }

    fn reset_ms(&self) -> u64 {
        u64::try_from(self.reset_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Healthy: every request goes through.
    #[default]
    Closed,
    /// Isolated: no request goes through until `reset_timeout` has passed.
    Open,
    /// Testing: a limited number of probes go through.
    HalfOpen,
}

impl BreakerState {
    /// A stable name for logs and metrics (also the serialized form).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a request may go to the account, from [`Breaker::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: send the request.
    Allowed,
    /// The breaker is half-open and this request is one of its probes: send it, and record
    /// its outcome with `was_probe = true` (or [`Breaker::release_probe`] it).
    Probe,
    /// The breaker is open, or half-open with every probe slot taken: pick another account.
    /// `retry_after_ms` is the time until [`Breaker::admit`] would let a request through
    /// (for a half-open breaker, until its probes expire: an upper bound, as a probe usually
    /// reports sooner); at least 1.
    Rejected { retry_after_ms: u64 },
}

impl Admission {
    /// Whether the request was admitted (as a normal request or as a probe).
    pub fn is_admitted(self) -> bool {
        !matches!(self, Admission::Rejected { .. })
    }

    /// Whether the request was admitted as a probe: the `was_probe` to pass to
    /// [`Breaker::record`].
    pub fn is_probe(self) -> bool {
        self == Admission::Probe
    }
}

/// What a finished request tells about the account's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The account answered.
    Success,
    /// The account (its agent, its process, its worker link) failed: it counts against it.
    Failure,
    /// Nothing about the account's health: the client's own error, a client that went away,
    /// a busy or draining worker, a limit handled elsewhere. It has no effect (but a probe's
    /// slot is given back).
    Ignored,
}

/// A change of state, for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    /// The breaker's generation after the transition.
    pub generation: u64,
}

/// How an error that ended a request counts for the account's breaker.
///
/// - [`Outcome::Failure`]: `Upstream` (the agent died or failed, the worker broke off or
///   could not be reached) and `Timeout` (the agent went silent, or did not finish within
///   the request timeout).
/// - [`Outcome::Ignored`], everything else:
///   - the client's own errors: `InvalidRequest`, `InvalidApiKey`, `PermissionDenied`,
///     `NotFound`, `ModelNotFound`, `PayloadTooLarge`;
///   - `NoCapacity`: every slot is busy; the account is busy, not broken;
///   - `Unavailable`: a draining worker or an engine with no worker; nothing about the
///     account;
///   - `RateLimited`, `InsufficientQuota`, `AccountRateLimited`, `AccountQuotaExhausted`:
///     limits and credits, handled by cooldowns and the credit balance, not by the breaker;
///   - `Internal`: a bug or an unexpected state inside Drawbridge, not evidence that the
///     account is broken; counting it would isolate healthy accounts one after another
///     without fixing anything.
///
/// A client that disconnects is not an error kind; record it as [`Outcome::Ignored`].
pub fn classify(kind: ErrorKind) -> Outcome {
    match kind {
        ErrorKind::Upstream | ErrorKind::Timeout => Outcome::Failure,
        ErrorKind::InvalidRequest
        | ErrorKind::InvalidApiKey
        | ErrorKind::PermissionDenied
        | ErrorKind::NotFound
        | ErrorKind::ModelNotFound
        | ErrorKind::PayloadTooLarge
        | ErrorKind::RateLimited
        | ErrorKind::InsufficientQuota
        | ErrorKind::AccountQuotaExhausted
        | ErrorKind::AccountRateLimited
        | ErrorKind::NoCapacity
        | ErrorKind::Unavailable
        | ErrorKind::Internal => Outcome::Ignored,
    }
}

/// One account's circuit breaker; see the module docs for the rules.
///
/// Plain data: it serializes with serde (the JSON value of `cb:{id}`), and a value with
/// missing fields reads as their defaults (an empty object is a fresh, closed breaker). The
/// operations stay safe on any deserialized value (an overlong window is trimmed at the next
/// outcome, counters saturate).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Breaker {
    state: BreakerState,
    /// The latest outcomes while closed, oldest first; `true` is a failure.
    window: VecDeque<bool>,
    /// When the breaker last opened (ms since the Unix epoch); meaningful while open.
    opened_at_ms: u64,
    /// Probes admitted and not yet reported, released or expired; while half-open.
    probes_in_flight: u32,
    /// Probes that succeeded since the breaker turned half-open.
    probe_successes: u32,
    /// When the last probe was admitted (ms since the Unix epoch); probes expire from it.
    last_probe_at_ms: u64,
    /// Bumped on every transition.
    generation: u64,
}

impl Breaker {
    /// A closed breaker with an empty window, generation 0.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// How many transitions this breaker has made; it only ever grows. Comparing it tells a
    /// writer whether another one moved the breaker to another state meanwhile, but not
    /// whether it pushed an outcome into the window or took a probe slot (those change no
    /// generation): a compare-and-set that must not lose them compares the whole stored value.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Failures among the outcomes in the window (0 unless closed: every transition clears
    /// the window).
    pub fn failures_in_window(&self) -> u32 {
        let failures = self.window.iter().filter(|failed| **failed).count();
        u32::try_from(failures).unwrap_or(u32::MAX)
    }

    /// How many outcomes the window holds.
    pub fn outcomes_in_window(&self) -> usize {
        self.window.len()
    }

    /// Probes admitted and not yet reported, released or expired.
    pub fn probes_in_flight(&self) -> u32 {
        self.probes_in_flight
    }

    /// The time until [`Breaker::admit`] would let a request through: 0 when it would now;
    /// for an open breaker the time until `opened_at + reset_timeout`; for a half-open one
    /// with every probe slot taken, the time until its probes expire.
    pub fn retry_after_ms(&self, cfg: &BreakerConfig, now_ms: u64) -> u64 {
        match self.state {
            BreakerState::Closed => 0,
            BreakerState::Open => self
                .opened_at_ms
                .saturating_add(cfg.reset_ms())
                .saturating_sub(now_ms),
            BreakerState::HalfOpen => {
                if self.probes_expired(cfg, now_ms) || self.probes_in_flight < cfg.probes() {
                    0
                } else {
                    self.last_probe_at_ms
                        .saturating_add(cfg.reset_ms())
                        .saturating_sub(now_ms)
                }
            }
        }
    }

    /// Whether a request may go to the account now, counting it as a probe when it is one.
    /// An open breaker whose `reset_timeout` has passed turns half-open here: that transition
    /// is returned with the admission.
    pub fn admit(&mut self, cfg: &BreakerConfig, now_ms: u64) -> (Admission, Option<Transition>) {
        match self.state {
            BreakerState::Closed => (Admission::Allowed, None),
            BreakerState::Open => {
                let retry_after_ms = self.retry_after_ms(cfg, now_ms);
                if retry_after_ms > 0 {
                    return (Admission::Rejected { retry_after_ms }, None);
                }
                let transition = self.transition(BreakerState::HalfOpen, now_ms);
                self.take_probe(now_ms);
                (Admission::Probe, Some(transition))
            }
            BreakerState::HalfOpen => {
                if self.probes_expired(cfg, now_ms) {
                    self.probes_in_flight = 0;
                }
                if self.probes_in_flight < cfg.probes() {
                    self.take_probe(now_ms);
                    (Admission::Probe, None)
                } else {
                    let retry_after_ms = self.retry_after_ms(cfg, now_ms).max(1);
                    (Admission::Rejected { retry_after_ms }, None)
                }
            }
        }
    }

    /// Records how an admitted request ended. `was_probe` says whether [`Breaker::admit`]
    /// admitted it as a probe ([`Admission::is_probe`]).
    ///
    /// - [`Outcome::Ignored`]: no effect, except that a probe's slot is given back.
    /// - Closed: the outcome enters the window (a probe that reports after the breaker
    ///   closed counts like any request); the breaker opens when the window holds
    ///   `failure_threshold` failures.
    /// - Open: ignored (a late answer of a request admitted before the breaker opened).
    /// - Half-open: a non-probe outcome is ignored (a late answer again); a probe frees its
    ///   slot, then a failure opens the breaker and the `half_open_probes`-th success closes
    ///   it.
    pub fn record(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
        outcome: Outcome,
        was_probe: bool,
    ) -> Option<Transition> {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => {
                if was_probe {
                    self.release_probe();
                }
                return None;
            }
        };
        match self.state {
            BreakerState::Open => None,
            BreakerState::Closed => {
                self.window.push_back(failed);
                while self.window.len() > cfg.window() {
                    self.window.pop_front();
                }
                (self.failures_in_window() >= cfg.threshold())
                    .then(|| self.transition(BreakerState::Open, now_ms))
            }
            BreakerState::HalfOpen => {
                if !was_probe {
                    return None;
                }
                self.release_probe();
                if failed {
                    return Some(self.transition(BreakerState::Open, now_ms));
                }
                self.probe_successes = self.probe_successes.saturating_add(1);
                (self.probe_successes >= cfg.probes())
                    .then(|| self.transition(BreakerState::Closed, now_ms))
            }
        }
    }

    /// Gives back the slot of a probe that will not report (its request was dropped, or
    /// ended with nothing to say about the account). No effect unless half-open.
    pub fn release_probe(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    /// Whether `reset_timeout` has passed since the last probe was admitted, so the probes
    /// still in flight are presumed lost.
    fn probes_expired(&self, cfg: &BreakerConfig, now_ms: u64) -> bool {
        self.probes_in_flight > 0 && now_ms >= self.last_probe_at_ms.saturating_add(cfg.reset_ms())
    }

    fn take_probe(&mut self, now_ms: u64) {
        self.probes_in_flight = self.probes_in_flight.saturating_add(1);
        self.last_probe_at_ms = now_ms;
    }

    fn transition(&mut self, to: BreakerState, now_ms: u64) -> Transition {
        let from = self.state;
        self.state = to;
        self.generation = self.generation.saturating_add(1);
        self.window.clear();
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        self.opened_at_ms = if to == BreakerState::Open { now_ms } else { 0 };
        Transition {
            from,
            to,
            generation: self.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_700_000_000_000;
    const RESET: u64 = 60_000;

    fn cfg() -> BreakerConfig {
        BreakerConfig::default()
    }

    fn probes(n: u32) -> BreakerConfig {
        BreakerConfig {
            half_open_probes: n,
            ..BreakerConfig::default()
        }
    }

    fn record_all(b: &mut Breaker, cfg: &BreakerConfig, now: u64, outcomes: &[Outcome]) {
        for outcome in outcomes {
            assert_eq!(b.record(cfg, now, *outcome, false), None);
        }
    }

    /// A breaker opened at `at` with the default threshold.
    fn opened(cfg: &BreakerConfig, at: u64) -> Breaker {
        let mut b = Breaker::new();
        record_all(&mut b, cfg, at, &[Outcome::Failure, Outcome::Failure]);
        let t = b.record(cfg, at, Outcome::Failure, false);
        assert_eq!(t.map(|t| t.to), Some(BreakerState::Open));
        b
    }

    /// A breaker that has just turned half-open and admitted its first probe.
    fn half_open(cfg: &BreakerConfig, at: u64) -> Breaker {
        let mut b = opened(cfg, at - RESET);
        let (admission, t) = b.admit(cfg, at);
        assert_eq!(admission, Admission::Probe);
        assert_eq!(t.map(|t| t.to), Some(BreakerState::HalfOpen));
        b
    }

    fn round_trip(b: &Breaker) -> Breaker {
        let json = serde_json::to_string(b).unwrap_or_default();
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    #[test]
    fn defaults_match_the_product_documents() {
        let c = BreakerConfig::default();
        assert_eq!(c.failure_threshold, 3);
        assert_eq!(c.window_size, 10);
        assert_eq!(c.reset_timeout, Duration::from_secs(60));
        assert_eq!(c.half_open_probes, 1);
        let b = Breaker::new();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.generation(), 0);
        assert_eq!(b.retry_after_ms(&c, T0), 0);
    }

    #[test]
    fn state_names_are_stable_and_match_serde() {
        for (state, name) in [
            (BreakerState::Closed, "closed"),
            (BreakerState::Open, "open"),
            (BreakerState::HalfOpen, "half_open"),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(
                serde_json::to_string(&state).unwrap_or_default(),
                format!("\"{name}\"")
            );
        }
    }

    #[test]
    fn closed_admits_everything() {
        let mut b = Breaker::new();
        record_all(&mut b, &cfg(), T0, &[Outcome::Failure, Outcome::Failure]);
        assert_eq!(b.admit(&cfg(), T0), (Admission::Allowed, None));
        assert!(Admission::Allowed.is_admitted());
        assert!(!Admission::Allowed.is_probe());
    }

    #[test]
    fn opens_exactly_at_the_threshold() {
        let c = cfg();
        let mut b = Breaker::new();
        record_all(
            &mut b,
            &c,
            T0,
            &[Outcome::Failure, Outcome::Success, Outcome::Failure],
        );
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failures_in_window(), 2);
        let t = b.record(&c, T0 + 5, Outcome::Failure, false);
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open,
                generation: 1,
            })
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.failures_in_window(), 0);
        assert_eq!(b.outcomes_in_window(), 0);
        assert_eq!(b.retry_after_ms(&c, T0 + 5), RESET);
    }

    #[test]
    fn failures_that_slid_out_of_the_window_no_longer_count() {
        let c = cfg();
        let mut b = Breaker::new();
        record_all(&mut b, &c, T0, &[Outcome::Failure, Outcome::Failure]);
        record_all(&mut b, &c, T0, &[Outcome::Success; 8]);
        assert_eq!((b.outcomes_in_window(), b.failures_in_window()), (10, 2));
        record_all(&mut b, &c, T0, &[Outcome::Success]);
        assert_eq!((b.outcomes_in_window(), b.failures_in_window()), (10, 1));
        record_all(&mut b, &c, T0, &[Outcome::Success]);
        assert_eq!((b.outcomes_in_window(), b.failures_in_window()), (10, 0));
        // Two fresh failures are not enough any more; the third is.
        record_all(&mut b, &c, T0, &[Outcome::Failure, Outcome::Failure]);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.record(&c, T0, Outcome::Failure, false).is_some());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn open_rejects_until_the_reset_timeout_exactly() {
        let c = cfg();
        let mut b = opened(&c, T0);
        assert_eq!(
            b.admit(&c, T0),
            (
                Admission::Rejected {
                    retry_after_ms: RESET
                },
                None
            )
        );
        assert_eq!(
            b.admit(&c, T0 + 45_000),
            (
                Admission::Rejected {
                    retry_after_ms: 15_000
                },
                None
            )
        );
        assert_eq!(
            b.admit(&c, T0 + RESET - 1),
            (Admission::Rejected { retry_after_ms: 1 }, None)
        );
        assert!(!Admission::Rejected { retry_after_ms: 1 }.is_admitted());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.retry_after_ms(&c, T0 + RESET), 0);
        let (admission, t) = b.admit(&c, T0 + RESET);
        assert_eq!(admission, Admission::Probe);
        assert!(admission.is_probe() && admission.is_admitted());
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen,
                generation: 2,
            })
        );
        assert_eq!(b.probes_in_flight(), 1);
    }

    #[test]
    fn half_open_admits_a_limited_number_of_probes() {
        let c = cfg();
        let now = T0 + RESET;
        let mut b = half_open(&c, now);
        assert_eq!(
            b.admit(&c, now + 10_000),
            (
                Admission::Rejected {
                    retry_after_ms: 50_000
                },
                None
            )
        );
        assert_eq!(b.retry_after_ms(&c, now + 10_000), 50_000);

        let c3 = probes(3);
        let mut b = half_open(&c3, now);
        assert_eq!(b.admit(&c3, now + 1), (Admission::Probe, None));
        assert_eq!(b.admit(&c3, now + 2), (Admission::Probe, None));
        assert_eq!(b.probes_in_flight(), 3);
        assert_eq!(
            b.admit(&c3, now + 3),
            (
                Admission::Rejected {
                    retry_after_ms: RESET - 1
                },
                None
            )
        );
        // A probe that reports frees its slot.
        assert_eq!(b.record(&c3, now + 4, Outcome::Success, true), None);
        assert_eq!(b.admit(&c3, now + 5), (Admission::Probe, None));
    }

    #[test]
    fn closes_after_enough_probe_successes() {
        let c = cfg();
        let now = T0 + RESET;
        let mut b = half_open(&c, now);
        let t = b.record(&c, now + 100, Outcome::Success, true);
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed,
                generation: 3,
            })
        );
        assert_eq!(b.admit(&c, now + 101), (Admission::Allowed, None));
        assert_eq!((b.outcomes_in_window(), b.probes_in_flight()), (0, 0));

        let c2 = probes(2);
        let mut b = half_open(&c2, now);
        assert_eq!(b.admit(&c2, now), (Admission::Probe, None));
        assert_eq!(b.record(&c2, now + 1, Outcome::Success, true), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let t = b.record(&c2, now + 2, Outcome::Success, true);
        assert_eq!(
            t.map(|t| (t.from, t.to)),
            Some((BreakerState::HalfOpen, BreakerState::Closed))
        );
        // The closed breaker starts over with an empty window.
        record_all(&mut b, &c2, now + 3, &[Outcome::Failure, Outcome::Failure]);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_probe_failure_opens_again_from_then() {
        let c = probes(2);
        let now = T0 + RESET;
        let mut b = half_open(&c, now);
        assert_eq!(b.admit(&c, now), (Admission::Probe, None));
        assert_eq!(b.record(&c, now + 10, Outcome::Success, true), None);
        let t = b.record(&c, now + 500, Outcome::Failure, true);
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open,
                generation: 3,
            })
        );
        assert_eq!(b.probes_in_flight(), 0);
        assert_eq!(
            b.admit(&c, now + 500),
            (
                Admission::Rejected {
                    retry_after_ms: RESET
                },
                None
            )
        );
        assert_eq!(
            b.admit(&c, now + 500 + RESET - 1),
            (Admission::Rejected { retry_after_ms: 1 }, None)
        );
        // The earlier success does not carry over: a new half-open needs both again.
        let (admission, _) = b.admit(&c, now + 500 + RESET);
        assert_eq!(admission, Admission::Probe);
        assert_eq!(
            b.record(&c, now + 600 + RESET, Outcome::Success, true),
            None
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn ignored_outcomes_change_nothing() {
        let c = cfg();
        let mut closed = Breaker::new();
        record_all(&mut closed, &c, T0, &[Outcome::Failure, Outcome::Failure]);
        let open = opened(&c, T0);
        let half = half_open(&c, T0 + RESET);
        for before in [closed, open, half] {
            let mut b = before.clone();
            for _ in 0..20 {
                assert_eq!(b.record(&c, T0 + RESET + 1, Outcome::Ignored, false), None);
            }
            assert_eq!(b, before);
        }
    }

    #[test]
    fn an_ignored_probe_only_gives_its_slot_back() {
        let c = cfg();
        let now = T0 + RESET;
        let mut b = half_open(&c, now);
        let generation = b.generation();
        assert_eq!(b.record(&c, now + 1, Outcome::Ignored, true), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.generation(), generation);
        assert_eq!(b.probes_in_flight(), 0);
        assert_eq!(b.admit(&c, now + 2), (Admission::Probe, None));
    }

    #[test]
    fn late_outcomes_while_open_are_ignored() {
        let c = cfg();
        let before = opened(&c, T0);
        let mut b = before.clone();
        for outcome in [Outcome::Failure, Outcome::Success] {
            for was_probe in [false, true] {
                assert_eq!(b.record(&c, T0 + 1, outcome, was_probe), None);
            }
        }
        assert_eq!(b, before);
    }

    #[test]
    fn late_non_probe_outcomes_while_half_open_are_ignored() {
        let c = cfg();
        let before = half_open(&c, T0 + RESET);
        let mut b = before.clone();
        assert_eq!(b.record(&c, T0 + RESET + 1, Outcome::Failure, false), None);
        assert_eq!(b.record(&c, T0 + RESET + 2, Outcome::Success, false), None);
        assert_eq!(b, before);
    }

    #[test]
    fn a_probe_reporting_after_the_breaker_closed_counts_like_any_request() {
        let c = probes(2);
        let now = T0 + RESET;
        let mut b = half_open(&c, now);
        assert_eq!(b.admit(&c, now), (Admission::Probe, None));
        // A third probe is expected to report late: the breaker closes without it.
        b.release_probe();
        assert_eq!(b.admit(&c, now), (Admission::Probe, None));
        assert!(b.record(&c, now + 1, Outcome::Success, true).is_none());
        assert!(b.record(&c, now + 2, Outcome::Success, true).is_some());
        assert_eq!(b.record(&c, now + 3, Outcome::Failure, true), None);
        assert_eq!(
            (b.state(), b.failures_in_window()),
            (BreakerState::Closed, 1)
        );
    }

    #[test]
    fn generation_bumps_once_per_transition() {
        let c = cfg();
        let mut b = Breaker::new();
        let mut now = T0;
        let mut transitions = Vec::new();
        for _ in 0..3 {
            for _ in 0..3 {
                transitions.extend(b.record(&c, now, Outcome::Failure, false));
                transitions.extend(b.admit(&c, now).1);
            }
            now += RESET;
            let (admission, t) = b.admit(&c, now);
            transitions.extend(t);
            // Rejected admissions and ignored outcomes move nothing.
            transitions.extend(b.admit(&c, now).1);
            transitions.extend(b.record(&c, now, Outcome::Ignored, false));
            transitions.extend(b.record(&c, now, Outcome::Success, admission.is_probe()));
            transitions.extend(b.record(&c, now, Outcome::Success, false));
        }
        let generations: Vec<u64> = transitions.iter().map(|t| t.generation).collect();
        assert_eq!(generations, (1..=9).collect::<Vec<u64>>());
        assert_eq!(b.generation(), 9);
        let states: Vec<_> = transitions.iter().take(3).map(|t| (t.from, t.to)).collect();
        assert_eq!(
            states,
            [
                (BreakerState::Closed, BreakerState::Open),
                (BreakerState::Open, BreakerState::HalfOpen),
                (BreakerState::HalfOpen, BreakerState::Closed),
            ]
        );
        for pair in transitions.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
    }

    #[test]
    fn a_lost_probe_expires_after_the_reset_timeout() {
        let c = cfg();
        let now = T0 + RESET;
        let mut b = half_open(&c, now);
        // The probe never reports.
        assert_eq!(
            b.admit(&c, now + RESET - 1),
            (Admission::Rejected { retry_after_ms: 1 }, None)
        );
        assert_eq!(b.retry_after_ms(&c, now + RESET), 0);
        assert_eq!(b.admit(&c, now + RESET), (Admission::Probe, None));
        assert_eq!(b.probes_in_flight(), 1);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // The first probe reports after all: it is still news, and frees a slot it no
        // longer holds without going below zero.
        assert_eq!(b.record(&c, now + RESET + 1, Outcome::Ignored, true), None);
        assert_eq!(b.record(&c, now + RESET + 2, Outcome::Ignored, true), None);
        assert_eq!(b.probes_in_flight(), 0);
        assert!(
            b.record(&c, now + RESET + 3, Outcome::Success, true)
                .is_some()
        );
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_released_probe_frees_its_slot_at_once() {
        let c = cfg();
        let now = T0 + RESET;
        let mut b = half_open(&c, now);
        b.release_probe();
        assert_eq!(b.probes_in_flight(), 0);
        assert_eq!(b.admit(&c, now + 1), (Admission::Probe, None));
        // Releasing does nothing outside half-open.
        let mut closed = Breaker::new();
        closed.release_probe();
        assert_eq!(closed, Breaker::new());
    }

    #[test]
    fn serde_round_trip_preserves_behaviour() {
        let c = probes(2);
        let mut b = Breaker::new();
        record_all(&mut b, &c, T0, &[Outcome::Failure, Outcome::Success]);
        let mut copy = round_trip(&b);
        assert_eq!(copy, b);
        let mut now = T0;
        let script = [
            (Some(Outcome::Failure), false),
            (Some(Outcome::Failure), false),
            (None, false),
            (None, false),
            (Some(Outcome::Success), true),
            (None, false),
            (Some(Outcome::Failure), true),
            (None, false),
        ];
        for (step, (outcome, was_probe)) in script.into_iter().enumerate() {
            now += 35_000;
            match outcome {
                Some(outcome) => assert_eq!(
                    b.record(&c, now, outcome, was_probe),
                    copy.record(&c, now, outcome, was_probe),
                    "step {step}"
                ),
                None => assert_eq!(b.admit(&c, now), copy.admit(&c, now), "step {step}"),
            }
            copy = round_trip(&copy);
            assert_eq!(copy, b, "step {step}");
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.generation() >= 3);
    }

    #[test]
    fn the_stored_value_is_plain_json() {
        let c = cfg();
        let b = half_open(&c, T0 + RESET);
        let value = serde_json::to_value(&b).unwrap_or_default();
        assert_eq!(value["state"], "half_open");
        assert_eq!(value["generation"], 2);
        assert_eq!(value["probes_in_flight"], 1);
        assert_eq!(value["last_probe_at_ms"], T0 + RESET);
        // Missing fields read as a fresh breaker's.
        let fresh: Option<Breaker> = serde_json::from_str("{}").ok();
        assert_eq!(fresh, Some(Breaker::new()));
    }

    #[test]
    fn zero_settings_act_as_one() {
        let c = BreakerConfig {
            failure_threshold: 0,
            window_size: 0,
            reset_timeout: Duration::ZERO,
            half_open_probes: 0,
        };
        let mut b = Breaker::new();
        assert_eq!(b.record(&c, T0, Outcome::Success, false), None);
        assert_eq!(b.outcomes_in_window(), 1);
        assert!(b.record(&c, T0, Outcome::Failure, false).is_some());
        let (admission, t) = b.admit(&c, T0);
        assert_eq!(
            (admission, t.map(|t| t.to)),
            (Admission::Probe, Some(BreakerState::HalfOpen))
        );
        assert!(b.record(&c, T0, Outcome::Success, true).is_some());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_threshold_above_the_window_never_opens() {
        let c = BreakerConfig {
            failure_threshold: 4,
            window_size: 3,
            ..BreakerConfig::default()
        };
        let mut b = Breaker::new();
        record_all(&mut b, &c, T0, &[Outcome::Failure; 10]);
        assert_eq!(
            (b.state(), b.failures_in_window()),
            (BreakerState::Closed, 3)
        );
    }

    #[test]
    fn a_clock_behind_the_breaker_does_not_panic() {
        let c = cfg();
        let mut b = opened(&c, T0);
        assert_eq!(
            b.admit(&c, 0),
            (
                Admission::Rejected {
                    retry_after_ms: T0 + RESET
                },
                None
            )
        );
        let mut b = half_open(&c, T0 + RESET);
        assert!(!b.admit(&c, 0).0.is_admitted());
    }

    #[test]
    fn classification() {
        for kind in ErrorKind::ALL {
            let expected = match kind {
                ErrorKind::Upstream | ErrorKind::Timeout => Outcome::Failure,
                _ => Outcome::Ignored,
            };
            assert_eq!(classify(kind), expected, "{kind:?}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Ask to send a request, `advance` ms later.
        Admit { advance: u64 },
        /// The admitted request at this index ends with this outcome.
        Finish {
            which: prop::sample::Index,
            outcome: Outcome,
            advance: u64,
        },
        /// The admitted request at this index is lost, or its probe released.
        Lose {
            which: prop::sample::Index,
            release: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let outcome =
            prop::sample::select(vec![Outcome::Success, Outcome::Failure, Outcome::Ignored]);
        prop_oneof![
            (0u64..90_000).prop_map(|advance| Op::Admit { advance }),
            (any::<prop::sample::Index>(), outcome, 0u64..90_000).prop_map(
                |(which, outcome, advance)| Op::Finish {
                    which,
                    outcome,
                    advance
                }
            ),
            (any::<prop::sample::Index>(), any::<bool>())
                .prop_map(|(which, release)| Op::Lose { which, release }),
        ]
    }

    fn config() -> impl Strategy<Value = BreakerConfig> {
        (1u32..6, 1u32..12, 0u64..100_000, 1u32..4).prop_map(
            |(failure_threshold, window_size, reset, half_open_probes)| BreakerConfig {
                failure_threshold,
                window_size,
                reset_timeout: Duration::from_millis(reset),
                half_open_probes,
            },
        )
    }

    proptest! {
        #[test]
        fn invariants_hold(c in config(), ops in prop::collection::vec(op(), 0..200)) {
            let mut b = Breaker::new();
            let mut now = T0;
            // Requests admitted and not finished yet: whether each is a probe.
            let mut in_flight: Vec<bool> = Vec::new();
            for op in ops {
                let before = b.clone();
                let transition = match op {
                    Op::Admit { advance } => {
                        now += advance;
                        let (admission, transition) = b.admit(&c, now);
                        match admission {
                            Admission::Rejected { retry_after_ms } => {
                                prop_assert!(retry_after_ms >= 1);
                                prop_assert_eq!(retry_after_ms, b.retry_after_ms(&c, now));
                                prop_assert_ne!(b.state(), BreakerState::Closed);
                            }
                            admitted => {
                                if before.state == BreakerState::Open {
                                    prop_assert!(now >= before.opened_at_ms + c.reset_ms());
                                }
                                prop_assert_eq!(
                                    admitted.is_probe(),
                                    b.state() == BreakerState::HalfOpen
                                );
                                in_flight.push(admitted.is_probe());
                            }
                        }
                        transition
                    }
                    Op::Finish { which, outcome, advance } => {
                        now += advance;
                        if in_flight.is_empty() {
                            None
                        } else {
                            let was_probe = in_flight.swap_remove(which.index(in_flight.len()));
                            b.record(&c, now, outcome, was_probe)
                        }
                    }
                    Op::Lose { which, release } => {
                        if !in_flight.is_empty() {
                            let was_probe = in_flight.swap_remove(which.index(in_flight.len()));
                            if release && was_probe {
                                b.release_probe();
                            }
                        }
                        None
                    }
                };
                match transition {
                    Some(t) => {
                        prop_assert_eq!(t.from, before.state());
                        prop_assert_eq!(t.to, b.state());
                        prop_assert_ne!(t.from, t.to);
                        prop_assert_eq!(t.generation, before.generation() + 1);
                        prop_assert_eq!(b.generation(), t.generation);
                    }
                    None => {
                        prop_assert_eq!(b.state(), before.state());
                        prop_assert_eq!(b.generation(), before.generation());
                    }
                }
                if b.state() == BreakerState::Open && transition.is_none() {
                    prop_assert_eq!(&b, &before);
                }
                prop_assert!(b.probes_in_flight() <= c.half_open_probes);
                prop_assert!(b.outcomes_in_window() <= c.window_size as usize);
                prop_assert!(b.failures_in_window() <= c.window_size);
                prop_assert!(b.failures_in_window() < c.failure_threshold);
                if b.state() != BreakerState::Closed {
                    prop_assert_eq!(b.outcomes_in_window(), 0);
                }
                if b.state() != BreakerState::HalfOpen {
                    prop_assert_eq!(b.probes_in_flight(), 0);
                }
                prop_assert_eq!(&round_trip(&b), &b);
            }
        }
    }
}
