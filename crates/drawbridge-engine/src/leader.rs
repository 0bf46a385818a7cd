//! Leader election among the engines: the fenced lease `leader:controller` (see
//! `drawbridge_state::LeaseStore`). The holder renews it every `cluster.leader_renew_interval`;
//! the others try to take it four times as often, so one of them leads at most one TTL plus a
//! quarter renew interval after the leader's last renewal. A leader that cannot renew (store
//! unreachable) steps down once a TTL has passed since its last successful renewal: by then the
//! lease may be someone else's. On shutdown the leader releases the lease, so a successor takes
//! over at once.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_state::{CONTROLLER_LEASE, Lease, LeaseStore};
use drawbridge_telemetry::Shutdown;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long the release at shutdown may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct ElectionSettings {
    pub ttl: Duration,
    pub renew_interval: Duration,
}

/// Run for the lease as `holder` until `shutdown`. The receiver holds the lease while this
/// engine leads, `None` otherwise.
pub fn spawn(
    store: Arc<dyn LeaseStore>,
    holder: String,
    settings: ElectionSettings,
    shutdown: &Shutdown,
) -> watch::Receiver<Option<Lease>> {
    let (tx, rx) = watch::channel(None);
    let scope = shutdown.clone();
    shutdown.spawn(async move {
        let mut held: Option<(Lease, Instant)> = None;
        let mut warned = false;
        loop {
            let wait = if held.is_some() {
                settings.renew_interval
            } else {
                (settings.renew_interval / 4).max(Duration::from_millis(10))
            };
            match held.take() {
                Some((lease, last_ok)) => {
                    held = match store.renew(CONTROLLER_LEASE, &lease, settings.ttl).await {
                        Ok(true) => Some((lease, Instant::now())),
                        Ok(false) => {
                            tracing::warn!(holder, token = lease.token, "leadership lost");
                            None
                        }
                        Err(error) if last_ok.elapsed() >= settings.ttl => {
                            tracing::warn!(
                                holder,
                                token = lease.token,
                                %error,
                                "leadership lost: the lease could not be renewed within its TTL"
                            );
                            None
                        }
                        Err(error) => {
                            tracing::warn!(%error, "lease renewal failed; retrying");
                            Some((lease, last_ok))
                        }
                    };
                }
                None => match store.acquire(CONTROLLER_LEASE, &holder, settings.ttl).await {
                    Ok(Some(token)) => {
                        tracing::info!(holder, token, "leadership acquired");
                        warned = false;
                        held = Some((
                            Lease {
                                holder: holder.clone(),
                                token,
                            },
                            Instant::now(),
                        ));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        if !warned {
                            tracing::warn!(%error, "cannot run for leadership; retrying");
                            warned = true;
                        }
                    }
                },
            }
            tx.send_if_modified(|current| {
                let now = held.as_ref().map(|(lease, _)| lease.clone());
                if *current == now {
                    false
                } else {
                    *current = now;
                    true
                }
            });
            tokio::select! {
                () = scope.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        tx.send_replace(None);
        if let Some((lease, _)) = held {
            match tokio::time::timeout(RELEASE_TIMEOUT, store.release(CONTROLLER_LEASE, &lease))
                .await
            {
                Ok(Ok(true)) => tracing::info!(holder, token = lease.token, "leadership released"),
                _ => tracing::warn!(holder, "could not release the lease; it will expire"),
            }
        }
    });
    rx
}
