//! What an admitted request costs: its [`Charge`] writes the ledger entry and the key's spent
//! totals once its answer has ended (or releases its quota reservation), retrying while the
//! store is unreachable.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_http::{Ended, Outcome, Pass};
use drawbridge_state::{CHARGE_DEDUP_WINDOW, Clock, StateError, UsageEntry, UsageStore};
use drawbridge_telemetry::Shutdown;

use crate::gate::system_ms;

/// The ledger's account for an answer that failed before anyone reported serving it.
pub const UNKNOWN_ACCOUNT: &str = "unknown";

/// Charges one request when its answer has ended: the ledger row and the key's spent totals,
/// once, and its quota reservation released.
pub(crate) struct Charge {
    pub(crate) usage: Arc<dyn UsageStore>,
    pub(crate) clock: Clock,
    pub(crate) tasks: Shutdown,
    pub(crate) key_id: String,
    /// The request's id, for the log.
    pub(crate) request_id: String,
    /// The id its reservation and its ledger entry are made under ([`charge_id`]).
    pub(crate) charge_id: String,
    pub(crate) model: String,
    pub(crate) prompt_tokens: u64,
    pub(crate) reserved: bool,
    /// What an answer that broke off is charged in credits (the agent's figure never came):
    /// what was reserved, for a key whose quota is in credits; nothing otherwise.
    pub(crate) partial_credits: f64,
}

/// The first wait before a failed charge is tried again; it doubles up to [`RETRY_MAX_WAIT`].
const RETRY_FIRST_WAIT: Duration = Duration::from_millis(100);
const RETRY_MAX_WAIT: Duration = Duration::from_secs(5);
/// How long a charge is retried while the store is unreachable: inside the store's memory of
/// charged ids (`drawbridge_state`'s `CHARGE_RETRY_WINDOW`, which its dedup window is derived
/// from, with a minute to spare for the last try's own way), so a retry of a charge that did
/// land is recognised.
const RETRY_WINDOW: Duration = drawbridge_state::CHARGE_RETRY_WINDOW;
const _: () = assert!(RETRY_WINDOW.as_secs() + 60 <= CHARGE_DEDUP_WINDOW.as_secs());

/// Run `op` until it succeeds, fails for good, or the store has been unreachable for
/// [`RETRY_WINDOW`]; once shutdown has begun, one more try and no more waiting.
async fn retrying<F, Fut>(scope: &Shutdown, mut op: F) -> Result<(), StateError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StateError>>,
{
    let give_up = tokio::time::Instant::now() + RETRY_WINDOW;
    let mut wait = RETRY_FIRST_WAIT;
    let mut failures = 0u32;
    loop {
        let error = match op().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "usage recorded after the store came back");
                }
                return Ok(());
            }
            Err(error) => error,
        };
        let late = tokio::time::Instant::now() + wait > give_up;
        if !error.retryable() || late || scope.is_cancelled() {
            return Err(error);
        }
        if failures == 0 {
            tracing::warn!(%error, "cannot record usage now; retrying until the store is back");
        }
        failures += 1;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = scope.cancelled() => {}
        }
        wait = (wait * 2).min(RETRY_MAX_WAIT);
    }
}

/// An id no other request of any gateway node has: this process's random tag and a counter
/// (the request id is added for the reader of ValKey; it is not what makes it unique).
pub(crate) fn charge_id(request_id: &str) -> String {
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let mut random = [0u8; 8];
        // Without a random source, the start time still tells processes apart.
        if getrandom::fill(&mut random).is_err() {
            random = (system_ms() ^ u64::from(std::process::id())).to_le_bytes();
        }
        drawbridge_core::hex::encode(&random)
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{process}-{n}-{request_id}")
}

