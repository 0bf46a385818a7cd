//! The full stack against the worker alone: `kiro-worker`, `drawbridge-engine` and
//! `drawbridge-gateway` started from one generated config (plus the single-process
//! `drawbridge` from the same file), then the same load on each entry point in turn.
//!
//! The entry points, all answering the same streamed prompt from the same kind of pool:
//!
//! - `worker`: the worker's own `POST /prompt` (the baseline);
//! - `engine`: the engine's internal `POST /v1/chat/completions` (engine → gRPC → worker);
//! - `gateway`: the gateway's public `POST /v1/chat/completions` (gateway → HTTP → engine →
//!   gRPC → worker): what a client sees;
//! - `single`: the single-process `drawbridge` (the three layers in one process, no hops; its
//!   own in-process worker with a pool of the same size).
//!
//! Each measurement runs every entry point for `duration / rounds`, `rounds` times in turn, so
//! that a change in the machine's load hits them alike.

use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, Expect, Load, Target, Until};
use crate::procfs::Procs;
use crate::stats::Summary;
use crate::worker::Bins;

mod load;
mod report;
pub mod soak;
mod start;

use load::{Mode, measure};
use report::{errors, met, print_mode, record_mode, verdict};
pub(crate) use start::Single;
use start::{PROCESSES, Stack};

/// The added latency the issue asks for, gateway over worker at 32 concurrent streams.
pub const ADDED_P50_TARGET_MS: f64 = 1.0;
pub const ADDED_P99_TARGET_MS: f64 = 5.0;

/// The knobs of the stack measurement.
#[derive(Debug, Clone)]
pub struct StackArgs {
    pub concurrency: usize,
    pub pool_size: u32,
    /// Per entry point and measurement, in all rounds together.
    pub duration: Duration,
    pub rounds: usize,
    /// The paced run's rate, as a fraction of the slowest entry point's saturated rate.
    pub paced_fraction: f64,
    pub single: bool,
    pub warmup: usize,
    pub log_level: String,
    /// Added to every process's environment.
    pub env: Vec<(String, String)>,
}

/// One entry point under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Worker,
    Engine,
    Gateway,
    Single,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Worker => "worker",
            Entry::Engine => "engine",
            Entry::Gateway => "gateway",
            Entry::Single => "single",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Entry::Worker => "kiro-worker POST /prompt",
            Entry::Engine => "engine POST /v1/chat/completions",
            Entry::Gateway => "gateway POST /v1/chat/completions",
            Entry::Single => "drawbridge POST /v1/chat/completions",
        }
    }
}

/// The figures the caller reports.
pub struct StackReport {
    pub metrics: Vec<(String, f64, &'static str)>,
    pub failures: u64,
}

impl StackReport {
    fn metric(&mut self, name: impl Into<String>, value: f64, unit: &'static str) {
        self.metrics.push((name.into(), value, unit));
    }

