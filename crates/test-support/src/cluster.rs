//! Several nodes on one real `redis-server`: workers that register in it, engines that discover
//! them, elect a leader and reconcile. Short heartbeat, lease and reconcile periods, so that
//! expiries and take-overs happen within a test's patience.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::http::Client;
use crate::process::{Process, Signal, binary};
use crate::redis::RedisServer;
use crate::stack::AccountSpec;
use crate::wait::poll;

/// The channel key every cluster engine accepts.
pub const CLUSTER_CHANNEL_KEY: &str = "cluster-channel-key-0123";

/// A worker's heartbeat TTL in a test cluster: a killed worker leaves the registry this long
/// after its last heartbeat.
pub const WORKER_TTL: Duration = Duration::from_secs(1);
/// The engines' leader lease TTL.
pub const LEADER_TTL: Duration = Duration::from_secs(1);
/// The reconciler's period.
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(500);

/// Where a worker's accounts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// The accounts listed for it.
    Config,
    /// The accounts the leader assigns it (the listed ones are its catalogue).
    Registry,
}

pub struct Cluster {
    pub dir: TempDir,
    pub redis: RedisServer,
    pub workers: Vec<Process>,
    pub engines: Vec<Process>,
    /// `engine.refresh_interval` of the engines started from now on (200 ms by default).
    pub refresh_interval: Duration,
    /// `cluster.reconcile_interval` of the engines started from now on
    /// ([`RECONCILE_INTERVAL`] by default).
    pub reconcile_interval: Duration,
}

/// `accounts:` entries with `mock-acp-agent`.
pub fn accounts_yaml(accounts: &[(&str, AccountSpec)]) -> String {
    let agent = binary("mock-acp-agent");
    accounts
        .iter()
        .map(|(id, spec)| {
            let env: Vec<String> = spec
                .env
                .iter()
                .map(|(k, v)| format!("{k}: \"{v}\""))
                .collect();
            format!(
                "  - id: {id}\n    pool_size: {}\n    models: [kiro]\n{}    agent:\n      command: {}\n      args: []\n      env: {{ {} }}\n",
                spec.pool_size,
                spec.credits_yaml(),
                agent.display(),
                env.join(", ")
            )
        })
        .collect()
}

