//! The binaries under test, and a real `kiro-worker` started on loopback with mock agents.

use std::collections::VecDeque;
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
            agent: find("mock-acp-agent")?,
            dir,
        })
    }
}

/// Keep the last lines of a child's log, to show when something goes wrong.
type LogTail = Arc<Mutex<VecDeque<String>>>;
const LOG_LINES: usize = 200;

/// A running `kiro-worker` with one account of `pool_size` instant mock agents.
pub struct WorkerProcess {
    dir: TempDir,
    child: Child,
    pub addr: SocketAddr,
    log: LogTail,
    _stderr: JoinSet<()>,
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
        let mut child = Command::new(&bins.worker)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", bins.worker.display()))?;
        let stderr = child.stderr.take().context("the worker's stderr")?;
        let log = LogTail::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let lines = Arc::clone(&log);
        tasks.spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(rest) = line.split("listening http=").nth(1)
                    && let Ok(addr) = rest.trim().parse::<SocketAddr>()
                {
                    let _ = tx.send(addr);
                }
                let mut lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
                if lines.len() == LOG_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(addr)) => SocketAddr::from(([127, 0, 0, 1], addr.port())),
            _ => bail!(
                "kiro-worker did not announce its HTTP port; its log:\n{}",
                tail(&log)
            ),
        };
        Ok(WorkerProcess {
            dir,
            child,
            addr,
            log,
            _stderr: tasks,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The agent processes (everything running in the account directories).
    pub fn agent_pids(&self) -> Vec<u32> {
        test_support::processes_under(self.dir.path())
    }

    pub fn log(&self) -> String {
        tail(&self.log)
    }

    /// Wait until `/slots` shows every slot of every account idle.
    pub async fn wait_warm(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(mut conn) = Conn::open(self.addr).await
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
        bail!(
            "the pool never became warm; last /slots: {last}; log:\n{}",
            self.log()
        )
    }

    /// SIGTERM, then wait for the exit; whether it exited 0.
    pub async fn stop(mut self) -> Result<bool> {
        if let Some(pid) = self.pid().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => Ok(status?.success()),
            Err(_) => bail!(
                "kiro-worker did not stop after SIGTERM; log:\n{}",
                self.log()
            ),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn tail(log: &LogTail) -> String {
    let lines = log.lock().unwrap_or_else(PoisonError::into_inner);
    lines.iter().cloned().collect::<Vec<_>>().join("\n")
}
