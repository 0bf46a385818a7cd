//! `kiro-worker`: Layer 3 as its own process. Config → logging → account pools → serve gRPC
//! (engine) and HTTP (probes) until a signal or a `Drain` call → drain → exit 0.

use std::process::ExitCode;

use axum::serve::ListenerExt as _;
use drawbridge_config::{Config, Role};
use drawbridge_telemetry::{LiveConfig, Shutdown, Signals, announce};
use kiro_worker::Worker;
use kiro_worker::grpc::GrpcWorker;
use kiro_worker::registration::Registration;

/// How often the config file is checked for changes.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::Worker, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let grpc_listener = tokio::net::TcpListener::bind(config.worker.grpc_listen).await?;
    let http_listener = tokio::net::TcpListener::bind(config.worker.http_listen).await?;
    let servers = Shutdown::new();
    let worker = Worker::start(&config, Shutdown::new())?;
    let (grpc_addr, http_addr) = (grpc_listener.local_addr()?, http_listener.local_addr()?);
    let registration = Registration::valkey(&config, worker.clone(), grpc_addr, http_addr).await?;
    announce("grpc", grpc_addr);
    announce("http", http_addr);

    // Accounts reload without a restart: SIGHUP, or the file changing.
    let live = LiveConfig::new(config.clone());
    if let Some(path) = config.source.clone() {
        live.watch(path, Role::Worker, RELOAD_POLL, &servers);
    }
    worker.follow_reloads(live, &servers);

    let grpc = GrpcWorker::new(worker.clone());
    let stop = servers.clone();
    servers.spawn(async move {
        if let Err(error) = kiro_worker::grpc::serve(grpc_listener, grpc, stop.cancelled()).await {
            tracing::error!(%error, "gRPC server failed");
        }
    });
    let stop = servers.clone();
    let router = kiro_worker::http::router(worker.clone());
    servers.spawn(async move {
        let listener = http_listener.tap_io(drawbridge_http::set_nodelay);
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            stop.cancelled().await;
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "HTTP server failed");
        }
    });

    let keep_running = tokio::select! {
        () = signals.recv() => false,
        keep_running = worker.drain_requested() => {
            tracing::info!(keep_running, "drain requested");
            keep_running
        }
    };
    tracing::info!("draining");
    if let Some(registration) = registration {
        registration.leave().await;
    }
    worker.drain(config.worker.shutdown_grace).await;
    if keep_running {
        tracing::info!("drained; staying up until a signal");
        signals.recv().await;
    }
    servers.drain(std::time::Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}