impl Cluster {
    /// A `redis-server` and nothing else yet.
    pub fn new() -> Cluster {
        Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            redis: RedisServer::start(),
            workers: Vec::new(),
            engines: Vec::new(),
            refresh_interval: Duration::from_millis(200),
            reconcile_interval: RECONCILE_INTERVAL,
        }
    }

    fn write(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write config");
        path
    }

    /// Start `kiro-worker` `id` registered in the cluster's Redis.
    pub async fn add_worker(
        &mut self,
        id: &str,
        assignment: Assignment,
        accounts: &[(&str, AccountSpec)],
    ) -> &Process {
        let mode = match assignment {
            Assignment::Config => "config",
            Assignment::Registry => "registry",
        };
        let yaml = format!(
            "node: {{ id: {id} }}\n\
             worker:\n  http_listen: 127.0.0.1:0\n  grpc_listen: 127.0.0.1:0\n  data_dir: {}\n  shutdown_grace: 10s\n  heartbeat_interval: 200ms\n  heartbeat_ttl: {}ms\n\
             redis: {{ url: \"{}\" }}\n\
             cluster: {{ assignment: {mode} }}\n\
             accounts:\n{}",
            self.dir.path().join(id).display(),
            WORKER_TTL.as_millis(),
            self.redis.url(),
            accounts_yaml(accounts)
        );
        let config = self.write(&format!("{id}.yaml"), &yaml);
        let process = Process::start("kiro-worker", &config, &[], &["grpc", "http"]).await;
        self.workers.push(process);
        self.workers.last().expect("just pushed")
    }

    /// Start `drawbridge-engine` `id` on the cluster's Redis, with `accounts` as its desired
    /// state and `extra` YAML appended.
    pub async fn add_engine(
        &mut self,
        id: &str,
        accounts: &[(&str, AccountSpec)],
        extra: &str,
    ) -> &Process {
        self.add_engine_with(id, accounts, "", extra).await
    }

    /// [`Cluster::add_engine`] with more `cluster:` keys (`, fleet_driver: process, ...`).
    pub async fn add_engine_with(
        &mut self,
        id: &str,
        accounts: &[(&str, AccountSpec)],
        cluster: &str,
        extra: &str,
    ) -> &Process {
        self.add_engine_listening(id, "127.0.0.1:0", accounts, cluster, extra)
            .await
    }

    /// [`Cluster::add_engine_with`] on `listen` (an engine started again where it was, so a
    /// gateway that knows its address finds it back).
    pub async fn add_engine_listening(
        &mut self,
        id: &str,
        listen: &str,
        accounts: &[(&str, AccountSpec)],
        cluster: &str,
        extra: &str,
    ) -> &Process {
        let accounts = if accounts.is_empty() {
            "accounts: []\n".to_owned()
        } else {
            format!("accounts:\n{}", accounts_yaml(accounts))
        };
        let yaml = format!(
            "node: {{ id: {id} }}\n\
             engine:\n  listen: {listen}\n  workers: []\n  refresh_interval: {}ms\n  shutdown_grace: 10s\n  channel_keys: [{{ name: test, key: {CLUSTER_CHANNEL_KEY}, trust_tenant: true }}]\n\
             redis: {{ url: \"{}\" }}\n\
             cluster: {{ sync_interval: 2s, leader_ttl: {}ms, leader_renew_interval: 300ms, reconcile_interval: {}ms{cluster} }}\n\
             {accounts}{extra}",
            self.refresh_interval.as_millis(),
            self.redis.url(),
            LEADER_TTL.as_millis(),
            self.reconcile_interval.as_millis(),
        );
        let config = self.write(&format!("{id}.yaml"), &yaml);
        let process = Process::start("drawbridge-engine", &config, &[], &["engine"]).await;
        self.engines.push(process);
        self.engines.last().expect("just pushed")
    }

    /// A worker config file for workers someone else starts (the `process` fleet driver): the
    /// cluster's Redis, short heartbeats, `accounts` as the catalogue. Returns its path.
    pub fn worker_config(&self, name: &str, accounts: &[(&str, AccountSpec)]) -> PathBuf {
        let yaml = format!(
            "worker:\n  shutdown_grace: 5s\n  heartbeat_interval: 200ms\n  heartbeat_ttl: {}ms\n\
             redis: {{ url: \"{}\" }}\n\
             cluster: {{ assignment: registry }}\n\
             accounts:\n{}",
            WORKER_TTL.as_millis(),
            self.redis.url(),
            accounts_yaml(accounts)
        );
        self.write(name, &yaml)
    }

    /// `drawbridge-gateway` in front of the cluster's engines, in their order, with the API
    /// key `api_key` (no rate limit).
    pub async fn start_gateway(&self, api_key: &str) -> Process {
        let engines: Vec<String> = self
            .engines
            .iter()
            .map(|e| format!("\"http://{}\"", e.addr("engine")))
            .collect();
        let yaml = format!(
            "node: {{ id: gateway-1 }}\n\
             gateway:\n  listen: 127.0.0.1:0\n  engine_urls: [{}]\n  engine_key: {CLUSTER_CHANNEL_KEY}\n  api_keys: [{{ name: test, key: {api_key}, rpm: 0 }}]\n  data_file: {}\n",
            engines.join(", "),
            self.dir.path().join("gateway.redb").display(),
        );
        let path = self.write("gateway.yaml", &yaml);
        Process::start("drawbridge-gateway", &path, &[], &["gateway"]).await
    }

    /// A client of engine `i`'s OpenAI endpoint.
    pub fn engine(&self, i: usize) -> Client {
        Client::new(
            format!("http://{}", self.engines[i].addr("engine")),
            Some(CLUSTER_CHANNEL_KEY),
        )
    }

    /// A client of worker `i`'s HTTP API.
    pub fn worker_http(&self, i: usize) -> Client {
        Client::new(format!("http://{}", self.workers[i].addr("http")), None)
    }

    /// Poll engine `i`'s `/health` until it sees `accounts` accounts, every slot warm (20 s).
    pub async fn wait_serving(&self, i: usize, accounts: u64) -> Value {
        let client = self.engine(i);
        let last = std::cell::RefCell::new(Value::Null);
        let ready = poll(Duration::from_secs(20), || async {
            let reply = client.get("/health").await;
            if reply.status != 200 {
                return None;
            }
            let health = reply.json();
            *last.borrow_mut() = health.clone();
            let total = health["total_slots"].as_u64().unwrap_or(0);
            let warm = health["accounts"].as_u64() == Some(accounts)
                && total > 0
                && health["available_slots"].as_u64() == Some(total);
            warm.then_some(health)
        })
        .await;
        ready.unwrap_or_else(|| {
            self.dump();
            panic!(
                "engine {i} never saw {accounts} warm accounts; last /health: {}",
                last.borrow()
            );
        })
    }

    /// Pids of worker `id`'s agent processes (those running under its data directory), sorted.
    pub fn agent_pids(&self, id: &str) -> Vec<u32> {
        let mut pids = crate::process::processes_under(&self.dir.path().join(id));
        pids.sort_unstable();
        pids
    }

    /// Kill worker `i` with SIGKILL and reap it.
    pub async fn kill_worker(&mut self, i: usize) {
        self.workers[i].signal(Signal::SIGKILL);
        self.workers[i].wait().await;
    }

    /// Print every log (for a failing test).
    pub fn dump(&self) {
        for p in self.workers.iter().chain(&self.engines) {
            eprintln!("---- log ----\n{}", p.log());
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

/// Wait up to `patience` until `process` has logged `count` lines containing every one of
/// `needles`.
pub async fn wait_for_lines(
    process: &Process,
    needles: &[&str],
    count: usize,
    patience: Duration,
) -> bool {
    let logged = || {
        let found = process
            .log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count();
        std::future::ready(found >= count)
    };
    poll(patience, logged).await.is_some()
}

/// Send `signal` to `pid` (a process a test started, directly or through a binary).
pub fn signal_pid(pid: u32, signal: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The pids of every log line of `process` containing `needle` and a `pid=N` field, in order.
pub fn logged_pids(process: &Process, needle: &str) -> Vec<u32> {
    process
        .log()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split("pid=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}
