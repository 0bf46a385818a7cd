//! LiteLLM's proxy as the provider section's peer: installed into a virtualenv when missing,
//! started with one model on the mock upstream, stopped at the end.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::{MODEL, UPSTREAM_KEY};
use crate::client::Conn;

/// LiteLLM's master key (it refuses to start without one), which its clients present.
pub(super) const KEY: &str = "sk-bench-litellm-0123456789";

/// LiteLLM's proxy, running from its virtualenv.
pub(super) struct LiteLlm {
    pub(super) child: Child,
    pub(super) addr: SocketAddr,
}

impl LiteLlm {
    /// Make the virtualenv if it has no `litellm` yet, then start the proxy on a free
    /// loopback port with one model on the mock at `upstream`; its output goes to
    /// `dir/litellm.log`.
    pub(super) async fn start(venv: &Path, upstream: SocketAddr, dir: &Path) -> Result<LiteLlm> {
        let exe = venv.join("bin").join("litellm");
        if !exe.is_file() {
            install(venv).await?;
        }
        let config = dir.join("litellm.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n      api_base: http://{upstream}/v1\n      api_key: {UPSTREAM_KEY}\n"
            ),
        )
        .context("write LiteLLM's config")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("find a free port")?
            .port();
        let log_path = dir.join("litellm.log");
        let log = std::fs::File::create(&log_path).context("create LiteLLM's log")?;
        let child = Command::new(&exe)
            .arg("--config")
            .arg(&config)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--num_workers", "1"])
            // No fetch of the price list from the network at start, and quiet logs.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_MASTER_KEY", KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("LiteLLM's log")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", exe.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut litellm = LiteLlm { child, addr };
        // Up when it accepts a connection (the readiness request follows with the others).
        let deadline = Instant::now() + Duration::from_secs(120);
        while Conn::open(addr).await.is_err() {
            if let Ok(Some(status)) = litellm.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                bail!(
                    "litellm exited ({status}); the end of its log:\n{}",
                    lines[lines.len().saturating_sub(20)..].join("\n")
                );
            }
            if Instant::now() >= deadline {
                litellm.stop().await;
                bail!("litellm did not listen on {addr} within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(litellm)
    }

    pub(super) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `python3 -m venv VENV` and `VENV/bin/pip install 'litellm[proxy]'`, output to the bench's.
async fn install(venv: &Path) -> Result<()> {
    println!(
        "LiteLLM: installing 'litellm[proxy]' into {} (once)",
        venv.display()
    );
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .await
        .context("run python3 -m venv (is Python 3 installed?)")?;
    if !status.success() {
        bail!("python3 -m venv {} failed ({status})", venv.display());
    }
    let status = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "litellm[proxy]"])
        .status()
        .await
        .context("run pip")?;
    if !status.success() {
        bail!("pip install 'litellm[proxy]' failed ({status})");
    }
    Ok(())
}
