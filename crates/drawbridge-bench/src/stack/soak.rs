//! The soak (`--sections soak`): does memory stay flat under sustained load (issue 17)?
//!
//! A real `redis-server` on a free loopback port, and the three-process stack (`kiro-worker`,
//! `drawbridge-engine`, `drawbridge-gateway`) with `redis.url` pointing at it, as a cluster runs
//! on ValKey; beside it, unless left out, the single-process `drawbridge` on the same server.
//! One account × a pool of instant mock agents in each. After the usual warm-up, C streaming
//! clients per entry point (the gateway's and `drawbridge`'s `/v1/chat/completions`) send
//! distinct prompts back to back for the whole run, and every interval the bench samples each
//! process's resident memory (`VmRSS`), the requests served so far and the server's key count
//! (`DBSIZE`).
//!
//! The verdict compares the first sample after the settling time with the last: a process is
//! flat when its RSS grew by at most [`FLAT_MIB`] MiB or [`FLAT_FRACTION`] of where it
//! started, whichever is larger; the key count is flat when the last count is at most the first
//! × 1.1 or the first + 10, whichever is larger. A store that keeps something per request grows
//! with the requests served, which over a run of hundreds of thousands of requests is far past
//! either bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::start::Stack;
use super::{Entry, StackArgs, StackReport};
use crate::client::{Conn, Expect, Load, Target};
use crate::procfs::{Procs, children_named};
use crate::resp;
use crate::worker::Bins;

/// RSS growth (MiB) that still counts as flat, whatever the process's size.
pub const FLAT_MIB: f64 = 5.0;
/// RSS growth, as a fraction of the first sample after settling, that still counts as flat.
pub const FLAT_FRACTION: f64 = 0.10;

/// Keys drawn at random at the end to show what the database holds.
const KEY_SAMPLE: usize = 200;

/// The knobs of the soak.
#[derive(Debug, Clone)]
pub struct SoakArgs {
    /// How long the load runs.
    pub duration: Duration,
    /// Time between two samples.
    pub interval: Duration,
    /// The verdict starts from the first sample at or after this time into the run.
    pub settle: Duration,
    /// Streaming clients per entry point.
    pub concurrency: usize,
    pub pool_size: u32,
    /// Whether the single-process `drawbridge` runs (and is loaded) beside the stack.
    pub single: bool,
    /// Warm-up requests per entry point before the run.
    pub warmup: usize,
    pub log_level: String,
    /// Added to every process's environment (after `DRAWBRIDGE_REDIS__URL`, so it may replace it).
    pub env: Vec<(String, String)>,
}

/// The processes whose memory is sampled: the names of `Stack::pids` but the bench's own,
/// then the `redis-server`.
const COLUMNS: [&str; 7] = [
    "gateway",
    "engine",
    "worker",
    "drawbridge",
    "agents(worker)",
    "agents(drawbridge)",
    "redis-server",
];

/// Which requests a column's growth is divided by: those through the gateway, through
/// `drawbridge`, or all.
fn column_entry(column: usize) -> Option<Entry> {
    match column {
        0 | 1 | 2 | 4 => Some(Entry::Gateway),
        3 | 5 => Some(Entry::Single),
        _ => None,
    }
}

/// One sample of the run.
#[derive(Debug, Clone)]
struct Sample {
    /// Seconds since the load started.
    t: f64,
    /// Good answers so far, per loaded entry point.
    served: Vec<u64>,
    /// KiB per column of [`COLUMNS`]; `None` where no such process runs.
    rss_kib: [Option<u64>; COLUMNS.len()],
    keys: u64,
}

/// How one process's memory went from the first sample after settling to the last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssVerdict {
    pub growth_mib: f64,
    /// Growth per 100,000 requests served in between; `None` if none were.
    pub per_100k_mib: Option<f64>,
    pub flat: bool,
}

/// The verdict on a process that had `first_kib` then `last_kib` resident, with `requests`
/// served in between: flat when it grew by at most [`FLAT_MIB`] or [`FLAT_FRACTION`] of
/// `first_kib`, whichever is larger (shrinking is flat).
pub fn rss_verdict(first_kib: u64, last_kib: u64, requests: u64) -> RssVerdict {
    let growth_mib = (last_kib as f64 - first_kib as f64) / 1024.0;
    let bound_mib = FLAT_MIB.max(FLAT_FRACTION * first_kib as f64 / 1024.0);
    RssVerdict {
        growth_mib,
        per_100k_mib: (requests > 0).then(|| growth_mib * 100_000.0 / requests as f64),
        flat: growth_mib <= bound_mib,
    }
}

