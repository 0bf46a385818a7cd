//! The gateway as one value built from its config: its router, and the drain that ends it.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_telemetry::{LiveConfig, Metrics, Shutdown};

use crate::{Backend, GatewayDeps, StoreHandle, Stores, open_stores, router};

/// The gateway of one process: serve [`GatewayApp::router`], and once the server has stopped,
/// [`GatewayApp::drain`].
pub struct GatewayApp {
    router: axum::Router,
    /// The usage writes of ended answers (its own scope: drained before the stores close).
    usage_writes: Shutdown,
    store: StoreHandle,
    /// The process's scope: the data file's writer, the config watch; `/health` says
    /// draining once it is cancelled.
    process: Shutdown,
}

impl GatewayApp {
    /// Open the stores of `live`'s config (ValKey or the data file, [`open_stores`]) and build
    /// the gateway on them, answering from `backend`. Its background work runs on `process`.
    pub async fn build(
        live: &LiveConfig,
        backend: Arc<dyn Backend>,
        process: &Shutdown,
    ) -> anyhow::Result<GatewayApp> {
        let (stores, store) = open_stores(&live.load(), process).await?;
        Ok(Self::on_stores(live, stores, store, backend, process))
    }

    /// The gateway on stores already open.
    pub fn on_stores(
        live: &LiveConfig,
        stores: Stores,
        store: StoreHandle,
        backend: Arc<dyn Backend>,
        process: &Shutdown,
    ) -> GatewayApp {
        let usage_writes = Shutdown::new();
        let router = router(
            live,
            GatewayDeps {
                backend,
                stores,
                metrics: Arc::new(Metrics::new()),
                tasks: usage_writes.clone(),
                draining: process.token().clone(),
            },
        );
        GatewayApp {
            router,
            usage_writes,
            store,
            process: process.clone(),
        }
    }

    /// The public API and the admin API.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// End the gateway once its server has stopped, each step within `grace`, in this order:
    /// the usage of the last answers is written; then the stores close (the data file is
    /// complete on disk); then the rest of the process's work ends (the config watch).
    pub async fn drain(self, grace: Duration) {
        self.usage_writes.drain(grace).await;
        self.store.close().await;
        self.process.drain(grace).await;
    }
}
