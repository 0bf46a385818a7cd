//! Client dialects at the HTTP edge. A [`Dialect`] reads its wire format into the canonical
//! request ([`ChatCompletionRequest`]: the request every backend and the gateway–engine hop
//! carry) and writes the canonical events ([`CompletionEvent`](drawbridge_types::CompletionEvent))
//! back in its wire format, streamed or whole, errors included. Everything between the two
//! edges (keys, limits, quotas, scheduling, failover, usage, metrics) never sees a dialect.
//!
//! [`handle`] is the one request path every dialect shares: authenticate, read the body,
//! parse it in the dialect, admit, ask the backend, meter, render in the dialect.

pub mod anthropic;
pub mod completions;
pub mod openai;
pub mod responses;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use drawbridge_types::openai::Role;
use drawbridge_types::{ApiError, ChatCompletionRequest, ErrorKind};
use futures::future::BoxFuture;
use tracing::Instrument as _;

use crate::gate::{Ended, Entry, Gate, Outcome, Refusal};
use crate::{
    ApiState, ChatContext, EventStream, MAX_SESSION_KEY, TENANT_HEADER, events, meter, read_body,
    request_id, with_headers, with_request_id,
};

/// What a dialect knows of the request while parsing it.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    pub headers: &'a HeaderMap,
    pub request_id: &'a str,
    /// Whose conversation this is (the client key's id; see [`ChatContext::tenant`]).
    pub tenant: &'a str,
}

/// What a dialect's renderer knows of the deployment.
#[derive(Debug, Clone, Copy)]
pub struct Rendering<'a> {
    pub request_id: &'a str,
    /// Put the answer's metering on its usage (the engine's internal API only).
    pub expose_metering: bool,
}

/// One client wire format (OpenAI chat, Anthropic Messages, OpenAI Responses, legacy
/// completions).
pub trait Dialect: Send + Sync + 'static {
    /// What rendering needs to remember of the original request (the streaming flag, the
    /// model as the client named it, ...).
    type Request: Send + 'static;

    /// The dialect's name: the `dialect` label of the request metrics, and the logs'.
    const NAME: &'static str;

    /// The body as the canonical request, or a refusal (a 400 naming the field).
    fn parse<'a>(
        &'a self,
        body: &'a [u8],
        incoming: Incoming<'a>,
    ) -> BoxFuture<'a, Result<(ChatCompletionRequest, Self::Request), ApiError>>;

    /// The answer in this dialect. An `Err` (a non-streamed answer that failed) becomes
    /// [`Dialect::error`].
    fn respond<'a>(
        &'a self,
        request: Self::Request,
        events: EventStream,
        rendering: Rendering<'a>,
    ) -> BoxFuture<'a, Result<Response, ApiError>>;

    /// An error in this dialect's shape and status (its headers: `Retry-After` when known).
    fn error(&self, error: ApiError) -> Response {
        error.into_response()
    }
}

/// The axum handler of dialect `D`'s endpoint.
pub async fn endpoint<G: Gate, D: Dialect>(
    State(state): State<ApiState<G>>,
    dialect: Arc<D>,
    request: Request,
) -> Response {
    handle(&state, dialect.as_ref(), request).await
}

