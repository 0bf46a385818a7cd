//! `cluster`: discovery, leader election, reconciliation and the fleet driver.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Role};

/// Several nodes on one ValKey (`redis.url`): how engines discover workers, elect the leader
/// that reconciles, and how workers learn which accounts to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Engine: re-read the whole registry this often, besides following its topology events.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Engine: take part in the election of the controller and, as leader, reconcile.
    pub reconcile: bool,
    /// Engine: the leader's lease (`leader:controller`) lives this long without renewal …
    #[serde(with = "humantime_serde")]
    pub leader_ttl: Duration,
    /// … and is renewed this often (a follower tries to take it as often).
    #[serde(with = "humantime_serde")]
    pub leader_renew_interval: Duration,
    /// Engine (leader): compare desired and actual accounts this often (and on topology events).
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Engine (leader): how workers come to exist. `static`: someone else starts them; the
    /// reconciler only assigns accounts. `process`: the leader starts local `kiro-worker`
    /// processes until `process.workers` workers are registered.
    pub fleet_driver: FleetDriverKind,
    /// The `process` fleet driver's settings.
    pub process: ProcessDriverConfig,
    /// Engine (leader): accounts one worker is assigned at most (0: no limit).
    pub max_accounts_per_worker: u32,
    /// Worker: serve the accounts of its config (`config`), or those the leader assigns it in
    /// the registry (`registry`, needs `redis.url`; the agent settings still come from
    /// `accounts`).
    pub assignment: AssignmentMode,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            sync_interval: Duration::from_secs(60),
            reconcile: true,
            leader_ttl: Duration::from_secs(60),
            leader_renew_interval: Duration::from_secs(20),
            reconcile_interval: Duration::from_secs(30),
            fleet_driver: FleetDriverKind::Static,
            process: ProcessDriverConfig::default(),
            max_accounts_per_worker: 0,
            assignment: AssignmentMode::Config,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetDriverKind {
    Static,
    Process,
}

/// `cluster.fleet_driver: process`: local `kiro-worker` processes started by the leader. Each
/// runs with `config` and, as overrides, its own `node.id` (`<engine id>-worker-<n>`), loopback
/// ports chosen by the system, `worker.data_dir` under `data_dir`, `cluster.assignment:
/// registry` and this engine's `redis.url`; its log goes to `<data_dir>/<id>.log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessDriverConfig {
    /// How many workers the cluster should have (registered ones count, whoever started them).
    pub workers: u32,
    /// The worker binary: a path, or a name looked up beside the engine's binary, then on PATH.
    pub command: String,
    /// The config file the workers read (their `accounts` give the agents' settings).
    pub config: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// How long a stopped worker may take to drain.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ProcessDriverConfig {
    fn default() -> Self {
        ProcessDriverConfig {
            workers: 1,
            command: "kiro-worker".to_owned(),
            config: None,
            data_dir: PathBuf::from(".drawbridge/workers"),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentMode {
    Config,
    Registry,
}

impl ClusterConfig {
    /// For the binary `role`; `has_redis`: whether `redis.url` is set.
    pub(crate) fn validate(&self, role: Role, has_redis: bool) -> Result<(), ConfigError> {
        for (key, value) in [
            ("cluster.sync_interval", self.sync_interval),
            ("cluster.leader_renew_interval", self.leader_renew_interval),
            ("cluster.reconcile_interval", self.reconcile_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        if self.leader_ttl <= self.leader_renew_interval {
            return Err(ConfigError::invalid(
                "cluster.leader_ttl",
                "must be longer than cluster.leader_renew_interval (e.g. 3×)",
            ));
        }
        if role == Role::Worker && self.assignment == AssignmentMode::Registry && !has_redis {
            return Err(ConfigError::invalid(
                "cluster.assignment",
                "`registry` needs redis.url (the assignments are in the registry)",
            ));
        }
        if role == Role::Engine && self.fleet_driver == FleetDriverKind::Process {
            if !has_redis {
                return Err(ConfigError::invalid(
                    "cluster.fleet_driver",
                    "`process` needs redis.url (its workers register there)",
                ));
            }
            self.process.validate()?;
        }
        if role == Role::AllInOne && self.assignment == AssignmentMode::Registry {
            return Err(ConfigError::invalid(
                "cluster.assignment",
                "`registry` is for separate kiro-worker processes; drawbridge serves its accounts",
            ));
        }
        Ok(())
    }
}

impl ProcessDriverConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.config.is_none() {
            return Err(ConfigError::invalid(
                "cluster.process.config",
                "name the config file the started workers read",
            ));
        }
        if self.workers == 0 || self.workers > 64 {
            return Err(ConfigError::invalid(
                "cluster.process.workers",
                "must be between 1 and 64",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::tests::GOOD;

    #[test]
    fn cluster_settings_are_checked() {
        let config = Config::from_yaml(&format!(
            "{GOOD}cluster: {{ leader_ttl: 10s, leader_renew_interval: 10s }}\n"
        ))
        .unwrap();
        let err = config.validate(Role::Engine).unwrap_err().to_string();
        assert!(err.contains("cluster.leader_ttl"), "{err}");
        let config =
            Config::from_yaml(&format!("{GOOD}cluster: {{ assignment: registry }}\n")).unwrap();
        let err = config.validate(Role::Worker).unwrap_err().to_string();
        assert!(err.contains("cluster.assignment"), "{err}");
        let config = Config::from_yaml(&format!(
            "{GOOD}cluster: {{ assignment: registry }}\nredis: {{ url: \"redis://h:6379\" }}\n"
        ))
        .unwrap();
        config.validate(Role::Worker).unwrap();
        assert_eq!(config.cluster.sync_interval, Duration::from_secs(60));
        assert_eq!(config.cluster.leader_ttl, Duration::from_secs(60));
        assert_eq!(
            config.cluster.leader_renew_interval,
            Duration::from_secs(20)
        );
        assert_eq!(config.cluster.reconcile_interval, Duration::from_secs(30));

        let redis = "redis: { url: \"redis://h:6379\" }\n";
        let config = Config::from_yaml(&format!(
            "{GOOD}{redis}cluster: {{ fleet_driver: process }}\n"
        ))
        .unwrap();
        let err = config.validate(Role::Engine).unwrap_err().to_string();
        assert!(err.contains("cluster.process.config"), "{err}");
        let config = Config::from_yaml(&format!(
            "{GOOD}{redis}cluster: {{ fleet_driver: process, process: {{ config: w.yaml, workers: 3 }} }}\n"
        ))
        .unwrap();
        config.validate(Role::Engine).unwrap();
        assert_eq!(config.cluster.process.command, "kiro-worker");
    }
}
