//! The `process` fleet driver: the leader starts local `kiro-worker` processes until the cluster
//! has `cluster.process.workers` workers (registered pods count whoever started them, plus this
//! engine's children that have not registered yet), replaces those that exit, and stops its own
//! newest ones when there are too many. The workers run in `registry` assignment mode, so the
//! reconciler gives them accounts. They are this engine's children: stopped (SIGTERM, then
//! SIGKILL after `shutdown_grace`) when it shuts down, killed if it is dropped without that.
//! A leader that loses its lease keeps its children running; they count for the next leader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use drawbridge_config::ProcessDriverConfig;
use drawbridge_state::{PodRecord, PodStatus};
use futures::future::BoxFuture;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::fleet::FleetDriver;

pub struct ProcessDriver {
    settings: ProcessDriverConfig,
    engine_id: String,
    /// Passed to the children in their environment; never logged.
    redis_url: String,
    command: PathBuf,
    children: Mutex<Vec<Worker>>,
    next: AtomicU32,
}

struct Worker {
    id: String,
    child: Child,
    stopping: bool,
}

impl ProcessDriver {
    pub fn new(settings: ProcessDriverConfig, engine_id: &str, redis_url: &str) -> Self {
        ProcessDriver {
            command: resolve(&settings.command),
            settings,
            engine_id: engine_id.to_owned(),
            redis_url: redis_url.to_owned(),
            children: Mutex::new(Vec::new()),
            next: AtomicU32::new(1),
        }
    }

    fn start(&self) -> std::io::Result<Worker> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-worker-{n}", self.engine_id);
        std::fs::create_dir_all(&self.settings.data_dir)?;
        let log = std::fs::File::create(self.settings.data_dir.join(format!("{id}.log")))?;
        let mut command = Command::new(&self.command);
        if let Some(config) = &self.settings.config {
            command.arg("--config").arg(config);
        }
        command
            .env("DRAWBRIDGE_NODE__ID", &id)
            .env("DRAWBRIDGE_WORKER__GRPC_LISTEN", "127.0.0.1:0")
            .env("DRAWBRIDGE_WORKER__HTTP_LISTEN", "127.0.0.1:0")
            .env(
                "DRAWBRIDGE_WORKER__DATA_DIR",
                self.settings.data_dir.join(&id),
            )
            .env("DRAWBRIDGE_CLUSTER__ASSIGNMENT", "registry")
            .env("DRAWBRIDGE_REDIS__URL", &self.redis_url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = command.spawn()?;
        tracing::info!(
            worker = id,
            pid = child.id().unwrap_or_default(),
            "worker process started"
        );
        Ok(Worker {
            id,
            child,
            stopping: false,
        })
    }

    /// Stop every child: SIGTERM, then SIGKILL after the grace. Called at the engine's shutdown.
    pub async fn stop_all(&self) {
        let mut children = self.children.lock().await;
        for worker in children.iter() {
            terminate(&worker.child);
        }
        for worker in children.iter_mut() {
            let grace = self.settings.shutdown_grace;
            match tokio::time::timeout(grace, worker.child.wait()).await {
                Ok(_) => tracing::info!(worker = worker.id, "worker process stopped"),
                Err(_) => {
                    tracing::warn!(
                        worker = worker.id,
                        "worker process outlived its grace; killing"
                    );
                    let _ = worker.child.kill().await;
                }
            }
        }
        children.clear();
    }
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

impl FleetDriver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    fn ensure<'a>(&'a self, pods: &'a [PodRecord]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut children = self.children.lock().await;
            children.retain_mut(|worker| match worker.child.try_wait() {
                Ok(Some(status)) => {
                    if !worker.stopping {
                        tracing::warn!(worker = worker.id, %status, "worker process exited");
                    }
                    false
                }
                _ => true,
            });
            let mut present: BTreeSet<&str> = pods
                .iter()
                .filter(|p| p.status != PodStatus::Draining)
                .map(|p| p.id.as_str())
                .collect();
            present.extend(
                children
                    .iter()
                    .filter(|w| !w.stopping)
                    .map(|w| w.id.as_str()),
            );
            let have = present.len();
            let want = self.settings.workers as usize;
            if have < want {
                for _ in have..want {
                    match self.start() {
                        Ok(worker) => children.push(worker),
                        Err(error) => {
                            tracing::warn!(
                                command = %self.command.display(),
                                %error,
                                "cannot start a worker process"
                            );
                            break;
                        }
                    }
                }
            } else if have > want {
                let surplus = have - want;
                for worker in children
                    .iter_mut()
                    .rev()
                    .filter(|w| !w.stopping)
                    .take(surplus)
                {
                    tracing::info!(worker = worker.id, "stopping a surplus worker process");
                    terminate(&worker.child);
                    worker.stopping = true;
                }
            }
        })
    }
}

/// A path as is; a bare name beside the running binary if it is there, else as is (PATH).
fn resolve(command: &str) -> PathBuf {
    if command.contains('/') {
        return PathBuf::from(command);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(command)))
        .filter(|candidate| Path::is_file(candidate))
        .unwrap_or_else(|| PathBuf::from(command))
}
