//! The official OpenAI Node SDK, unchanged but for `baseURL` and `apiKey`, against both
//! deployment shapes: plain and streamed chat, the stream helper and the automatic tool runner
//! through the tool bridge, error mapping. The suite is tests/sdk-node/*.test.mjs, run with
//! Node's own test runner; `make test` (scripts/test-deps.sh) installs the SDK there with
//! `npm ci`. `node` must be on PATH.

use std::path::{Path, PathBuf};
use std::time::Duration;

use test_support::stack::{ADMIN_TOKEN, API_KEY};
use test_support::{Stack, StackOptions};

/// The suite's directory and its test files, sorted (at least one).
fn suite() -> (PathBuf, Vec<PathBuf>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk-node");
    assert!(
        dir.join("node_modules").join("openai").is_dir(),
        "the openai package is not installed in {}: run `make test` (scripts/test-deps.sh runs npm ci there)",
        dir.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read the Node suite's directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".test.mjs"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.mjs in {}", dir.display());
    (dir, files)
}

/// A count from the TAP summary at the end (`# pass 7`).
fn tap_count(stdout: &str, key: &str) -> Option<u64> {
    let prefix = format!("# {key} ");
    stdout
        .lines()
        .rev()
        .filter_map(|line| line.strip_prefix(&prefix))
        .find_map(|count| count.trim().parse().ok())
}

async fn run_node_suite(stack: &Stack) {
    let (dir, files) = suite();
    // The files are named one by one: how `node --test` reads a directory argument differs
    // between Node versions, a list of files does not.
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=tap"])
        .args(&files)
        .current_dir(&dir)
        .env("DRAWBRIDGE_BASE_URL", &stack.base_url)
        .env("DRAWBRIDGE_API_KEY", API_KEY)
        .env("DRAWBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("NODE_OPTIONS")
        .env_remove("NODE_TEST_CONTEXT")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the Node SDK suite finishes")
        .unwrap_or_else(|err| panic!("run `node` (Node.js must be on PATH): {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the OpenAI Node SDK suite failed against {} ({}):\n{stdout}\n{stderr}",
        stack.base_url,
        output.status
    );
    eprintln!("{stdout}\n{stderr}");
    let count = |key: &str| {
        tap_count(&stdout, key)
            .unwrap_or_else(|| panic!("no `# {key}` in the TAP output:\n{stdout}"))
    };
    let (tests, pass) = (count("tests"), count("pass"));
    assert!(pass > 0, "no test ran:\n{stdout}");
    assert_eq!(pass, tests, "not every test passed:\n{stdout}");
    for key in ["fail", "cancelled", "skipped", "todo"] {
        assert_eq!(count(key), 0, "{key}:\n{stdout}");
    }
}

#[test]
fn tap_counts_are_read_from_the_summary() {
    let tap = "TAP version 13\n# Subtest: a\nok 1 - a\n1..1\n# tests 7\n# pass 6\n# fail 1\n";
    assert_eq!(tap_count(tap, "tests"), Some(7));
    assert_eq!(tap_count(tap, "pass"), Some(6));
    assert_eq!(tap_count(tap, "fail"), Some(1));
    assert_eq!(tap_count(tap, "skipped"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_against_single_node() {
    let mut stack = Stack::single(StackOptions::default()).await;
    run_node_suite(&stack).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_against_three_processes() {
    let mut stack = Stack::three(StackOptions::default()).await;
    run_node_suite(&stack).await;
    stack.stop().await;
}
