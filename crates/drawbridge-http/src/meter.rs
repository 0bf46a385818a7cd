//! Watches an answer on its way to the client: the first content (time to first token), the
//! text delivered, and the end. When the answer ends (finish, error, or the client dropping
//! it), the request's [`Pass`] is told exactly once and the request is counted in the metrics.
//! A client that hangs up while the backend is still being asked (before any byte of the
//! answer exists) is counted and logged the same way ([`Waiting`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use drawbridge_telemetry::metrics::{InFlight, Metrics, RequestRecord};
use drawbridge_types::{ApiError, CompletionEvent};
use futures::Stream;
use tokio::time::Instant;

use crate::EventStream;
use crate::gate::{Ended, Outcome, Pass};

/// The error code a request abandoned by its client is counted under.
pub const ABANDONED: &str = "client_closed";

/// What the meter needs to report one request.
pub struct Meter {
    pub pass: Box<dyn Pass>,
    /// The request's id, on its log line.
    pub request_id: String,
    pub metrics: Option<Arc<Metrics>>,
    /// The model label (a served model, or `UNKNOWN_MODEL`).
    pub model: String,
    /// The client's dialect ([`crate::dialect::Dialect::NAME`]): the `dialect` label.
    pub dialect: &'static str,
    pub started: Instant,
    /// Whether the client receives the text as it comes (SSE). A non-streamed answer that
    /// fails reaches its client as an error status only: none of its text was delivered.
    pub streamed: bool,
}

impl Meter {
    /// The request ended before an answer started (the backend refused it).
    pub fn refused(self, error: &ApiError) {
        let ended = Ended {
            outcome: Outcome::Failed(error.kind),
            delivered_chars: 0,
            duration: self.started.elapsed(),
        };
        report(
            self.metrics.as_deref(),
            &self.model,
            self.dialect,
            &ended,
            None,
        );
        self.pass.end(&ended);
    }

    /// Hold the meter while the backend is asked to start: dropped before that ends (the
    /// client hung up, so the handler's future was dropped), the request counts as
    /// [`ABANDONED`], with its end line, like a hang-up mid-answer.
    pub fn waiting(self) -> Waiting {
        Waiting(Some(self))
    }

    /// The client went away before the answer started.
    fn abandoned(self) {
        let ended = Ended {
            outcome: Outcome::Abandoned,
            delivered_chars: 0,
            duration: self.started.elapsed(),
        };
        report(
            self.metrics.as_deref(),
            &self.model,
            self.dialect,
            &ended,
            None,
        );
        log_end(&self, &ended, None);
        self.pass.end(&ended);
    }

    /// Watch `events` until they end.
    pub fn watch(self, events: EventStream) -> EventStream {
        let in_flight = self.metrics.as_ref().map(Metrics::in_flight);
        Box::pin(Metered {
            events,
            meter: Some(self),
            first_token: None,
            delivered_chars: 0,
            _in_flight: in_flight,
        })
    }
}

/// A [`Meter`] while the backend is asked to start the answer (see [`Meter::waiting`]).
pub struct Waiting(Option<Meter>);

impl Waiting {
    /// Count the request under the model label `model` (e.g. unknown, once the backend said
    /// the model does not exist).
    pub fn set_model(&mut self, model: &str) {
        if let Some(meter) = &mut self.0 {
            model.clone_into(&mut meter.model);
        }
    }

    /// The backend refused the request: see [`Meter::refused`].
    pub fn refused(mut self, error: &ApiError) {
        if let Some(meter) = self.0.take() {
            meter.refused(error);
        }
    }

