//! The provider section's tables: each measurement's figures, the `bench name=…` lines, and
//! the targets judged for `drawbridge` (and shown for the floor, the stack and LiteLLM).

use super::{
    ADDED_P50_TARGET_MS, ADDED_P99_TARGET_MS, Measure, Outcome, ProviderArgs, ProviderReport,
    RSS_TARGET_KIB, RSS_TARGET_MB, THROUGHPUT_RATIO_TARGET, Via,
};

pub(super) fn print_measure(measure: Measure, outcomes: &[(Via, Outcome)]) {
    println!(
        "\n{} client(s), each sending back to back, {}",
        measure.clients,
        if measure.stream {
            "streamed (latency = whole stream)"
        } else {
            "whole answers"
        }
    );
    println!(
        "{:<40} {:>9} {:>7} {:>22} {:>17} {:>6} | CPU ms per request: mock / db / gw / eng / litellm / bench / floor",
        "target", "req/s", "×direct", "latency p50/p90/p99", "added p50/p99", "errors"
    );
    let direct = outcomes
        .iter()
        .find(|(via, _)| *via == Via::Direct)
        .map(|(_, o)| (o.rate(), o.load.latencies.summary()));
    for (via, outcome) in outcomes {
        let latency = outcome.load.latencies.summary();
        let n = outcome.load.latencies.len().max(1) as f64;
        let cpu = outcome.cpu.map(|s| 1000.0 * s / n);
        let (ratio, added) = match direct {
            Some((rate, base)) if rate > 0.0 => (
                format!("{:.3}", outcome.rate() / rate),
                format!(
                    "{:+.2} / {:+.2}",
                    latency.p50 - base.p50,
                    latency.p99 - base.p99
                ),
            ),
            _ => ("–".to_owned(), "–".to_owned()),
        };
        println!(
            "{:<40} {:>9.0} {:>7} {:>22} {:>17} {:>6} | {:.3} / {:.3} / {:.3} / {:.3} / {:.3} / {:.3} / {:.3}",
            via.describe(),
            outcome.rate(),
            ratio,
            format!(
                "{:.2} / {:.2} / {:.2}",
                latency.p50, latency.p90, latency.p99
            ),
            added,
            outcome.load.errors,
            cpu[0],
            cpu[1],
            cpu[2],
            cpu[3],
            cpu[4],
            cpu[5],
            cpu[6],
        );
    }
    println!(
        "{:<40} peak VmRSS during the runs, KiB: mock / db / gw / eng / litellm / floor",
        ""
    );
    for (via, outcome) in outcomes {
        let rss = outcome.rss_max;
        println!(
            "{:<40} {} / {} / {} / {} / {} / {}",
            via.describe(),
            rss[0],
            rss[1],
            rss[2],
            rss[3],
            rss[4],
            rss[6]
        );
    }
}

pub(super) fn record(report: &mut ProviderReport, measure: Measure, outcomes: &[(Via, Outcome)]) {
    let key = measure.key();
    for (via, outcome) in outcomes {
        let name = via.name();
        let latency = outcome.load.latencies.summary();
        let mut metric = |what: &str, value: f64, unit: &'static str| {
            report
                .metrics
                .push((format!("providers.{key}.{name}.{what}"), value, unit));
        };
        metric("requests_per_s", outcome.rate(), "requests/s");
        metric("p50", latency.p50, "ms");
        metric("p90", latency.p90, "ms");
        metric("p99", latency.p99, "ms");
        metric("errors", outcome.load.errors as f64, "requests");
    }
}

/// The targets, judged for `drawbridge` (and shown for the stack and LiteLLM).
pub(super) fn verdicts(
    report: &mut ProviderReport,
    results: &[(Measure, Vec<(Via, Outcome)>)],
    args: &ProviderArgs,
) {
    println!(
        "\nTargets (issue 16): through drawbridge ≥ {THROUGHPUT_RATIO_TARGET}× direct at {} clients; added p50 ≤ {ADDED_P50_TARGET_MS} ms and p99 ≤ {ADDED_P99_TARGET_MS} ms at {} clients; drawbridge's RSS under {} MB under load",
        args.concurrency, args.latency_concurrency, RSS_TARGET_MB
    );
    let met = |yes: bool| if yes { "MET" } else { "NOT MET" };
    let mut rss_peak = 0u64;
    for (measure, outcomes) in results {
        let find = |want: Via| {
            outcomes
                .iter()
                .find(|(via, _)| *via == want)
                .map(|(_, o)| o)
        };
        let Some(direct) = find(Via::Direct) else {
            continue;
        };
        if let Some(single) = find(Via::Single) {
            rss_peak = rss_peak.max(single.rss_max[1]);
        }
        let base = direct.load.latencies.summary();
        let floor = find(Via::Floor);
        for via in [Via::Floor, Via::Single, Via::Stack, Via::LiteLlm] {
            let Some(outcome) = find(via) else {
                continue;
            };
            let judged = via == Via::Single;
            if measure.clients == args.concurrency {
                let ratio = if direct.rate() > 0.0 {
                    outcome.rate() / direct.rate()
                } else {
                    0.0
                };
                let yes = ratio >= THROUGHPUT_RATIO_TARGET;
                println!(
                    "  {:<8} {:<40} throughput {ratio:.3}× direct{}",
                    measure.key(),
                    via.describe(),
                    if judged {
                        format!(" → {}", met(yes))
                    } else {
                        String::new()
                    }
                );
                report.metrics.push((
                    format!("providers.{}.{}.ratio_to_direct", measure.key(), via.name()),
                    ratio,
                    "ratio",
                ));
                // Against the least any gateway does on this machine.
                if let Some(floor) = floor.filter(|f| f.rate() > 0.0 && via != Via::Floor) {
                    let of_floor = outcome.rate() / floor.rate();
                    println!(
                        "  {:<8} {:<40} throughput {of_floor:.3}× the floor's",
                        measure.key(),
                        via.describe(),
                    );
                    report.metrics.push((
                        format!("providers.{}.{}.ratio_to_floor", measure.key(), via.name()),
                        of_floor,
                        "ratio",
                    ));
                }
            }
            if measure.clients == args.latency_concurrency {
                let latency = outcome.load.latencies.summary();
                let (p50, p99) = (latency.p50 - base.p50, latency.p99 - base.p99);
                println!(
                    "  {:<8} {:<40} added p50 {p50:+.2} ms{}; added p99 {p99:+.2} ms{}",
                    measure.key(),
                    via.describe(),
                    if judged {
                        format!(" → {}", met(p50 <= ADDED_P50_TARGET_MS))
                    } else {
                        String::new()
                    },
                    if judged {
                        format!(" → {}", met(p99 <= ADDED_P99_TARGET_MS))
                    } else {
                        String::new()
                    },
                );
                report.metrics.push((
                    format!("providers.{}.{}.added_p50", measure.key(), via.name()),
                    p50,
                    "ms",
                ));
                report.metrics.push((
                    format!("providers.{}.{}.added_p99", measure.key(), via.name()),
                    p99,
                    "ms",
                ));
            }
        }
    }
    println!(
        "  drawbridge peak RSS under load {rss_peak} KiB → {}",
        met(rss_peak > 0 && rss_peak < RSS_TARGET_KIB)
    );
    report.metrics.push((
        "providers.drawbridge.rss_peak".to_owned(),
        rss_peak as f64,
        "KiB",
    ));
}