impl Pass for Charge {
    fn end(self: Box<Self>, ended: &Ended) {
        let entry = match &ended.outcome {
            Outcome::Finished(finish) => Some(UsageEntry {
                request_id: self.charge_id.clone(),
                key_id: self.key_id.clone(),
                account: finish
                    .metering
                    .accounts
                    .last()
                    .cloned()
                    .unwrap_or_else(|| UNKNOWN_ACCOUNT.to_owned()),
                model: self.model.clone(),
                at_ms: (self.clock)(),
                prompt_tokens: finish.usage.prompt_tokens,
                completion_tokens: finish.usage.completion_tokens,
                credits: finish.metering.credits,
                tokens_estimated: finish.metering.tokens_estimated,
            }),
            // The client received part of an answer: it is charged for that part, estimated.
            Outcome::Failed(_) | Outcome::Abandoned if ended.delivered_chars > 0 => {
                Some(UsageEntry {
                    request_id: self.charge_id.clone(),
                    key_id: self.key_id.clone(),
                    account: UNKNOWN_ACCOUNT.to_owned(),
                    model: self.model.clone(),
                    at_ms: (self.clock)(),
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: (ended.delivered_chars as u64).div_ceil(4),
                    credits: self.partial_credits,
                    tokens_estimated: true,
                })
            }
            // Nothing reached the client: nothing is charged.
            Outcome::Failed(_) | Outcome::Abandoned => None,
        };
        let usage = Arc::clone(&self.usage);
        let (key_id, request_id, charge_id, reserved) =
            (self.key_id, self.request_id, self.charge_id, self.reserved);
        let tasks = self.tasks.clone();
        self.tasks.spawn(async move {
            let result = retrying(&tasks, || async {
                match &entry {
                    Some(entry) => usage.record_usage(entry).await,
                    None if reserved => usage.release(&key_id, &charge_id).await,
                    None => Ok(()),
                }
            })
            .await;
            if let Err(error) = result {
                tracing::error!(
                    %error,
                    key_id,
                    request_id,
                    usage = ?entry,
                    "the request's usage is lost: it could not be recorded"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn down() -> StateError {
        StateError::Unavailable("connection refused".into())
    }

    /// An operation failing with `error` its first `failures` calls, counting them all.
    fn failing(
        failures: u32,
        error: fn() -> StateError,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> futures::future::Ready<Result<(), StateError>>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&calls);
        let op = move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            futures::future::ready(if n < failures { Err(error()) } else { Ok(()) })
        };
        (calls, op)
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_is_retried_with_backoff_until_the_store_is_back() {
        let started = tokio::time::Instant::now();
        let (calls, op) = failing(5, down);
        assert_eq!(retrying(&Shutdown::new(), op).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        // 100 + 200 + 400 + 800 + 1600 ms of waiting.
        assert_eq!(started.elapsed(), Duration::from_millis(3_100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_is_given_up_after_the_retry_window() {
        let started = tokio::time::Instant::now();
        let (calls, op) = failing(u32::MAX, down);
        assert_eq!(retrying(&Shutdown::new(), op).await, Err(down()));
        assert!(started.elapsed() <= RETRY_WINDOW, "{:?}", started.elapsed());
        assert!(
            started.elapsed() > RETRY_WINDOW - RETRY_MAX_WAIT * 2,
            "{:?}",
            started.elapsed()
        );
        // About one try every RETRY_MAX_WAIT once the backoff is at its cap.
        let tries = calls.load(Ordering::SeqCst);
        assert!((110..=130).contains(&tries), "{tries}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_the_store_refuses_for_good_is_not_retried() {
        let (calls, op) = failing(u32::MAX, || StateError::Invalid("bad entry".into()));
        assert!(matches!(
            retrying(&Shutdown::new(), op).await,
            Err(StateError::Invalid(_))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_retries_after_one_more_try() {
        let scope = Shutdown::new();
        let (calls, op) = failing(u32::MAX, down);
        let retries = retrying(&scope, op);
        let cancel = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            scope.cancel();
        };
        let started = tokio::time::Instant::now();
        let (result, ()) = tokio::join!(retries, cancel);
        assert_eq!(result, Err(down()));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let before_cancel = 1 + 5 + (30_000 - 3_100) / 5_000; // the backoff, then every 5 s
        assert_eq!(calls.load(Ordering::SeqCst), before_cancel + 1);
    }
}
