//! Logging, traces and metrics. The process runtime (shutdown scope, signals, live config) is
//! `drawbridge-runtime`; its types are re-exported here for the binaries' convenience.

pub mod boot;
pub mod metrics;
pub mod otel;

pub use boot::{announce, boot, run_binary};
pub use drawbridge_runtime::{DrainPlan, LiveConfig, Reloaded, Shutdown, Signals};
pub use metrics::Metrics;
pub use otel::{Tracing, continue_trace, current_context_headers};

use drawbridge_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Install the global subscriber: `RUST_LOG` if set, else `log.level`; text or JSON lines on
/// stderr (JSON lines carry the fields of the current span, the request's `trace_id` among
/// them); and, with `tracer`, every span also as an OpenTelemetry span. Calling it twice is
/// harmless (the second call is ignored), so tests may too.
pub fn init_logging(config: &LogConfig, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match config.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    // Per span, not per poll: the layer's defaults also attach the OpenTelemetry context and
    // read the clock on every enter and exit of a span (each poll of an instrumented future
    // or stream), for busy/idle timings and for instrumentation that reads the current
    // context. Nothing here reads it (the trace headers come from the span itself), and the
    // thread attributes would name the same runtime worker threads on every span.
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_threads(false)
    });
    let _already_set = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
}
