//! `drawbridge-gateway`: Layer 1 as its own process, answering from a remote engine.
//! Config → logging → stores → serve the public and admin API until a signal → drain → close
//! the stores.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use drawbridge_config::{Config, Role};
use drawbridge_gateway::{GatewayDeps, HttpEngine};
use drawbridge_telemetry::{Metrics, Shutdown, Signals, announce};

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::Gateway, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let shutdown = Shutdown::new();
    let backend = Arc::new(HttpEngine::new(
        &config.gateway.engine_url,
        config.gateway.engine_key.clone(),
        Duration::from_secs(2),
    ));
    let (stores, store) = drawbridge_gateway::open_stores(&config, &shutdown).await?;
    let listener = drawbridge_http::bind_or_inherit(config.gateway.listen).await?;
    announce("gateway", listener.local_addr()?);
    let router = drawbridge_gateway::router(
        &config,
        GatewayDeps {
            backend,
            stores,
            metrics: Arc::new(Metrics::new()),
            tasks: shutdown.clone(),
            draining: shutdown.token().clone(),
        },
    );
    let grace = config.gateway.shutdown_grace;
    drawbridge_http::serve_until_signal(listener, router, &shutdown, &mut signals, grace).await?;
    // Usage of the last answers is written before the stores close.
    shutdown.drain(grace).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
