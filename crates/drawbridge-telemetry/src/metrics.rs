//! Prometheus metrics of one process (`GET /metrics`, OpenMetrics text), built on the official
//! `prometheus-client` crate.
//!
//! Label sets stay small on purpose: `model` is one of the models the deployment serves (the
//! HTTP layer passes [`UNKNOWN_MODEL`] for anything else, so a client cannot grow the series by
//! inventing model names), `status`/`code` come from fixed lists, and `account` is an account
//! id of the configuration. No key, secret or user id is ever a label.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use drawbridge_types::AccountView;
use drawbridge_types::openai::TokenSource;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// The `model` label of a request whose model is not one the deployment serves.
pub const UNKNOWN_MODEL: &str = "unknown";

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request duration buckets, in seconds: the seed's 5, 30 and 60 among them.
const DURATION_BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Time-to-first-token buckets, in seconds.
const FIRST_TOKEN_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    status: &'static str,
    /// The client's wire format: `openai`, `anthropic`, `responses`, `completions`.
    dialect: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    model: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    kind: &'static str,
    /// `reported` by the agent or `estimated` by Drawbridge.
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    account: String,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    kind: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn first_token_histogram() -> Histogram {
    Histogram::new(FIRST_TOKEN_BUCKETS)
}

/// How one chat request ended, as the metrics count it.
#[derive(Debug, Clone)]
pub struct RequestRecord<'a> {
    /// A served model, or [`UNKNOWN_MODEL`].
    pub model: &'a str,
    /// The client's dialect (a fixed name per endpoint).
    pub dialect: &'static str,
    /// `None` for a success; the error's code (`rate_limit_exceeded`, `upstream_error`, ...).
    pub error_code: Option<&'static str>,
    pub duration: Duration,
    /// Until the first content reached the client, when it did.
    pub first_token: Option<Duration>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The finished answer's `usage.drawbridge` (token source, credits, context use).
    pub usage: Option<drawbridge_types::openai::UsageDetails>,
}

/// The buckets of `drawbridge_context_usage_percent`.
const CONTEXT_BUCKETS: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 100.0];

fn context_histogram() -> Histogram {
    Histogram::new(CONTEXT_BUCKETS)
}

/// Why the gateway refused a request before it ran (`drawbridge_rejections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    RateLimit,
    Quota,
    Model,
}

impl Rejection {
    fn as_str(self) -> &'static str {
        match self {
            Rejection::RateLimit => "rate_limit",
            Rejection::Quota => "quota",
            Rejection::Model => "model_not_allowed",
        }
    }
}

