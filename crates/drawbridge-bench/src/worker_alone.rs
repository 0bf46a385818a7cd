//! Sections 1 to 3 of the benchmark: the worker alone (throughput, first byte, calibration).

use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Conn, Expect, Load, Target, Until};
use crate::procfs::{Snapshot, Usage};
use crate::stats::{Samples, Summary};
use crate::worker::{Bins, WorkerProcess};

use crate::{Args, FIRST_BYTE_TARGET, PROMPT, Report, THROUGHPUT_TARGET, acp, client};

/// Sections 1 to 3: the worker alone.
pub async fn worker_section(args: &Args, bins: &Bins, report: &mut Report) -> Result<()> {
    let duration = Duration::from_secs_f64(args.duration);

    // ---- 1. Throughput through the worker ---------------------------------------------
    let started = Instant::now();
    let worker = WorkerProcess::start(bins, args.pool_size).await?;
    worker.wait_warm(Duration::from_secs(60)).await?;
    println!(
        "kiro-worker up with 1 account × pool {} in {:.0} ms (until /slots shows every slot idle)\n",
        args.pool_size,
        started.elapsed().as_secs_f64() * 1000.0
    );
    report.metric(
        "worker.cold_start",
        started.elapsed().as_secs_f64() * 1000.0,
        "ms",
    );
    let json = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "model": "kiro", "prompt": PROMPT, "stream": false,
    }))?);
    let sse = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "model": "kiro", "prompt": PROMPT, "stream": true,
    }))?);
    let expect_json = Expect::Json(Bytes::from(format!(r#""content":"{PROMPT}""#)));

    let warmup_clients = usize::try_from(args.pool_size).unwrap_or(8).max(1);
    let mut tasks = JoinSet::new();
    for _ in 0..warmup_clients {
        tasks.spawn(client::client(
            Target::prompt(worker.addr),
            json.clone(),
            expect_json.clone(),
            Until::Count(args.warmup.div_ceil(warmup_clients)),
            None,
        ));
    }
    let mut warmup = Load::default();
    while let Some(load) = tasks.join_next().await {
        warmup.merge(load.context("a warm-up client failed")?);
    }
    report.errors("warm-up", &warmup);
    let rss_before = Snapshot::take(worker.pid(), &worker.agent_pids());

    println!(
        "Throughput: POST /prompt on kiro-worker, 1 account × pool {}, instant mock agent, {PROMPT:?} (5 chunks), {:.0} s per run",
        args.pool_size, args.duration
    );
    println!(
        "{:<7} {:>5} {:>10} {:>8} {:>8} {:>8} {:>7} | {:>28} | {:>24}",
        "mode",
        "conc",
        "prompts/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "CPU % of a core: wrk/agt/bench",
        "CPU ms/prompt: wrk/agt/bench"
    );
    let mut best = 0.0_f64;
    let mut runs = Vec::new();
    for &concurrency in &args.concurrency {
        runs.push(("json", concurrency, json.clone(), expect_json.clone()));
    }
    runs.push((
        "stream",
        args.stream_concurrency,
        sse.clone(),
        Expect::Stream,
    ));
    for (mode, concurrency, body, expect) in runs {
        let (load, elapsed, usage) =
            http_run(&worker, body, expect, concurrency.max(1), duration).await?;
        let rate = load.latencies.len() as f64 / elapsed;
        if mode == "json" {
            best = best.max(rate);
        }
        let summary = load.latencies.summary();
        print_row(
            mode,
            concurrency,
            rate,
            &summary,
            load.errors,
            &usage,
            load.latencies.len(),
        );
        let name = format!("worker.{mode}.c{concurrency}");
        report.metric(format!("{name}.throughput"), rate, "prompts/s");
        report.latency(&format!("{name}.latency"), &summary);
        report.metric(format!("{name}.errors"), load.errors as f64, "requests");
        let per_prompt = |cpu: f64| 1000.0 * cpu / (load.latencies.len().max(1) as f64);
        report.metric(
            format!("{name}.cpu.worker"),
            usage.percent(usage.server_cpu),
            "%core",
        );
        report.metric(
            format!("{name}.cpu.agents"),
            usage.percent(usage.agents_cpu),
            "%core",
        );
        report.metric(
            format!("{name}.cpu.bench"),
            usage.percent(usage.bench_cpu),
            "%core",
        );
        report.metric(
            format!("{name}.cpu_per_prompt.worker"),
            per_prompt(usage.server_cpu),
            "ms",
        );
        report.metric(
            format!("{name}.cpu_per_prompt.agents"),
            per_prompt(usage.agents_cpu),
            "ms",
        );
        report.metric(
            format!("{name}.cpu_per_prompt.bench"),
            per_prompt(usage.bench_cpu),
            "ms",
        );
        report.errors(&format!("{mode} c={concurrency}"), &load);
    }
    let rss_after = Snapshot::take(worker.pid(), &worker.agent_pids());
    let memory = rss_before.until(&rss_after);
    println!(
        "memory (VmRSS) before → after the runs: kiro-worker {} → {} KiB; {} agents {} → {} KiB in all ({} agents after)",
        memory.server_rss_kib.0,
        memory.server_rss_kib.1,
        memory.agents_count.0,
        memory.agents_rss_kib.0,
        memory.agents_rss_kib.1,
        memory.agents_count.1,
    );
    report.metric(
        "worker.rss.worker.before",
        memory.server_rss_kib.0 as f64,
        "KiB",
    );
    report.metric(
        "worker.rss.worker.after",
        memory.server_rss_kib.1 as f64,
        "KiB",
    );
    report.metric(
        "worker.rss.agents.before",
        memory.agents_rss_kib.0 as f64,
        "KiB",
    );
    report.metric(
        "worker.rss.agents.after",
        memory.agents_rss_kib.1 as f64,
        "KiB",
    );

    // ---- 2a. First byte on the warm pool, over HTTP -------------------------------------
    let target = Target::prompt(worker.addr);
    let mut conn = Conn::open(worker.addr).await?;
    for _ in 0..20 {
        conn.first_content(&target, sse.clone(), Instant::now())
            .await?;
    }
    let mut warm_http = Load {
        latencies: Samples::with_capacity(args.warm_n),
        ..Load::default()
    };
    for _ in 0..args.warm_n {
        match conn
            .first_content(&target, sse.clone(), Instant::now())
            .await
        {
            Ok((latency, _)) => warm_http.latencies.push(latency),
            Err(error) => {
                warm_http.record_error(format!("{error:#}"));
                conn = Conn::open(worker.addr).await?;
            }
        }
    }
    drop(conn);
    report.errors("first byte, warm pool over HTTP", &warm_http);
    let worker_dir = worker.dir().to_path_buf();
    let exited_cleanly = worker.stop().await?;
    if !exited_cleanly {
        eprintln!("kiro-worker did not exit 0 after SIGTERM");
        report.failures += 1;
    }

    // ---- 2c, 3. The agent without the worker ---------------------------------------------
    let scratch = tempfile::Builder::new()
        .prefix("drawbridge-bench-acp-")
        .tempdir()
        .context("create a temporary directory")?;
    let spec = acp::mock_spec(&bins.agent, scratch.path())?;
    let warm_acp = acp::warm_first_text(&spec, PROMPT, args.warm_n, 20).await?;
    report.errors("first byte, warm AgentProcess", &warm_acp);

    let mut pool =
        acp::DirectPool::start(&spec, usize::try_from(args.pool_size).unwrap_or(8)).await?;
    // A short warm-up, then the measured run.
    pool.run(PROMPT, Instant::now() + Duration::from_millis(500))
        .await?;
    let pids = pool.pids();
    let before = Snapshot::take(None, &pids);
    let started = Instant::now();
    let direct = pool.run(PROMPT, started + duration).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let usage = before.until(&Snapshot::take(None, &pids));
    pool.shutdown().await;
    let direct_rate = direct.latencies.len() as f64 / elapsed;
    report.errors("in-process pool", &direct);

    // ---- 2b. An agent process per request ---------------------------------------------------
    let spawned = acp::spawn_first_text(&spec, PROMPT, args.spawn_n).await;
    report.errors("first byte, spawn per request", &spawned.first_text);
    drop(scratch);
    drop(worker_dir);

    println!(
        "\nCalibration: {} warm AgentProcesses driven in-process (no HTTP, no worker), one task each, {:.0} s",
        args.pool_size, args.duration
    );
    let summary = direct.latencies.summary();
    println!(
        "{:<7} {:>5} {:>10} {:>8} {:>8} {:>8} {:>7} | {:>28} | {:>24}",
        "mode",
        "conc",
        "prompts/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "CPU % of a core: -/agt/bench",
        "CPU ms/prompt: -/agt/bench"
    );
    print_row(
        "acp",
        pids.len(),
        direct_rate,
        &summary,
        direct.errors,
        &usage,
        direct.latencies.len(),
    );
    let name = format!("acp_direct.c{}", pids.len());
    report.metric(format!("{name}.throughput"), direct_rate, "prompts/s");
    report.latency(&format!("{name}.latency"), &summary);
    let per_prompt = |cpu: f64| 1000.0 * cpu / (direct.latencies.len().max(1) as f64);
    report.metric(
        format!("{name}.cpu_per_prompt.agents"),
        per_prompt(usage.agents_cpu),
        "ms",
    );
    report.metric(
        format!("{name}.cpu_per_prompt.bench"),
        per_prompt(usage.bench_cpu),
        "ms",
    );

    let warm_http = warm_http.latencies.summary();
    let warm_acp = warm_acp.latencies.summary();
    let spawn = spawned.first_text.latencies.summary();
    let spawn_start = spawned.start.summary();
    let spawn_shutdown = spawned.shutdown.summary();
    println!("\nFirst byte: from sending a prompt to the first text chunk, one request at a time");
    println!(
        "{:<58} {:>5} {:>8} {:>8} {:>8} {:>8}",
        "path", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (what, summary) in [
        (
            "(a) warm pool: streaming POST /prompt on kiro-worker",
            &warm_http,
        ),
        (
            "(c) warm AgentProcess in-process: session/new + prompt",
            &warm_acp,
        ),
        (
            "(b) spawn per request: start + initialize + new + prompt",
            &spawn,
        ),
        (
            "    of which AgentProcess::start (spawn + initialize)",
            &spawn_start,
        ),
        ("    then shutdown (not counted above)", &spawn_shutdown),
    ] {
        println!(
            "{what:<58} {:>5} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            summary.n, summary.p50, summary.p90, summary.p99, summary.max
        );
    }
    let ratio = if warm_http.p50 > 0.0 {
        spawn.p50 / warm_http.p50
    } else {
        0.0
    };
    let agent_ratio = if warm_acp.p50 > 0.0 {
        spawn.p50 / warm_acp.p50
    } else {
        0.0
    };
    println!(
        "(b)/(a) spawn per request over the warm pool at p50: {ratio:.1}×; (b)/(c) without HTTP on either side: {agent_ratio:.1}×"
    );
    println!(
        "the worker's own overhead at p50, (a) − (c): {:.3} ms",
        warm_http.p50 - warm_acp.p50
    );
    report.latency("first_byte.warm_pool_http", &warm_http);
    report.latency("first_byte.warm_acp", &warm_acp);
    report.latency("first_byte.spawn_per_request", &spawn);
    report.latency("first_byte.spawn_start_only", &spawn_start);
    report.metric("first_byte.spawn_over_warm_p50", ratio, "x");
    report.metric("first_byte.spawn_over_warm_acp_p50", agent_ratio, "x");
    report.metric(
        "first_byte.worker_overhead_p50",
        warm_http.p50 - warm_acp.p50,
        "ms",
    );

    let throughput_met = best >= THROUGHPUT_TARGET;
    let ratio_met = ratio >= FIRST_BYTE_TARGET;
    println!("\nTargets");
    println!(
        "  throughput ≥ {THROUGHPUT_TARGET:.0} prompts/s (best non-streaming run): {best:.0} → {}",
        met(throughput_met)
    );
    println!(
        "  warm pool ≥ {FIRST_BYTE_TARGET:.0}× faster to first byte than spawning (p50): {ratio:.1}× → {}",
        met(ratio_met)
    );
    report.metric(
        "target.throughput_met",
        f64::from(u8::from(throughput_met)),
        "bool",
    );
    report.metric(
        "target.first_byte_met",
        f64::from(u8::from(ratio_met)),
        "bool",
    );
    Ok(())
}

fn met(yes: bool) -> &'static str {
    if yes { "MET" } else { "NOT MET" }
}

/// Run `concurrency` load clients against the worker for `duration`: what they saw, the
/// elapsed seconds, and what the processes spent.
async fn http_run(
    worker: &WorkerProcess,
    body: Bytes,
    expect: Expect,
    concurrency: usize,
    duration: Duration,
) -> Result<(Load, f64, Usage)> {
    let agents = worker.agent_pids();
    let before = Snapshot::take(worker.pid(), &agents);
    let started = Instant::now();
    let until = Until::Deadline(started + duration);
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        tasks.spawn(client::client(
            Target::prompt(worker.addr),
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
    let elapsed = started.elapsed().as_secs_f64();
    let usage = before.until(&Snapshot::take(worker.pid(), &agents));
    Ok((load, elapsed, usage))
}

fn print_row(
    mode: &str,
    concurrency: usize,
    rate: f64,
    summary: &Summary,
    errors: u64,
    usage: &Usage,
    prompts: usize,
) {
    let per_prompt = |cpu: f64| 1000.0 * cpu / (prompts.max(1) as f64);
    println!(
        "{mode:<7} {concurrency:>5} {rate:>10.0} {:>8.2} {:>8.2} {:>8.2} {errors:>7} | {:>28} | {:>24}",
        summary.p50,
        summary.p90,
        summary.p99,
        format!(
            "{:.0} / {:.0} / {:.0}",
            usage.percent(usage.server_cpu),
            usage.percent(usage.agents_cpu),
            usage.percent(usage.bench_cpu)
        ),
        format!(
            "{:.3} / {:.3} / {:.3}",
            per_prompt(usage.server_cpu),
            per_prompt(usage.agents_cpu),
            per_prompt(usage.bench_cpu)
        ),
    );
}
