//! The official Python SDK suites (`tests/sdk*`, pytest) run against a stack: the interpreter
//! `make test` prepares (`SDK_PYTHON`, a venv with the SDKs), the stack's base URL and the
//! test API key in the environment the suites read.

use std::path::Path;
use std::time::Duration;

use crate::stack::API_KEY;

/// Run the pytest suite in `suite` against `base_url` (`extra_env` added), within two minutes;
/// fail unless every test passed and `passed` of them did (none skipped). Its output.
pub async fn run_python_suite(
    suite: &Path,
    base_url: &str,
    extra_env: &[(&str, &str)],
    passed: usize,
) -> String {
    let python = std::env::var("SDK_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SDK_PYTHON is not set: run `make test`, which creates the venv with the SDK packages"
        )
    });
    let mut command = tokio::process::Command::new(&python);
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(suite)
        .env("DRAWBRIDGE_BASE_URL", base_url)
        .env("DRAWBRIDGE_API_KEY", API_KEY)
        .kill_on_drop(true);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the SDK suite finishes")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the SDK suite {} failed against {base_url}",
        suite.display()
    );
    assert!(
        stdout.contains(&format!("{passed} passed")) && !stdout.contains("skipped"),
        "{stdout}"
    );
    stdout
}
