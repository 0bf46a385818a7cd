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

#[cfg(test)]
mod tests {
    use super::*;
    use drawbridge_state::EmbeddedControl;

    const SETTINGS: ElectionSettings = ElectionSettings {
        ttl: Duration::from_secs(3),
        renew_interval: Duration::from_secs(1),
    };

    async fn leads(rx: &mut watch::Receiver<Option<Lease>>) -> Lease {
        loop {
            if let Some(lease) = rx.borrow_and_update().clone() {
                return lease;
            }
            rx.changed().await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_engine_leads_and_keeps_the_lease() {
        let store = Arc::new(EmbeddedControl::new());
        let (a_scope, b_scope) = (Shutdown::new(), Shutdown::new());
        let mut a = spawn(store.clone(), "a".into(), SETTINGS, &a_scope);
        let lease = leads(&mut a).await;
        let b = spawn(store.clone(), "b".into(), SETTINGS, &b_scope);
        // Many TTLs later, a still leads (it renews) and b follows.
        tokio::time::sleep(SETTINGS.ttl * 5).await;
        assert_eq!(a.borrow().clone(), Some(lease.clone()));
        assert_eq!(*b.borrow(), None);
        assert_eq!(store.holder(CONTROLLER_LEASE).await.unwrap(), Some(lease));
        a_scope.cancel();
        b_scope.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_leaders_lease_is_taken_within_one_ttl() {
        let store = Arc::new(EmbeddedControl::new());
        // A leader that renews no more (its process died): its lease runs out after one TTL.
        let dead = store
            .acquire(CONTROLLER_LEASE, "dead", SETTINGS.ttl)
            .await
            .unwrap()
            .unwrap();
        let started = Instant::now();
        let scope = Shutdown::new();
        let mut b = spawn(store.clone(), "b".into(), SETTINGS, &scope);
        let lease = leads(&mut b).await;
        let took = started.elapsed();
        assert!(
            took >= SETTINGS.ttl && took <= SETTINGS.ttl + SETTINGS.renew_interval / 4,
            "{took:?}"
        );
        assert_eq!(lease.holder, "b");
        assert!(lease.token > dead);
        scope.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_stops_releases_and_the_next_leads_at_once() {
        let store = Arc::new(EmbeddedControl::new());
        let (a_scope, b_scope) = (Shutdown::new(), Shutdown::new());
        let mut a = spawn(store.clone(), "a".into(), SETTINGS, &a_scope);
        let first = leads(&mut a).await;
        let mut b = spawn(store.clone(), "b".into(), SETTINGS, &b_scope);
        a_scope.cancel();
        a_scope.drain(Duration::from_secs(5)).await;
        let started = Instant::now();
        let second = leads(&mut b).await;
        assert!(started.elapsed() <= SETTINGS.renew_interval / 4);
        assert_eq!(second.holder, "b");
        assert!(second.token > first.token);
        b_scope.cancel();
    }
}
