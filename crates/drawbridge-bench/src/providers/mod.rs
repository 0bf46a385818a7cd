//! Provider accounts (`--sections providers`): an instant OpenAI-compatible upstream
//! (`mock-provider`) measured directly, through the single-process `drawbridge` with one
//! `kind: openai` account on it, through the three-process stack (gateway → engine → the
//! provider account; no worker), through LiteLLM's proxy as a peer, and through
//! `bench-floor-proxy` (a bare hyper-to-hyper forwarder: the least any gateway does, so the
//! ceiling of a gateway's throughput on this machine), all with the same load clients.
//!
//! The targets take turns in every measurement (`rounds` times each), so a change in the
//! machine's load hits them alike. Each measurement is C keep-alive clients sending back to
//! back, whole (`stream: false`) or streamed. At 32 clients the figure is throughput; at 4,
//! latency, and what each path adds to the direct one. The resident memory of every process
//! is sampled while the load runs.
//!
//! LiteLLM runs from a virtualenv (`--litellm-venv`, made with `pip install 'litellm[proxy]'`
//! when missing). When it cannot be installed or started it is left out with a message, and
//! the rest of the section still runs.

mod litellm;
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, Conn, Expect, Load, Target, Until};
use crate::procfs::Procs;
use crate::worker::{Bins, Server};
use litellm::LiteLlm;
use report::{print_measure, record, verdicts};

/// The client key of the gateway and of `drawbridge`.
const API_KEY: &str = "db-bench-key-0123456789";
/// The key the gateway presents to the engine.
const CHANNEL_KEY: &str = "db-bench-channel-key-0123";
/// The key the upstream wants (the mock checks it, as a real provider does).
const UPSTREAM_KEY: &str = "sk-bench-upstream-0123";
/// The model every target serves.
const MODEL: &str = "gpt-bench";

/// Throughput through `drawbridge` over direct, at 32 clients (issue 16).
pub const THROUGHPUT_RATIO_TARGET: f64 = 0.5;
/// What `drawbridge` may add to the direct latency at 4 clients, ms (issue 16).
pub const ADDED_P50_TARGET_MS: f64 = 0.3;
pub const ADDED_P99_TARGET_MS: f64 = 1.0;
/// `drawbridge`'s resident memory under load, MB (10^6 bytes).
pub const RSS_TARGET_MB: u64 = 50;
const RSS_TARGET_KIB: u64 = RSS_TARGET_MB * 1000 * 1000 / 1024;

/// The knobs of the provider section.
#[derive(Debug, Clone)]
pub struct ProviderArgs {
    /// Clients of the throughput measurements.
    pub concurrency: usize,
    /// Clients of the latency measurements.
    pub latency_concurrency: usize,
    /// Per target and measurement, all rounds together.
    pub duration: Duration,
    pub rounds: usize,
    /// Warm-up requests per target (LiteLLM gets an eighth).
    pub warmup: usize,
    /// Where LiteLLM's virtualenv is (made when missing); `None`: leave LiteLLM out.
    pub litellm_venv: Option<PathBuf>,
    pub log_level: String,
    /// Added to every drawbridge process's environment.
    pub env: Vec<(String, String)>,
}

/// The figures the caller reports.
pub struct ProviderReport {
    pub metrics: Vec<(String, f64, &'static str)>,
    pub failures: u64,
}

/// One way to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Floor,
    Single,
    Stack,
    LiteLlm,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Floor => "floor",
            Via::Single => "drawbridge",
            Via::Stack => "stack",
            Via::LiteLlm => "litellm",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Via::Direct => "mock-provider directly",
            Via::Floor => "bare hyper proxy (the floor)",
            Via::Single => "drawbridge (single binary)",
            Via::Stack => "gateway → engine (three-process stack)",
            Via::LiteLlm => "LiteLLM proxy",
        }
    }
}

/// The processes whose CPU and memory are counted, in the order printed.
const PROCESSES: [&str; 7] = [
    "mock-provider",
    "drawbridge",
    "gateway",
    "engine",
    "litellm",
    "bench",
    "floor",
];

/// One measurement: how many clients, whole or streamed.
#[derive(Debug, Clone, Copy)]
struct Measure {
    clients: usize,
    stream: bool,
}

impl Measure {
    fn key(self) -> String {
        format!(
            "c{}_{}",
            self.clients,
            if self.stream { "stream" } else { "json" }
        )
    }
}

