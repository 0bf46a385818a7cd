//! Starting the stack: its config, its processes, and the entry points they serve.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;
use tokio::time::Instant;

use super::{Entry, StackArgs};
use crate::client::{Conn, Target};
use crate::worker::{Bins, Server, wait_slots_idle};

/// The client key of the stack's gateway (and of `drawbridge`).
const API_KEY: &str = "db-bench-key-0123456789";
/// The key the gateway presents to the engine, and the engine direct measurement with it.
const CHANNEL_KEY: &str = "db-bench-channel-key-0123";

/// The one config file every process of the stack reads: each binary takes the sections it
/// needs. The addresses only known once a process listens (the worker's gRPC port for the
/// engine, the engine's port for the gateway) are passed as `DRAWBRIDGE_*` variables.
///
/// The gateway's key is not rate limited (`rpm: 0`). The gateway and `drawbridge` each keep
/// their records in their own data file (`DRAWBRIDGE_GATEWAY__DATA_FILE`).
fn config_yaml(agent: &Path, data_dir: &Path, pool_size: u32, log_level: &str) -> String {
    format!(
        "node: {{ id: bench }}\n\
         gateway:\n  listen: 127.0.0.1:0\n  shutdown_grace: 20s\n  engine_key: {CHANNEL_KEY}\n  api_keys:\n    - {{ name: bench, key: {API_KEY}, rpm: 0 }}\n\
         engine:\n  listen: 127.0.0.1:0\n  shutdown_grace: 20s\n  channel_keys:\n    - {{ name: bench-gateway, key: {CHANNEL_KEY}, trust_tenant: true }}\n\
         worker:\n  http_listen: 127.0.0.1:0\n  grpc_listen: 127.0.0.1:0\n  data_dir: \"{}\"\n  max_queue: 4096\n  shutdown_grace: 20s\n\
         log: {{ level: {log_level} }}\n\
         accounts:\n  - id: bench\n    pool_size: {pool_size}\n    models: [kiro]\n    agent:\n      command: \"{}\"\n      args: []\n      env: {{ MOCK_ACP_DELAY_MS: \"0\" }}\n",
        data_dir.display(),
        agent.display(),
    )
}

fn temp_dir(prefix: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("create a temporary directory")
}

/// Write [`config_yaml`] to `dir/drawbridge.yaml`; its path.
fn write_config(
    dir: &Path,
    bins: &Bins,
    worker_data: &Path,
    pool_size: u32,
    log_level: &str,
) -> Result<PathBuf> {
    let config = dir.join("drawbridge.yaml");
    std::fs::write(
        &config,
        config_yaml(&bins.agent, worker_data, pool_size, log_level),
    )
    .context("write the stack's config")?;
    Ok(config)
}

