//! `drawbridge-engine`: Layer 2 as its own process. Config → logging → the engine app (see
//! [`drawbridge_engine::EngineApp`]) → serve its internal OpenAI API until a signal → drain.

use std::process::ExitCode;

use drawbridge_config::{Config, Role};
use drawbridge_engine::EngineApp;
use drawbridge_telemetry::{Signals, announce};

/// mimalloc: glibc's malloc contends between the runtime's threads under load (BENCHMARKS.md,
/// "Provider accounts").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::Engine, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let app = EngineApp::build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.engine.listen).await?;
    announce("engine", listener.local_addr()?);
    let grace = config.engine.shutdown_grace;
    drawbridge_http::serve_until_signal(
        listener,
        app.router(),
        app.shutdown(),
        &mut signals,
        grace,
    )
    .await?;
    app.drain(grace).await;
    tracing::info!("stopped");
    Ok(())
}