/// What one target did over all the rounds of one measurement.
#[derive(Debug, Default)]
struct Outcome {
    load: Load,
    seconds: f64,
    cpu: [f64; PROCESSES.len()],
    /// The largest resident memory seen while the load ran, KiB.
    rss_max: [u64; PROCESSES.len()],
}

impl Outcome {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.load.latencies.len() as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The running processes and the ways to the upstream.
struct Running {
    _dir: tempfile::TempDir,
    mock: Server,
    floor: Server,
    single: Server,
    engine: Server,
    gateway: Server,
    litellm: Option<LiteLlm>,
    targets: Vec<(Via, Target)>,
}

impl Running {
    fn pids(&self) -> [Vec<u32>; PROCESSES.len()] {
        let one = |server: &Server| server.pid().into_iter().collect::<Vec<u32>>();
        [
            one(&self.mock),
            one(&self.single),
            one(&self.gateway),
            one(&self.engine),
            self.litellm
                .as_ref()
                .and_then(|l| l.child.id())
                .into_iter()
                .collect(),
            vec![std::process::id()],
            one(&self.floor),
        ]
    }
}

/// The config every drawbridge process reads (each takes the sections it needs): one
/// `kind: openai` account on the mock at `upstream`, with room for every client; the engine
/// lists no worker (the provider account is its own).
fn config_yaml(upstream: SocketAddr, data_dir: &Path, log_level: &str) -> String {
    format!(
        "node: {{ id: bench }}\n\
         gateway:\n  listen: 127.0.0.1:0\n  shutdown_grace: 20s\n  engine_key: {CHANNEL_KEY}\n  api_keys:\n    - {{ name: bench, key: {API_KEY}, rpm: 0 }}\n\
         engine:\n  listen: 127.0.0.1:0\n  shutdown_grace: 20s\n  workers: []\n  channel_keys:\n    - {{ name: bench-gateway, key: {CHANNEL_KEY}, trust_tenant: true }}\n\
         worker:\n  data_dir: \"{}\"\n  shutdown_grace: 20s\n\
         log: {{ level: {log_level} }}\n\
         accounts:\n  - id: mock\n    kind: openai\n    models: [{MODEL}]\n    provider:\n      base_url: http://{upstream}/v1\n      api_key: {UPSTREAM_KEY}\n      max_concurrency: 1024\n",
        data_dir.display(),
    )
}

/// Start everything, measure, stop.
pub async fn run(bins: &Bins, args: &ProviderArgs, prompt: &str) -> Result<ProviderReport> {
    let mut report = ProviderReport {
        metrics: Vec::new(),
        failures: 0,
    };
    let started = Instant::now();
    let running = start(bins, args).await?;
    println!(
        "\nProvider accounts: mock-provider (OpenAI wire format, instant answers) directly, through the floor proxy, through drawbridge, through gateway → engine{}; up in {:.0} ms",
        if running.litellm.is_some() {
            ", and through LiteLLM"
        } else {
            ""
        },
        started.elapsed().as_secs_f64() * 1000.0
    );
    let body = |stream: bool| -> Result<Bytes> {
        Ok(Bytes::from(serde_json::to_vec(&serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "stream": stream,
        }))?))
    };
    let expected = format!("You said: {prompt}");
    for (via, target) in &running.targets {
        let requests = if *via == Via::LiteLlm {
            args.warmup / 8
        } else {
            args.warmup
        };
        for stream in [false, true] {
            let load = burst(
                target,
                body(stream)?,
                expect(stream, &expected),
                8,
                Until::Count(requests.div_ceil(2)),
            )
            .await?;
            report.failures += errors(&format!("warm-up {}", via.name()), &load);
        }
    }

    let measures = [
        Measure {
            clients: args.concurrency,
            stream: false,
        },
        Measure {
            clients: args.concurrency,
            stream: true,
        },
        Measure {
            clients: args.latency_concurrency,
            stream: false,
        },
        Measure {
            clients: args.latency_concurrency,
            stream: true,
        },
    ];
    let pids = running.pids();
    let mut results = Vec::new();
    for measure in measures {
        let rounds = args.rounds.max(1);
        let slice = args.duration.div_f64(rounds as f64);
        let mut outcomes: Vec<(Via, Outcome)> = running
            .targets
            .iter()
            .map(|(via, _)| (*via, Outcome::default()))
            .collect();
        let body = body(measure.stream)?;
        let expect = expect(measure.stream, &expected);
        for _ in 0..rounds {
            for ((_, target), (_, outcome)) in running.targets.iter().zip(outcomes.iter_mut()) {
                run_once(target, &body, &expect, measure, slice, &pids, outcome).await?;
            }
        }
        results.push((measure, outcomes));
    }

    println!(
        "prompt: {prompt:?} as one user message (the mock answers \"You said: …\", one word per chunk when streamed); {:.0} s per target per measurement in {} rounds, targets in turn",
        args.duration.as_secs_f64(),
        args.rounds.max(1)
    );
    for (measure, outcomes) in &results {
        print_measure(*measure, outcomes);
        record(&mut report, *measure, outcomes);
        for (via, outcome) in outcomes {
            report.failures += errors(&format!("{} {}", measure.key(), via.name()), &outcome.load);
        }
    }
    verdicts(&mut report, &results, args);

    // The mock is killed when dropped, at the end; the others stop on SIGTERM.
    let Running {
        single,
        gateway,
        engine,
        litellm,
        ..
    } = running;
    if let Some(litellm) = litellm {
        litellm.stop().await;
    }
    for server in [single, gateway, engine] {
        let name = server.name().to_owned();
        if !server.stop().await? {
            eprintln!("{name} did not exit 0 after SIGTERM");
            report.failures += 1;
        }
    }
    Ok(report)
}

