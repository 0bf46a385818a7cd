//! The agent without the worker: a warm `AgentProcess` driven in-process, and an agent process
//! spawned per request (what a gateway without a warm pool pays).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use drawbridge_acp::{AgentEvent, AgentProcess, AgentSpec};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Load;
use crate::stats::Samples;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The spec the worker would build for an account under `dir`: the instant mock agent, its
/// own HOME and working directory.
pub fn mock_spec(agent: &Path, dir: &Path) -> Result<AgentSpec> {
    let cwd = dir.join("work");
    std::fs::create_dir_all(&cwd).with_context(|| format!("create {}", cwd.display()))?;
    let mut spec = AgentSpec::new(agent.display().to_string(), Vec::<String>::new(), cwd);
    spec.env
        .insert("MOCK_ACP_DELAY_MS".to_owned(), "0".to_owned());
    spec.home = Some(dir.join("home"));
    Ok(spec)
}

pub async fn start(spec: &AgentSpec) -> Result<AgentProcess> {
    AgentProcess::start(spec, HANDSHAKE_TIMEOUT)
        .await
        .context("start the mock agent")
}

/// One turn (`session/new` + `session/prompt`) on `process`: the time from `started` to the
/// first non-empty text chunk, and the whole text. Reads the events while the prompt runs.
pub async fn first_text(
    process: &AgentProcess,
    text: &str,
    started: Instant,
) -> Result<(Duration, String)> {
    let (tx, mut rx) = mpsc::channel(32);
    let turn = process.prompt(text.to_owned(), tx);
    tokio::pin!(turn);
    let mut first = None;
    let mut answer = String::new();
    let mut on_event = |event: AgentEvent| {
        if let AgentEvent::Text(chunk) = event {
            if first.is_none() && !chunk.is_empty() {
                first = Some(started.elapsed());
            }
            answer.push_str(&chunk);
        }
    };
    let outcome = loop {
        tokio::select! {
            biased;
            Some(event) = rx.recv() => on_event(event),
            outcome = &mut turn => break outcome,
        }
    };
    while let Ok(event) = rx.try_recv() {
        on_event(event);
    }
    outcome.context("the prompt failed")?;
    match first {
        Some(first) => Ok((first, answer)),
        None => bail!("the agent answered without text"),
    }
}

/// Sequential turns on one warm process: time to first text, `n` times (after `warmup`).
pub async fn warm_first_text(
    spec: &AgentSpec,
    text: &str,
    n: usize,
    warmup: usize,
) -> Result<Load> {
    let process = start(spec).await?;
    for _ in 0..warmup {
        first_text(&process, text, Instant::now()).await?;
    }
    let mut load = Load {
        latencies: Samples::with_capacity(n),
        ..Load::default()
    };
    for _ in 0..n {
        match first_text(&process, text, Instant::now()).await {
            Ok((latency, answer)) if answer == text => load.latencies.push(latency),
            Ok((_, answer)) => load.record_error(format!("unexpected answer {answer:?}")),
            Err(error) => load.record_error(format!("{error:#}")),
        }
    }
    process.shutdown(SHUTDOWN_GRACE).await;
    Ok(load)
}

/// What spawning per request costs.
#[derive(Debug, Default)]
pub struct SpawnLoad {
    /// Spawn + `initialize` + `session/new` + prompt until the first text chunk.
    pub first_text: Load,
    /// Of which spawn + `initialize` (`AgentProcess::start`).
    pub start: Samples,
    /// Closing the process afterwards (not counted in `first_text`).
    pub shutdown: Samples,
}

/// `n` times: start a fresh agent process, run one turn to its first text, shut it down.
pub async fn spawn_first_text(spec: &AgentSpec, text: &str, n: usize) -> SpawnLoad {
    let mut out = SpawnLoad::default();
    for _ in 0..n {
        let started = Instant::now();
        let process = match start(spec).await {
            Ok(process) => process,
            Err(error) => {
                out.first_text.record_error(format!("{error:#}"));
                continue;
            }
        };
        out.start.push(started.elapsed());
        match first_text(&process, text, started).await {
            Ok((latency, answer)) if answer == text => out.first_text.latencies.push(latency),
            Ok((_, answer)) => out
                .first_text
                .record_error(format!("unexpected answer {answer:?}")),
            Err(error) => out.first_text.record_error(format!("{error:#}")),
        }
        let closing = Instant::now();
        process.shutdown(SHUTDOWN_GRACE).await;
        out.shutdown.push(closing.elapsed());
    }
    out
}

/// A warm pool without the worker: `pool_size` processes started here, each driven by its
/// own task, back to back until `duration` has passed. The calibration: what ACP and the mock
/// cost without HTTP, pool and turn bookkeeping.
pub struct DirectPool {
    processes: Vec<AgentProcess>,
}

impl DirectPool {
    pub async fn start(spec: &AgentSpec, size: usize) -> Result<DirectPool> {
        let mut processes = Vec::with_capacity(size);
        for _ in 0..size {
            processes.push(start(spec).await?);
        }
        Ok(DirectPool { processes })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes
            .iter()
            .filter_map(AgentProcess::pid)
            .collect()
    }

    pub async fn run(&mut self, text: &str, until: Instant) -> Result<Load> {
        let mut tasks = JoinSet::new();
        for process in self.processes.drain(..) {
            let text = text.to_owned();
            tasks.spawn(async move {
                let mut load = Load::default();
                while Instant::now() < until {
                    let started = Instant::now();
                    match first_text(&process, &text, started).await {
                        Ok((_, answer)) if answer == text => {
                            load.latencies.push(started.elapsed());
                        }
                        Ok((_, answer)) => {
                            load.record_error(format!("unexpected answer {answer:?}"))
                        }
                        Err(error) => load.record_error(format!("{error:#}")),
                    }
                }
                (process, load)
            });
        }
        let mut total = Load::default();
        while let Some(joined) = tasks.join_next().await {
            let (process, load) = joined.context("a load task failed")?;
            self.processes.push(process);
            total.merge(load);
        }
        Ok(total)
    }

    pub async fn shutdown(self) {
        for process in self.processes {
            process.shutdown(SHUTDOWN_GRACE).await;
        }
    }
}
