//! Logging and the shutdown scope every Drawbridge process runs in.

pub mod boot;
pub mod shutdown;

pub use boot::{announce, boot, run_binary};
pub use shutdown::{Shutdown, Signals};

use drawbridge_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Install the global subscriber: `RUST_LOG` if set, else `log.level`; text or JSON lines on
/// stderr. Calling it twice is harmless (the second call is ignored), so tests may too.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _already_set = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
