//! `drawbridge-bench`: what `make bench` runs. It measures, on this machine, with the real
//! release binaries and real agent processes on loopback:
//!
//! 1. **Throughput** of one `kiro-worker` with one account × a pool of 8 instant
//!    `mock-acp-agent`s: C keep-alive HTTP clients (8, 16, 32) send `POST /prompt` back to
//!    back for a fixed time; prompts/s, latency percentiles, errors, and the CPU and memory of
//!    the worker, its agents and this load generator (`/proc`). Once more with `stream: true`.
//! 2. **First byte**: a streaming `/prompt` on the warm pool, until the first SSE chunk with
//!    content, one at a time; the same turn on a warm `AgentProcess` driven in-process (no
//!    HTTP, no worker: the worker's own overhead is the difference); and a fresh agent
//!    process spawned per request (start + `initialize` + `session/new` + first chunk), which
//!    is what a gateway without a warm pool pays.
//! 3. **Calibration**: a pool of 8 warm `AgentProcess`es driven in-process at full speed, the
//!    ceiling the worker's ACP path can reach on this machine.
//!
//! 4. **Full stack** (`stack/`): `kiro-worker`, `drawbridge-engine` and `drawbridge-gateway`
//!    from one config, and the single-process `drawbridge`; the same streaming load on the
//!    worker's `/prompt`, the engine's and the gateway's `/v1/chat/completions` and
//!    `drawbridge`'s, in turn: the latency each layer adds, throughput ratios, and the CPU and
//!    memory of every process.
//! 5. **Warm sessions** (`warm`): turn 20 of a 20-turn conversation on the single-process
//!    `drawbridge` with `worker.warm_sessions: 0` (the whole conversation rendered into a fresh
//!    session) and `2` (only the new messages, to the session that answered the turns before):
//!    the bytes of prompt the agent received and the time to the first token.
//!
//! 6. **Soak** (`stack/soak.rs`, not run by default: it lasts ten minutes): a real
//!    `redis-server` and the three-process stack on it (and `drawbridge` on the same server),
//!    saturated with distinct streamed prompts through the gateway; every process's RSS and
//!    the server's key count sampled at intervals, and whether each stays flat after warm-up.
//!
//! 7. **Provider accounts** (`providers`): an instant OpenAI-compatible upstream
//!    (`mock-provider`) directly, through `drawbridge` with one `kind: openai` account, through
//!    gateway → engine, and through LiteLLM's proxy (from a virtualenv the bench makes), in
//!    turn: throughput at 32 clients, latency at 4, what each path adds, and memory.
//!
//! It prints tables and `bench name=... value=... unit=...` lines, says whether the targets
//! (≥ 1,000 prompts/s; warm pool ≥ 10× faster to first byte; the gateway adds ≤ 1 ms at p50
//! and ≤ 5 ms at p99) were met without failing on them, and exits non-zero if any request
//! failed.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark binary reports its figures on stdout and its failures on stderr"
)]

mod acp;
mod client;
mod procfs;
mod providers;
mod resp;
mod stack;
mod stats;
mod warm;
mod worker;
mod worker_alone;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use crate::client::Load;
use crate::stats::Summary;
use crate::worker::Bins;
use crate::worker_alone::worker_section;

/// The prompt every turn sends: five words, so the mock streams five chunks.
const PROMPT: &str = "hello from the drawbridge benchmark";
const THROUGHPUT_TARGET: f64 = 1000.0;
const FIRST_BYTE_TARGET: f64 = 10.0;

