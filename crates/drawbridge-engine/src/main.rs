//! `drawbridge-engine`: Layer 2 as its own process. Config → logging → engine over the
//! configured workers → serve its internal OpenAI API until a signal → drain.

use std::process::ExitCode;
use std::sync::Arc;

use drawbridge_config::Role;
use drawbridge_engine::{Engine, EngineSettings, GrpcWorkerConn, WorkerConn};
use drawbridge_telemetry::{Shutdown, Signals, announce, boot};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match boot(Role::Engine) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: drawbridge_config::Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let shutdown = Shutdown::new();
    let mut workers: Vec<Arc<dyn WorkerConn>> = Vec::new();
    for url in &config.engine.workers {
        workers.push(Arc::new(GrpcWorkerConn::new(
            url,
            config.engine.connect_timeout,
        )?));
    }
    let engine = Engine::new(
        workers,
        EngineSettings::from_config(&config.engine),
        shutdown.child(),
    );
    engine.refresh().await;
    engine.spawn_refresher(config.engine.refresh_interval);
    if config.engine.channel_keys.is_empty() {
        tracing::warn!(
            "engine.channel_keys is empty: the engine API is open; keep it on a private address"
        );
    }

    let listener = tokio::net::TcpListener::bind(config.engine.listen).await?;
    announce("engine", listener.local_addr()?);
    let router = drawbridge_engine::router(Arc::clone(&engine), &config, shutdown.token().clone());
    let stopping = shutdown.clone();
    let server =
        drawbridge_http::serve(listener, router, async move { stopping.cancelled().await });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = signals.recv() => {
            tracing::info!("draining");
            shutdown.cancel();
            if tokio::time::timeout(config.engine.shutdown_grace, server).await.is_err() {
                tracing::warn!("requests still in flight at the drain deadline");
            }
        }
    }
    shutdown.drain(config.engine.shutdown_grace).await;
    tracing::info!("stopped");
    Ok(())
}
