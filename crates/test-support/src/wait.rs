//! Waiting on observable state: the one `eventually` of the workspace's tests.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long [`eventually`] waits before it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(15);
/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// What a poll of [`eventually`] yields: `true`, or `Some(value)`, once the wait is over.
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Poll `attempt` until it is ready (`true` or `Some`), and return its value; fail the test,
/// naming `what`, after [`PATIENCE`]. Runs on tokio's clock, so it also works on paused time.
pub async fn eventually<R, F, Fut>(what: &str, attempt: F) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    eventually_within(PATIENCE, what, attempt).await
}

/// [`eventually`] with a patience of its own.
pub async fn eventually_within<R, F, Fut>(patience: Duration, what: &str, attempt: F) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    match poll(patience, attempt).await {
        Some(value) => value,
        None => panic!("timed out after {patience:?} waiting until {what}"),
    }
}

/// Poll `attempt` until it is ready and return its value, or `None` once `patience` has
/// passed (for a caller that reports the failure its own way, e.g. with the logs).
pub async fn poll<R, F, Fut>(patience: Duration, mut attempt: F) -> Option<R::Value>
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = attempt().await.ready() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}
