//! A backend's event stream as an HTTP answer: OpenAI SSE, or one `chat.completion`.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use drawbridge_types::{ApiError, ChunkEncoder, Collector, CompletionEvent, CompletionMeta};
use futures::StreamExt;

use crate::EventStream;

fn ended_early() -> ApiError {
    ApiError::upstream("The answer ended before it was complete.")
}

/// Stream the answer. However the backend's stream ends, the client gets a well-formed end:
/// the finish chunk (and usage) or an error chunk, then `data: [DONE]`.
///
/// With `expose_metering`, the usage chunk also carries the answer's metering (for
/// Drawbridge's own gateway reading the engine's internal API).
pub fn sse(
    model: String,
    include_usage: bool,
    expose_metering: bool,
    events: EventStream,
) -> Response {
    let mut encoder = ChunkEncoder::new(CompletionMeta::new(model), include_usage);
    if expose_metering {
        encoder = encoder.exposing_metering();
    }
    let body = futures::stream::unfold(Some((events, encoder)), |state| async move {
        let (mut events, mut encoder) = state?;
        let (frame, next) = match events.next().await {
            Some(Ok(CompletionEvent::Delta(text))) => {
                let frame = encoder.delta(&text);
                (frame, Some((events, encoder)))
            }
            Some(Ok(CompletionEvent::Finish(finish))) => (encoder.finish(&finish), None),
            Some(Err(error)) => {
                tracing::warn!(
                    id = encoder.meta().id,
                    code = error.kind.code(),
                    "stream ended with an error"
                );
                (encoder.error(&error), None)
            }
            None => (encoder.error(&ended_early()), None),
        };
        Some((Ok::<_, Infallible>(frame), next))
    });
    (
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        [("x-accel-buffering", "no")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Gather the answer into one JSON body. A failure at any point is an error status: the client
/// has seen nothing yet.
pub async fn json(model: String, mut events: EventStream) -> Result<Response, ApiError> {
    let mut collector = Collector::new(CompletionMeta::new(model));
    while let Some(event) = events.next().await {
        match event? {
            CompletionEvent::Delta(text) => collector.push(&text),
            CompletionEvent::Finish(finish) => {
                return Ok(axum::Json(collector.finish(&finish)).into_response());
            }
        }
    }
    Err(ended_early())
}
