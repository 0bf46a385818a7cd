//! What the worker's config turns into: each account's pool settings and agent spec, and the
//! turn options.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drawbridge_acp::AgentSpec;
use drawbridge_config::AccountConfig;
use drawbridge_telemetry::Shutdown;

use crate::pool::{AccountPool, PoolSettings};

/// What every account pool of this worker shares.
pub(crate) struct PoolConfig {
    data_dir: PathBuf,
    handshake_timeout: Duration,
    queue_timeout: Duration,
    max_queue: usize,
}

impl PoolConfig {
    pub(crate) fn new(config: &drawbridge_config::Config) -> Result<Self, anyhow::Error> {
        Ok(PoolConfig {
            data_dir: absolute(&config.worker.data_dir)?,
            handshake_timeout: config.worker.handshake_timeout,
            queue_timeout: config.worker.queue_timeout,
            max_queue: config.worker.max_queue,
        })
    }

    /// Start `account`'s pool in `scope`.
    pub(crate) fn start(
        &self,
        account: &AccountConfig,
        scope: Shutdown,
    ) -> Result<Arc<AccountPool>, anyhow::Error> {
        let spec = agent_spec(account, &self.data_dir)?;
        let settings = PoolSettings {
            size: account.pool_size,
            handshake_timeout: self.handshake_timeout,
            queue_timeout: self.queue_timeout,
            max_queue: self.max_queue,
            permissions: match account.agent.tools {
                drawbridge_config::AgentTools::None => {
                    drawbridge_acp::PermissionPolicy::reject_all()
                }
                drawbridge_config::AgentTools::Builtin => drawbridge_acp::PermissionPolicy {
                    allow_tools: account.agent.allow_tools.clone(),
                    ..drawbridge_acp::PermissionPolicy::default()
                },
            },
            tools: account.agent.tools,
            client_tools: account.agent.client_tools,
        };
        tracing::info!(
            account = account.id,
            pool_size = account.pool_size,
            command = spec.command,
            "starting account pool"
        );
        Ok(AccountPool::start(
            account.id.clone(),
            account.models.clone(),
            spec,
            settings,
            scope,
        ))
    }
}

pub(crate) fn continuation_options(
    c: &drawbridge_config::ContinuationConfig,
) -> drawbridge_core::continuation::ContinuationOptions {
    drawbridge_core::continuation::ContinuationOptions {
        enabled: c.enabled,
        max_rounds: c.max_rounds,
        context_threshold: c.context_threshold,
        min_chars: c.min_chars,
    }
}

pub(crate) fn sanitize_options(
    s: &drawbridge_config::SanitizeConfig,
) -> drawbridge_core::sanitize::SanitizeOptions {
    use drawbridge_config::SanitizeModeConfig as C;
    use drawbridge_core::sanitize::SanitizeMode as M;
    drawbridge_core::sanitize::SanitizeOptions {
        mode: match s.mode {
            C::Identity => M::Identity,
            C::Xml => M::Xml,
            C::Full => M::Full,
        },
        strip_xml_tags: s.strip_xml_tags,
        strip_builtin_tools: s.strip_builtin_tools,
    }
}

/// The agent spec for `account`: its command resolved, its own HOME and working directory
/// under `data_dir` unless configured.
fn agent_spec(account: &AccountConfig, data_dir: &Path) -> Result<AgentSpec, anyhow::Error> {
    let base = data_dir.join(&account.id);
    let home = absolute(
        &account
            .agent
            .home
            .clone()
            .unwrap_or_else(|| base.join("home")),
    )?;
    let cwd = absolute(
        &account
            .agent
            .cwd
            .clone()
            .unwrap_or_else(|| base.join("work")),
    )?;
    std::fs::create_dir_all(&cwd).map_err(|e| {
        anyhow::anyhow!(
            "accounts[{}]: cannot create {}: {e}",
            account.id,
            cwd.display()
        )
    })?;
    Ok(AgentSpec {
        command: resolve_command(&account.agent.command),
        args: account.agent.args.clone(),
        cwd,
        env: account.agent.env.clone(),
        home: Some(home),
    })
}

/// A bare name that is not on `PATH` but sits beside the running binary (as `mock-acp-agent`
/// does next to `drawbridge` in `target/`) is taken from there; anything else is unchanged.
fn resolve_command(command: &str) -> String {
    if command.contains('/') {
        return absolute(Path::new(command))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| command.to_owned());
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()));
    if on_path {
        return command.to_owned();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(command)))
        .filter(|candidate| candidate.is_file())
        .map(|candidate| candidate.display().to_string())
        .unwrap_or_else(|| command.to_owned())
}

pub(crate) fn absolute(path: &Path) -> Result<PathBuf, anyhow::Error> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}
