//! What every binary does first: read `--config`, load and validate it, start logging.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use drawbridge_config::{Config, Role};

#[derive(Parser, Debug)]
struct Args {
    /// The YAML configuration file.
    #[arg(
        long,
        short,
        env = "DRAWBRIDGE_CONFIG",
        default_value = "config/drawbridge.yaml"
    )]
    config: PathBuf,
}

/// Load and validate the configuration for `role` (and say from which file). A bad
/// configuration is reported on stderr, naming the key, and the process should exit with the
/// returned code before binding any port.
pub fn boot(role: Role) -> Result<(Config, PathBuf), ExitCode> {
    let args = Args::parse();
    let config = Config::load(&args.config).and_then(|config| {
        config.validate(role)?;
        Ok(config)
    });
    match config {
        Ok(config) => Ok((config, args.config)),
        Err(error) => {
            #[expect(
                clippy::print_stderr,
                reason = "logging is configured by the file that failed"
            )]
            {
                eprintln!("error: {error}");
            }
            Err(ExitCode::from(2))
        }
    }
}

/// A binary's whole `main`: boot for `role` (config, validation), start the multi-threaded
/// runtime, logging and tracing, run `run`, export the last spans, and turn its result into
/// the exit code (0, 1 on a runtime error, 2 on a bad configuration).
pub fn run_binary<F, Fut>(role: Role, run: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (config, path) = match boot(role) {
        Ok(booted) => booted,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            crate::init_logging(&config.log, None);
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let tracing = match crate::Tracing::new(&config.log, role.service_name()) {
            Ok(tracing) => Some(tracing),
            Err(error) => {
                crate::init_logging(&config.log, None);
                tracing::error!(%error, "cannot set up trace export (log.otlp_endpoint)");
                return ExitCode::FAILURE;
            }
        };
        crate::init_logging(&config.log, tracing.as_ref().map(crate::Tracing::tracer));
        tracing::info!(config = %path.display(), node = config.node.id, "configuration loaded");
        let result = run(config).await;
        if let Some(tracing) = tracing {
            tracing.shutdown().await;
        }
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Log a bound address in the one shape scripts and tests look for: `listening NAME=ADDR`.
pub fn announce(name: &str, addr: SocketAddr) {
    tracing::info!(target: "drawbridge::listen", "listening {name}={addr}");
}