    fn latency(&mut self, name: &str, summary: &Summary) {
        self.metric(format!("{name}.p50"), summary.p50, "ms");
        self.metric(format!("{name}.p90"), summary.p90, "ms");
        self.metric(format!("{name}.p99"), summary.p99, "ms");
    }
}

/// Start the stack, measure, stop it.
pub async fn run(bins: &Bins, args: &StackArgs, prompt: &str) -> Result<StackReport> {
    let mut report = StackReport {
        metrics: Vec::new(),
        failures: 0,
    };
    let started = Instant::now();
    let stack = Stack::start(bins, args).await?;
    stack.wait_ready(Duration::from_secs(90)).await?;
    println!(
        "\nFull stack: kiro-worker + drawbridge-engine + drawbridge-gateway{} from one config; one account × pool {} of instant mock agents per worker; up in {:.0} ms",
        if args.single {
            ", and the single-process drawbridge beside them"
        } else {
            ""
        },
        args.pool_size,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "model": "kiro",
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
    }))?);

    // Warm every path: connections, the engine's view, allocators.
    report.failures += warm_up(&stack.targets, &body, args.warmup).await?;
    let pids = stack.pids();
    let rss_before = Procs::take(pids.iter().flatten().copied());

    let saturated = Mode::Closed {
        clients: args.concurrency,
    };
    let first = measure(&stack, &body, saturated, args).await?;
    let slowest = first
        .iter()
        .map(|(_, outcome)| outcome.rate())
        .fold(f64::INFINITY, f64::min);
    let mut modes = vec![(saturated, first)];
    if args.paced_fraction > 0.0 && slowest.is_finite() && slowest > 0.0 {
        let paced = Mode::Paced {
            clients: args.concurrency,
            rate: (slowest * args.paced_fraction).max(1.0),
        };
        modes.push((paced, measure(&stack, &body, paced, args).await?));
    }
    if args.concurrency != 1 {
        let one = Mode::Closed { clients: 1 };
        modes.push((one, measure(&stack, &body, one, args).await?));
    }
    let rss_after = Procs::take(pids.iter().flatten().copied());

    println!(
        "prompt: {prompt:?} as one user message, streamed; {:.0} s per entry point per measurement in {} rounds, entry points in turn; latency = whole answer, first = first content chunk",
        args.duration.as_secs_f64(),
        args.rounds.max(1)
    );
    let mut verdicts = Vec::new();
    for (mode, outcomes) in &modes {
        print_mode(*mode, outcomes);
        record_mode(&mut report, *mode, outcomes);
        for (entry, outcome) in outcomes {
            report.failures += errors(&format!("{} {}", mode.key(), entry.name()), &outcome.load);
        }
        if let Some(verdict) = verdict(outcomes) {
            verdicts.push((*mode, verdict));
        }
    }

    println!("\nmemory (VmRSS, KiB) after warm-up → after the runs:");
    for (i, name) in PROCESSES.iter().enumerate() {
        if pids[i].is_empty() {
            continue;
        }
        let (before, after) = (rss_before.rss_kib(&pids[i]), rss_after.rss_kib(&pids[i]));
        println!("  {name:<20} {before:>8} → {after:>8}");
        report.metric(format!("stack.rss.{name}.before"), before as f64, "KiB");
        report.metric(format!("stack.rss.{name}.after"), after as f64, "KiB");
    }

    println!(
        "\nTarget (issue 4): the gateway adds ≤ {ADDED_P50_TARGET_MS} ms at p50 and ≤ {ADDED_P99_TARGET_MS} ms at p99 to the worker's own /prompt (whole answer)"
    );
    for (mode, (p50, p99)) in &verdicts {
        let met50 = *p50 <= ADDED_P50_TARGET_MS;
        let met99 = *p99 <= ADDED_P99_TARGET_MS;
        println!(
            "  {:<58} added p50 {p50:+.2} ms → {}; added p99 {p99:+.2} ms → {}",
            mode.describe(),
            met(met50),
            met(met99)
        );
        report.metric(
            format!("stack.{}.target.added_p50_met", mode.key()),
            f64::from(u8::from(met50)),
            "bool",
        );
        report.metric(
            format!("stack.{}.target.added_p99_met", mode.key()),
            f64::from(u8::from(met99)),
            "bool",
        );
    }

    if !stack.stop().await? {
        report.failures += 1;
    }
    Ok(report)
}

/// Send `requests` streamed requests of `body` to each of `targets` (8 clients at a time) to
/// warm every path: connections, the engine's view, allocators. The failed ones, reported.
async fn warm_up(targets: &[(Entry, Target)], body: &Bytes, requests: usize) -> Result<u64> {
    let clients = 8;
    let mut failures = 0;
    for (entry, target) in targets {
        let mut tasks = JoinSet::new();
        for _ in 0..clients {
            tasks.spawn(client::client(
                target.clone(),
                body.clone(),
                Expect::Stream,
                Until::Count(requests.div_ceil(clients)),
                None,
            ));
        }
        let mut warmup = Load::default();
        while let Some(load) = tasks.join_next().await {
            warmup.merge(load.context("a warm-up client failed")?);
        }
        failures += errors(&format!("warm-up {}", entry.name()), &warmup);
    }
    Ok(failures)
}