/// Whether a key count that went from `first` to `last` is flat: `last` at most `first` × 1.1
/// or `first` + 10, whichever is larger.
pub fn keys_flat(first: u64, last: u64) -> bool {
    let first = first as f64;
    last as f64 <= (first * 1.1).max(first + 10.0)
}

/// The sample the verdict starts from: the first taken at or after `settle` seconds that is
/// not the last one; the first sample if there is none such (a run shorter than the settling
/// time).
fn baseline(times: &[f64], settle: f64) -> usize {
    let last = times.len().saturating_sub(1);
    times
        .iter()
        .position(|&t| t >= settle)
        .filter(|&i| i < last)
        .unwrap_or(0)
}

/// A streamed request whose prompt no other request of the run has.
fn prompt_body(entry: Entry, client: usize, n: u64) -> Result<Bytes> {
    let prompt = format!("soak {} client {client} request {n}", entry.name());
    Ok(Bytes::from(serde_json::to_vec(&serde_json::json!({
        "model": "kiro",
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
    }))?))
}

/// One soak client: distinct streamed prompts to `target` on its own keep-alive connection
/// (reconnecting if it breaks) until `deadline`, each answer checked, `served` counting the
/// good ones as they come.
async fn soak_client(
    entry: Entry,
    target: Target,
    client: usize,
    deadline: Instant,
    served: Arc<AtomicU64>,
) -> Load {
    let mut load = Load::default();
    let mut n = 0;
    'connections: while Instant::now() < deadline {
        let mut conn = match Conn::open(target.addr).await {
            Ok(conn) => conn,
            Err(error) => {
                load.record_error(format!("{error:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while Instant::now() < deadline {
            n += 1;
            let body = match prompt_body(entry, client, n) {
                Ok(body) => body,
                Err(error) => {
                    load.record_error(format!("{error:#}"));
                    continue;
                }
            };
            let started = Instant::now();
            match conn.first_content(&target, body, started).await {
                Ok((first, reply)) => match Expect::Stream.check(200, &reply) {
                    Ok(()) => {
                        load.latencies.push(started.elapsed());
                        load.first_content.push(first);
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => load.record_error(error),
                },
                Err(error) => {
                    load.record_error(format!("{error:#}"));
                    continue 'connections;
                }
            }
        }
    }
    load
}

/// Memory of every column and the key count, now.
async fn sample(
    t: f64,
    stack: &Stack,
    redis_pids: &[u32],
    redis: SocketAddr,
    served: &[Arc<AtomicU64>],
) -> Result<Sample> {
    let mut pids = stack.pids();
    // Every name of `Stack::pids` but the last (the bench itself), then the redis-server.
    pids.truncate(COLUMNS.len() - 1);
    pids.push(redis_pids.to_vec());
    let procs = Procs::take(pids.iter().flatten().copied());
    let mut rss_kib = [None; COLUMNS.len()];
    for (slot, pids) in rss_kib.iter_mut().zip(&pids) {
        if !pids.is_empty() {
            *slot = Some(procs.rss_kib(pids));
        }
    }
    Ok(Sample {
        t,
        served: served.iter().map(|s| s.load(Ordering::Relaxed)).collect(),
        rss_kib,
        keys: resp::dbsize(redis)
            .await
            .context("DBSIZE of the stack's redis-server")?,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A column of the table is as wide as its name, and at least 8.
fn width(column: usize) -> usize {
    COLUMNS[column].len().max(8)
}

fn print_header(entries: &[Entry], columns: &[usize]) {
    let mut line = format!("{:>6}", "t (s)");
    for entry in entries {
        line += &format!(" {:>10} {:>6}", format!("{} req", entry.name()), "rps");
    }
    for &column in columns {
        line += &format!(" {:>w$}", COLUMNS[column], w = width(column));
    }
    line += &format!(" {:>8}", "DBSIZE");
    println!("{line}");
}

fn print_row(sample: &Sample, previous: Option<&Sample>, columns: &[usize]) {
    let mut line = format!("{:>6.0}", sample.t);
    for (i, served) in sample.served.iter().enumerate() {
        let rate = previous.map_or(0.0, |p| {
            let seconds = sample.t - p.t;
            if seconds > 0.0 {
                served.saturating_sub(p.served[i]) as f64 / seconds
            } else {
                0.0
            }
        });
        line += &format!(" {served:>10} {rate:>6.0}");
    }
    for &column in columns {
        let rss = mib(sample.rss_kib[column].unwrap_or(0));
        line += &format!(" {rss:>w$.1}", w = width(column));
    }
    line += &format!(" {:>8}", sample.keys);
    println!("{line}");
}

/// Start `redis-server` and the stack on it, soak, stop everything.
pub async fn run(bins: &Bins, args: &SoakArgs) -> Result<StackReport> {
    let mut report = StackReport {
        metrics: Vec::new(),
        failures: 0,
    };
    let redis = tokio::task::spawn_blocking(test_support::redis::RedisServer::start)
        .await
        .map_err(|_| {
            anyhow!("redis-server did not start (is it installed? `make deps` installs it)")
        })?;
    let redis_addr = SocketAddr::from(([127, 0, 0, 1], redis.port()));
    let redis_pids = children_named(std::process::id(), "redis-server");
    let mut env = vec![("DRAWBRIDGE_REDIS__URL".to_owned(), redis.url())];
    env.extend(args.env.iter().cloned());
    let stack_args = StackArgs {
        concurrency: args.concurrency.max(1),
        pool_size: args.pool_size.max(1),
        duration: args.duration,
        rounds: 1,
        paced_fraction: 0.0,
        single: args.single,
        warmup: args.warmup,
        log_level: args.log_level.clone(),
        env,
    };
    let started = Instant::now();
    let stack = Stack::start(bins, &stack_args).await?;
    stack.wait_ready(Duration::from_secs(90)).await?;
    println!(
        "\nSoak: redis-server on {redis_addr}; kiro-worker + drawbridge-engine + drawbridge-gateway on it{}; one account × pool {} of instant mock agents per worker; up in {:.0} ms",
        if args.single {
            ", and the single-process drawbridge on the same server"
        } else {
            ""
        },
        stack_args.pool_size,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let targets: Vec<(Entry, Target)> = stack
        .targets
        .iter()
        .filter(|(entry, _)| matches!(entry, Entry::Gateway | Entry::Single))
        .cloned()
        .collect();

    // The same warm-up as the stack section: connections, the engine's view, allocators.
    let warm_body = prompt_body(Entry::Gateway, 0, 0)?;
    report.failures += super::warm_up(&targets, &warm_body, args.warmup).await?;

    println!(
        "{} streaming clients per entry point ({}), distinct prompts, back to back for {:.0} s; a sample every {:.0} s; RSS in MiB",
        stack_args.concurrency,
        targets
            .iter()
            .map(|(entry, _)| entry.describe())
            .collect::<Vec<_>>()
            .join(", "),
        args.duration.as_secs_f64(),
        args.interval.as_secs_f64(),
    );
    let served: Vec<Arc<AtomicU64>> = targets.iter().map(|_| Arc::default()).collect();
    let entries: Vec<Entry> = targets.iter().map(|(entry, _)| *entry).collect();
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut clients = JoinSet::new();
    for ((entry, target), served) in targets.iter().zip(&served) {
        for client in 0..stack_args.concurrency {
            clients.spawn(soak_client(
                *entry,
                target.clone(),
                client,
                deadline,
                Arc::clone(served),
            ));
        }
    }
    let first = sample(0.0, &stack, &redis_pids, redis_addr, &served).await?;
    let columns: Vec<usize> = (0..COLUMNS.len())
        .filter(|&c| first.rss_kib[c].is_some())
        .collect();
    print_header(&entries, &columns);
    print_row(&first, None, &columns);
    let mut samples = vec![first];
    let interval = args.interval.max(Duration::from_secs(1));
    let mut next = start + interval;
    while next < deadline {
        tokio::time::sleep_until(next).await;
        let now = sample(
            start.elapsed().as_secs_f64(),
            &stack,
            &redis_pids,
            redis_addr,
            &served,
        )
        .await?;
        print_row(&now, samples.last(), &columns);
        samples.push(now);
        next += interval;
    }
    let mut load = Load::default();
    while let Some(joined) = clients.join_next().await {
        load.merge(joined.context("a soak client failed")?);
    }
    let end = sample(
        start.elapsed().as_secs_f64(),
        &stack,
        &redis_pids,
        redis_addr,
        &served,
    )
    .await?;
    print_row(&end, samples.last(), &columns);
    samples.push(end);
    report.failures += super::report::errors("soak", &load);

    verdicts(&mut report, &samples, &entries, &columns, &load, args);
    match resp::key_families(redis_addr, KEY_SAMPLE).await {
        Ok(families) => print_families(&families, samples.last().map_or(0, |s| s.keys)),
        Err(error) => eprintln!("could not sample the keys: {error:#}"),
    }

    if !stack.stop().await? {
        report.failures += 1;
    }
    drop(redis);
    Ok(report)
}

/// Print and record the verdicts from the samples.
fn verdicts(
    report: &mut StackReport,
    samples: &[Sample],
    entries: &[Entry],
    columns: &[usize],
    load: &Load,
    args: &SoakArgs,
) {
    let times: Vec<f64> = samples.iter().map(|s| s.t).collect();
    let (Some(base), Some(last)) = (
        samples.get(baseline(&times, args.settle.as_secs_f64())),
        samples.last(),
    ) else {
        return;
    };
    let requests_between = |entry: Option<Entry>| -> u64 {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| entry.is_none_or(|want| **e == want))
            .map(|(i, _)| last.served[i].saturating_sub(base.served[i]))
            .sum()
    };
    let latency = load.latencies.summary();
    println!(
        "\n{} good answers in {:.0} s ({:.0}/s), {} errors; whole answer p50 {:.2} ms, p99 {:.2} ms",
        latency.n,
        last.t,
        latency.n as f64 / last.t.max(f64::EPSILON),
        load.errors,
        latency.p50,
        latency.p99,
    );
    for (i, entry) in entries.iter().enumerate() {
        let name = entry.name();
        report.metric(
            format!("soak.{name}.requests"),
            last.served[i] as f64,
            "requests",
        );
        report.metric(
            format!("soak.{name}.throughput"),
            last.served[i] as f64 / last.t.max(f64::EPSILON),
            "prompts/s",
        );
    }
    report.latency("soak.latency", &latency);
    report.metric("soak.errors", load.errors as f64, "requests");
    println!(
        "\nVerdict, from the sample at t = {:.0} s to the last at t = {:.0} s (flat: RSS growth ≤ {FLAT_MIB} MiB or ≤ {:.0}% of the first, whichever is larger; keys: last ≤ max(first × 1.1, first + 10)):",
        base.t,
        last.t,
        FLAT_FRACTION * 100.0
    );
    for &column in columns {
        let (Some(first_kib), Some(last_kib)) = (base.rss_kib[column], last.rss_kib[column]) else {
            continue;
        };
        let requests = requests_between(column_entry(column));
        let verdict = rss_verdict(first_kib, last_kib, requests);
        let name = COLUMNS[column];
        println!(
            "  {name:<20} {:>7.1} → {:>7.1} MiB  {:+7.2} MiB  {} per 100k requests ({requests} requests)  {}",
            mib(first_kib),
            mib(last_kib),
            verdict.growth_mib,
            verdict
                .per_100k_mib
                .map_or_else(|| "-".to_owned(), |per| format!("{per:+.3} MiB")),
            if verdict.flat { "FLAT" } else { "GROWS" }
        );
        report.metric(format!("soak.rss.{name}.first"), first_kib as f64, "KiB");
        report.metric(format!("soak.rss.{name}.last"), last_kib as f64, "KiB");
        report.metric(format!("soak.rss.{name}.growth"), verdict.growth_mib, "MiB");
        if let Some(per) = verdict.per_100k_mib {
            report.metric(format!("soak.rss.{name}.growth_per_100k"), per, "MiB");
        }
        report.metric(
            format!("soak.rss.{name}.flat"),
            f64::from(u8::from(verdict.flat)),
            "bool",
        );
    }
    let flat = keys_flat(base.keys, last.keys);
    let requests = requests_between(None);
    println!(
        "  {:<20} {:>7} → {:>7} keys  {:+} keys ({requests} requests)  {}",
        "redis DBSIZE",
        base.keys,
        last.keys,
        i128::from(last.keys) - i128::from(base.keys),
        if flat { "FLAT" } else { "GROWS" }
    );
    report.metric("soak.dbsize.first", base.keys as f64, "keys");
    report.metric("soak.dbsize.last", last.keys as f64, "keys");
    report.metric("soak.dbsize.flat", f64::from(u8::from(flat)), "bool");
}

/// What the keys are: each family's share of the sample, and the count that share means.
fn print_families(families: &[(String, usize)], keys: u64) {
    let drawn: usize = families.iter().map(|(_, n)| n).sum();
    if drawn == 0 {
        return;
    }
    println!("  keys by family ({drawn} drawn at random at the end, ≈ count):");
    for (family, n) in families {
        let share = *n as f64 / drawn as f64;
        println!(
            "    {family:<40} {:>5.1}%  ≈ {:.0}",
            100.0 * share,
            share * keys as f64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_or_proportionate_growth_is_flat() {
        // 40 MiB → 44 MiB: 4 MiB is within the 5 MiB bound.
        let small = rss_verdict(40 * 1024, 44 * 1024, 200_000);
        assert!(small.flat);
        assert!((small.growth_mib - 4.0).abs() < 1e-9);
        assert_eq!(small.per_100k_mib, Some(2.0));
        // 200 MiB → 218 MiB: 18 MiB is over 5 MiB but under 10% (20 MiB).
        assert!(rss_verdict(200 * 1024, 218 * 1024, 1).flat);
        // Shrinking is flat.
        let shrink = rss_verdict(50 * 1024, 30 * 1024, 100_000);
        assert!(shrink.flat);
        assert!((shrink.growth_mib + 20.0).abs() < 1e-9);
    }

    #[test]
    fn growth_past_both_bounds_is_not_flat() {
        // The finding: 12.7 MiB → 48.5 MiB over ~170,000 requests.
        let leak = rss_verdict(13_005, 49_664, 170_000);
        assert!(!leak.flat);
        let per = leak.per_100k_mib.expect("requests were served");
        assert!((per - 21.06).abs() < 0.01, "{per}");
        // 60 MiB → 66.5 MiB: over 5 MiB and over 10% (6 MiB).
        assert!(!rss_verdict(60 * 1024, 66 * 1024 + 512, 1).flat);
        // No requests: growth without a rate.
        assert_eq!(rss_verdict(1024, 1024, 0).per_100k_mib, None);
    }

    #[test]
    fn key_counts_are_flat_within_ten_keys_or_ten_percent() {
        assert!(keys_flat(5, 5));
        assert!(keys_flat(5, 15));
        assert!(!keys_flat(5, 16));
        assert!(keys_flat(1000, 1100));
        assert!(!keys_flat(1000, 1101));
        assert!(keys_flat(1000, 3));
        assert!(keys_flat(0, 10));
        assert!(!keys_flat(0, 11));
    }

    #[test]
    fn the_baseline_is_the_first_sample_after_settling() {
        let times = [0.0, 30.0, 60.0, 90.0, 120.0];
        assert_eq!(baseline(&times, 60.0), 2);
        assert_eq!(baseline(&times, 45.0), 2);
        assert_eq!(baseline(&times, 0.0), 0);
        // A run no longer than the settling time compares its first sample with its last.
        assert_eq!(baseline(&times, 120.0), 0);
        assert_eq!(baseline(&times, 600.0), 0);
        assert_eq!(baseline(&[], 60.0), 0);
    }

    #[test]
    fn every_prompt_is_distinct() {
        let a = prompt_body(Entry::Gateway, 1, 7).expect("a body");
        let b = prompt_body(Entry::Gateway, 1, 8).expect("a body");
        let c = prompt_body(Entry::Single, 1, 7).expect("a body");
        let d = prompt_body(Entry::Gateway, 2, 7).expect("a body");
        assert!(a != b && a != c && a != d && b != c && b != d && c != d);
        let json: serde_json::Value = serde_json::from_slice(&a).expect("JSON");
        assert_eq!(json["stream"], true);
        assert_eq!(
            json["messages"][0]["content"],
            "soak gateway client 1 request 7"
        );
    }
}
