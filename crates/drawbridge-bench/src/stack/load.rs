//! The load runs: how the clients send, one run on one entry point, and a measurement of
//! every entry point in rounds.

use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::start::{PROCESSES, Stack};
use super::{Entry, StackArgs};
use crate::client::{self, Expect, Load, Pace, Target, Until};
use crate::procfs::Procs;

/// How the clients send.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// `clients` clients back to back.
    Closed { clients: usize },
    /// `clients` clients sharing `rate` requests per second on a fixed schedule.
    Paced { clients: usize, rate: f64 },
}

impl Mode {
    fn clients(self) -> usize {
        match self {
            Mode::Closed { clients } | Mode::Paced { clients, .. } => clients.max(1),
        }
    }

    pub(super) fn key(self) -> String {
        match self {
            Mode::Closed { clients } => format!("c{clients}"),
            Mode::Paced { clients, .. } => format!("c{clients}_paced"),
        }
    }

    pub(super) fn describe(self) -> String {
        match self {
            Mode::Closed { clients } => {
                format!("{clients} streaming client(s), each sending back to back")
            }
            Mode::Paced { clients, rate } => format!(
                "{clients} streaming clients sharing a fixed schedule of {rate:.0} requests/s"
            ),
        }
    }
}

/// What one entry point did over all the rounds of one measurement.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) load: Load,
    pub(super) seconds: f64,
    /// CPU seconds per name of [`PROCESSES`].
    pub(super) cpu: [f64; PROCESSES.len()],
    /// Seconds runnable but waiting for a CPU, per name of [`PROCESSES`].
    pub(super) wait: [f64; PROCESSES.len()],
}

impl Outcome {
    pub(super) fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.load.latencies.len() as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// CPU milliseconds per good answer, per name of [`PROCESSES`].
    pub(super) fn cpu_per_prompt(&self) -> [f64; PROCESSES.len()] {
        let n = self.load.latencies.len().max(1) as f64;
        self.cpu.map(|cpu| 1000.0 * cpu / n)
    }

    /// Milliseconds runnable but waiting for a CPU per good answer, per name of [`PROCESSES`].
    pub(super) fn wait_per_prompt(&self) -> [f64; PROCESSES.len()] {
        let n = self.load.latencies.len().max(1) as f64;
        self.wait.map(|wait| 1000.0 * wait / n)
    }
}

/// One run of `mode` on `target` for `duration`.
async fn run_once(
    stack: &Stack,
    target: &Target,
    body: &Bytes,
    mode: Mode,
    duration: Duration,
    outcome: &mut Outcome,
) -> Result<()> {
    let pids = stack.pids();
    let all: Vec<u32> = pids.iter().flatten().copied().collect();
    let before = Procs::take(all.iter().copied());
    let started = Instant::now();
    let until = Until::Deadline(started + duration);
    let clients = mode.clients();
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let pace = match mode {
            Mode::Closed { .. } => None,
            Mode::Paced { rate, .. } => {
                // Each client sends every clients/rate seconds; the clients are spread evenly
                // over one period so the requests arrive at an even rate.
                let every = Duration::from_secs_f64(clients as f64 / rate.max(1.0));
                Some(Pace {
                    first: started + every.mul_f64(i as f64 / clients as f64),
                    every,
                })
            }
        };
        tasks.spawn(client::client(
            target.clone(),
            body.clone(),
            Expect::Stream,
            until,
            pace,
        ));
    }
    while let Some(joined) = tasks.join_next().await {
        outcome.load.merge(joined.context("a load client failed")?);
    }
    let after = Procs::take(all.iter().copied());
    outcome.seconds += after.seconds_since(&before);
    for (i, pids) in pids.iter().enumerate() {
        outcome.cpu[i] += after.cpu_since(&before, pids);
        outcome.wait[i] += after.run_delay_since(&before, pids);
    }
    Ok(())
}

/// Every entry point under `mode`, in rounds.
pub(super) async fn measure(
    stack: &Stack,
    body: &Bytes,
    mode: Mode,
    args: &StackArgs,
) -> Result<Vec<(Entry, Outcome)>> {
    let rounds = args.rounds.max(1);
    let slice = args.duration.div_f64(rounds as f64);
    let mut outcomes: Vec<(Entry, Outcome)> = stack
        .targets
        .iter()
        .map(|(entry, _)| (*entry, Outcome::default()))
        .collect();
    for _ in 0..rounds {
        for ((_, target), (_, outcome)) in stack.targets.iter().zip(outcomes.iter_mut()) {
            run_once(stack, target, body, mode, slice, outcome).await?;
        }
    }
    Ok(outcomes)
}
