//! `drawbridge-engine`: Layer 2 as its own process. Config → logging → engine over the
//! configured workers → serve its internal OpenAI API until a signal → drain.

use std::process::ExitCode;
use std::sync::Arc;

use drawbridge_config::{Config, Role};
use drawbridge_engine::{Engine, EngineSettings, GrpcWorkerConn, WorkerConn};
use drawbridge_telemetry::{Shutdown, Signals, announce};

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::Engine, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let shutdown = Shutdown::new();
    let mut workers: Vec<Arc<dyn WorkerConn>> = Vec::new();
    for url in &config.engine.workers {
        workers.push(Arc::new(GrpcWorkerConn::new(
            url,
            config.engine.connect_timeout,
        )?));
    }
    let settings = EngineSettings::from_config(&config);
    let engine = Engine::new(workers, settings, shutdown.child());
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
    let grace = config.engine.shutdown_grace;
    drawbridge_http::serve_until_signal(listener, router, &shutdown, &mut signals, grace).await?;
    shutdown.drain(grace).await;
    tracing::info!("stopped");
    Ok(())
}
