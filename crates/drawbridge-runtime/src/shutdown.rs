//! One shutdown scope per process: a [`CancellationToken`] that says "stop admitting", and a
//! [`TaskTracker`] that every background task is spawned on, so a drain can wait for all of
//! them. A spawn outside the tracker is a bug (clippy bans `tokio::spawn`).

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A child scope: cancelled with its parent, or on its own.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            tracker: self.tracker.clone(),
        }
    }

    /// Spawn a task that a drain will wait for.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Start shutting down: everything watching the token stops admitting work.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has begun.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Begin shutdown and wait up to `grace` for every tracked task to finish. Returns whether
    /// they all did.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// SIGTERM and SIGINT listeners, installed once when the process starts and kept for its
/// whole life: a signal that arrives while no listener exists would be lost (tokio's handler
/// has replaced the default action), so never install them per wait.
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tracked_tasks() {
        let scope = Shutdown::new();
        let watcher = scope.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        scope.spawn(async move {
            watcher.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = tx.send(());
        });
        assert!(scope.drain(Duration::from_secs(5)).await);
        assert!(rx.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_the_grace_period() {
        let scope = Shutdown::new();
        scope.spawn(std::future::pending::<()>());
        assert!(!scope.drain(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn child_scopes_follow_their_parent() {
        let parent = Shutdown::new();
        let child = parent.child();
        parent.cancel();
        assert!(child.is_cancelled());
    }
}
