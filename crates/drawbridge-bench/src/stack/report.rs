//! The report: the tables printed for each measurement and the figures recorded.

use super::load::{Mode, Outcome};
use super::start::PROCESSES;
use super::{Entry, StackReport};
use crate::client::Load;

pub(super) fn met(yes: bool) -> &'static str {
    if yes { "MET" } else { "NOT MET" }
}

/// Count and show a load's failures.
pub(super) fn errors(what: &str, load: &Load) -> u64 {
    if load.errors > 0 {
        eprintln!("{what}: {} failed request(s); first:", load.errors);
        for error in &load.first_errors {
            eprintln!("  {error}");
        }
    }
    load.errors
}

/// The gateway's added latency over the worker (whole answer, p50 and p99).
pub(super) fn verdict(outcomes: &[(Entry, Outcome)]) -> Option<(f64, f64)> {
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

pub(super) fn print_mode(mode: Mode, outcomes: &[(Entry, Outcome)]) {
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

pub(super) fn record_mode(report: &mut StackReport, mode: Mode, outcomes: &[(Entry, Outcome)]) {
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
