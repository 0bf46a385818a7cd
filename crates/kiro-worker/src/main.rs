//! `kiro-worker`: Layer 3 as its own process. Config → logging → the app (account pools,
//! registration, gRPC and HTTP servers) → serve until a signal or a `Drain` call → drain → exit 0.

use std::process::ExitCode;

use drawbridge_config::{Config, Role};
use drawbridge_telemetry::Signals;
use kiro_worker::WorkerApp;

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::Worker, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let grpc = tokio::net::TcpListener::bind(config.worker.grpc_listen).await?;
    let http = tokio::net::TcpListener::bind(config.worker.http_listen).await?;
    let app = WorkerApp::build(&config, grpc, http).await?;

    let keep_running = tokio::select! {
        () = signals.recv() => false,
        keep_running = app.drain_requested() => {
            tracing::info!(keep_running, "drain requested");
            keep_running
        }
    };
    app.drain(async {
        if keep_running {
            tracing::info!("drained; staying up until a signal");
            signals.recv().await;
        }
    })
    .await;
    Ok(())
}
