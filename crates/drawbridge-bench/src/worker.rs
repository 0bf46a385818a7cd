//! The binaries under test, and a real `kiro-worker` started on loopback with mock agents.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Conn;

/// The binaries the benchmark runs, found beside it: `make bench` builds them all into
/// `target/release/`, where `drawbridge-bench` itself lives (or one level up when it runs
/// from `deps/`).
#[derive(Debug, Clone)]
pub struct Bins {
    pub dir: PathBuf,
    pub worker: PathBuf,
    pub engine: PathBuf,
    pub gateway: PathBuf,
    /// The single-process `drawbridge`.
    pub single: PathBuf,
    pub agent: PathBuf,
}

impl Bins {
    pub fn locate() -> Result<Bins> {
        let exe = std::env::current_exe().context("where is this executable")?;
        let mut dir = exe
            .parent()
            .context("the executable has no directory")?
            .to_path_buf();
        if dir.ends_with("deps")
            && let Some(parent) = dir.parent()
        {
            dir = parent.to_path_buf();
        }
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "{} is missing: build the binaries first (`cargo build --release --workspace --bins`, which `make bench` does)",
                    path.display()
                )
            }
        };
        Ok(Bins {
            worker: find("kiro-worker")?,
            engine: find("drawbridge-engine")?,
            gateway: find("drawbridge-gateway")?,
            single: find("drawbridge")?,
            agent: find("mock-acp-agent")?,
            dir,
        })
    }
}

/// Keep the last lines of a child's log, to show when something goes wrong.
type LogTail = Arc<Mutex<VecDeque<String>>>;
const LOG_LINES: usize = 200;

/// One of the binaries under test, running: its listeners as it announced them
/// (`listening NAME=ADDR` on stderr) and the tail of its log.
pub struct Server {
    name: String,
    child: Child,
    addrs: BTreeMap<String, SocketAddr>,
    log: LogTail,
    _stderr: JoinSet<()>,
}

impl Server {
    /// Start `binary --config config` with `env` added, and wait until it has announced every
    /// listener in `listeners`.
    pub async fn start(
        binary: &Path,
        config: &Path,
        env: &[(String, String)],
        listeners: &[&str],
    ) -> Result<Server> {
        let name = binary.file_name().map_or_else(
            || binary.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let stderr = child.stderr.take().context("the child's stderr")?;
        let log = LogTail::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let lines = Arc::clone(&log);
        tasks.spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(rest) = line.split("listening ").nth(1)
                    && let Some((name, addr)) = rest.trim().split_once('=')
                    && let Ok(addr) = addr.trim().parse::<SocketAddr>()
                {
                    let _ = tx.send((name.to_owned(), addr));
                }
                let mut lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
                if lines.len() == LOG_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        let mut addrs = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listeners.iter().all(|l| addrs.contains_key(*l)) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                // Loopback whatever the bind address was.
                Ok(Some((name, addr))) => {
                    addrs.insert(name, SocketAddr::from(([127, 0, 0, 1], addr.port())));
                }
                _ => bail!(
                    "{name} did not announce its listeners {listeners:?}; its log:\n{}",
                    tail(&log)
                ),
            }
        }
        Ok(Server {
            name,
            child,
            addrs,
            log,
            _stderr: tasks,
        })
    }

    pub fn addr(&self, listener: &str) -> Result<SocketAddr> {
        self.addrs
            .get(listener)
            .copied()
            .with_context(|| format!("{} has no listener {listener}", self.name))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> String {
        tail(&self.log)
    }

    /// SIGTERM, then wait for the exit; whether it exited 0.
    pub async fn stop(mut self) -> Result<bool> {
        if let Some(pid) = self.pid().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => Ok(status?.success()),
            Err(_) => bail!(
                "{} did not stop after SIGTERM; log:\n{}",
                self.name,
                self.log()
            ),
        }
    }
}

/// A running `kiro-worker` with one account of `pool_size` instant mock agents.
pub struct WorkerProcess {
    dir: TempDir,
    server: Server,
    pub addr: SocketAddr,
}

impl WorkerProcess {
    pub async fn start(bins: &Bins, pool_size: u32) -> Result<WorkerProcess> {
        let dir = tempfile::Builder::new()
            .prefix("drawbridge-bench-")
            .tempdir()
            .context("create a temporary directory")?;
        // max_queue is raised so that a high --concurrency measures queueing, not refusals.
        let yaml = format!(
            "node: {{ id: bench-worker }}\n\
             worker:\n  http_listen: 127.0.0.1:0\n  grpc_listen: 127.0.0.1:0\n  data_dir: \"{}\"\n  max_queue: 4096\n  shutdown_grace: 20s\n\
             log: {{ level: info }}\n\
             accounts:\n  - id: bench\n    pool_size: {pool_size}\n    models: [kiro]\n    agent:\n      command: \"{}\"\n      args: []\n      env: {{ MOCK_ACP_DELAY_MS: \"0\" }}\n",
            dir.path().join("accounts").display(),
            bins.agent.display(),
        );
        let config = dir.path().join("worker.yaml");
        std::fs::write(&config, yaml).context("write worker.yaml")?;
        let env = [("RUST_LOG".to_owned(), "info".to_owned())];
        let server = Server::start(&bins.worker, &config, &env, &["http"]).await?;
        let addr = server.addr("http")?;
        Ok(WorkerProcess { dir, server, addr })
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// The agent processes (everything running in the account directories).
    pub fn agent_pids(&self) -> Vec<u32> {
        test_support::processes_under(self.dir.path())
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Wait until `/slots` shows every slot of every account idle.
    pub async fn wait_warm(&self, timeout: Duration) -> Result<()> {
        wait_slots_idle(self.addr, timeout)
            .await
            .map_err(|error| anyhow::anyhow!("{error:#}; log:\n{}", self.log()))
    }

    /// SIGTERM, then wait for the exit; whether it exited 0.
    pub async fn stop(self) -> Result<bool> {
        self.server.stop().await
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Wait until the worker at `addr` shows, on `/slots`, every slot of every account idle.
pub async fn wait_slots_idle(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(mut conn) = Conn::open(addr).await
            && let Ok((200, body)) = conn.get("/slots").await
        {
            let slots: serde_json::Value = serde_json::from_slice(&body)?;
            last = slots.to_string();
            if slots["accounts"].as_array().is_some_and(|accounts| {
                !accounts.is_empty()
                    && accounts
                        .iter()
                        .all(|a| a["size"].as_u64() > Some(0) && a["idle"] == a["size"])
            }) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the pool never became warm; last /slots: {last}")
}

fn tail(log: &LogTail) -> String {
    let lines = log.lock().unwrap_or_else(PoisonError::into_inner);
    lines.iter().cloned().collect::<Vec<_>>().join("\n")
}
