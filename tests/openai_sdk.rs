//! The official OpenAI Python SDK, unchanged but for `base_url` and `api_key`, against both
//! deployment shapes (and Prometheus's Python client reading `/metrics`). `make test` creates
//! the venv and sets `SDK_PYTHON`.

use std::path::Path;
use std::time::Duration;

use test_support::stack::{ADMIN_TOKEN, API_KEY};
use test_support::{Stack, StackOptions};

async fn run_sdk_suite(stack: &Stack) {
    let python = std::env::var("SDK_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SDK_PYTHON is not set: run `make test`, which creates the venv with the openai package"
        )
    });
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
    let run = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&suite)
        .env("DRAWBRIDGE_BASE_URL", &stack.base_url)
        .env("DRAWBRIDGE_API_KEY", API_KEY)
        .env("DRAWBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the SDK suite finishes")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the OpenAI SDK suite failed against {}",
        stack.base_url
    );
    assert!(
        stdout.contains("passed") && !stdout.contains("skipped"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_against_single_node() {
    let mut stack = Stack::single(StackOptions::default()).await;
    run_sdk_suite(&stack).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_against_three_processes() {
    let mut stack = Stack::three(StackOptions::default()).await;
    run_sdk_suite(&stack).await;
    stack.stop().await;
}
