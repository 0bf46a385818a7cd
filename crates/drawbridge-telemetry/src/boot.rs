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

/// Load and validate the configuration for `role` and start logging. A bad configuration is
/// reported on stderr, naming the key, and the process should exit with the returned code
/// before binding any port.
pub fn boot(role: Role) -> Result<Config, ExitCode> {
    let args = Args::parse();
    let config = Config::load(&args.config).and_then(|config| {
        config.validate(role)?;
        Ok(config)
    });
    match config {
        Ok(config) => {
            crate::init_logging(&config.log);
            tracing::info!(config = %args.config.display(), node = config.node.id, "configuration loaded");
            Ok(config)
        }
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

/// Log a bound address in the one shape scripts and tests look for: `listening NAME=ADDR`.
pub fn announce(name: &str, addr: SocketAddr) {
    tracing::info!(target: "drawbridge::listen", "listening {name}={addr}");
}
