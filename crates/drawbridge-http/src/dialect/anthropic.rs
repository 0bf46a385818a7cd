//! Anthropic Messages (`POST /v1/messages`, what Claude Code and the Anthropic SDKs call) and
//! its `POST /v1/messages/count_tokens`. The translation is
//! [`drawbridge_types::dialects::anthropic`]'s; here it meets HTTP: the SSE body, the JSON
//! answer, and errors in Anthropic's shape and statuses (529 for no capacity).

use axum::extract::{Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use drawbridge_types::dialects::anthropic::{
    self as wire, Endpoint, MessageCollector, MessageMeta, RequestInfo, StreamEncoder,
};
use drawbridge_types::{ApiError, ChatCompletionRequest, CompletionEvent};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};

use super::{Dialect, Incoming, Rendering};
use crate::gate::{Gate, Refusal};
use crate::render::{self, FrameEncoder};
use crate::{ApiState, EventStream, read_body, request_id, with_headers, with_request_id};

/// The Anthropic Messages dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnthropicMessages;

/// What rendering an Anthropic answer needs of its request.
#[derive(Debug)]
pub struct MessagesRendering {
    info: RequestInfo,
    input_tokens: u64,
}

/// The estimated size of the request's prompt in tokens: the conversation as the agent is
/// sent it, plus the tool definitions it is offered (what `count_tokens` answers, and what
/// `message_start` says before the answer's usage is known).
pub fn input_tokens(chat: &ChatCompletionRequest) -> u64 {
    let prompt =
        drawbridge_core::tokens::estimate_tokens(&drawbridge_core::prompt::render(&chat.messages));
    let tools: u64 = chat
        .offered_tools()
        .iter()
        .map(|tool| {
            drawbridge_core::tokens::estimate_tokens(
                &serde_json::to_string(&tool.function).unwrap_or_default(),
            )
        })
        .sum();
    prompt + tools
}

impl Dialect for AnthropicMessages {
    type Request = MessagesRendering;
    const NAME: &'static str = "anthropic";

    fn parse<'a>(
        &'a self,
        body: &'a [u8],
        _incoming: Incoming<'a>,
    ) -> BoxFuture<'a, Result<(ChatCompletionRequest, MessagesRendering), ApiError>> {
        let parsed = wire::parse_request(body, Endpoint::Messages).map(|(chat, info)| {
            let input_tokens = input_tokens(&chat);
            (chat, MessagesRendering { info, input_tokens })
        });
        futures::future::ready(parsed).boxed()
    }

    fn respond<'a>(
        &'a self,
        request: MessagesRendering,
        events: EventStream,
        _rendering: Rendering<'a>,
    ) -> BoxFuture<'a, Result<Response, ApiError>> {
        let meta = MessageMeta::new(request.info.model, request.input_tokens);
        if request.info.stream {
            // However the events end, the client gets `message_stop` or an `error` event.
            let response = render::stream(StreamEncoder::new(meta), events);
            futures::future::ready(Ok(response)).boxed()
        } else {
            json(meta, events).boxed()
        }
    }

    fn error(&self, error: ApiError) -> Response {
        error_response(&error)
    }
}

/// `error` as Anthropic answers it: its status, `{"type": "error", "error": {...}}`, and
/// `retry-after` (whole seconds) and `retry-after-ms` when it is known.
pub fn error_response(error: &ApiError) -> Response {
    let (_, status) = wire::error_status(error.kind);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(wire::error_body(error))).into_response();
    if let Some(after) = error.retry_after {
        let secs = after.as_millis().div_ceil(1000).max(1);
        let headers = response.headers_mut();
        headers.insert(RETRY_AFTER, HeaderValue::from(secs as u64));
        headers.insert(
            "retry-after-ms",
            HeaderValue::from(after.as_millis() as u64),
        );
    }
    response
}

impl FrameEncoder for StreamEncoder {
    fn start(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&StreamEncoder::start(self));
    }

    fn event(&mut self, event: CompletionEvent, out: &mut BytesMut) -> bool {
        out.extend_from_slice(&StreamEncoder::event(self, &event));
        !matches!(event, CompletionEvent::Finish(_))
    }

    fn error(&mut self, error: &ApiError, out: &mut BytesMut) {
        out.extend_from_slice(&StreamEncoder::error(self, error));
    }
}

/// Gather the answer into one `message`. A failure at any point is an error status: the
/// client has seen nothing yet.
async fn json(meta: MessageMeta, mut events: EventStream) -> Result<Response, ApiError> {
    let mut collector = MessageCollector::new(meta);
    while let Some(event) = events.next().await {
        match event? {
            CompletionEvent::Finish(finish) => {
                return Ok(axum::Json(collector.finish(&finish)).into_response());
            }
            event => collector.push_event(&event),
        }
    }
    Err(render::ended_early())
}

/// `POST /v1/messages/count_tokens`: the request's estimated input tokens,
/// `{"input_tokens": N}`, behind the same keys as `/v1/messages`. Nothing is sent to a
/// backend and nothing is metered.
pub async fn count_tokens<G: Gate>(State(state): State<ApiState<G>>, request: Request) -> Response {
    let request_id = request_id(request.headers());
    let started = tokio::time::Instant::now();
    let (response, headers) = match count(&state, request).await {
        Ok((count, headers)) => (
            axum::Json(serde_json::json!({ "input_tokens": count })).into_response(),
            headers,
        ),
        Err(Refusal { error, headers }) => {
            super::log_refusal(&request_id, &error, started);
            (error_response(&error), headers)
        }
    };
    with_request_id(with_headers(response, headers), &request_id)
}

async fn count<G: Gate>(
    state: &ApiState<G>,
    request: Request,
) -> Result<(u64, axum::http::HeaderMap), Refusal> {
    let entry = state.gate.enter(request.headers()).await?;
    let headers = entry.headers;
    let refuse = |error: ApiError| Refusal {
        error,
        headers: headers.clone(),
    };
    let body = read_body(request.into_body(), state.max_body_bytes)
        .await
        .map_err(refuse)?;
    let (chat, _) = wire::parse_request(&body, Endpoint::CountTokens).map_err(refuse)?;
    Ok((input_tokens(&chat), headers))
}
