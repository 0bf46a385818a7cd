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

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use tempfile::TempDir;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, Conn, Expect, Load, Pace, Target, Until};
use crate::procfs::Procs;
use crate::stats::Summary;
use crate::worker::{Bins, Server, wait_slots_idle};

/// The client key of the stack's gateway (and of `drawbridge`).
const API_KEY: &str = "db-bench-key-0123456789";
/// The key the gateway presents to the engine, and the engine direct measurement with it.
const CHANNEL_KEY: &str = "db-bench-channel-key-0123";

/// The added latency the issue asks for, gateway over worker at 32 concurrent streams.
pub const ADDED_P50_TARGET_MS: f64 = 1.0;
pub const ADDED_P99_TARGET_MS: f64 = 5.0;

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

/// The running stack.
struct Stack {
    _dir: TempDir,
    worker: Server,
    engine: Server,
    gateway: Server,
    single: Option<Server>,
    worker_data: PathBuf,
    single_data: PathBuf,
    targets: Vec<(Entry, Target)>,
}

/// The processes whose CPU and memory are counted, by name, in the order printed.
const PROCESSES: [&str; 7] = [
    "gateway",
    "engine",
    "worker",
    "drawbridge",
    "agents(worker)",
    "agents(drawbridge)",
    "bench",
];