/// The request path of every dialect: see the module docs.
pub async fn handle<G: Gate, D: Dialect>(
    state: &ApiState<G>,
    dialect: &D,
    request: Request,
) -> Response {
    let request_id = request_id(request.headers());
    let started = tokio::time::Instant::now();
    // One span per request, continuing the caller's trace (the gateway's, when this is the
    // engine); its fields, the trace id among them, are on every log line inside it.
    let span = tracing::info_span!(
        "chat",
        request_id = %request_id,
        dialect = D::NAME,
        trace_id = tracing::field::Empty
    );
    drawbridge_telemetry::continue_trace(&span, |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let (response, headers) = match start(state, dialect, request, &request_id, started)
        .instrument(span.clone())
        .await
    {
        Ok(answer) => answer,
        Err(Refusal { error, headers }) => {
            log_refusal(&request_id, &error, started);
            let ended = Ended {
                outcome: Outcome::Failed(error.kind),
                delivered_chars: 0,
                duration: started.elapsed(),
            };
            meter::report(
                state.metrics.as_deref(),
                drawbridge_telemetry::metrics::UNKNOWN_MODEL,
                D::NAME,
                &ended,
                None,
            );
            (dialect.error(error), headers)
        }
    };
    with_request_id(with_headers(response, headers), &request_id)
}

pub(crate) fn log_refusal(request_id: &str, error: &ApiError, started: tokio::time::Instant) {
    tracing::info!(
        request_id,
        status = error.status(),
        code = error.kind.code(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "chat completion refused"
    );
}

/// Whose conversation a request is: the caller's key id, or, only from a caller whose key is
/// trusted to say it (Drawbridge's own gateway, calling the internal API with a
/// `trust_tenant` channel key), the id in [`TENANT_HEADER`].
pub(crate) fn tenant<G: Gate>(gate: &G, entry: &Entry<G::Context>, headers: &HeaderMap) -> String {
    gate.trusts_tenant(entry)
        .then(|| headers.get(TENANT_HEADER))
        .flatten()
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map_or_else(|| entry.caller.key_id.clone(), str::to_owned)
}

/// The conversation key the client sent in [`ApiState::session_header`], if any (trimmed; an
/// empty or overlong one is ignored).
pub(crate) fn session_key<G: Gate>(state: &ApiState<G>, headers: &HeaderMap) -> Option<String> {
    state
        .session_header
        .as_ref()
        .and_then(|name| headers.get(name))
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= MAX_SESSION_KEY)
        .map(str::to_owned)
}

/// The refusal of a request that arrives while this node drains.
pub(crate) fn shutting_down() -> ApiError {
    ApiError::unavailable("This node is shutting down; send the request to another one.")
        .with_retry_after(Duration::from_secs(1))
}

/// The longest model name used as a metrics label; longer ones count as unknown.
pub(crate) const MAX_MODEL_LABEL: usize = 64;

/// Authenticate, read and parse, admit, start the answer. A refusal before the backend is
/// asked comes back as `Err` (counted by the caller); from then on the [`meter::Meter`] counts
/// the request and tells its pass how it ended.
async fn start<G: Gate, D: Dialect>(
    state: &ApiState<G>,
    dialect: &D,
    request: Request,
    request_id: &str,
    started: tokio::time::Instant,
) -> Result<(Response, HeaderMap), Refusal> {
    let entry = state.gate.enter(request.headers()).await?;
    let session = session_key(state, request.headers());
    // Only a caller whose key is trusted to (Drawbridge's own gateway, calling the internal
    // API with a `trust_tenant` channel key) may say whose request this is.
    let tenant = tenant(state.gate.as_ref(), &entry, request.headers());
    let asks_resume =
        state.gate.trusts_tenant(&entry) && request.headers().contains_key(crate::RESUME_HEADER);
    let headers = entry.headers.clone();
    let refuse = |error: ApiError| Refusal {
        error,
        headers: headers.clone(),
    };
    if state.draining.is_cancelled() {
        return Err(refuse(shutting_down()));
    }
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.max_body_bytes)
        .await
        .map_err(refuse)?;
    let incoming = Incoming {
        headers: &parts.headers,
        request_id,
        tenant: &tenant,
    };
    let (chat, original) = dialect.parse(&body, incoming).await.map_err(refuse)?;
    let pass = state
        .gate
        .admit(&entry, &chat, request_id)
        .await
        .map_err(refuse)?;
    let stream = chat.is_stream();
    let model = chat.model.clone();
    let resume = asks_resume && continues_an_answer(&chat);
    let ctx = ChatContext {
        request_id: request_id.to_owned(),
        caller: entry.caller,
        session,
        tenant,
        resume,
    };
    // From here on the request is counted however it ends, even if the client hangs up
    // while the backend is still starting the answer.
    let mut meter = meter::Meter {
        pass,
        request_id: request_id.to_owned(),
        metrics: state.metrics.clone(),
        model: if model.len() <= MAX_MODEL_LABEL {
            model.clone()
        } else {
            drawbridge_telemetry::metrics::UNKNOWN_MODEL.to_owned()
        },
        dialect: D::NAME,
        started,
        streamed: stream,
    }
    .waiting();
    let events = match state.backend.chat(chat, ctx).await {
        Ok(events) => events,
        Err(error) => {
            if error.kind == ErrorKind::ModelNotFound {
                meter.set_model(drawbridge_telemetry::metrics::UNKNOWN_MODEL);
            }
            log_refusal(request_id, &error, started);
            meter.refused(&error);
            return Ok((dialect.error(error), headers));
        }
    };
    let events = meter.watch(events);
    // The answer is produced while the body streams, after this handler returned: keep its
    // work (retries, resumptions) inside the request's span.
    let events = events::in_current_span(events);
    tracing::debug!(request_id, model, stream, "chat completion started");
    let rendering = Rendering {
        request_id,
        expose_metering: state.expose_metering,
    };
    let mut response = match dialect.respond(original, events, rendering).await {
        Ok(response) => response,
        Err(error) => dialect.error(error),
    };
    if resume {
        // Tells the gateway the answer is the continuation it asked for.
        response.headers_mut().insert(
            crate::RESUME_HEADER,
            axum::http::HeaderValue::from_static("continued"),
        );
    }
    Ok((response, headers))
}

/// Whether `request` can be continued ([`crate::RESUME_HEADER`]): its last message is the
/// assistant's text, with no tool calls.
fn continues_an_answer(request: &ChatCompletionRequest) -> bool {
    request.messages.last().is_some_and(|m| {
        m.role == Role::Assistant && m.tool_calls.is_none() && !m.text().is_empty()
    })
}