#[derive(Debug, Parser)]
#[command(
    name = "drawbridge-bench",
    about = "Worker throughput with the instant mock agent, first-byte latency of a warm pool against spawning an agent per request, and the latency the engine and gateway add"
)]
struct Args {
    /// What to measure: `worker` (throughput, first byte, calibration), `stack` (the full
    /// stack against the worker alone), `warm` (warm sessions against full render) and/or
    /// `soak` (memory and ValKey keys under sustained load; not by default, it is long) and/or
    /// `providers` (an OpenAI-compatible upstream directly, through drawbridge, the stack and
    /// LiteLLM).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "worker,stack,warm,providers"
    )]
    sections: Vec<Section>,
    /// Seconds each throughput run lasts.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Concurrent HTTP clients of the non-streaming throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32")]
    concurrency: Vec<usize>,
    /// Concurrent HTTP clients of the streaming throughput run.
    #[arg(long, default_value_t = 16)]
    stream_concurrency: usize,
    /// Agent processes in the account's pool (and in the in-process calibration pool).
    #[arg(long, default_value_t = 8)]
    pool_size: u32,
    /// Requests sent to warm up the worker before measuring.
    #[arg(long, default_value_t = 400)]
    warmup: usize,
    /// Sequential first-byte measurements on the warm pool (HTTP, and in-process).
    #[arg(long, default_value_t = 200)]
    warm_n: usize,
    /// First-byte measurements with an agent process spawned per request.
    #[arg(long, default_value_t = 50)]
    spawn_n: usize,
    /// Full stack: concurrent streaming clients of the saturating and paced runs (a run with
    /// one client follows).
    #[arg(long, default_value_t = 32)]
    stack_concurrency: usize,
    /// Full stack: agent processes in the account's pool, in the worker and in `drawbridge`
    /// (default: --stack-concurrency, so requests do not queue for an agent).
    #[arg(long)]
    stack_pool_size: Option<u32>,
    /// Full stack: seconds per entry point and measurement (all rounds together; default
    /// --duration).
    #[arg(long)]
    stack_duration: Option<f64>,
    /// Full stack: the entry points take turns this many times per measurement.
    #[arg(long, default_value_t = 2)]
    stack_rounds: usize,
    /// Full stack: the paced run's rate as a fraction of the slowest entry point's saturated
    /// rate (0: no paced run).
    #[arg(long, default_value_t = 0.5)]
    stack_paced_fraction: f64,
    /// Full stack: leave out the single-process `drawbridge`.
    #[arg(long)]
    stack_no_single: bool,
    /// Full stack: warm-up requests per entry point.
    #[arg(long, default_value_t = 400)]
    stack_warmup: usize,
    /// Full stack: the processes' log level (`info` is the default of a deployment; every
    /// request logs a line at info on the gateway and the engine).
    #[arg(long, default_value = "info")]
    stack_log: String,
    /// Full stack: `KEY=VALUE` added to every process's environment, for experiments (e.g.
    /// `DRAWBRIDGE_LOG__TRACE_SAMPLE_RATIO=0`); repeatable.
    /// (Also the warm section's `drawbridge`s' log level and environment.)
    #[arg(long, value_parser = parse_env)]
    stack_env: Vec<(String, String)>,
    /// Soak: seconds of load.
    #[arg(long, default_value_t = 600.0)]
    soak_duration: f64,
    /// Soak: seconds between two samples of memory and keys.
    #[arg(long, default_value_t = 30.0)]
    soak_interval: f64,
    /// Soak: the verdict starts from the first sample at or after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    soak_settle: f64,
    /// Soak: streaming clients per entry point.
    #[arg(long, default_value_t = 16)]
    soak_concurrency: usize,
    /// Soak: agent processes in the account's pool, in the worker and in `drawbridge`.
    #[arg(long, default_value_t = 8)]
    soak_pool_size: u32,
    /// Soak: leave out the single-process `drawbridge` (then only the gateway is loaded).
    #[arg(long)]
    soak_no_single: bool,
    /// Providers: clients of the throughput measurements.
    #[arg(long, default_value_t = 32)]
    providers_concurrency: usize,
    /// Providers: clients of the latency measurements.
    #[arg(long, default_value_t = 4)]
    providers_latency_concurrency: usize,
    /// Providers: seconds per target and measurement, all rounds together (default
    /// --duration).
    #[arg(long)]
    providers_duration: Option<f64>,
    /// Providers: the targets take turns this many times per measurement.
    #[arg(long, default_value_t = 4)]
    providers_rounds: usize,
    /// Providers: warm-up requests per target (LiteLLM gets an eighth).
    #[arg(long, default_value_t = 400)]
    providers_warmup: usize,
    /// Providers: LiteLLM's virtualenv, made with `pip install 'litellm[proxy]'` when it has
    /// no `litellm` (default: `litellm-venv` beside the binaries' directory, i.e. in `target/`).
    #[arg(long)]
    litellm_venv: Option<std::path::PathBuf>,
    /// Providers: leave LiteLLM out.
    #[arg(long)]
    no_litellm: bool,
    /// Warm sessions: conversations per mode (the modes alternate).
    #[arg(long, default_value_t = 5)]
    warm_conversations: usize,
    /// Warm sessions: turns per conversation; the last one is measured (at least 2).
    #[arg(long, default_value_t = 20)]
    warm_turns: usize,
    /// Warm sessions: bytes of prose in each user message (its directive comes on top).
    #[arg(long, default_value_t = 400)]
    warm_message_bytes: usize,
    /// Warm sessions: chunks of every answer (`[[mock:stream n=N]]`).
    #[arg(long, default_value_t = 8)]
    warm_chunks: u64,
}

