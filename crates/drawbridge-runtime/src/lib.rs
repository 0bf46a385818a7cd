//! The process runtime every Drawbridge layer runs in: one shutdown scope per process with its
//! drain order ([`Shutdown`], [`DrainPlan`]), the SIGTERM/SIGINT listeners ([`Signals`]), and
//! the live configuration that hot reload swaps ([`LiveConfig`]). No logging setup and no
//! telemetry here (that is `drawbridge-telemetry`), so the stores can depend on it cheaply.

pub mod drain;
pub mod reload;
pub mod shutdown;

pub use drain::DrainPlan;
pub use reload::{LiveConfig, Reloaded};
pub use shutdown::{Shutdown, Signals};
