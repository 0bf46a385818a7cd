//! The engine as an app, built from its config: the engine over the configured workers (or,
//! with `redis.url`, over the workers of the registry, with leader election, the reconciler and
//! the fleet driver), its view refreshed every `engine.refresh_interval`, its settings and
//! grants following reloads, and its HTTP router. [`EngineApp::drain`] states the drain order
//! once.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_config::{Config, FleetDriverKind, Role};
use drawbridge_state::{ValkeyRegistry, redact_url};
use drawbridge_telemetry::{LiveConfig, Shutdown};

use crate::fleet::{FleetDriver, StaticDriver};
use crate::process_driver::ProcessDriver;
use crate::reconciler::Reconciler;
use crate::{
    Engine, EngineSettings, EngineState, GrpcWorkerConn, WorkerConn, discovery, grants, leader,
};

/// How often the config file is checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// How long the cluster's tasks (discovery, election, reconciler) get to stop.
const CLUSTER_GRACE: Duration = Duration::from_secs(5);

pub struct EngineApp {
    engine: Arc<Engine>,
    router: axum::Router,
    /// The process's scope: "draining" for the router, the engine's background writes, the
    /// refresher, the reload watch.
    scope: Shutdown,
    cluster: Option<Cluster>,
}

/// What a cluster-mode engine holds besides the engine: the store connection, the tasks that
/// follow the registry and the fleet, and the worker processes it started.
struct Cluster {
    valkey: Arc<ValkeyRegistry>,
    /// Its own scope: stopped after serving and before the store connection closes, so that
    /// the leader releases its lease.
    scope: Shutdown,
    processes: Option<Arc<ProcessDriver>>,
}

impl Engine {
    /// An engine over `workers` and `config`'s provider accounts on `config`'s settings: the
    /// configured grants applied, its view refreshed once and then every
    /// `engine.refresh_interval` until `scope` ends.
    pub async fn start(
        config: &Config,
        mut workers: Vec<Arc<dyn WorkerConn>>,
        state: EngineState,
        scope: Shutdown,
    ) -> Arc<Engine> {
        workers.extend(providers(config));
        let engine = Engine::new(workers, EngineSettings::from_config(config), state, scope);
        engine.apply_grants(&grants(config)).await;
        engine.refresh().await;
        engine.spawn_refresher(config.engine.refresh_interval);
        engine
    }
}

/// `config`'s provider accounts as one connection (none when it has none; a reload then
/// changes them, see [`crate::ProviderConn`]).
fn providers(config: &Config) -> Vec<Arc<dyn WorkerConn>> {
    crate::ProviderConn::from_config(config)
        .map(|conn| Arc::new(conn) as Arc<dyn WorkerConn>)
        .into_iter()
        .collect()
}

