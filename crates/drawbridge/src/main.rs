//! `drawbridge`: the three layers in one process, the single-node default ([`node`] composes
//! them). Config → logging → build → serve until a signal → drain.

mod node;

use std::process::ExitCode;

use drawbridge_config::{Config, Role};
use drawbridge_telemetry::{Signals, announce};

/// mimalloc: glibc's malloc contends between the runtime's threads under load (BENCHMARKS.md,
/// "Provider accounts").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::AllInOne, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let listener = drawbridge_http::bind_or_inherit(config.gateway.listen).await?;
    let node = node::SingleNode::build(&config).await?;
    announce("gateway", listener.local_addr()?);
    let grace = config.gateway.shutdown_grace;
    drawbridge_http::serve_until_signal(
        listener,
        node.router(),
        node.shutdown(),
        &mut signals,
        grace,
    )
    .await?;
    node.drain(grace).await;
    tracing::info!("stopped");
    Ok(())
}