fn parse_env(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {pair:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Worker,
    Stack,
    Warm,
    Soak,
    Providers,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failures) => {
            eprintln!("drawbridge-bench: {failures} request(s) failed");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("drawbridge-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The machine-readable figures, printed together at the end.
#[derive(Default)]
struct Report {
    metrics: Vec<(String, f64, &'static str)>,
    failures: u64,
}

impl Report {
    fn metric(&mut self, name: impl Into<String>, value: f64, unit: &'static str) {
        self.metrics.push((name.into(), value, unit));
    }

    fn latency(&mut self, name: &str, summary: &Summary) {
        self.metric(format!("{name}.p50"), summary.p50, "ms");
        self.metric(format!("{name}.p90"), summary.p90, "ms");
        self.metric(format!("{name}.p99"), summary.p99, "ms");
    }

    /// Count a load's failures and show the first ones.
    fn errors(&mut self, what: &str, load: &Load) {
        self.failures += load.errors;
        if load.errors > 0 {
            eprintln!("{what}: {} failed request(s); first:", load.errors);
            for error in &load.first_errors {
                eprintln!("  {error}");
            }
        }
    }
}

async fn run(args: &Args) -> Result<u64> {
    let bins = Bins::locate()?;
    let mut report = Report::default();
    print_machine(&bins);
    if args.sections.contains(&Section::Worker) {
        worker_section(args, &bins, &mut report).await?;
    }
    if args.sections.contains(&Section::Stack) {
        let stack = stack::run(
            &bins,
            &stack::StackArgs {
                concurrency: args.stack_concurrency.max(1),
                pool_size: args
                    .stack_pool_size
                    .unwrap_or(u32::try_from(args.stack_concurrency).unwrap_or(32))
                    .max(1),
                duration: Duration::from_secs_f64(args.stack_duration.unwrap_or(args.duration)),
                rounds: args.stack_rounds,
                paced_fraction: args.stack_paced_fraction,
                single: !args.stack_no_single,
                warmup: args.stack_warmup,
                log_level: args.stack_log.clone(),
                env: args.stack_env.clone(),
            },
            PROMPT,
        )
        .await?;
        report.failures += stack.failures;
        report.metrics.extend(stack.metrics);
    }
    if args.sections.contains(&Section::Warm) {
        let warm = warm::run(
            &bins,
            &warm::WarmArgs {
                conversations: args.warm_conversations,
                turns: args.warm_turns,
                message_bytes: args.warm_message_bytes,
                chunks: args.warm_chunks,
                log_level: args.stack_log.clone(),
                env: args.stack_env.clone(),
            },
        )
        .await?;
        report.failures += warm.failures;
        report.metrics.extend(warm.metrics);
    }
    if args.sections.contains(&Section::Soak) {
        let soak = stack::soak::run(
            &bins,
            &stack::soak::SoakArgs {
                duration: seconds("--soak-duration", args.soak_duration.max(1.0))?,
                interval: seconds("--soak-interval", args.soak_interval.max(1.0))?,
                settle: seconds("--soak-settle", args.soak_settle.max(0.0))?,
                concurrency: args.soak_concurrency.max(1),
                pool_size: args.soak_pool_size.max(1),
                single: !args.soak_no_single,
                warmup: args.stack_warmup,
                log_level: args.stack_log.clone(),
                env: args.stack_env.clone(),
            },
        )
        .await?;
        report.failures += soak.failures;
        report.metrics.extend(soak.metrics);
    }
    if args.sections.contains(&Section::Providers) {
        let venv = args
            .litellm_venv
            .clone()
            .unwrap_or_else(|| bins.dir.parent().unwrap_or(&bins.dir).join("litellm-venv"));
        let providers = providers::run(
            &bins,
            &providers::ProviderArgs {
                concurrency: args.providers_concurrency.max(1),
                latency_concurrency: args.providers_latency_concurrency.max(1),
                duration: seconds(
                    "--providers-duration",
                    args.providers_duration.unwrap_or(args.duration).max(0.1),
                )?,
                rounds: args.providers_rounds,
                warmup: args.providers_warmup,
                litellm_venv: (!args.no_litellm).then_some(venv),
                log_level: args.stack_log.clone(),
                env: args.stack_env.clone(),
            },
            PROMPT,
        )
        .await?;
        report.failures += providers.failures;
        report.metrics.extend(providers.metrics);
    }
    println!(
        "\nload average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    report.metric("failures", report.failures as f64, "requests");
    println!();
    for (name, value, unit) in &report.metrics {
        println!("bench name={name} value={value:.3} unit={unit}");
    }
    Ok(report.failures)
}

/// A number of seconds from the command line as a duration, or an error naming the flag.
fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|error| anyhow::anyhow!("{flag} {value}: {error}"))
}

/// Where the figures come from.
fn print_machine(bins: &Bins) {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or_else(
            || "unknown".to_owned(),
            |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0),
        );
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("drawbridge-bench");
    println!(
        "machine: {cores} CPUs ({model}), {memory} RAM, Linux {}",
        read("/proc/sys/kernel/osrelease").trim()
    );
    println!(
        "load average at start: {}",
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "binaries: {} ({} build of drawbridge-bench)\n",
        bins.dir.display(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}
