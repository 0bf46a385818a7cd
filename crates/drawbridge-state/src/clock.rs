//! Time as the stores count it: milliseconds since the Unix epoch.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A store's clock: milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Now on this machine's clock, in ms since the Unix epoch (0 before it): with one process,
/// an embedded store's clock is the process's.
pub(crate) fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// `duration` in whole milliseconds, `u64::MAX` if it has more.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