/// The metrics of one process. Cheap to share behind an `Arc`; recording never blocks on I/O.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily<ModelLabels>,
    first_token: HistogramFamily<ModelLabels>,
    tokens: Family<TokenLabels, Counter>,
    credits: Family<ModelLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    context: HistogramFamily<ModelLabels>,
    rejections: Family<ReasonLabels, Counter>,
    in_flight: Gauge,
    transitions: Family<TransitionLabels, Counter>,
    failovers: Family<FailoverLabels, Counter>,
    accounts: Arc<AccountsCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "drawbridge_requests",
            "Chat completion requests, by model and status (success or error)",
            requests.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "drawbridge_request_errors",
            "Chat completion requests that failed, by model and OpenAI error code",
            errors.clone(),
        );
        let duration: HistogramFamily<ModelLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "drawbridge_request_duration_seconds",
            "Chat completion duration, from the request to the last byte of the answer",
            duration.clone(),
        );
        let first_token: HistogramFamily<ModelLabels> =
            Family::new_with_constructor(first_token_histogram);
        registry.register(
            "drawbridge_time_to_first_token_seconds",
            "From the request to the first content of the answer",
            first_token.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "drawbridge_tokens",
            "Tokens of answered requests, by model, kind (prompt or completion) and source (reported by the agent, or estimated where it reports none)",
            tokens.clone(),
        );
        let credits = Family::<ModelLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "drawbridge_credits",
            "Provider credits (Kiro credits) the answered requests cost, as their agents reported",
            credits.clone(),
        );
        let context: HistogramFamily<ModelLabels> = Family::new_with_constructor(context_histogram);
        registry.register(
            "drawbridge_context_usage_percent",
            "The agent's context window use after each answer that reported it, in percent",
            context.clone(),
        );
        let rejections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "drawbridge_rejections",
            "Requests refused before they ran, by reason (rate_limit, quota, model_not_allowed)",
            rejections.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "drawbridge_requests_in_flight",
            "Chat completion requests being answered now",
            in_flight.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "drawbridge_breaker_transitions",
            "Circuit-breaker transitions, by account and the state entered",
            transitions.clone(),
        );
        let failovers = Family::<FailoverLabels, Counter>::default();
        registry.register(
            "drawbridge_failovers",
            "Turns moved to another account: retry (before the first byte) or resume (after it)",
            failovers.clone(),
        );
        let accounts = Arc::new(AccountsCollector::default());
        registry.register_collector(Box::new(Arc::clone(&accounts)));
        Metrics {
            registry,
            requests,
            errors,
            duration,
            first_token,
            tokens,
            credits,
            context,
            rejections,
            in_flight,
            transitions,
            failovers,
            accounts,
        }
    }

    /// Count one finished chat request.
    pub fn record_request(&self, record: &RequestRecord<'_>) {
        let model = record.model.to_owned();
        let status = if record.error_code.is_some() {
            "error"
        } else {
            "success"
        };
        self.requests
            .get_or_create(&RequestLabels {
                model: model.clone(),
                status,
                dialect: record.dialect,
            })
            .inc();
        if let Some(code) = record.error_code {
            self.errors
                .get_or_create(&ErrorLabels {
                    model: model.clone(),
                    code,
                })
                .inc();
        }
        let labels = ModelLabels { model };
        self.duration
            .get_or_create(&labels)
            .observe(record.duration.as_secs_f64());
        if let Some(first) = record.first_token {
            self.first_token
                .get_or_create(&labels)
                .observe(first.as_secs_f64());
        }
        let source = record
            .usage
            .map_or(TokenSource::Estimated, |u| u.tokens)
            .as_str();
        for (kind, n) in [
            ("prompt", record.prompt_tokens),
            ("completion", record.completion_tokens),
        ] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        model: labels.model.clone(),
                        kind,
                        source,
                    })
                    .inc_by(n);
            }
        }
        if let Some(usage) = record.usage {
            if let Some(credits) = usage.credits.filter(|c| c.is_finite() && *c > 0.0) {
                self.credits.get_or_create(&labels).inc_by(credits);
            }
            if let Some(percent) = usage.context_usage_percent.filter(|p| p.is_finite()) {
                self.context.get_or_create(&labels).observe(percent);
            }
        }
    }

    pub fn record_rejection(&self, why: Rejection) {
        self.rejections
            .get_or_create(&ReasonLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// A request started; the guard counts it in flight until dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(Arc::clone(self))
    }

    /// A circuit breaker of `account` entered `to` (`open`, `half_open`, `closed`).
    pub fn record_transition(&self, account: &str, to: &'static str) {
        self.transitions
            .get_or_create(&TransitionLabels {
                account: account.to_owned(),
                to,
            })
            .inc();
    }

    /// A turn moved to another account: `retry` (before the first byte) or `resume`.
    pub fn record_failover(&self, kind: &'static str) {
        self.failovers.get_or_create(&FailoverLabels { kind }).inc();
    }

    /// The accounts as last seen, exported as per-account gauges at the next [`render`]
    /// (call it right before).
    ///
    /// [`render`]: Metrics::render
    pub fn set_accounts(&self, accounts: Vec<AccountView>) {
        if let Ok(mut current) = self.accounts.accounts.lock() {
            *current = accounts;
        }
    }

    /// Every metric as OpenMetrics text ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }

    /// The counters as JSON, for `GET /admin/metrics`.
    pub fn snapshot(&self) -> MetricsSnapshot {
        // The registry is the one source: read the counters back from its own encoding.
        MetricsSnapshot::from_openmetrics(&self.render())
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// The per-account gauges, from the snapshot handed to [`Metrics::set_accounts`].
#[derive(Debug, Default)]
struct AccountsCollector {
    accounts: Mutex<Vec<AccountView>>,
}

/// `closed` 0, `half_open` 1, `open` 2.
fn breaker_value(state: &str) -> f64 {
    match state {
        "open" => 2.0,
        "half_open" => 1.0,
        _ => 0.0,
    }
}

impl Collector for AccountsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let accounts = self.accounts.lock().map(|a| a.clone()).unwrap_or_default();
        type Read = fn(&AccountView) -> Option<f64>;
        let gauges: [(&str, &str, Read); 6] = [
            (
                "drawbridge_account_slots",
                "Agent processes in the account's pool",
                |a| Some(f64::from(a.slots)),
            ),
            (
                "drawbridge_account_busy",
                "Agent processes of the account serving a request now",
                |a| Some(f64::from(a.busy)),
            ),
            (
                "drawbridge_account_queue_depth",
                "Requests waiting for a slot of the account",
                |a| Some(f64::from(a.queue_depth)),
            ),
            (
                "drawbridge_account_credits",
                "Credits the account has left (only accounts whose credits are tracked)",
                // The engine keeps milli-credits; the metric is in credits.
                |a| a.credits.map(|milli| milli as f64 / 1000.0),
            ),
            (
                "drawbridge_account_breaker_state",
                "The account's circuit breaker: 0 closed, 1 half-open, 2 open",
                |a| Some(breaker_value(&a.breaker)),
            ),
            (
                "drawbridge_account_healthy",
                "1 when the account can take requests (healthy or degraded, breaker not open, worker not draining)",
                |a| {
                    let serving = !a.draining
                        && a.breaker != "open"
                        && matches!(
                            a.status,
                            drawbridge_types::worker::AccountStatus::Healthy
                                | drawbridge_types::worker::AccountStatus::Degraded
                        );
                    Some(if serving { 1.0 } else { 0.0 })
                },
            ),
        ];
        for (name, help, read) in gauges {
            let values: Vec<(String, f64)> = accounts
                .iter()
                .filter_map(|a| read(a).map(|v| (a.account.clone(), v)))
                .collect();
            if values.is_empty() {
                continue;
            }
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (account, value) in values {
                let gauge = ConstGauge::new(value);
                let labels = AccountLabels { account };
                gauge.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The counters of [`Metrics`] as JSON (`GET /admin/metrics`): every sample of every counter
/// and gauge, by series, and each histogram's count and sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

impl MetricsSnapshot {
    /// The value of the series `name` whose labels include every pair of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Read the samples back from OpenMetrics text, skipping histogram buckets (their count
    /// and sum are kept).
    fn from_openmetrics(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(parse_sample)
            .filter(|s| !s.name.ends_with("_bucket"))
            .collect();
        MetricsSnapshot { samples }
    }
}

/// `name{a="x",b="y"} value` → a sample. Label values written by the encoder escape `\`, `"`
/// and newlines; ours never contain them, and a line that does not parse is skipped.
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split("\",")
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((key.to_owned(), value.trim_end_matches('"').to_owned()))
        })
        .collect();
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use drawbridge_types::worker::AccountStatus;

    fn view(account: &str, breaker: &str, credits: Option<i64>) -> AccountView {
        AccountView {
            account: account.into(),
            worker: "w1".into(),
            models: vec!["kiro".into()],
            status: AccountStatus::Healthy,
            slots: 3,
            busy: 1,
            queue_depth: 2,
            breaker: breaker.into(),
            credits,
            last_error: None,
            draining: false,
            default_model: None,
            tools_refused: 0,
        }
    }

    fn value(snapshot: &MetricsSnapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        snapshot.value(name, labels)
    }

    #[test]
    fn requests_are_counted_by_model_and_status() {
        let metrics = Metrics::new();
        for error_code in [None, None, Some("upstream_error")] {
            metrics.record_request(&RequestRecord {
                model: "kiro",
                dialect: "openai",
                error_code,
                duration: Duration::from_millis(40_000),
                first_token: Some(Duration::from_millis(30)),
                prompt_tokens: 10,
                completion_tokens: 5,
                usage: None,
            });
        }
        let text = metrics.render();
        assert!(text.contains(
            "drawbridge_requests_total{model=\"kiro\",status=\"success\",dialect=\"openai\"} 2"
        ));
        assert!(text.contains(
            "drawbridge_requests_total{model=\"kiro\",status=\"error\",dialect=\"openai\"} 1"
        ));
        assert!(
            text.contains(
                "drawbridge_request_duration_seconds_bucket{le=\"60.0\",model=\"kiro\"} 3"
            )
        );
        assert!(
            text.contains(
                "drawbridge_request_duration_seconds_bucket{le=\"30.0\",model=\"kiro\"} 0"
            )
        );
        assert!(text.ends_with("# EOF\n"));
        let snapshot = metrics.snapshot();
        assert_eq!(
            value(&snapshot, "drawbridge_tokens_total", &[("kind", "prompt")]),
            Some(30.0)
        );
        assert_eq!(
            value(
                &snapshot,
                "drawbridge_request_errors_total",
                &[("code", "upstream_error")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&snapshot, "drawbridge_request_duration_seconds_count", &[]),
            Some(3.0)
        );
    }

    #[test]
    fn usage_details_label_the_tokens_and_count_credits_and_context() {
        use drawbridge_types::openai::{TokenSource, UsageDetails};
        let metrics = Metrics::new();
        let record = |usage| RequestRecord {
            model: "kiro",
            dialect: "openai",
            error_code: None,
            duration: Duration::from_secs(1),
            first_token: None,
            prompt_tokens: 10,
            completion_tokens: 5,
            usage,
        };
        metrics.record_request(&record(Some(UsageDetails {
            tokens: TokenSource::Reported,
            credits: Some(0.25),
            context_usage_percent: Some(42.0),
            tool_choice_unmet: false,
        })));
        metrics.record_request(&record(None));
        let snapshot = metrics.snapshot();
        let tokens = |source| {
            value(
                &snapshot,
                "drawbridge_tokens_total",
                &[("kind", "prompt"), ("source", source)],
            )
        };
        assert_eq!(tokens("reported"), Some(10.0));
        assert_eq!(tokens("estimated"), Some(10.0));
        assert_eq!(
            value(&snapshot, "drawbridge_credits_total", &[("model", "kiro")]),
            Some(0.25)
        );
        assert_eq!(
            value(
                &snapshot,
                "drawbridge_context_usage_percent_sum",
                &[("model", "kiro")]
            ),
            Some(42.0)
        );
    }

    #[test]
    fn account_gauges_follow_the_last_snapshot() {
        let metrics = Metrics::new();
        metrics.set_accounts(vec![
            view("a", "open", Some(42_500)),
            view("b", "closed", None),
        ]);
        let snapshot = metrics.snapshot();
        assert_eq!(
            value(
                &snapshot,
                "drawbridge_account_breaker_state",
                &[("account", "a")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(&snapshot, "drawbridge_account_healthy", &[("account", "a")]),
            Some(0.0)
        );
        assert_eq!(
            value(&snapshot, "drawbridge_account_healthy", &[("account", "b")]),
            Some(1.0)
        );
        assert_eq!(
            value(&snapshot, "drawbridge_account_credits", &[("account", "a")]),
            Some(42.5),
            "milli-credits are exported as credits"
        );
        assert_eq!(
            value(&snapshot, "drawbridge_account_credits", &[("account", "b")]),
            None,
            "untracked credits are not exported as 0"
        );
        metrics.set_accounts(vec![view("b", "closed", None)]);
        let snapshot = metrics.snapshot();
        assert_eq!(
            value(&snapshot, "drawbridge_account_slots", &[("account", "a")]),
            None,
            "an account that is gone is not exported any more"
        );
    }

    #[test]
    fn in_flight_goes_down_when_the_guard_drops() {
        let metrics = Arc::new(Metrics::new());
        let guard = metrics.in_flight();
        assert_eq!(
            value(&metrics.snapshot(), "drawbridge_requests_in_flight", &[]),
            Some(1.0)
        );
        drop(guard);
        assert_eq!(
            value(&metrics.snapshot(), "drawbridge_requests_in_flight", &[]),
            Some(0.0)
        );
    }
}