impl Stack {
    async fn start(bins: &Bins, args: &StackArgs) -> Result<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("drawbridge-bench-stack-")
            .tempdir()
            .context("create a temporary directory")?;
        let worker_data = dir.path().join("worker");
        let single_data = dir.path().join("single");
        let config = dir.path().join("drawbridge.yaml");
        std::fs::write(
            &config,
            config_yaml(&bins.agent, &worker_data, args.pool_size, &args.log_level),
        )
        .context("write the stack's config")?;
        let env = |node: &str, extra: &[(&str, String)]| {
            let mut env = vec![
                // `RUST_LOG` wins over `log.level`: set it so the bench's own does not leak in,
                // and keep the `listening NAME=ADDR` lines whatever the level.
                (
                    "RUST_LOG".to_owned(),
                    format!("{},drawbridge::listen=info", args.log_level),
                ),
                ("DRAWBRIDGE_NODE__ID".to_owned(), node.to_owned()),
            ];
            env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            env.extend(args.env.iter().cloned());
            env
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
                    &env(
                        "bench-single",
                        &[
                            (
                                "DRAWBRIDGE_WORKER__DATA_DIR",
                                single_data.display().to_string(),
                            ),
                            (
                                "DRAWBRIDGE_GATEWAY__DATA_FILE",
                                single_data.join("gateway.redb").display().to_string(),
                            ),
                        ],
                    ),
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
    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
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
    fn pids(&self) -> Vec<Vec<u32>> {
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
    async fn stop(self) -> Result<bool> {
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

/// How the clients send.
#[derive(Debug, Clone, Copy)]
enum Mode {
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

    fn key(self) -> String {
        match self {
            Mode::Closed { clients } => format!("c{clients}"),
            Mode::Paced { clients, .. } => format!("c{clients}_paced"),
        }
    }

    fn describe(self) -> String {
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
struct Outcome {
    load: Load,
    seconds: f64,
    /// CPU seconds per name of [`PROCESSES`].
    cpu: [f64; PROCESSES.len()],
    /// Seconds runnable but waiting for a CPU, per name of [`PROCESSES`].
    wait: [f64; PROCESSES.len()],
}

impl Outcome {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.load.latencies.len() as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// CPU milliseconds per good answer, per name of [`PROCESSES`].
    fn cpu_per_prompt(&self) -> [f64; PROCESSES.len()] {
        let n = self.load.latencies.len().max(1) as f64;
        self.cpu.map(|cpu| 1000.0 * cpu / n)
    }

    /// Milliseconds runnable but waiting for a CPU per good answer, per name of [`PROCESSES`].
    fn wait_per_prompt(&self) -> [f64; PROCESSES.len()] {
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
async fn measure(
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
    let warmup_clients = 8;
    for (entry, target) in &stack.targets {
        let mut tasks = JoinSet::new();
        for _ in 0..warmup_clients {
            tasks.spawn(client::client(
                target.clone(),
                body.clone(),
                Expect::Stream,
                Until::Count(args.warmup.div_ceil(warmup_clients)),
                None,
            ));
        }
        let mut warmup = Load::default();
        while let Some(load) = tasks.join_next().await {
            warmup.merge(load.context("a warm-up client failed")?);
        }
        report.failures += errors(&format!("warm-up {}", entry.name()), &warmup);
    }
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

fn met(yes: bool) -> &'static str {
    if yes { "MET" } else { "NOT MET" }
}

/// Count and show a load's failures.
fn errors(what: &str, load: &Load) -> u64 {
    if load.errors > 0 {
        eprintln!("{what}: {} failed request(s); first:", load.errors);
        for error in &load.first_errors {
            eprintln!("  {error}");
        }
    }
    load.errors
}

/// The gateway's added latency over the worker (whole answer, p50 and p99).
fn verdict(outcomes: &[(Entry, Outcome)]) -> Option<(f64, f64)> {
    let find = |want: Entry| {
        outcomes
            .iter()
            .find(|(entry, _)| *entry == want)
            .map(|(_, outcome)| outcome.load.latencies.summary())
    };
    let base = find(Entry::Worker)?;
    let gateway = find(Entry::Gateway)?;
    Some((gateway.p50 - base.p50, gateway.p99 - base.p99))
}

fn print_mode(mode: Mode, outcomes: &[(Entry, Outcome)]) {
    println!("\n{}", mode.describe());
    println!(
        "{:<38} {:>9} {:>22} {:>22} {:>6} | CPU ms per prompt: gw / eng / wrk / db / agents / bench",
        "entry point", "prompts/s", "latency p50/p90/p99", "first p50/p90/p99", "errors"
    );
    for (entry, outcome) in outcomes {
        let latency = outcome.load.latencies.summary();
        let first = outcome.load.first_content.summary();
        let cpu = outcome.cpu_per_prompt();
        // The agents of whichever worker served the run.
        let agents = cpu[4] + cpu[5];
        println!(
            "{:<38} {:>9.0} {:>22} {:>22} {:>6} | {:.3} / {:.3} / {:.3} / {:.3} / {:.3} / {:.3}",
            entry.describe(),
            outcome.rate(),
            format!(
                "{:.2} / {:.2} / {:.2}",
                latency.p50, latency.p90, latency.p99
            ),
            format!("{:.2} / {:.2} / {:.2}", first.p50, first.p90, first.p99),
            outcome.load.errors,
            cpu[0],
            cpu[1],
            cpu[2],
            cpu[3],
            agents,
            cpu[6],
        );
    }
    println!(
        "{:<38} | runnable but waiting for a CPU, ms per prompt: gw / eng / wrk / db / agents / bench",
        ""
    );
    for (entry, outcome) in outcomes {
        let wait = outcome.wait_per_prompt();
        println!(
            "{:<38} | {:.3} / {:.3} / {:.3} / {:.3} / {:.3} / {:.3}",
            entry.describe(),
            wait[0],
            wait[1],
            wait[2],
            wait[3],
            wait[4] + wait[5],
            wait[6],
        );
    }
    let Some((_, base)) = outcomes.iter().find(|(entry, _)| *entry == Entry::Worker) else {
        return;
    };
    let base_latency = base.load.latencies.summary();
    let base_first = base.load.first_content.summary();
    println!(
        "{:<38} {:>9} {:>22} {:>22}",
        "added over the worker's /prompt", "ratio", "latency p50/p90/p99", "first p50/p90/p99"
    );
    for (entry, outcome) in outcomes {
        if *entry == Entry::Worker {
            continue;
        }
        let latency = outcome.load.latencies.summary();
        let first = outcome.load.first_content.summary();
        println!(
            "{:<38} {:>9} {:>22} {:>22}",
            entry.describe(),
            format!("{:.3}", ratio(outcome.rate(), base.rate())),
            format!(
                "{:+.2} / {:+.2} / {:+.2}",
                latency.p50 - base_latency.p50,
                latency.p90 - base_latency.p90,
                latency.p99 - base_latency.p99
            ),
            format!(
                "{:+.2} / {:+.2} / {:+.2}",
                first.p50 - base_first.p50,
                first.p90 - base_first.p90,
                first.p99 - base_first.p99
            ),
        );
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn record_mode(report: &mut StackReport, mode: Mode, outcomes: &[(Entry, Outcome)]) {
    let base = outcomes
        .iter()
        .find(|(entry, _)| *entry == Entry::Worker)
        .map(|(_, outcome)| {
            (
                outcome.rate(),
                outcome.load.latencies.summary(),
                outcome.load.first_content.summary(),
            )
        });
    if let Mode::Paced { rate, .. } = mode {
        report.metric(format!("stack.{}.rate", mode.key()), rate, "requests/s");
    }
    for (entry, outcome) in outcomes {
        let name = format!("stack.{}.{}", mode.key(), entry.name());
        let latency = outcome.load.latencies.summary();
        let first = outcome.load.first_content.summary();
        report.metric(format!("{name}.throughput"), outcome.rate(), "prompts/s");
        report.latency(&format!("{name}.latency"), &latency);
        report.latency(&format!("{name}.first_content"), &first);
        report.metric(
            format!("{name}.errors"),
            outcome.load.errors as f64,
            "requests",
        );
        for ((process, cpu), wait) in PROCESSES
            .iter()
            .zip(outcome.cpu_per_prompt())
            .zip(outcome.wait_per_prompt())
        {
            if cpu > 0.0 {
                report.metric(format!("{name}.cpu_per_prompt.{process}"), cpu, "ms");
            }
            if wait > 0.0 {
                report.metric(format!("{name}.cpu_wait_per_prompt.{process}"), wait, "ms");
            }
        }
        if let Some((rate, base_latency, base_first)) = base
            && *entry != Entry::Worker
        {
            report.metric(
                format!("{name}.throughput_ratio"),
                ratio(outcome.rate(), rate),
                "x",
            );
            for (what, ours, theirs) in [
                ("latency", latency, base_latency),
                ("first_content", first, base_first),
            ] {
                report.metric(
                    format!("{name}.added.{what}.p50"),
                    ours.p50 - theirs.p50,
                    "ms",
                );
                report.metric(
                    format!("{name}.added.{what}.p90"),
                    ours.p90 - theirs.p90,
                    "ms",
                );
                report.metric(
                    format!("{name}.added.{what}.p99"),
                    ours.p99 - theirs.p99,
                    "ms",
                );
            }
        }
    }
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
