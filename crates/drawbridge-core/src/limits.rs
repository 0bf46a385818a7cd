//! The gateway's per-key limits as pure rules: the sliding-window rate limit and the quota
//! admission rule. Both state stores apply exactly these rules: the embedded store calls these
//! functions, and the ValKey store's Lua scripts (`drawbridge-state/src/valkey/rate_hit.lua`,
//! `reserve.lua`) spell the same arithmetic. Time is a value here: milliseconds since the Unix
//! epoch, passed in.

use serde::{Deserialize, Serialize};

/// The answer to one request of a subject under a sliding-window limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateDecision {
    /// Whether the request passes (and was counted).
    pub allowed: bool,
    /// The limit it was measured against (`X-RateLimit-Limit`).
    pub limit: u32,
    /// How many more requests would pass now, this one counted (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// When the oldest counted request leaves the window, in ms since the epoch; `now + window`
    /// when none is counted (`X-RateLimit-Reset`).
    pub reset_at_ms: u64,
    /// How long a refused caller waits until a request can pass (`Retry-After`); 0 when allowed.
    pub retry_after_ms: u64,
}

/// Whether a request counted at `at_ms` still falls in the window of `window_ms` ending at
/// `now_ms`: it does while less than `window_ms` has passed since it (`now - at < window`). The
/// ValKey script drops the others with `ZREMRANGEBYSCORE key -inf (now - window)`.
pub fn in_window(at_ms: u64, now_ms: u64, window_ms: u64) -> bool {
    now_ms < at_ms.saturating_add(window_ms)
}

/// Decide one request at `now_ms` under at most `limit` requests per `window_ms`.
///
/// `counted` holds the times of the requests counted so far, ascending; those no longer
/// [`in_window`] are ignored. The request passes iff fewer than `limit` counted requests fall in
/// the window; the caller then counts it at `now_ms` (a refused request is not counted).
///
/// - `remaining`: `limit - in_window - 1` when allowed, 0 when refused.
/// - `reset_at_ms`: when the oldest counted request leaves the window (this one included when
///   allowed), `now + window` when there is none.
/// - `retry_after_ms`: 0 when allowed; when refused, the time until enough requests have left
///   the window for one to pass (with `n` in the window, until the `(n - limit + 1)`-th oldest
///   leaves; normally `n == limit`, and that is the oldest). Always at least 1 when refused.
///
/// A `limit` of 0 refuses everything (`retry_after_ms` is then the whole window): the stores
/// refuse such a call before it gets here, since "unlimited" is decided by the caller.
pub fn sliding_window(counted: &[u64], now_ms: u64, limit: u32, window_ms: u64) -> RateDecision {
    let first_live = counted.partition_point(|&at| !in_window(at, now_ms, window_ms));
    let live = &counted[first_live..];
    let n = live.len();
    let limit_len = usize::try_from(limit).unwrap_or(usize::MAX);
    if n < limit_len {
        let oldest = live.first().copied().unwrap_or(now_ms);
        let remaining = limit_len - n - 1;
        return RateDecision {
            allowed: true,
            limit,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_at_ms: oldest.saturating_add(window_ms),
            retry_after_ms: 0,
        };
    }
    let reset_at_ms = live
        .first()
        .map_or(now_ms, |&oldest| oldest)
        .saturating_add(window_ms);
    // With n >= limit >= 1 counted, the one at index n - limit must leave before one passes.
    let retry_after_ms = match n.checked_sub(limit_len).and_then(|i| live.get(i)) {
        Some(&blocker) if limit > 0 => blocker
            .saturating_add(window_ms)
            .saturating_sub(now_ms)
            .max(1),
        _ => window_ms.max(1),
    };
    RateDecision {
        allowed: false,
        limit,
        remaining: 0,
        reset_at_ms,
        retry_after_ms,
    }
}

