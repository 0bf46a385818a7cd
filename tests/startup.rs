//! A bad configuration stops a binary before it binds anything, naming the key at fault.

use test_support::process::run_to_exit;

fn write(dir: &std::path::Path, yaml: &str) -> String {
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn an_unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "gateway:\n  listne: 127.0.0.1:0\n");
    for binary in [
        "drawbridge",
        "drawbridge-gateway",
        "drawbridge-engine",
        "kiro-worker",
    ] {
        let (status, stderr) = run_to_exit(binary, &["--config", &config], &[]).await;
        assert_eq!(status.code(), Some(2), "{binary}: {stderr}");
        assert!(stderr.contains("listne"), "{binary}: {stderr}");
    }
}

#[tokio::test]
async fn an_invalid_value_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "accounts:\n  - id: a\n    pool_size: 0\n");
    let (status, stderr) = run_to_exit("drawbridge", &["--config", &config], &[]).await;
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("accounts[0].pool_size"), "{stderr}");
}

#[tokio::test]
async fn an_environment_override_is_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "accounts:\n  - id: a\n");
    let (status, stderr) = run_to_exit(
        "drawbridge",
        &["--config", &config],
        &[("DRAWBRIDGE_GATEWAY__LISTEN", "not-an-address")],
    )
    .await;
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("gateway.listen"), "{stderr}");
}

#[tokio::test]
async fn a_missing_file_is_reported() {
    let (status, stderr) = run_to_exit(
        "kiro-worker",
        &["--config", "/nonexistent/drawbridge.yaml"],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("/nonexistent/drawbridge.yaml"), "{stderr}");
}

#[tokio::test]
async fn secrets_in_a_bad_config_are_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "gateway:\n  api_keys: [{ name: a, key: db-super-secret-value }, { name: b, key: db-super-secret-value }]\naccounts: [{ id: a }]\n",
    );
    let (status, stderr) = run_to_exit("drawbridge", &["--config", &config], &[]).await;
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("gateway.api_keys[1].key"), "{stderr}");
    assert!(!stderr.contains("db-super-secret-value"), "{stderr}");
}
