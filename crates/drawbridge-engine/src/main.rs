//! `drawbridge-engine`: Layer 2 as its own process. Config → logging → engine over the
//! configured workers (or, with `redis.url`, the workers of the registry, with leader election
//! and the reconciler) → serve its internal OpenAI API until a signal → drain.

use std::process::ExitCode;
use std::sync::Arc;

use drawbridge_config::{Config, FleetDriverKind, Role};
use drawbridge_engine::fleet::{FleetDriver, StaticDriver};
use drawbridge_engine::process_driver::ProcessDriver;
use drawbridge_engine::reconciler::Reconciler;
use drawbridge_engine::{
    Engine, EngineSettings, EngineState, GrpcWorkerConn, WorkerConn, discovery, leader,
};
use drawbridge_state::{ValkeyRegistry, redact_url};
use drawbridge_telemetry::{LiveConfig, Shutdown, Signals, announce};

/// How often the config file is checked for changes.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    drawbridge_telemetry::run_binary(Role::Engine, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let shutdown = Shutdown::new();
    let settings = EngineSettings::from_config(&config);
    let mut store = None;
    let engine = match &config.redis {
        None => {
            let mut workers: Vec<Arc<dyn WorkerConn>> = Vec::new();
            for url in &config.engine.workers {
                workers.push(Arc::new(GrpcWorkerConn::new(
                    url,
                    config.engine.connect_timeout,
                )?));
            }
            let engine = Engine::new(workers, settings, EngineState::embedded(), shutdown.child());
            engine
                .apply_grants(&drawbridge_engine::grants(&config))
                .await;
            engine.refresh().await;
            engine
        }
        Some(redis) => {
            let valkey = Arc::new(ValkeyRegistry::connect(&redis.url).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach the registry at {}: {e}",
                    redact_url(&redis.url)
                )
            })?);
            tracing::info!(
                registry = valkey.target(),
                "discovering workers from the registry"
            );
            let listed = &config.engine.workers;
            if !listed.is_empty() && *listed != drawbridge_config::EngineConfig::default().workers {
                tracing::warn!("engine.workers is ignored: with redis.url, workers are discovered");
            }
            let engine = Engine::discovering(
                settings,
                EngineState::shared(valkey.clone()),
                shutdown.child(),
            );
            engine
                .apply_grants(&drawbridge_engine::grants(&config))
                .await;
            // The cluster's tasks have their own scope, stopped before the store connection
            // closes, so that the leader releases its lease.
            let cluster = Shutdown::new();
            discovery::spawn(
                Arc::clone(&engine),
                valkey.clone(),
                config.cluster.sync_interval,
                config.engine.connect_timeout,
                &cluster,
            );
            let mut processes = None;
            if config.cluster.reconcile {
                let leadership = leader::spawn(
                    valkey.clone(),
                    config.node.id.clone(),
                    leader::ElectionSettings {
                        ttl: config.cluster.leader_ttl,
                        renew_interval: config.cluster.leader_renew_interval,
                    },
                    &cluster,
                );
                let driver: Arc<dyn FleetDriver> = match config.cluster.fleet_driver {
                    FleetDriverKind::Static => Arc::new(StaticDriver),
                    FleetDriverKind::Process => {
                        let driver = Arc::new(ProcessDriver::new(
                            config.cluster.process.clone(),
                            &config.node.id,
                            &redis.url,
                        ));
                        processes = Some(Arc::clone(&driver));
                        driver
                    }
                };
                Reconciler {
                    registry: valkey.clone(),
                    accounts: valkey.clone(),
                    driver,
                    desired: Reconciler::desired_from(&config),
                    interval: config.cluster.reconcile_interval,
                    max_per_pod: config.cluster.max_accounts_per_worker as usize,
                }
                .spawn(leadership, &cluster);
            }
            store = Some((valkey, cluster, processes));
            engine
        }
    };
    engine.spawn_refresher(config.engine.refresh_interval);
    // Routing settings and credit grants reload without a restart: SIGHUP, or the file changing.
    let live = LiveConfig::new(config.clone());
    if let Some(path) = config.source.clone() {
        live.watch(path, Role::Engine, RELOAD_POLL, &shutdown);
    }
    engine.follow_reloads(live, &shutdown);
    if config.engine.channel_keys.is_empty() {
        tracing::warn!(
            "engine.channel_keys is empty: the engine API is open; keep it on a private address"
        );
    }

    let listener = tokio::net::TcpListener::bind(config.engine.listen).await?;
    announce("engine", listener.local_addr()?);
    let router = drawbridge_engine::router(Arc::clone(&engine), &config, shutdown.token().clone());
    let grace = config.engine.shutdown_grace;
    drawbridge_http::serve_until_signal(listener, router, &shutdown, &mut signals, grace).await?;
    let valkey = match store {
        Some((valkey, cluster, processes)) => {
            cluster.cancel();
            cluster.drain(std::time::Duration::from_secs(5)).await;
            if let Some(processes) = processes {
                processes.stop_all().await;
            }
            Some(valkey)
        }
        None => None,
    };
    // The engine's background writes (credit charges, breaker outcomes, cooldowns, affinity
    // bindings of the last answers) finish before the store connection closes.
    shutdown.drain(grace).await;
    if let Some(valkey) = valkey {
        valkey.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}
