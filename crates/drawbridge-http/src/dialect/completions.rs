//! Legacy completions (`POST /v1/completions`), for older tools: the translation is
//! [`drawbridge_types::dialects::completions`]; errors keep the OpenAI shape.

use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use drawbridge_types::dialects::completions::{
    CompletionRendering, CompletionRequest, TextCollector, TextEncoder, meta,
};
use drawbridge_types::{ApiError, ChatCompletionRequest, CompletionEvent};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};

use super::{Dialect, Incoming, Rendering};
use crate::EventStream;
use crate::render::{self, FrameEncoder};

/// The legacy completions dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Completions;

impl Dialect for Completions {
    type Request = CompletionRendering;
    const NAME: &'static str = "completions";

    fn parse<'a>(
        &'a self,
        body: &'a [u8],
        _incoming: Incoming<'a>,
    ) -> BoxFuture<'a, Result<(ChatCompletionRequest, CompletionRendering), ApiError>> {
        futures::future::ready(CompletionRequest::from_json(body)).boxed()
    }

    fn respond<'a>(
        &'a self,
        request: CompletionRendering,
        mut events: EventStream,
        _rendering: Rendering<'a>,
    ) -> BoxFuture<'a, Result<Response, ApiError>> {
        let meta = meta(&request.model);
        if request.stream {
            let encoder = TextEncoder::new(meta, request.include_usage, request.echo);
            return futures::future::ready(Ok(render::stream(encoder, events))).boxed();
        }
        async move {
            let mut collector = TextCollector::new(meta, request.echo);
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
        .boxed()
    }
}

impl FrameEncoder for TextEncoder {
    fn start(&mut self, out: &mut BytesMut) {
        if let Some(frame) = TextEncoder::start(self) {
            out.extend_from_slice(&frame);
        }
    }

    fn event(&mut self, event: CompletionEvent, out: &mut BytesMut) -> bool {
        let last = matches!(event, CompletionEvent::Finish(_));
        if let Some(frame) = TextEncoder::event(self, &event) {
            out.extend_from_slice(&frame);
        }
        !last
    }

    fn error(&mut self, error: &ApiError, out: &mut BytesMut) {
        out.extend_from_slice(&TextEncoder::error(self, error));
    }
}
