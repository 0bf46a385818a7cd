//! `drawbridge-gateway`: Layer 1 as its own process, answering from a remote engine.
//! Config → logging → build the gateway → serve the public and admin API until a signal →
//! drain ([`GatewayApp::drain`] states the order).

use std::process::ExitCode;
use std::sync::Arc;

use drawbridge_config::{Config, Role};
use drawbridge_gateway::{GatewayApp, HttpEngine};
use drawbridge_telemetry::{LiveConfig, Metrics, Shutdown, Signals, announce};

/// How often the config file is checked for changes.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// mimalloc: glibc's malloc contends between the runtime's threads under load (BENCHMARKS.md,
/// "Provider accounts").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::Gateway, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let process = Shutdown::new();
    // Keys, limits and the admin token reload without a restart: SIGHUP, or the file changing.
    let live = LiveConfig::new(config.clone());
    if let Some(path) = config.source.clone() {
        live.watch(path, Role::Gateway, RELOAD_POLL, &process);
    }
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(HttpEngine::from_config(&config).with_metrics(Arc::clone(&metrics)));
    let app = GatewayApp::build(&live, engine, metrics, &process).await?;
    let listener = drawbridge_http::bind_or_inherit(config.gateway.listen).await?;
    announce("gateway", listener.local_addr()?);
    let grace = config.gateway.shutdown_grace;
    drawbridge_http::serve_until_signal(listener, app.router(), &process, &mut signals, grace)
        .await?;
    app.drain(grace).await;
    tracing::info!("stopped");
    Ok(())
}
