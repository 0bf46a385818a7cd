//! The single node: the worker, the engine and the gateway of this crate's layers composed in
//! one process. The gateway answers from the engine directly, the engine reaches the worker's
//! pools by a direct call ([`LocalWorker`]) instead of gRPC, and one set of stores (ValKey with
//! `redis.url`, else the data file) holds the gateway's records and the engine's credits.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_config::{Config, Role};
use drawbridge_engine::{Engine, EngineState, WorkerConn};
use drawbridge_gateway::GatewayApp;
use drawbridge_telemetry::{DrainPlan, LiveConfig, Shutdown};
use drawbridge_types::ApiError;
use drawbridge_types::worker::{PromptInput, SlotsReport, WorkerEvent};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kiro_worker::Worker;

/// How often the config file is checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// The in-process worker, reached without a network hop.
struct LocalWorker(Arc<Worker>);

impl WorkerConn for LocalWorker {
    fn name(&self) -> &str {
        "local"
    }

    fn prompt(&self, input: PromptInput) -> BoxStream<'static, WorkerEvent> {
        tokio_stream::wrappers::ReceiverStream::new(self.0.prompt(input)).boxed()
    }

    fn slots(&self) -> BoxFuture<'_, Result<SlotsReport, ApiError>> {
        futures::future::ready(Ok(self.0.slots())).boxed()
    }
}

/// The three layers of one process, and the order they stop in.
pub struct SingleNode {
    router: axum::Router,
    process: Shutdown,
    drain: DrainPlan,
}

impl SingleNode {
    pub async fn build(config: &Config) -> anyhow::Result<SingleNode> {
        // The process's scope: the data file's writer, the config watch, the reload followers.
        let process = Shutdown::new();
        let stores =
            drawbridge_state::Stores::open(&drawbridge_gateway::backing(config), &process).await?;
        // Keys, limits, the admin token, routing settings, credit grants and the accounts
        // reload without a restart: SIGHUP, or the file changing.
        let live = LiveConfig::new(config.clone());
        if let Some(path) = config.source.clone() {
            live.watch(path, Role::AllInOne, RELOAD_POLL, &process);
        }

        let worker = Worker::start(config, Shutdown::new())?;
        worker.follow_reloads(live.clone(), &process);
        // The engine's own scope (its refresher, the credit charges it writes behind).
        let engine_scope = Shutdown::new();
        let local: Arc<dyn WorkerConn> = Arc::new(LocalWorker(Arc::clone(&worker)));
        let engine = Engine::start(
            config,
            vec![local],
            EngineState::from(&stores),
            engine_scope.clone(),
        )
        .await;
        engine.follow_reloads(live.clone(), &engine_scope);

        let metrics = engine.metrics();
        let gateway = GatewayApp::on_stores(&live, &stores, engine, metrics, &process);
        let router = gateway.router();

        // Once the server has stopped: the turns in flight finish and the agents stop; the
        // usage of the last answers and the engine's last credit charges are written; then
        // the stores close; then the rest of the process ends.
        let mut drain = DrainPlan::new();
        drain.then("worker", move |grace| {
            async move { worker.drain(grace).await }.boxed()
        });
        drain.append(gateway.drain_plan());
        drain.scope("engine", engine_scope);
        drain.then("stores", move |_| {
            async move { stores.close().await }.boxed()
        });
        drain.scope("process", process.clone());
        Ok(SingleNode {
            router,
            process,
            drain,
        })
    }

    /// The public API and the admin API.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Cancelled when shutdown begins: `/health` then says `draining`.
    pub fn shutdown(&self) -> &Shutdown {
        &self.process
    }

    /// Stop, in the order [`SingleNode::build`] states, within `grace`.
    pub async fn drain(self, grace: Duration) {
        self.drain.run(grace).await;
    }
}