impl EngineApp {
    /// Build the engine app from `config`: connect to the registry (with `redis.url`) and start
    /// every background task. Serve [`EngineApp::router`] until [`EngineApp::shutdown`] is
    /// cancelled, then [`EngineApp::drain`].
    pub async fn build(config: &Config) -> anyhow::Result<EngineApp> {
        let scope = Shutdown::new();
        let (engine, cluster) = match &config.redis {
            None => {
                let mut workers: Vec<Arc<dyn WorkerConn>> = Vec::new();
                for url in &config.engine.workers {
                    workers.push(Arc::new(GrpcWorkerConn::new(
                        url,
                        config.engine.connect_timeout,
                    )?));
                }
                let engine =
                    Engine::start(config, workers, EngineState::embedded(), scope.child()).await;
                (engine, None)
            }
            Some(redis) => {
                let cluster = Cluster::connect(config, &redis.url).await?;
                // Provider accounts are this engine's own; workers join as they are discovered.
                let engine = Engine::discovering(
                    providers(config),
                    EngineSettings::from_config(config),
                    EngineState::shared(cluster.valkey.clone()),
                    scope.child(),
                );
                engine.apply_grants(&grants(config)).await;
                let cluster = cluster.spawn(config, &redis.url, &engine);
                engine.spawn_refresher(config.engine.refresh_interval);
                (engine, Some(cluster))
            }
        };
        // Routing settings and credit grants reload without a restart: SIGHUP, or the file
        // changing.
        let live = LiveConfig::new(config.clone());
        if let Some(path) = config.source.clone() {
            live.watch(path, Role::Engine, RELOAD_POLL, &scope);
        }
        engine.follow_reloads(live, &scope);
        if config.engine.channel_keys.is_empty() {
            tracing::warn!(
                "engine.channel_keys is empty: the engine API is open; keep it on a private address"
            );
        }
        let router = crate::router(Arc::clone(&engine), config, scope.token().clone());
        Ok(EngineApp {
            engine,
            router,
            scope,
            cluster,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The engine's internal API.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// The scope whose cancellation means "stop admitting" (health says draining).
    pub fn shutdown(&self) -> &Shutdown {
        &self.scope
    }

    /// Stop everything, in this order: the cluster's tasks (the leader releases its lease)
    /// and the worker processes this engine started; then, within `grace`, the engine's
    /// background writes (credit charges, breaker outcomes, cooldowns, affinity bindings of
    /// the last answers); then the store connection.
    pub async fn drain(self, grace: Duration) {
        self.scope.cancel();
        let valkey = match self.cluster {
            Some(cluster) => {
                cluster.scope.cancel();
                cluster.scope.drain(CLUSTER_GRACE).await;
                if let Some(processes) = cluster.processes {
                    processes.stop_all().await;
                }
                Some(cluster.valkey)
            }
            None => None,
        };
        self.scope.drain(grace).await;
        if let Some(valkey) = valkey {
            valkey.close().await;
        }
    }
}

impl Cluster {
    async fn connect(config: &Config, url: &str) -> anyhow::Result<Cluster> {
        let valkey = Arc::new(ValkeyRegistry::connect(url).await.map_err(|e| {
            anyhow::anyhow!("cannot reach the registry at {}: {e}", redact_url(url))
        })?);
        tracing::info!(
            registry = valkey.target(),
            "discovering workers from the registry"
        );
        let listed = &config.engine.workers;
        if !listed.is_empty() && *listed != drawbridge_config::EngineConfig::default().workers {
            tracing::warn!("engine.workers is ignored: with redis.url, workers are discovered");
        }
        Ok(Cluster {
            valkey,
            scope: Shutdown::new(),
            processes: None,
        })
    }

    /// Start discovery and, with `cluster.reconcile`, leader election, the reconciler and
    /// the fleet driver.
    fn spawn(mut self, config: &Config, url: &str, engine: &Arc<Engine>) -> Cluster {
        discovery::spawn(
            Arc::clone(engine),
            self.valkey.clone(),
            config.cluster.sync_interval,
            config.engine.connect_timeout,
            &self.scope,
        );
        if !config.cluster.reconcile {
            return self;
        }
        let leadership = leader::spawn(
            self.valkey.clone(),
            config.node.id.clone(),
            leader::ElectionSettings {
                ttl: config.cluster.leader_ttl,
                renew_interval: config.cluster.leader_renew_interval,
            },
            &self.scope,
        );
        let driver: Arc<dyn FleetDriver> = match config.cluster.fleet_driver {
            FleetDriverKind::Static => Arc::new(StaticDriver),
            FleetDriverKind::Process => {
                let driver = Arc::new(ProcessDriver::new(
                    config.cluster.process.clone(),
                    &config.node.id,
                    url,
                ));
                self.processes = Some(Arc::clone(&driver));
                driver
            }
        };
        Reconciler {
            registry: self.valkey.clone(),
            accounts: self.valkey.clone(),
            driver,
            desired: Reconciler::desired_from(config),
            interval: config.cluster.reconcile_interval,
            max_per_pod: config.cluster.max_accounts_per_worker as usize,
        }
        .spawn(leadership, &self.scope);
        self
    }
}