/// What a good answer looks like.
fn expect(stream: bool, text: &str) -> Expect {
    if stream {
        Expect::Stream
    } else {
        Expect::Json(Bytes::from(text.to_owned()))
    }
}

async fn start(bins: &Bins, args: &ProviderArgs) -> Result<Running> {
    let mock_bin = bins.dir.join("mock-provider");
    if !mock_bin.is_file() {
        bail!(
            "{} is missing: build the binaries first (`cargo build --release --workspace --bins`)",
            mock_bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("drawbridge-bench-providers-")
        .tempdir()
        .context("create a temporary directory")?;
    let config = dir.path().join("drawbridge.yaml");
    // The mock ignores `--config`; it checks the upstream key as a provider would.
    let mock = Server::start(
        &mock_bin,
        &config,
        &[("MOCK_PROVIDER_API_KEY".to_owned(), UPSTREAM_KEY.to_owned())],
        &["http"],
    )
    .await?;
    let upstream = mock.addr("http")?;
    let floor = Server::start(
        &bins.dir.join("bench-floor-proxy"),
        &config,
        &[
            ("FLOOR_UPSTREAM".to_owned(), upstream.to_string()),
            ("FLOOR_UPSTREAM_KEY".to_owned(), UPSTREAM_KEY.to_owned()),
        ],
        &["gateway"],
    )
    .await?;
    std::fs::write(
        &config,
        config_yaml(upstream, &dir.path().join("worker"), &args.log_level),
    )
    .context("write the config")?;
    let env = |node: &str, extra: &[(&str, String)]| {
        let mut env = vec![
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
    let data = |name: &str| dir.path().join(name).display().to_string();
    let single = Server::start(
        &bins.single,
        &config,
        &env(
            "bench-single",
            &[
                ("DRAWBRIDGE_GATEWAY__DATA_FILE", data("single.redb")),
                ("DRAWBRIDGE_WORKER__DATA_DIR", data("single")),
            ],
        ),
        &["gateway"],
    )
    .await?;
    let engine = Server::start(
        &bins.engine,
        &config,
        &env("bench-engine", &[]),
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
                ("DRAWBRIDGE_GATEWAY__DATA_FILE", data("gateway.redb")),
            ],
        ),
        &["gateway"],
    )
    .await?;
    let mut targets = vec![
        (
            Via::Direct,
            Target {
                addr: upstream,
                path: "/v1/chat/completions",
                authorization: Some(format!("Bearer {UPSTREAM_KEY}")),
            },
        ),
        (Via::Floor, Target::chat(floor.addr("gateway")?, API_KEY)),
        (Via::Single, Target::chat(single.addr("gateway")?, API_KEY)),
        (Via::Stack, Target::chat(gateway.addr("gateway")?, API_KEY)),
    ];
    let litellm = match &args.litellm_venv {
        None => {
            println!("LiteLLM: left out (--no-litellm)");
            None
        }
        Some(venv) => match LiteLlm::start(venv, upstream, dir.path()).await {
            Ok(litellm) => {
                targets.push((Via::LiteLlm, Target::chat(litellm.addr, litellm::KEY)));
                Some(litellm)
            }
            Err(error) => {
                println!("LiteLLM: skipped, {error:#}");
                None
            }
        },
    };
    let running = Running {
        _dir: dir,
        mock,
        floor,
        single,
        engine,
        gateway,
        litellm,
        targets,
    };
    // Ready when each target answers a request.
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "ready?"}],
    }))?);
    let deadline = Instant::now() + Duration::from_secs(120);
    for (via, target) in &running.targets {
        loop {
            let last = match answer(target, &body).await {
                Ok((200, _)) => break,
                Ok((status, reply)) => format!("{status} {}", client::excerpt(&reply)),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} never answered; last: {last}; logs:\n{}\n{}\n{}",
                    via.describe(),
                    running.single.log(),
                    running.engine.log(),
                    running.gateway.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(running)
}

/// One request on a fresh connection: status and body.
async fn answer(target: &Target, body: &Bytes) -> Result<(u16, Bytes)> {
    let mut conn = Conn::open(target.addr).await?;
    conn.call(
        http::Method::POST,
        target.path,
        target.authorization.as_deref(),
        body.clone(),
    )
    .await
}

/// `clients` clients sending `body` to `target` until `until`.
async fn burst(
    target: &Target,
    body: Bytes,
    expect: Expect,
    clients: usize,
    until: Until,
) -> Result<Load> {
    let mut tasks = JoinSet::new();
    for _ in 0..clients.max(1) {
        tasks.spawn(client::client(
            target.clone(),
            body.clone(),
            expect.clone(),
            until,
            None,
        ));
    }
    let mut load = Load::default();
    while let Some(joined) = tasks.join_next().await {
        load.merge(joined.context("a load client failed")?);
    }
    Ok(load)
}

/// One run of `measure` on `target` for `duration`, its CPU and peak memory added to `outcome`.
async fn run_once(
    target: &Target,
    body: &Bytes,
    expect: &Expect,
    measure: Measure,
    duration: Duration,
    pids: &[Vec<u32>; PROCESSES.len()],
    outcome: &mut Outcome,
) -> Result<()> {
    let all: Vec<u32> = pids.iter().flatten().copied().collect();
    let before = Procs::take(all.iter().copied());
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampled = pids.clone();
    // Resident memory every 50 ms while the load runs: its peak is the figure.
    let mut sampler = JoinSet::new();
    sampler.spawn(async move {
        let mut peak = [0u64; PROCESSES.len()];
        loop {
            let now = Procs::take(sampled.iter().flatten().copied());
            for (i, pids) in sampled.iter().enumerate() {
                peak[i] = peak[i].max(now.rss_kib(pids));
            }
            tokio::select! {
                _ = &mut stopped => return peak,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    let load = burst(
        target,
        body.clone(),
        expect.clone(),
        measure.clients,
        Until::Deadline(Instant::now() + duration),
    )
    .await?;
    let after = Procs::take(all.iter().copied());
    let _ = stop.send(());
    let peak = sampler
        .join_next()
        .await
        .context("the memory sampler is gone")?
        .context("the memory sampler failed")?;
    outcome.load.merge(load);
    outcome.seconds += after.seconds_since(&before);
    for (i, pids) in pids.iter().enumerate() {
        outcome.cpu[i] += after.cpu_since(&before, pids);
        outcome.rss_max[i] = outcome.rss_max[i].max(peak[i]);
    }
    Ok(())
}

/// Show a load's failures; how many.
fn errors(what: &str, load: &Load) -> u64 {
    if load.errors > 0 {
        eprintln!("{what}: {} failed request(s); first:", load.errors);
        for error in &load.first_errors {
            eprintln!("  {error}");
        }
    }
    load.errors
}

#[cfg(test)]
mod tests {
    use drawbridge_config::{Config, Role};

    use super::*;

    #[test]
    fn the_generated_config_serves_every_binary() {
        let yaml = config_yaml(
            SocketAddr::from(([127, 0, 0, 1], 9000)),
            Path::new("/tmp/bench/worker"),
            "info",
        );
        let config = Config::from_yaml(&yaml).expect("the bench config loads");
        for role in [Role::Engine, Role::Gateway, Role::AllInOne] {
            config
                .validate(role)
                .unwrap_or_else(|e| panic!("{role:?}: {e}"));
        }
        assert_eq!(config.accounts.len(), 1);
        assert!(!config.accounts[0].is_acp());
        assert!(config.engine.workers.is_empty());
    }
}
