//! `drawbridge-gateway`: Layer 1 as its own process, answering from a remote engine.
//! Config → logging → serve the public API until a signal → drain.

use std::process::ExitCode;
use std::sync::Arc;

use drawbridge_config::Role;
use drawbridge_gateway::HttpEngine;
use drawbridge_telemetry::{Shutdown, Signals, announce, boot};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match boot(Role::Gateway) {
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
    let backend = Arc::new(HttpEngine::new(
        &config.gateway.engine_url,
        config.gateway.engine_key.clone(),
        std::time::Duration::from_secs(2),
    ));
    let listener = tokio::net::TcpListener::bind(config.gateway.listen).await?;
    announce("gateway", listener.local_addr()?);
    let router = drawbridge_gateway::router(&config, backend, shutdown.token().clone());
    let stopping = shutdown.clone();
    let server =
        drawbridge_http::serve(listener, router, async move { stopping.cancelled().await });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = signals.recv() => {
            tracing::info!("draining");
            shutdown.cancel();
            if tokio::time::timeout(config.gateway.shutdown_grace, server).await.is_err() {
                tracing::warn!("requests still in flight at the drain deadline");
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}
