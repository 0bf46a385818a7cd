//! Start a Drawbridge binary and learn where it listens.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a binary may take to bind its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a binary may take to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A binary of this workspace, from the target directory the test itself runs from
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`). `make test` builds them first.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`, which `make test` does)",
        path.display()
    );
    path
}

/// A running binary. Dropping it kills it (SIGKILL); [`Process::terminate`] stops it the
/// graceful way.
pub struct Process {
    name: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addrs: HashMap<String, SocketAddr>,
}

impl Process {
    /// Start `binary --config <config>` with `env` added, and wait until it has announced
    /// every listener named in `listeners` (`listening NAME=ADDR` on stderr).
    pub async fn start(
        binary_name: &str,
        config: &Path,
        env: &[(&str, &str)],
        listeners: &[&str],
    ) -> Process {
        let mut command = Command::new(binary(binary_name));
        command
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let lines = Arc::clone(&log);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(rest) = line.split("listening ").nth(1)
                    && let Some((name, addr)) = rest.trim().split_once('=')
                    // A JSON log line goes on after the address (`…:8080","target":…`).
                    && let Ok(addr) = addr
                        .split(|c: char| c == '"' || c.is_whitespace())
                        .next()
                        .unwrap_or_default()
                        .parse::<SocketAddr>()
                {
                    let _ = tx.send((name.to_owned(), addr));
                }
                lines.lock().expect("log lock").push(line);
            }
        });
        let mut process = Process {
            name: binary_name.to_owned(),
            child,
            log,
            addrs: HashMap::new(),
        };
        let wanted: Vec<String> = listeners.iter().map(|s| (*s).to_owned()).collect();
        let announced = tokio::time::timeout(START_TIMEOUT, async {
            while !wanted.iter().all(|w| process.addrs.contains_key(w)) {
                match rx.recv().await {
                    Some((name, addr)) => {
                        process.addrs.insert(name, addr);
                    }
                    None => return false, // stderr closed: the process died
                }
            }
            true
        })
        .await;
        if announced != Ok(true) {
            panic!(
                "{binary_name} did not announce {listeners:?}; its log:\n{}",
                process.log()
            );
        }
        process
    }

    /// Where the listener `name` is bound, as a loopback address.
    pub fn addr(&self, name: &str) -> SocketAddr {
        let addr = *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("{} announced no listener {name}", self.name));
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    }

    /// Whether the process announced a listener `name`.
    pub fn has_listener(&self, name: &str) -> bool {
        self.addrs.contains_key(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running child has a pid")
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Send SIGTERM and wait for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => status.expect("wait for child"),
            Err(_) => panic!(
                "{} did not stop after SIGTERM; its log:\n{}",
                self.name,
                self.log()
            ),
        }
    }

    /// Wait for the process to exit by itself.
    pub async fn wait(&mut self) -> ExitStatus {
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => status.expect("wait for child"),
            Err(_) => panic!("{} did not exit; its log:\n{}", self.name, self.log()),
        }
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }
}

/// Run a binary to completion (for configuration errors): exit status and stderr.
pub async fn run_to_exit(
    binary_name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ExitStatus, String) {
    let output = tokio::time::timeout(
        START_TIMEOUT,
        Command::new(binary(binary_name))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the binary exits")
    .expect("run binary");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Pids of live processes whose working directory is under `dir` (agent processes run in
/// their account's directory under the test's data dir, so this finds every one of them).
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
                return false;
            };
            // A zombie has no cwd to read; anything we can read is alive.
            cwd.starts_with(dir)
        })
        .collect()
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log());
        }
    }
}
