//! Traces: every `tracing` span is also an OpenTelemetry span, exported over OTLP/gRPC when
//! `log.otlp_endpoint` is set. The span context crosses processes in W3C `traceparent`
//! headers (gateway → engine over HTTP, engine → worker in gRPC metadata), so one request is
//! one trace. Without an endpoint the spans are still made (so trace ids exist for the logs and
//! travel between processes) but go nowhere.

use std::time::Duration;

use drawbridge_config::LogConfig;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The process's tracer provider; [`Tracing::shutdown`] exports what is still buffered.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// A provider for `service`, exporting to `log.otlp_endpoint` if set. Must run inside the
    /// tokio runtime: the batch exporter is a task on it.
    pub fn new(config: &LogConfig, service: &str) -> anyhow::Result<Tracing> {
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .build();
        let mut builder = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.trace_sample_ratio,
            ))));
        if let Some(endpoint) = &config.otlp_endpoint {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(Duration::from_secs(5))
                .build()?;
            let processor =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            builder = builder.with_span_processor(processor);
        }
        Ok(Tracing {
            provider: builder.build(),
        })
    }

    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("drawbridge")
    }

    /// Export the spans still buffered and stop the exporter (bounded: a collector that is
    /// away costs at most a few seconds at exit).
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        });
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "trace exporter shutdown"),
            Err(error) => tracing::debug!(%error, "trace exporter shutdown task"),
        }
    }
}

/// The W3C trace-context headers (`traceparent`, `tracestate`) for the current span, to send
/// along with a call to another process.
pub fn current_context_headers() -> Vec<(String, String)> {
    struct Pairs(Vec<(String, String)>);
    impl Injector for Pairs {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }
    let mut pairs = Pairs(Vec::new());
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut pairs);
    pairs.0
}

/// Make `span` continue the trace of a caller's W3C trace-context headers (`traceparent`,
/// `tracestate`, as `get` finds them); without them, `span` starts a new trace. Records the
/// trace id as the span's `trace_id` field (declared `tracing::field::Empty`), so every log
/// line inside it carries it.
pub fn continue_trace(span: &tracing::Span, get: impl Fn(&str) -> Option<String>) {
    struct Headers(Vec<(&'static str, String)>);
    impl Extractor for Headers {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| *k).collect()
        }
    }
    let headers = Headers(
        ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| get(k).map(|v| (k, v)))
            .collect(),
    );
    if !headers.0.is_empty() {
        let parent = TraceContextPropagator::new().extract(&headers);
        if opentelemetry::trace::TraceContextExt::span(&parent)
            .span_context()
            .is_valid()
        {
            let _not_started = span.set_parent(parent);
        }
    }
    record_trace_id(span);
}

/// Record `span`'s trace id in its `trace_id` field.
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let trace_id = opentelemetry::trace::TraceContextExt::span(&context)
        .span_context()
        .trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}
