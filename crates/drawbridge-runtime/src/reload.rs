//! Hot reload: the configuration a process runs with, swapped whole when its file changes or
//! on SIGHUP. Readers [`LiveConfig::load`] it lock-free wherever they need it (per request);
//! components that must act on a change (the worker starting and stopping account pools)
//! [`LiveConfig::subscribe`]. A file that fails to load or validate changes nothing: the old
//! configuration stays, and the log says why, naming the key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use drawbridge_config::{Config, ConfigError, Role};
use tokio::sync::watch;

use crate::Shutdown;

/// The running configuration. Cheap to clone; every clone sees the same swaps.
#[derive(Clone)]
pub struct LiveConfig {
    current: Arc<ArcSwap<Config>>,
    generation: Arc<watch::Sender<u64>>,
}

/// What a reload did.
#[derive(Debug, PartialEq)]
pub enum Reloaded {
    /// The file says what is already running.
    Unchanged,
    /// The new configuration is live. Keys that only take effect at a restart (listen
    /// addresses, `node`, `redis`) are named if they changed.
    Applied { restart_needed: Vec<&'static str> },
}

impl LiveConfig {
    pub fn new(config: Config) -> Self {
        LiveConfig {
            current: Arc::new(ArcSwap::from_pointee(config)),
            generation: Arc::new(watch::Sender::new(0)),
        }
    }

    /// The configuration now (lock-free; hold the `Arc` for as long as one request needs a
    /// consistent view).
    pub fn load(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Changes: the receiver wakes after each applied reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Call `apply` with the new config after every reload, until `scope` ends.
    pub fn follow<F, Fut>(&self, scope: &Shutdown, mut apply: F)
    where
        F: FnMut(Arc<Config>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let live = self.clone();
        let stop = scope.clone();
        let mut changes = self.subscribe();
        scope.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        apply(live.load()).await;
                    }
                }
            }
        });
    }

    /// Load `path` for `role` and, if it is valid and different, make it live.
    pub fn reload_from(&self, path: &Path, role: Role) -> Result<Reloaded, ConfigError> {
        let next = Config::load(path)?;
        next.validate(role)?;
        self.apply(next)
    }

    /// Make `next` live (already validated).
    pub fn apply(&self, next: Config) -> Result<Reloaded, ConfigError> {
        let previous = self.load();
        let same_settings = Config {
            source: next.source.clone(),
            ..(*previous).clone()
        } == next;
        if same_settings {
            return Ok(Reloaded::Unchanged);
        }
        let mut restart_needed = Vec::new();
        if previous.node != next.node {
            restart_needed.push("node");
        }
        if previous.redis != next.redis {
            restart_needed.push("redis");
        }
        if previous.gateway.listen != next.gateway.listen
            || previous.engine.listen != next.engine.listen
            || previous.worker.http_listen != next.worker.http_listen
            || previous.worker.grpc_listen != next.worker.grpc_listen
        {
            restart_needed.push("listen addresses");
        }
        // Read once, when the HTTP routers are built.
        if previous.gateway.max_body_bytes != next.gateway.max_body_bytes {
            restart_needed.push("gateway.max_body_bytes");
        }
        if previous.engine.affinity.header != next.engine.affinity.header {
            restart_needed.push("engine.affinity.header");
        }
        self.current.store(Arc::new(next));
        self.generation.send_modify(|g| *g += 1);
        Ok(Reloaded::Applied { restart_needed })
    }

    /// Reload on SIGHUP and whenever the file's content changes (checked every `interval`),
    /// until `shutdown`. Each outcome is logged.
    pub fn watch(&self, path: PathBuf, role: Role, interval: Duration, shutdown: &Shutdown) {
        let live = self.clone();
        let stop = shutdown.clone();
        // Listen now, not in the task: a SIGHUP before the listener exists would kill the
        // process (the default action).
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        };
        shutdown.spawn(async move {
            let mut seen = std::fs::read(&path).ok();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    () = stop.cancelled() => break,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => "SIGHUP",
                    _ = tick.tick() => {
                        let now = std::fs::read(&path).ok();
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "file changed"
                    }
                };
                match live.reload_from(&path, role) {
                    Ok(Reloaded::Unchanged) => {
                        tracing::info!(reason = why, "configuration reloaded: no change");
                    }
                    Ok(Reloaded::Applied { restart_needed }) => {
                        tracing::info!(reason = why, "configuration reloaded");
                        if !restart_needed.is_empty() {
                            tracing::warn!(
                                keys = restart_needed.join(", "),
                                "these changes take effect at the next restart"
                            );
                        }
                    }
                    Err(error) => tracing::error!(
                        reason = why,
                        %error,
                        "configuration not reloaded; keeping the running one"
                    ),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, yaml: &str) -> PathBuf {
        let path = dir.join("drawbridge.yaml");
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    const BASE: &str = "accounts:\n  - id: a\n    pool_size: 2\n";

    fn live(yaml: &str) -> LiveConfig {
        LiveConfig::new(Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn a_valid_change_is_swapped_in_and_announced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let live = live(BASE);
        let changes = live.subscribe();
        let path = write(
            dir.path(),
            "accounts:\n  - id: a\n    pool_size: 5\n  - id: b\n",
        );
        let outcome = live
            .reload_from(&path, Role::Worker)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            outcome,
            Reloaded::Applied {
                restart_needed: vec![]
            }
        );
        assert!(changes.has_changed().unwrap_or(false));
        let now = live.load();
        assert_eq!(now.accounts.len(), 2);
        assert_eq!(now.accounts[0].pool_size, 5);
    }

    #[test]
    fn a_bad_file_keeps_the_running_config_and_names_the_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let live = live(BASE);
        let changes = live.subscribe();
        let path = write(dir.path(), "accounts:\n  - id: a\n    pool_size: 0\n");
        let error = live
            .reload_from(&path, Role::Worker)
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("accounts[0].pool_size")),
            "{error:?}"
        );
        assert_eq!(live.load().accounts[0].pool_size, 2);
        assert!(!changes.has_changed().unwrap_or(true));
    }

    #[test]
    fn the_same_file_again_changes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let live = live(BASE);
        let path = write(dir.path(), BASE);
        assert_eq!(
            live.reload_from(&path, Role::Worker)
                .unwrap_or_else(|e| panic!("{e}")),
            Reloaded::Unchanged
        );
    }

    #[test]
    fn restart_only_keys_are_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let live = live(BASE);
        let path = write(
            dir.path(),
            &format!(
                "{BASE}node: {{ id: other }}\ngateway: {{ max_body_bytes: 1000 }}\n\
                 engine: {{ affinity: {{ header: x-conversation }} }}\n"
            ),
        );
        assert_eq!(
            live.reload_from(&path, Role::Worker)
                .unwrap_or_else(|e| panic!("{e}")),
            Reloaded::Applied {
                restart_needed: vec!["node", "gateway.max_body_bytes", "engine.affinity.header"]
            }
        );
    }
}