/// The quota admission rule: admit one more request of a key whose budget is `limit` (in the
/// quota's unit), given what the key has `spent`, what its `in_flight` requests have `reserved`,
/// and the `amount` this request would reserve:
///
/// `spent < limit && (in_flight == 0 || spent + reserved + amount <= limit)`.
///
/// A key with budget left always gets one request in even when that request may cost more
/// than what is left, so concurrent requests overspend by at most one request's worth (plus
/// whatever requests use beyond their reservations); once spent reaches the limit, nothing
/// passes.
pub fn quota_admits(limit: f64, spent: f64, reserved: f64, in_flight: u32, amount: f64) -> bool {
    spent < limit && (in_flight == 0 || spent + reserved + amount <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const MINUTE: u64 = 60_000;

    /// Run `times` through the limiter as a store would: count what passes.
    fn run(times: &[u64], limit: u32, window: u64) -> (Vec<u64>, Vec<RateDecision>) {
        let mut counted = Vec::new();
        let mut decisions = Vec::new();
        for &now in times {
            let decision = sliding_window(&counted, now, limit, window);
            if decision.allowed {
                counted.push(now);
            }
            decisions.push(decision);
        }
        (counted, decisions)
    }

    #[test]
    fn the_window_is_half_open() {
        assert!(in_window(T0, T0, MINUTE));
        assert!(in_window(T0, T0 + MINUTE - 1, MINUTE));
        assert!(!in_window(T0, T0 + MINUTE, MINUTE));
        assert!(!in_window(T0, T0 + 2 * MINUTE, MINUTE));
        // No overflow at the end of time.
        assert!(in_window(u64::MAX - 1, u64::MAX - 1, MINUTE));
    }

    #[test]
    fn limit_requests_pass_then_the_next_is_refused() {
        let times: Vec<u64> = (0..61).map(|i| T0 + i * 100).collect();
        let (counted, decisions) = run(&times, 60, MINUTE);
        assert_eq!(counted.len(), 60);
        for (i, decision) in decisions[..60].iter().enumerate() {
            assert!(decision.allowed, "request {i}");
            assert_eq!(decision.remaining, 59 - u32::try_from(i).unwrap());
            assert_eq!(
                decision.reset_at_ms,
                T0 + MINUTE,
                "the first one leaves first"
            );
            assert_eq!(decision.retry_after_ms, 0);
            assert_eq!(decision.limit, 60);
        }
        let refused = decisions[60];
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_at_ms, T0 + MINUTE);
        // Asked at T0 + 6 s: the first request leaves at T0 + 60 s.
        assert_eq!(refused.retry_after_ms, MINUTE - 6_000);
    }

    #[test]
    fn a_fresh_subject_resets_a_window_from_now() {
        let decision = sliding_window(&[], T0, 3, MINUTE);
        assert_eq!(
            decision,
            RateDecision {
                allowed: true,
                limit: 3,
                remaining: 2,
                reset_at_ms: T0 + MINUTE,
                retry_after_ms: 0,
            }
        );
    }

    #[test]
    fn the_window_slides_one_request_at_a_time() {
        let window = 1_000;
        let (counted, decisions) = run(&[T0, T0 + 400, T0 + 600, T0 + 999], 2, window);
        assert_eq!(counted, [T0, T0 + 400]);
        assert_eq!(decisions[2].retry_after_ms, 400);
        assert_eq!(decisions[3].retry_after_ms, 1);
        // At T0 + 1000 the first has left: one passes, and the next must wait for the second.
        let passes = sliding_window(&counted, T0 + window, 2, window);
        assert!(passes.allowed);
        assert_eq!(passes.remaining, 0);
        assert_eq!(passes.reset_at_ms, T0 + 400 + window);
        let counted = [T0, T0 + 400, T0 + window];
        let refused = sliding_window(&counted, T0 + window + 1, 2, window);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 399);
        assert_eq!(refused.reset_at_ms, T0 + 400 + window);
    }

    #[test]
    fn refused_requests_are_not_counted() {
        // A caller hammering a full window does not push its own reset further away.
        let times: Vec<u64> = (0..100).map(|i| T0 + i * 10).collect();
        let (counted, decisions) = run(&times, 1, 1_000);
        assert_eq!(counted, [T0]);
        assert!(decisions[1..].iter().all(|d| d.reset_at_ms == T0 + 1_000));
        let later = sliding_window(&counted, T0 + 1_000, 1, 1_000);
        assert!(later.allowed);
    }

    #[test]
    fn a_lowered_limit_waits_for_enough_requests_to_leave() {
        let counted = [T0, T0 + 100, T0 + 200, T0 + 300];
        let refused = sliding_window(&counted, T0 + 500, 2, 1_000);
        assert!(!refused.allowed);
        assert_eq!(refused.reset_at_ms, T0 + 1_000);
        // Four in the window must drop below two: three must leave, the third-oldest (T0 + 200)
        // last, at T0 + 1200.
        assert_eq!(refused.retry_after_ms, 700);
        let at_retry = sliding_window(&counted, T0 + 500 + 700, 2, 1_000);
        assert!(at_retry.allowed);
    }

    #[test]
    fn a_zero_limit_refuses_without_panicking() {
        let refused = sliding_window(&[], T0, 0, MINUTE);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, MINUTE);
        assert_eq!(refused.reset_at_ms, T0 + MINUTE);
    }

    #[test]
    fn quota_admits_one_request_while_budget_is_left() {
        // Nothing in flight: any request passes while budget is left, even a large one.
        assert!(quota_admits(100.0, 0.0, 0.0, 0, 500.0));
        assert!(quota_admits(100.0, 99.5, 0.0, 0, 10.0));
        // Spent reaches the limit: nothing passes.
        assert!(!quota_admits(100.0, 100.0, 0.0, 0, 0.0));
        assert!(!quota_admits(100.0, 120.0, 0.0, 0, 1.0));
        // Others in flight: only while everything fits.
        assert!(quota_admits(100.0, 50.0, 40.0, 2, 10.0));
        assert!(!quota_admits(100.0, 50.0, 40.0, 2, 10.5));
        assert!(!quota_admits(100.0, 0.0, 500.0, 1, 1.0));
        // A zero budget admits nothing.
        assert!(!quota_admits(0.0, 0.0, 0.0, 0, 0.0));
    }

    #[test]
    fn concurrent_requests_overspend_by_at_most_one_request() {
        // Requests arrive one after the other while none has ended: the admitted ones reserve
        // at most the limit, or one request when nothing else is in flight.
        for (limit, amount) in [(100.0, 10.0), (100.0, 30.0), (100.0, 150.0), (5.0, 1.0)] {
            let (mut reserved, mut in_flight) = (0.0, 0u32);
            for _ in 0..50 {
                if quota_admits(limit, 0.0, reserved, in_flight, amount) {
                    reserved += amount;
                    in_flight += 1;
                }
            }
            let expected = if amount > limit {
                1
            } else {
                (limit / amount).floor() as u32
            };
            assert_eq!(in_flight, expected, "limit {limit}, amount {amount}");
            assert!(reserved <= limit.max(amount));
        }
    }
}