/// A process's environment: its log filter and node id, `extra`, then the caller's own
/// variables (`user`, last so they win).
fn process_env(
    log_level: &str,
    node: &str,
    extra: &[(&str, String)],
    user: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env = vec![
        // `RUST_LOG` wins over `log.level`: set it so the bench's own does not leak in,
        // and keep the `listening NAME=ADDR` lines whatever the level.
        (
            "RUST_LOG".to_owned(),
            format!("{log_level},drawbridge::listen=info"),
        ),
        ("DRAWBRIDGE_NODE__ID".to_owned(), node.to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env.extend(user.iter().cloned());
    env
}

/// What the single-process `drawbridge` adds to the shared config: its own agents' directory
/// and its own data file.
fn single_env(single_data: &Path) -> [(&'static str, String); 2] {
    [
        (
            "DRAWBRIDGE_WORKER__DATA_DIR",
            single_data.display().to_string(),
        ),
        (
            "DRAWBRIDGE_GATEWAY__DATA_FILE",
            single_data.join("gateway.redb").display().to_string(),
        ),
    ]
}

/// The single-process `drawbridge` alone, from the stack's config, for a section that needs
/// one `drawbridge` it can configure (through `DRAWBRIDGE_*` variables).
pub(crate) struct Single {
    _dir: TempDir,
    server: Server,
    /// Its `POST /v1/chat/completions`, with the stack's client key.
    pub(crate) target: Target,
}

impl Single {
    /// Start `drawbridge` with one account of `pool_size` instant mock agents; `env` is added
    /// to its environment last (it may override the config: `DRAWBRIDGE_WORKER__...`).
    pub(crate) async fn start(
        bins: &Bins,
        pool_size: u32,
        log_level: &str,
        env: &[(String, String)],
    ) -> Result<Single> {
        let dir = temp_dir("drawbridge-bench-single-")?;
        let data = dir.path().join("single");
        let config = write_config(dir.path(), bins, &data, pool_size, log_level)?;
        let env = process_env(log_level, "bench-single", &single_env(&data), env);
        let server = Server::start(&bins.single, &config, &env, &["gateway"]).await?;
        let target = Target::chat(server.addr("gateway")?, API_KEY);
        Ok(Single {
            _dir: dir,
            server,
            target,
        })
    }

    /// Wait until `/health` shows every slot of the pool available.
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_health(self.target.addr, Instant::now() + timeout)
            .await
            .map_err(|error| anyhow::anyhow!("drawbridge: {error:#}; log:\n{}", self.log()))
    }

    pub(crate) fn log(&self) -> String {
        self.server.log()
    }

    /// SIGTERM; whether it exited 0.
    pub(crate) async fn stop(self) -> Result<bool> {
        self.server.stop().await
    }
}

/// The running stack.
pub(super) struct Stack {
    _dir: TempDir,
    worker: Server,
    engine: Server,
    gateway: Server,
    single: Option<Server>,
    worker_data: PathBuf,
    single_data: PathBuf,
    pub(super) targets: Vec<(Entry, Target)>,
}

/// The processes whose CPU and memory are counted, by name, in the order printed.
pub(super) const PROCESSES: [&str; 7] = [
    "gateway",
    "engine",
    "worker",
    "drawbridge",
    "agents(worker)",
    "agents(drawbridge)",
    "bench",
];

impl Stack {
    pub(super) async fn start(bins: &Bins, args: &StackArgs) -> Result<Stack> {
        let dir = temp_dir("drawbridge-bench-stack-")?;
        let worker_data = dir.path().join("worker");
        let single_data = dir.path().join("single");
        let config = write_config(
            dir.path(),
            bins,
            &worker_data,
            args.pool_size,
            &args.log_level,
        )?;
        let env = |node: &str, extra: &[(&str, String)]| {
            process_env(&args.log_level, node, extra, &args.env)
        };
        let worker = Server::start(
            &bins.worker,
            &config,
            &env("bench-worker", &[]),
            &["grpc", "http"],
        )
        .await?;
        let engine = Server::start(
            &bins.engine,
            &config,
            &env(
                "bench-engine",
                &[(
                    "DRAWBRIDGE_ENGINE__WORKERS",
                    format!("[\"http://{}\"]", worker.addr("grpc")?),
                )],
            ),
            &["engine"],
        )
        .await?;
        let gateway = Server::start(
            &bins.gateway,
            &config,
            &env(
                "bench-gateway",
                &[
                    (
                        "DRAWBRIDGE_GATEWAY__ENGINE_URL",
                        format!("http://{}", engine.addr("engine")?),
                    ),
                    (
                        "DRAWBRIDGE_GATEWAY__DATA_FILE",
                        worker_data.join("gateway.redb").display().to_string(),
                    ),
                ],
            ),
            &["gateway"],
        )
        .await?;
        let single = if args.single {
            Some(
                Server::start(
                    &bins.single,
                    &config,
                    &env("bench-single", &single_env(&single_data)),
                    &["gateway"],
                )
                .await?,
            )
        } else {
            None
        };
        let mut targets = vec![
            (Entry::Worker, Target::prompt(worker.addr("http")?)),
            (
                Entry::Engine,
                Target::chat(engine.addr("engine")?, CHANNEL_KEY),
            ),
            (
                Entry::Gateway,
                Target::chat(gateway.addr("gateway")?, API_KEY),
            ),
        ];
        if let Some(single) = &single {
            targets.push((
                Entry::Single,
                Target::chat(single.addr("gateway")?, API_KEY),
            ));
        }
        Ok(Stack {
            _dir: dir,
            worker,
            engine,
            gateway,
            single,
            worker_data,
            single_data,
            targets,
        })
    }

    /// Wait until every pool is warm and every entry point sees all of its slots.
    pub(super) async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        wait_slots_idle(self.worker.addr("http")?, timeout)
            .await
            .map_err(|error| anyhow::anyhow!("{error:#}; log:\n{}", self.worker.log()))?;
        for (entry, target) in &self.targets {
            if *entry == Entry::Worker {
                continue;
            }
            wait_health(target.addr, deadline).await.map_err(|error| {
                anyhow::anyhow!("{}: {error:#}; logs:\n{}", entry.name(), self.logs())
            })?;
        }
        Ok(())
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for server in [&self.worker, &self.engine, &self.gateway]
            .into_iter()
            .chain(self.single.as_ref())
        {
            let _ = writeln!(out, "---- {} ----\n{}", server.name(), server.log());
        }
        out
    }

    /// The pids counted under each name of [`PROCESSES`].
    pub(super) fn pids(&self) -> Vec<Vec<u32>> {
        let one = |server: Option<&Server>| server.and_then(Server::pid).into_iter().collect();
        vec![
            one(Some(&self.gateway)),
            one(Some(&self.engine)),
            one(Some(&self.worker)),
            one(self.single.as_ref()),
            test_support::processes_under(&self.worker_data),
            test_support::processes_under(&self.single_data),
            vec![std::process::id()],
        ]
    }

    /// SIGTERM every process, the front first; whether all exited 0.
    pub(super) async fn stop(self) -> Result<bool> {
        let mut clean = true;
        for server in [
            Some(self.gateway),
            self.single,
            Some(self.engine),
            Some(self.worker),
        ]
        .into_iter()
        .flatten()
        {
            let name = server.name().to_owned();
            if !server.stop().await? {
                eprintln!("{name} did not exit 0 after SIGTERM");
                clean = false;
            }
        }
        Ok(clean)
    }
}

/// Wait until `/health` at `addr` answers 200 with every slot available.
async fn wait_health(addr: SocketAddr, deadline: Instant) -> Result<()> {
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(mut conn) = Conn::open(addr).await
            && let Ok((status, body)) = conn.get("/health").await
        {
            last = format!("{status} {}", String::from_utf8_lossy(&body));
            if status == 200 {
                let health: serde_json::Value = serde_json::from_slice(&body)?;
                let total = health["total_slots"].as_u64().unwrap_or(0);
                if total > 0 && health["available_slots"].as_u64() == Some(total) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("/health never showed every slot available; last: {last}")
}

#[cfg(test)]
mod tests {
    use drawbridge_config::{Config, Role};

    use super::*;

    #[test]
    fn the_generated_config_serves_every_binary() {
        let yaml = config_yaml(
            Path::new("/opt/bin/mock-acp-agent"),
            Path::new("/tmp/bench/worker"),
            32,
            "info",
        );
        let config = Config::from_yaml(&yaml).expect("the bench config loads");
        for role in [Role::Worker, Role::Engine, Role::Gateway, Role::AllInOne] {
            config
                .validate(role)
                .unwrap_or_else(|e| panic!("{role:?}: {e}"));
        }
        assert_eq!(config.accounts.len(), 1);
        assert_eq!(config.accounts[0].pool_size, 32);
        assert_eq!(config.gateway.api_keys[0].key.expose(), API_KEY);
        assert_eq!(config.engine.channel_keys[0].key.expose(), CHANNEL_KEY);
        assert_eq!(
            config.gateway.engine_key.as_ref().map(|k| k.expose()),
            Some(CHANNEL_KEY)
        );
    }
}
