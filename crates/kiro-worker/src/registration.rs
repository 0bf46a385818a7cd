//! The worker's entry in the registry: `pod:{id}` renewed every `heartbeat_interval` with a
//! TTL of `heartbeat_ttl`, in ValKey when `redis.url` is set (so engines discover it), or in
//! the embedded store inside `drawbridge`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drawbridge_config::Config;
use drawbridge_state::{EmbeddedRegistry, Registry, ValkeyRegistry, heartbeat_loop, redact_url};
use drawbridge_telemetry::Shutdown;

use crate::Worker;

/// How long the last "draining" heartbeat may take before the entry is removed anyway.
const LAST_WORD: Duration = Duration::from_secs(2);

pub struct Registration {
    registry: Arc<dyn Registry>,
    valkey: Option<Arc<ValkeyRegistry>>,
    scope: Shutdown,
    worker: Arc<Worker>,
    grpc_url: String,
    http_url: String,
    ttl: Duration,
}

/// `http://ADDR`, with a wildcard address replaced by loopback (others on this host can reach
/// it; set `node.address` for anything else).
fn url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(host, addr.port()))
}

impl Registration {
    /// Register in ValKey when `redis.url` is set; otherwise `None` (static discovery).
    pub async fn valkey(
        config: &Config,
        worker: Arc<Worker>,
        grpc: SocketAddr,
        http: SocketAddr,
    ) -> anyhow::Result<Option<Registration>> {
        let Some(redis) = &config.redis else {
            return Ok(None);
        };
        let valkey = Arc::new(ValkeyRegistry::connect(&redis.url).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the registry at {}: {e}",
                redact_url(&redis.url)
            )
        })?);
        tracing::info!(registry = redact_url(&redis.url), "registering in ValKey");
        let registry: Arc<dyn Registry> = valkey.clone();
        let registration = Self::start(
            config,
            registry,
            Some(valkey.clone()),
            worker.clone(),
            grpc,
            http,
        );
        if worker.is_assignable() {
            tracing::info!("serving the accounts the registry assigns to this worker");
            crate::assignment::follow(
                valkey,
                worker,
                config.worker.heartbeat_interval,
                &registration.scope,
            );
        }
        Ok(Some(registration))
    }

    /// Register in an in-process store (the single-node binary).
    pub fn embedded(
        config: &Config,
        registry: Arc<EmbeddedRegistry>,
        worker: Arc<Worker>,
        grpc: SocketAddr,
        http: SocketAddr,
    ) -> Registration {
        Self::start(config, registry, None, worker, grpc, http)
    }

    fn start(
        config: &Config,
        registry: Arc<dyn Registry>,
        valkey: Option<Arc<ValkeyRegistry>>,
        worker: Arc<Worker>,
        grpc: SocketAddr,
        http: SocketAddr,
    ) -> Registration {
        let grpc_url = config.node.address.clone().unwrap_or_else(|| url(grpc));
        let http_url = url(http);
        let scope = Shutdown::new();
        let (w, g, h) = (worker.clone(), grpc_url.clone(), http_url.clone());
        heartbeat_loop(
            registry.clone(),
            scope.clone(),
            config.worker.heartbeat_interval,
            config.worker.heartbeat_ttl,
            move || w.pod_record(&g, &h, false),
        );
        Registration {
            registry,
            valkey,
            scope,
            worker,
            grpc_url,
            http_url,
            ttl: config.worker.heartbeat_ttl,
        }
    }

    /// Leave the registry: say "draining" (engines stop routing here), then remove the entry.
    /// Called when a drain begins, before in-flight work finishes.
    pub async fn leave(self) {
        let last = self.worker.pod_record(&self.grpc_url, &self.http_url, true);
        if tokio::time::timeout(LAST_WORD, self.registry.heartbeat(&last, self.ttl))
            .await
            .is_err()
        {
            tracing::warn!("the registry did not take the draining heartbeat in time");
        }
        // Cancelling the heartbeat loop makes it deregister (bounded) and end.
        self.scope.drain(LAST_WORD * 2).await;
        if let Some(valkey) = self.valkey {
            valkey.close().await;
        }
    }
}
