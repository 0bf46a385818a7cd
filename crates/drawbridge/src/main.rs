//! `drawbridge`: the three layers in one process, the single-node default. The gateway's
//! public API answers from the engine directly, and the engine reaches the worker's pools by a
//! direct call instead of gRPC. Config → logging → worker → engine → serve until a signal →
//! drain.

use std::process::ExitCode;
use std::sync::Arc;

use drawbridge_config::{Config, Role};
use drawbridge_engine::{Engine, EngineSettings, EngineState, WorkerConn};
use drawbridge_gateway::{GatewayDeps, StoreHandle};
use drawbridge_telemetry::{LiveConfig, Shutdown, Signals, announce};
use drawbridge_types::ApiError;
use drawbridge_types::worker::{PromptInput, SlotsReport, WorkerEvent};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kiro_worker::Worker;

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

/// How often the config file is checked for changes.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::AllInOne, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let listener = drawbridge_http::bind_or_inherit(config.gateway.listen).await?;
    let shutdown = Shutdown::new();
    let worker = Worker::start(&config, Shutdown::new())?;
    // The gateway's records and the engine's credits: on ValKey with redis.url, else in the
    // data file, so keys, usage and balances survive a restart.
    let (stores, store) = drawbridge_gateway::open_stores(&config, &shutdown).await?;
    let state = match &store {
        StoreHandle::Valkey(valkey) => EngineState::shared(valkey.clone()),
        StoreHandle::Embedded(_) => EngineState {
            credits: store.credit_store(),
            ..EngineState::embedded()
        },
    };
    // The engine's own scope (its refresher, the credit charges it writes behind): drained
    // after the last answer and before the data file closes.
    let engine_scope = Shutdown::new();
    let engine = Engine::new(
        vec![Arc::new(LocalWorker(worker.clone()))],
        EngineSettings::from_config(&config),
        state,
        engine_scope.clone(),
    );
    engine
        .apply_grants(&drawbridge_engine::grants(&config))
        .await;
    engine.refresh().await;
    // The worker is in process: its state is cheap to read, so keep the view fresh.
    engine.spawn_refresher(std::time::Duration::from_millis(250));

    // The usage writes of answers that ended: drained before the stores close.
    let usage_writes = Shutdown::new();
    announce("gateway", listener.local_addr()?);
    let metrics = engine.metrics();
    // Keys, limits, the admin token, routing settings, credit grants and the accounts reload
    // without a restart: SIGHUP, or the file changing.
    let live = LiveConfig::new(config.clone());
    if let Some(path) = config.source.clone() {
        live.watch(path, Role::AllInOne, RELOAD_POLL, &shutdown);
    }
    engine.follow_reloads(live.clone(), &engine_scope);
    worker.follow_reloads(live.clone(), &shutdown);
    let router = drawbridge_gateway::router(
        &live,
        GatewayDeps {
            backend: engine,
            stores,
            metrics,
            tasks: usage_writes.clone(),
            draining: shutdown.token().clone(),
        },
    );
    let grace = config.gateway.shutdown_grace;
    drawbridge_http::serve_until_signal(listener, router, &shutdown, &mut signals, grace).await?;
    worker.drain(grace).await;
    usage_writes.drain(grace).await;
    engine_scope.drain(grace).await;
    store.close().await;
    shutdown.drain(grace).await;
    tracing::info!("stopped");
    Ok(())
}
