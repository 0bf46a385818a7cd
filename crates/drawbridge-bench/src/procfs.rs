//! CPU time and resident memory of processes, read from `/proc`.

use std::collections::BTreeMap;

use tokio::time::Instant;

/// `/proc/<pid>/stat` counts CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100
/// for user space on every architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

/// One process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStat {
    /// User + system CPU time of all its threads, in ticks.
    pub cpu_ticks: u64,
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Nanoseconds its threads spent runnable but waiting for a CPU (the second field of
    /// `/proc/<pid>/task/<tid>/schedstat`, summed over the threads alive now).
    pub run_delay_ns: u64,
}

impl ProcStat {
    /// The process `pid` now; `None` if it is gone.
    pub fn read(pid: u32) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: count fields after the last ')'.
        // Field 3 (state) comes first there, so utime (14) and stime (15) are at 11 and 12.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Some(ProcStat {
            cpu_ticks: utime + stime,
            rss_kib,
            run_delay_ns: run_delay_ns(pid),
        })
    }
}

/// The processes whose parent is `parent` and whose command name (`comm`, at most 15 bytes)
/// is `name`: a child this process started without keeping its pid (the soak's
/// `redis-server`).
pub fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .as_deref()
                .and_then(parent_and_name)
                .is_some_and(|(ppid, comm)| ppid == parent && comm == name)
        })
        .collect()
}

/// The parent pid and the command name in one `/proc/<pid>/stat` line. The name sits between
/// the first '(' and the last ')' and may itself hold spaces and parentheses.
fn parent_and_name(stat: &str) -> Option<(u32, &str)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After the name: state, then the parent's pid.
    let ppid = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ppid, name))
}

/// The run-queue wait of every thread of `pid` so far (0 where the kernel has no schedstat).
fn run_delay_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The processes of one scenario at one moment: the server under test (if any), its agents,
/// and this benchmark process itself (the load generator).
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    server: Option<ProcStat>,
    agents: BTreeMap<u32, ProcStat>,
    bench: ProcStat,
}

impl Snapshot {
    pub fn take(server: Option<u32>, agents: &[u32]) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            server: server.and_then(ProcStat::read),
            agents: agents
                .iter()
                .filter_map(|&pid| ProcStat::read(pid).map(|stat| (pid, stat)))
                .collect(),
            bench: ProcStat::read(std::process::id()).unwrap_or_default(),
        }
    }

    /// What was spent between `self` and `later`.
    pub fn until(&self, later: &Snapshot) -> Usage {
        let ticks =
            |before: u64, after: u64| after.saturating_sub(before) as f64 / TICKS_PER_SECOND;
        // Agents present at both ends; an agent replaced during the run is left out (the
        // counts before and after show it).
        let agents_cpu = self
            .agents
            .iter()
            .filter_map(|(pid, before)| {
                later
                    .agents
                    .get(pid)
                    .map(|after| ticks(before.cpu_ticks, after.cpu_ticks))
            })
            .sum();
        Usage {
            seconds: later.at.duration_since(self.at).as_secs_f64(),
            server_cpu: match (self.server, later.server) {
                (Some(before), Some(after)) => ticks(before.cpu_ticks, after.cpu_ticks),
                _ => 0.0,
            },
            agents_cpu,
            bench_cpu: ticks(self.bench.cpu_ticks, later.bench.cpu_ticks),
            server_rss_kib: (
                self.server.map_or(0, |s| s.rss_kib),
                later.server.map_or(0, |s| s.rss_kib),
            ),
            agents_rss_kib: (
                self.agents.values().map(|a| a.rss_kib).sum(),
                later.agents.values().map(|a| a.rss_kib).sum(),
            ),
            agents_count: (self.agents.len(), later.agents.len()),
        }
    }
}

/// CPU seconds spent and memory held over one run.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Wall-clock seconds between the two snapshots.
    pub seconds: f64,
    pub server_cpu: f64,
    pub agents_cpu: f64,
    pub bench_cpu: f64,
    /// Before, after.
    pub server_rss_kib: (u64, u64),
    pub agents_rss_kib: (u64, u64),
    pub agents_count: (usize, usize),
}

impl Usage {
    /// CPU seconds as a percentage of one core over the run.
    pub fn percent(&self, cpu_seconds: f64) -> f64 {
        if self.seconds > 0.0 {
            100.0 * cpu_seconds / self.seconds
        } else {
            0.0
        }
    }
}

/// Any set of processes at one moment, by pid: for a stack of several servers, each with
/// its own share of the CPU.
#[derive(Debug, Clone)]
pub struct Procs {
    at: Instant,
    stats: BTreeMap<u32, ProcStat>,
}

impl Procs {
    pub fn take(pids: impl IntoIterator<Item = u32>) -> Procs {
        Procs {
            at: Instant::now(),
            stats: pids
                .into_iter()
                .filter_map(|pid| ProcStat::read(pid).map(|stat| (pid, stat)))
                .collect(),
        }
    }

    /// Wall-clock seconds from `earlier` to `self`.
    pub fn seconds_since(&self, earlier: &Procs) -> f64 {
        self.at.duration_since(earlier.at).as_secs_f64()
    }

    /// CPU seconds `pids` spent from `earlier` to `self` (those present at both ends).
    pub fn cpu_since(&self, earlier: &Procs, pids: &[u32]) -> f64 {
        pids.iter()
            .filter_map(|pid| {
                let before = earlier.stats.get(pid)?;
                let after = self.stats.get(pid)?;
                Some(after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / TICKS_PER_SECOND)
            })
            .sum()
    }

    /// Seconds `pids` spent runnable but waiting for a CPU, from `earlier` to `self`. Threads
    /// that ended in between are not counted.
    pub fn run_delay_since(&self, earlier: &Procs, pids: &[u32]) -> f64 {
        pids.iter()
            .filter_map(|pid| {
                let before = earlier.stats.get(pid)?;
                let after = self.stats.get(pid)?;
                Some(after.run_delay_ns.saturating_sub(before.run_delay_ns) as f64 / 1e9)
            })
            .sum()
    }

    /// Resident memory of `pids` together, KiB.
    pub fn rss_kib(&self, pids: &[u32]) -> u64 {
        pids.iter()
            .filter_map(|pid| self.stats.get(pid))
            .map(|stat| stat.rss_kib)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_the_parent_and_the_name() {
        let line = "4242 (redis-server) S 4100 4242 4100 0 -1 4194560 210 0 0 0 5 3";
        assert_eq!(parent_and_name(line), Some((4100, "redis-server")));
        let odd = "77 (a (b) c) R 1 77 77 0 -1";
        assert_eq!(parent_and_name(odd), Some((1, "a (b) c")));
        assert_eq!(parent_and_name("77 (cut"), None);
        assert_eq!(parent_and_name("77 (x) R"), None);
    }

    #[test]
    fn this_process_is_a_child_of_its_parent() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).expect("our own stat");
        let (parent, name) = parent_and_name(&stat).expect("our own stat parses");
        assert!(children_named(parent, name).contains(&me));
        assert!(!children_named(parent, "no-such-name").contains(&me));
    }
}
