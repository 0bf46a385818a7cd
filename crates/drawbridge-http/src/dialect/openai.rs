//! OpenAI chat completions (`POST /v1/chat/completions`): the canonical request is this
//! dialect's own body, so parsing is validation and rendering is [`crate::render`].

use axum::response::Response;
use drawbridge_types::{ApiError, ChatCompletionRequest};
use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::{Dialect, Incoming, Rendering};
use crate::{EventStream, render};

/// The OpenAI chat dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiChat;

/// What rendering an OpenAI chat answer needs of its request.
#[derive(Debug)]
pub struct ChatRendering {
    model: String,
    stream: bool,
    include_usage: bool,
}

impl Dialect for OpenAiChat {
    type Request = ChatRendering;
    const NAME: &'static str = "openai";

    fn parse<'a>(
        &'a self,
        body: &'a [u8],
        _incoming: Incoming<'a>,
    ) -> BoxFuture<'a, Result<(ChatCompletionRequest, ChatRendering), ApiError>> {
        let parsed = ChatCompletionRequest::from_json(body).map(|chat| {
            let rendering = ChatRendering {
                model: chat.model.clone(),
                stream: chat.is_stream(),
                include_usage: chat.include_usage(),
            };
            (chat, rendering)
        });
        futures::future::ready(parsed).boxed()
    }

    fn respond<'a>(
        &'a self,
        request: ChatRendering,
        events: EventStream,
        rendering: Rendering<'a>,
    ) -> BoxFuture<'a, Result<Response, ApiError>> {
        if request.stream {
            let response = render::sse(
                request.model,
                request.include_usage,
                rendering.expose_metering,
                events,
            );
            futures::future::ready(Ok(response)).boxed()
        } else {
            render::json(request.model, events).boxed()
        }
    }
}
