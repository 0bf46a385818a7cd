//! The gateway as one value built from its config: its router, and the drain that ends it.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_telemetry::{DrainPlan, LiveConfig, Metrics, Shutdown};
use futures::FutureExt as _;

use crate::{Backend, GatewayDeps, Stores, router};

/// The gateway of one process: serve [`GatewayApp::router`], and once the server has stopped,
/// [`GatewayApp::drain`].
pub struct GatewayApp {
    router: axum::Router,
    /// The usage writes of ended answers (its own scope: drained before the stores close).
    usage_writes: Shutdown,
    /// The stores it opened itself, closed by its drain (none when it was given them).
    own_stores: Option<drawbridge_state::Stores>,
    /// The process's scope: the data file's writer, the config watch; `/health` says
    /// draining once it is cancelled.
    process: Shutdown,
}

impl GatewayApp {
    /// Open the stores of `live`'s config (ValKey or the data file, [`crate::backing`]) and
    /// build the gateway on them, answering from `backend` and counting in `metrics` (which
    /// the backend may count in too). Its background work runs on `process`.
    pub async fn build(
        live: &LiveConfig,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
        process: &Shutdown,
    ) -> anyhow::Result<GatewayApp> {
        let stores = drawbridge_state::Stores::open(&crate::backing(&live.load()), process).await?;
        let mut app = Self::on_stores(live, &stores, backend, metrics, process);
        app.own_stores = Some(stores);
        Ok(app)
    }

    /// The gateway on stores the process opened (and closes: [`GatewayApp::drain_plan`] leaves
    /// them open), counting in `metrics`.
    pub fn on_stores(
        live: &LiveConfig,
        stores: &drawbridge_state::Stores,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
        process: &Shutdown,
    ) -> GatewayApp {
        let usage_writes = Shutdown::new();
        let router = router(
            live,
            GatewayDeps {
                backend,
                stores: Stores::from_state(stores),
                metrics,
                tasks: usage_writes.clone(),
                draining: process.token().clone(),
            },
        );
        GatewayApp {
            router,
            usage_writes,
            own_stores: None,
            process: process.clone(),
        }
    }

    /// The public API and the admin API.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// How the gateway ends once its server has stopped: the usage of the last answers is
    /// written; then the stores it opened close (the data file is complete on disk). A process
    /// that composes it appends its own steps around these.
    pub fn drain_plan(self) -> DrainPlan {
        let mut plan = DrainPlan::new();
        plan.scope("usage writes", self.usage_writes);
        if let Some(stores) = self.own_stores {
            plan.then("stores", move |_| {
                async move { stores.close().await }.boxed()
            });
        }
        plan
    }

    /// [`GatewayApp::drain_plan`], then the rest of the process's work (the config watch),
    /// all within `grace`.
    pub async fn drain(self, grace: Duration) {
        let process = self.process.clone();
        let mut plan = self.drain_plan();
        plan.scope("process", process);
        plan.run(grace).await;
    }
}
