//! The worker as one app, built from its config and two bound listeners: the account pools,
//! the registration and heartbeat (and, in `registry` mode, the assignment loop), the reload
//! watch, and the gRPC (engine) and HTTP (probes, people) servers, all in one shutdown tree.
//! The drain order is stated once, in [`WorkerApp::drain`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use drawbridge_config::{Config, Role};
use drawbridge_telemetry::{LiveConfig, Shutdown, announce};
use tokio::net::TcpListener;

use crate::Worker;
use crate::grpc::GrpcWorker;
use crate::registration::Registration;

/// How often the config file is checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// How long the servers get to finish their connections once the turns have drained.
const SERVERS_GRACE: Duration = Duration::from_secs(5);

pub struct WorkerApp {
    worker: Arc<Worker>,
    registration: Option<Registration>,
    /// The servers and the reload watch.
    servers: Shutdown,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown_grace: Duration,
}

impl WorkerApp {
    /// Start the pools, register (when `redis.url` is set), follow reloads of the config file
    /// and serve gRPC on `grpc` and HTTP on `http`.
    pub async fn build(
        config: &Config,
        grpc: TcpListener,
        http: TcpListener,
    ) -> anyhow::Result<WorkerApp> {
        let servers = Shutdown::new();
        let worker = Worker::start(config, Shutdown::new())?;
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let registration =
            Registration::valkey(config, Arc::clone(&worker), grpc_addr, http_addr).await?;
        announce("grpc", grpc_addr);
        announce("http", http_addr);

        // Accounts reload without a restart: SIGHUP, or the file changing.
        let live = LiveConfig::new(config.clone());
        if let Some(path) = config.source.clone() {
            live.watch(path, Role::Worker, RELOAD_POLL, &servers);
        }
        worker.follow_reloads(live, &servers);

        let service = GrpcWorker::new(Arc::clone(&worker));
        let stop = servers.clone();
        servers.spawn(async move {
            if let Err(error) = crate::grpc::serve(grpc, service, stop.cancelled()).await {
                tracing::error!(%error, "gRPC server failed");
            }
        });
        let stop = servers.clone();
        let router = crate::http::router(Arc::clone(&worker));
        servers.spawn(async move {
            let listener = http.tap_io(drawbridge_http::set_nodelay);
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                stop.cancelled().await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "HTTP server failed");
            }
        });
        Ok(WorkerApp {
            worker,
            registration,
            servers,
            grpc_addr,
            http_addr,
            shutdown_grace: config.worker.shutdown_grace,
        })
    }

    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Resolves when a `Drain` call (gRPC or HTTP) asks the worker to drain; whether it asked
    /// to stay up afterwards.
    pub async fn drain_requested(&self) -> bool {
        self.worker.drain_requested().await
    }

    /// Drain, in this order: leave the registry (engines stop routing here), let the turns in
    /// flight finish within `worker.shutdown_grace` and stop the agents, wait for `stay_up`
    /// (ready at once unless a `Drain` call asked to stay up), then stop the servers.
    pub async fn drain(self, stay_up: impl Future<Output = ()>) {
        tracing::info!("draining");
        if let Some(registration) = self.registration {
            registration.leave().await;
        }
        self.worker.drain(self.shutdown_grace).await;
        stay_up.await;
        self.servers.drain(SERVERS_GRACE).await;
        tracing::info!("stopped");
    }
}