    /// The answer started: see [`Meter::watch`].
    pub fn watch(mut self, events: EventStream) -> EventStream {
        match self.0.take() {
            Some(meter) => meter.watch(events),
            None => events,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(meter) = self.0.take() {
            meter.abandoned();
        }
    }
}

struct Metered {
    events: EventStream,
    /// Taken when the end is reported.
    meter: Option<Meter>,
    first_token: Option<std::time::Duration>,
    delivered_chars: usize,
    _in_flight: Option<InFlight>,
}

impl Metered {
    fn end(&mut self, outcome: Outcome) {
        if let Some(meter) = self.meter.take() {
            let finished = matches!(outcome, Outcome::Finished(_));
            let ended = Ended {
                outcome,
                delivered_chars: if meter.streamed || finished {
                    self.delivered_chars
                } else {
                    0
                },
                duration: meter.started.elapsed(),
            };
            report(
                meter.metrics.as_deref(),
                &meter.model,
                meter.dialect,
                &ended,
                self.first_token,
            );
            log_end(&meter, &ended, self.first_token);
            meter.pass.end(&ended);
        }
    }
}

impl Stream for Metered {
    type Item = Result<CompletionEvent, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = match this.events.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        match &item {
            // The first text or reasoning is the first token the client sees; both are
            // delivered output (what an answer that breaks off is charged for).
            Some(Ok(CompletionEvent::Delta(text) | CompletionEvent::Reasoning(text))) => {
                if this.first_token.is_none()
                    && let Some(meter) = &this.meter
                {
                    this.first_token = Some(meter.started.elapsed());
                }
                this.delivered_chars += text.chars().count();
            }
            // A tool call is delivered output too (its arguments are what the model wrote).
            Some(Ok(CompletionEvent::ToolCall { call, .. })) => {
                if this.first_token.is_none()
                    && let Some(meter) = &this.meter
                {
                    this.first_token = Some(meter.started.elapsed());
                }
                this.delivered_chars +=
                    call.function.name.chars().count() + call.function.arguments.chars().count();
            }
            Some(Ok(CompletionEvent::KeepAlive)) => {}
            Some(Ok(CompletionEvent::Finish(finish))) => {
                this.end(Outcome::Finished(finish.clone()));
            }
            Some(Err(error)) => this.end(Outcome::Failed(error.kind)),
            None => this.end(Outcome::Failed(drawbridge_types::ErrorKind::Upstream)),
        }
        Poll::Ready(item)
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or the server is shutting down).
        self.end(Outcome::Abandoned);
    }
}

/// One line per answered request, when it ends: how it ended, how long it took, how long the
/// first text took.
fn log_end(meter: &Meter, ended: &Ended, first_token: Option<std::time::Duration>) {
    let (outcome, usage) = match &ended.outcome {
        Outcome::Finished(finish) => (finish.finish_reason.as_str(), finish.usage.drawbridge),
        Outcome::Failed(kind) => (kind.code(), None),
        Outcome::Abandoned => (ABANDONED, None),
    };
    tracing::info!(
        request_id = meter.request_id,
        model = meter.model,
        dialect = meter.dialect,
        stream = meter.streamed,
        outcome,
        elapsed_ms = ended.duration.as_millis() as u64,
        first_token_ms = first_token.map(|t| t.as_millis() as u64),
        tokens = usage.map(|u| u.tokens.as_str()),
        credits = usage.and_then(|u| u.credits),
        context_usage_percent = usage.and_then(|u| u.context_usage_percent),
        "chat completion ended"
    );
}

/// Count one request that ended as `ended` in `metrics` (if any).
pub(crate) fn report(
    metrics: Option<&Metrics>,
    model: &str,
    dialect: &'static str,
    ended: &Ended,
    first_token: Option<std::time::Duration>,
) {
    let Some(metrics) = metrics else {
        return;
    };
    let (error_code, prompt_tokens, completion_tokens, usage) = match &ended.outcome {
        Outcome::Finished(finish) => (
            None,
            finish.usage.prompt_tokens,
            finish.usage.completion_tokens,
            finish.usage.drawbridge,
        ),
        Outcome::Failed(kind) => (Some(kind.code()), 0, 0, None),
        Outcome::Abandoned => (Some(ABANDONED), 0, 0, None),
    };
    metrics.record_request(&RequestRecord {
        model,
        dialect,
        error_code,
        duration: ended.duration,
        first_token,
        prompt_tokens,
        completion_tokens,
        usage,
    });
}
