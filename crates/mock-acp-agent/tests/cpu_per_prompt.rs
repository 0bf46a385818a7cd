//! A measurement, not a check (ignored by default): the mock's CPU time for plain echo
//! prompts, each on a fresh session like the worker runs them. Run it with
//! `cargo test -p mock-acp-agent --release --test cpu_per_prompt -- --ignored --nocapture`
//! (`MOCK_ACP_BENCH_BIN=<path>` measures another build of the mock instead).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure, like the tests that call them"
)]

mod raw;

use serde_json::Value;

const PROMPTS: usize = 5000;
const TEXT: &str = "Summarise the following paragraph in one sentence: the quick brown fox \
    jumps over the lazy dog while the cat watches from the window sill.";

/// The CPU time of all the process's threads so far, in nanoseconds (`schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap();
            stat.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum()
}

#[tokio::test]
#[ignore = "a measurement: run it on purpose, in release"]
async fn cpu_per_plain_echo_prompt() {
    let home = tempfile::tempdir().unwrap();
    // `MOCK_ACP_BENCH_BIN`: measure another build of the mock (an A/B).
    let program = std::env::var("MOCK_ACP_BENCH_BIN").unwrap_or_else(|_| raw::MOCK.to_owned());
    let mut raw = raw::start_program(&program, &[], home.path(), &[]).await;
    let pid = raw.pid().unwrap();
    let before = cpu_ns(pid);
    for _ in 0..PROMPTS {
        let session = raw.new_session(home.path(), Value::Null).await;
        let session = session["sessionId"].as_str().unwrap().to_owned();
        let (frames, answer) = raw.prompt(&session, TEXT).await;
        assert_eq!(answer.unwrap()["stopReason"], "end_turn");
        assert_eq!(raw::text(&frames), TEXT);
        raw.log.clear();
    }
    let spent = cpu_ns(pid) - before;
    println!(
        "{PROMPTS} plain echo prompts: {} µs CPU per prompt",
        spent / 1000 / PROMPTS as u64
    );
}
