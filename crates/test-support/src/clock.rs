//! A wall clock a test controls through tokio's time.

use std::sync::Arc;

/// A clock in ms since the Unix epoch, the shape of `drawbridge_state::Clock`: it reads
/// `start_ms` now and moves with tokio's clock, so on paused time
/// (`#[tokio::test(start_paused = true)]`) it stands still until `tokio::time::advance`.
/// Made and read inside a tokio runtime.
pub fn paused(start_ms: u64) -> Arc<dyn Fn() -> u64 + Send + Sync> {
    let origin = tokio::time::Instant::now();
    Arc::new(move || {
        let elapsed = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        start_ms.saturating_add(elapsed)
    })
}

/// 2027-01-15 08:00:00 UTC, in ms: a start for [`paused`] clocks.
pub const SOME_DAY_MS: u64 = 1_800_000_000_000;
