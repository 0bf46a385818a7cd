//! The order a process drains in, stated once. An app adds its steps as it builds its parts
//! (the parts that must stop first are added first), and `run` drains them one after the
//! other, each within what is left of one grace period. A step is a [`Shutdown`] scope to
//! drain, or an action (close a store, stop a pool) that runs after the scopes before it.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::Shutdown;

type Action = Box<dyn FnOnce(Duration) -> BoxFuture<'static, ()> + Send>;

enum Step {
    Scope(Shutdown),
    Action(Action),
}

/// Named drain steps, run in the order they were added.
#[derive(Default)]
pub struct DrainPlan {
    steps: Vec<(&'static str, Step)>,
}

impl DrainPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drain `scope` (cancel it, wait for its tasks) at this point of the order.
    pub fn scope(&mut self, name: &'static str, scope: Shutdown) -> &mut Self {
        self.steps.push((name, Step::Scope(scope)));
        self
    }

    /// Run `action` at this point of the order; it is given the time left of the grace period.
    pub fn then<F>(&mut self, name: &'static str, action: F) -> &mut Self
    where
        F: FnOnce(Duration) -> BoxFuture<'static, ()> + Send + 'static,
    {
        self.steps.push((name, Step::Action(Box::new(action))));
        self
    }

    /// Append every step of `other` after this plan's own.
    pub fn append(&mut self, other: DrainPlan) -> &mut Self {
        self.steps.extend(other.steps);
        self
    }

    /// The steps' names, in order (what an app's tests and docs can check).
    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|(name, _)| *name).collect()
    }

    /// Run every step in order within `grace` in all. A scope still busy when its share of the
    /// time is over is logged and left; the steps after it still run (a store is still closed,
    /// a pool still stopped), each given at least a moment.
    pub async fn run(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for (name, step) in self.steps {
            let left = deadline.saturating_duration_since(Instant::now());
            match step {
                Step::Scope(scope) => {
                    if !scope.drain(left).await {
                        tracing::warn!(step = name, "tasks still running at the drain deadline");
                    }
                }
                Step::Action(action) => action(left).await,
            }
            tracing::debug!(step = name, "drained");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::FutureExt as _;

    use super::*;

    fn recorder() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Clone) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let write = {
            let log = Arc::clone(&log);
            move |line: &str| log.lock().unwrap().push(line.to_owned())
        };
        (log, write)
    }

    #[tokio::test(start_paused = true)]
    async fn steps_run_in_the_order_they_were_added() {
        let (log, write) = recorder();
        let first = Shutdown::new();
        {
            let write = write.clone();
            let scope = first.clone();
            first.spawn(async move {
                scope.cancelled().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                write("first scope's task ended");
            });
        }
        let mut plan = DrainPlan::new();
        plan.scope("first", first);
        {
            let write = write.clone();
            plan.then("close", move |_| async move { write("closed") }.boxed());
        }
        assert_eq!(plan.names(), ["first", "close"]);
        plan.run(Duration::from_secs(10)).await;
        assert_eq!(*log.lock().unwrap(), ["first scope's task ended", "closed"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_scope_uses_the_grace_and_later_steps_still_run() {
        let (log, write) = recorder();
        let stuck = Shutdown::new();
        stuck.spawn(std::future::pending::<()>());
        let mut plan = DrainPlan::new();
        plan.scope("stuck", stuck).then("close", move |left| {
            async move { write(&format!("closed with {}s left", left.as_secs())) }.boxed()
        });
        let started = Instant::now();
        plan.run(Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(*log.lock().unwrap(), ["closed with 0s left"]);
    }

    #[tokio::test(start_paused = true)]
    async fn appended_plans_run_after_the_own_steps() {
        let (log, write) = recorder();
        let mut inner = DrainPlan::new();
        {
            let write = write.clone();
            inner.then("inner", move |_| async move { write("inner") }.boxed());
        }
        let mut outer = DrainPlan::new();
        outer.then("outer", move |_| async move { write("outer") }.boxed());
        outer.append(inner);
        assert_eq!(outer.names(), ["outer", "inner"]);
        outer.run(Duration::from_secs(1)).await;
        assert_eq!(*log.lock().unwrap(), ["outer", "inner"]);
    }
}
