//! The rate-limit windows, in memory only.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use drawbridge_core::limits::{in_window, sliding_window};

use super::EmbeddedGatewayStore;
use crate::gateway::{RateDecision, RateLimiter, check_hit};
use crate::registry::StateFuture;

/// The rate-limit windows are swept of idle subjects once per this many hits.
const SWEEP_EVERY: u32 = 1024;

/// The rate-limit windows: per subject, the times of its counted requests, ascending.
#[derive(Default)]
pub(super) struct Windows {
    subjects: HashMap<String, Window>,
    hits_since_sweep: u32,
}

struct Window {
    window_ms: u64,
    counted: VecDeque<u64>,
}

impl Windows {
    pub(super) fn hit(
        &mut self,
        subject: &str,
        limit: u32,
        window_ms: u64,
        now: u64,
    ) -> RateDecision {
        self.hits_since_sweep += 1;
        if self.hits_since_sweep >= SWEEP_EVERY {
            self.hits_since_sweep = 0;
            self.subjects.retain(|_, window| {
                window
                    .counted
                    .back()
                    .is_some_and(|&last| in_window(last, now, window.window_ms))
            });
        }
        let window = self
            .subjects
            .entry(subject.to_owned())
            .or_insert_with(|| Window {
                window_ms,
                counted: VecDeque::new(),
            });
        window.window_ms = window_ms;
        while window
            .counted
            .front()
            .is_some_and(|&at| !in_window(at, now, window_ms))
        {
            window.counted.pop_front();
        }
        let decision = sliding_window(window.counted.make_contiguous(), now, limit, window_ms);
        if decision.allowed {
            // Kept ascending even if the clock steps back.
            let at = window.counted.back().map_or(now, |&last| last.max(now));
            window.counted.push_back(at);
        }
        decision
    }
}

impl RateLimiter for EmbeddedGatewayStore {
    fn hit<'a>(
        &'a self,
        subject: &'a str,
        limit: u32,
        window: Duration,
    ) -> StateFuture<'a, RateDecision> {
        Box::pin(async move {
            let window_ms = check_hit(subject, limit, window)?;
            let now = self.now();
            Ok(self.shared.windows().hit(subject, limit, window_ms, now))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_subjects_are_swept() {
        let mut windows = Windows::default();
        windows.hit("old", 5, 1_000, 10_000);
        for i in 0..SWEEP_EVERY {
            windows.hit("busy", u32::MAX, 1_000, 20_000 + u64::from(i));
        }
        assert!(!windows.subjects.contains_key("old"));
        assert!(windows.subjects.contains_key("busy"));
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_window_ordered() {
        let mut windows = Windows::default();
        windows.hit("s", 5, 1_000, 10_000);
        windows.hit("s", 5, 1_000, 9_000);
        let counted: Vec<u64> = windows.subjects["s"].counted.iter().copied().collect();
        assert_eq!(counted, [10_000, 10_000]);
    }
}
