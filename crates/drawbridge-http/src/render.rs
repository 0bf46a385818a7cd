//! A backend's event stream as an HTTP answer: OpenAI SSE, or one `chat.completion`.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use drawbridge_types::{ApiError, ChunkEncoder, Collector, CompletionEvent, CompletionMeta};
use futures::{FutureExt as _, StreamExt};

use crate::EventStream;

/// The error of an answer whose events stopped before its finish.
pub fn ended_early() -> ApiError {
    ApiError::upstream("The answer ended before it was complete.")
}

/// One dialect's SSE rendering of the canonical events: what [`stream`] writes for each.
pub trait FrameEncoder: Send + 'static {
    /// Frames sent before the first event (e.g. Anthropic's `message_start`); none by default.
    fn start(&mut self, out: &mut BytesMut) {
        let _ = out;
    }

    /// Append the frames of `event`; whether the answer goes on after it (a `Finish` ends it).
    fn event(&mut self, event: CompletionEvent, out: &mut BytesMut) -> bool;

    /// Append the frames that end an answer that failed (`error`) and close the stream.
    fn error(&mut self, error: &ApiError, out: &mut BytesMut);
}

/// Stream the answer as SSE through `encoder`. However the backend's stream ends, the client
/// gets a well-formed end: the encoder's finish, or its error frames (also when the events
/// stop without a finish).
pub fn stream<E: FrameEncoder>(mut encoder: E, events: EventStream) -> Response {
    let mut first = BytesMut::new();
    encoder.start(&mut first);
    let first = (!first.is_empty()).then(|| Ok::<_, Infallible>(first.freeze()));
    let rest = futures::stream::unfold(Some((events, encoder)), |state| async move {
        let (mut events, mut encoder) = state?;
        // Wait for the next event, then take every event that is ready at once too and send
        // them as one write: a burst of chunks (a fast agent, or a hop reading several chunks
        // from one packet) costs one system call, not one per chunk. Nothing waits for more.
        let mut frames = BytesMut::new();
        let mut open = encode(events.next().await, &mut encoder, &mut frames);
        while open && frames.len() < COALESCE_LIMIT {
            match events.next().now_or_never() {
                Some(item) => open = encode(item, &mut encoder, &mut frames),
                None => break,
            }
        }
        let next = open.then_some((events, encoder));
        Some((Ok::<_, Infallible>(frames.freeze()), next))
    });
    let body = futures::stream::iter(first).chain(rest);
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

/// Stream the answer as OpenAI chat chunks (see [`stream`]): the finish chunk (and usage) or
/// an error chunk, then `data: [DONE]`.
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
    stream(encoder, events)
}

/// Frames that are ready together are joined into one write up to about this many bytes.
const COALESCE_LIMIT: usize = 16 * 1024;

/// Append the frame of `item` (the next event of the answer) to `out`; whether the answer
/// goes on after it.
fn encode<E: FrameEncoder>(
    item: Option<Result<CompletionEvent, ApiError>>,
    encoder: &mut E,
    out: &mut BytesMut,
) -> bool {
    match item {
        Some(Ok(event)) => encoder.event(event, out),
        Some(Err(error)) => {
            tracing::warn!(code = error.kind.code(), "stream ended with an error");
            encoder.error(&error, out);
            false
        }
        None => {
            encoder.error(&ended_early(), out);
            false
        }
    }
}

impl FrameEncoder for ChunkEncoder {
    fn event(&mut self, event: CompletionEvent, out: &mut BytesMut) -> bool {
        match event {
            CompletionEvent::Delta(text) => out.extend_from_slice(&self.delta(&text)),
            CompletionEvent::Reasoning(text) => out.extend_from_slice(&self.reasoning(&text)),
            CompletionEvent::KeepAlive => out.extend_from_slice(&self.keep_alive()),
            CompletionEvent::ToolCall { index, call } => {
                out.extend_from_slice(&self.tool_call(index, &call));
            }
            CompletionEvent::Finish(finish) => {
                out.extend_from_slice(&self.finish(&finish));
                return false;
            }
        }
        true
    }

    fn error(&mut self, error: &ApiError, out: &mut BytesMut) {
        out.extend_from_slice(&ChunkEncoder::error(self, error));
    }
}

/// Gather the answer into one JSON body. A failure at any point is an error status: the client
/// has seen nothing yet.
pub async fn json(model: String, mut events: EventStream) -> Result<Response, ApiError> {
    let mut collector = Collector::new(CompletionMeta::new(model));
    while let Some(event) = events.next().await {
        match event? {
            CompletionEvent::Finish(finish) => {
                return Ok(axum::Json(collector.finish(&finish)).into_response());
            }
            event => collector.push_event(&event),
        }
    }
    Err(ended_early())
}

#[cfg(test)]
mod tests {
    use drawbridge_types::openai::FinishReason;
    use drawbridge_types::{Finish, Metering, Usage};
    use futures::StreamExt;

    use super::*;

    fn finish() -> CompletionEvent {
        CompletionEvent::Finish(Finish {
            finish_reason: FinishReason::Stop,
            usage: Usage::new(1, 2),
            metering: Metering::default(),
        })
    }

    /// The `data:` payloads of one body write.
    fn events_of(frame: &[u8]) -> Vec<String> {
        drawbridge_types::sse::SseDecoder::new().push(frame)
    }

    #[tokio::test]
    async fn events_ready_together_leave_in_one_write() {
        let events: EventStream = futures::stream::iter([
            Ok(CompletionEvent::Delta("a".into())),
            Ok(CompletionEvent::Delta("b".into())),
            Ok(finish()),
        ])
        .boxed();
        let body = sse("m".into(), true, false, events).into_body();
        let frames: Vec<_> = body.into_data_stream().collect().await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        let payloads = events_of(frames[0].as_ref().unwrap());
        // two deltas, the finish chunk, the usage chunk, [DONE]
        assert_eq!(payloads.len(), 5, "{payloads:?}");
        assert_eq!(payloads[4], "[DONE]");
    }

    #[tokio::test]
    async fn nothing_waits_for_an_event_that_is_not_there_yet() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let events: EventStream = tokio_stream_of(rx);
        let mut body = sse("m".into(), false, false, events)
            .into_body()
            .into_data_stream();
        tx.send(Ok(CompletionEvent::Delta("first".into()))).unwrap();
        // A renderer that waited for more would never answer here.
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .expect("the first event was held back")
            .unwrap()
            .unwrap();
        let payloads = events_of(&first);
        assert_eq!(payloads.len(), 1, "{payloads:?}");
        assert!(payloads[0].contains("first"), "{payloads:?}");
        tx.send(Ok(CompletionEvent::Delta("second".into())))
            .unwrap();
        tx.send(Ok(finish())).unwrap();
        let rest = body.next().await.unwrap().unwrap();
        let payloads = events_of(&rest);
        assert_eq!(payloads.len(), 3, "{payloads:?}"); // delta, finish, [DONE]
        assert!(body.next().await.is_none());
    }

    fn tokio_stream_of(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<CompletionEvent, ApiError>>,
    ) -> EventStream {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }
}
