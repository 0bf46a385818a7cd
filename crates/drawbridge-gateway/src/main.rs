//! `drawbridge-gateway`: Layer 1 as its own process, answering from a remote engine.
//! Config → logging → serve the public API until a signal → drain.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use drawbridge_config::{Config, Role};
use drawbridge_gateway::HttpEngine;
use drawbridge_telemetry::{Shutdown, Signals, announce};

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
    let listener = drawbridge_http::bind_or_inherit(config.gateway.listen).await?;
    announce("gateway", listener.local_addr()?);
    let router = drawbridge_gateway::router(&config, backend, shutdown.token().clone());
    let grace = config.gateway.shutdown_grace;
    drawbridge_http::serve_until_signal(listener, router, &shutdown, &mut signals, grace).await?;
    tracing::info!("stopped");
    Ok(())
}
