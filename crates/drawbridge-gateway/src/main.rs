//! `drawbridge-gateway`: Layer 1 as its own process, answering from a remote engine.
//! Config → logging → stores → serve the public and admin API until a signal → drain → close
//! the stores.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use drawbridge_config::{Config, Role};
use drawbridge_gateway::{GatewayDeps, HttpEngine};
use drawbridge_telemetry::{LiveConfig, Metrics, Shutdown, Signals, announce};

/// How often the config file is checked for changes.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::Gateway, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let shutdown = Shutdown::new();
    // The usage writes of answers that ended: drained before the stores close.
    let usage_writes = Shutdown::new();
    let mut engine = HttpEngine::new(
        &config.gateway.engine_url,
        config.gateway.engine_key.clone(),
        Duration::from_secs(2),
    );
    if let Some(header) = drawbridge_http::session_header(&config.engine.affinity.header) {
        engine = engine.with_session_header(header);
    }
    let backend = Arc::new(engine);
    let (stores, store) = drawbridge_gateway::open_stores(&config, &shutdown).await?;
    let listener = drawbridge_http::bind_or_inherit(config.gateway.listen).await?;
    announce("gateway", listener.local_addr()?);
    // Keys, limits and the admin token reload without a restart: SIGHUP, or the file changing.
    let live = LiveConfig::new(config.clone());
    if let Some(path) = config.source.clone() {
        live.watch(path, Role::Gateway, RELOAD_POLL, &shutdown);
    }
    let router = drawbridge_gateway::router(
        &live,
        GatewayDeps {
            backend,
            stores,
            metrics: Arc::new(Metrics::new()),
            tasks: usage_writes.clone(),
            draining: shutdown.token().clone(),
        },
    );
    let grace = config.gateway.shutdown_grace;
    drawbridge_http::serve_until_signal(listener, router, &shutdown, &mut signals, grace).await?;
    // Usage of the last answers is written before the stores close.
    usage_writes.drain(grace).await;
    store.close().await;
    shutdown.drain(grace).await;
    tracing::info!("stopped");
    Ok(())
}
