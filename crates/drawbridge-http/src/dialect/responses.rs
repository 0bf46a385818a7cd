//! The OpenAI Responses API (`POST /v1/responses`, `GET /v1/responses/{id}`): the
//! translation is [`drawbridge_types::dialects::responses`]; this is its I/O. A request with
//! `previous_response_id` loads that response from the [`ResponseStorage`] (the caller's own
//! only: responses are kept per tenant), and an answer that ended well is stored (unless the
//! request said `store: false`) before its last event leaves, so a client that chains at once
//! finds it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use drawbridge_types::dialects::responses::{
    ResponseEncoder, ResponsesRequest, StoredResponse, new_response_id, previous_not_found,
    response_not_found,
};
use drawbridge_types::{ApiError, ChatCompletionRequest, CompletionEvent, unix_now};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use serde_json::{Map, Value};

use super::{Dialect, Incoming, Rendering};
use crate::gate::{Gate, Refusal};
use crate::{ApiState, EventStream, with_headers};

/// Where stored responses are kept, per tenant (the client key's id), each for a while.
pub trait ResponseStorage: Send + Sync + 'static {
    /// Keep `stored` (a [`StoredResponse`]'s JSON) as `tenant`'s response `id`.
    fn put<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        stored: String,
    ) -> BoxFuture<'a, Result<(), ApiError>>;

    /// `tenant`'s response `id`, if it is still kept.
    fn get<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ApiError>>;
}

/// The Responses dialect, storing responses in `storage` (none: nothing is stored, and
/// `previous_response_id` is refused).
#[derive(Clone, Default)]
pub struct Responses {
    storage: Option<Arc<dyn ResponseStorage>>,
}

impl Responses {
    /// The dialect keeping its answers in `storage` (`None`: keeping nothing).
    pub fn new(storage: Option<Arc<dyn ResponseStorage>>) -> Self {
        Responses { storage }
    }
}

/// What rendering a Responses answer needs of its request.
pub struct ResponsesRendering {
    template: Map<String, Value>,
    /// The conversation's input items, stored with the answer.
    input: Vec<Value>,
    stream: bool,
    /// Where the answer is stored (`None`: `store: false`, or no storage).
    storage: Option<(Arc<dyn ResponseStorage>, String)>,
}

impl Dialect for Responses {
    type Request = ResponsesRendering;
    const NAME: &'static str = "responses";

    fn parse<'a>(
        &'a self,
        body: &'a [u8],
        incoming: Incoming<'a>,
    ) -> BoxFuture<'a, Result<(ChatCompletionRequest, ResponsesRendering), ApiError>> {
        async move {
            let request = ResponsesRequest::from_json(body)?;
            let previous = match &request.previous_response_id {
                None => None,
                Some(id) => {
                    let storage = self.storage.as_ref().ok_or_else(|| {
                        ApiError::invalid_request(
                            "This API keeps no responses: send the whole conversation instead \
                             of 'previous_response_id'.",
                        )
                        .with_param("previous_response_id")
                    })?;
                    let text = storage
                        .get(incoming.tenant, id)
                        .await?
                        .ok_or_else(|| previous_not_found(id))?;
                    Some(StoredResponse::from_json(&text)?)
                }
            };
            let translated = request.translate(previous.as_ref())?;
            let storage = self
                .storage
                .clone()
                .filter(|_| translated.store)
                .map(|storage| (storage, incoming.tenant.to_owned()));
            let rendering = ResponsesRendering {
                template: translated.template,
                input: translated.input,
                stream: translated.stream,
                storage,
            };
            Ok((translated.chat, rendering))
        }
        .boxed()
    }

    fn respond<'a>(
        &'a self,
        request: ResponsesRendering,
        events: EventStream,
        _rendering: Rendering<'a>,
    ) -> BoxFuture<'a, Result<Response, ApiError>> {
        let answer = Answer::new(request);
        if answer.stream {
            futures::future::ready(Ok(sse(answer, events))).boxed()
        } else {
            json(answer, events).boxed()
        }
    }
}

/// One answer being written.
struct Answer {
    encoder: ResponseEncoder,
    input: Vec<Value>,
    stream: bool,
    storage: Option<(Arc<dyn ResponseStorage>, String)>,
    id: String,
}

impl Answer {
    fn new(request: ResponsesRendering) -> Self {
        let id = new_response_id();
        Answer {
            encoder: ResponseEncoder::new(request.template, &id, unix_now()),
            input: request.input,
            stream: request.stream,
            storage: request.storage,
            id,
        }
    }

    /// Store the ended answer, if it ended well and is to be stored. A store that fails loses
    /// only the chaining: the answer itself is still given.
    async fn store(&mut self) {
        let Some((storage, tenant)) = &self.storage else {
            return;
        };
        if !self.encoder.ended_well() {
            return;
        }
        let stored = StoredResponse {
            input: std::mem::take(&mut self.input),
            response: self.encoder.response(),
        };
        if let Err(error) = storage.put(tenant, &self.id, stored.to_json()).await {
            tracing::warn!(id = self.id, %error, "the response could not be stored");
        }
    }

    /// The frames of the next item of the answer; whether it goes on after them.
    async fn encode(&mut self, item: Option<Result<CompletionEvent, ApiError>>) -> (Bytes, bool) {
        match item {
            Some(Ok(CompletionEvent::Finish(finish))) => {
                let frames = self.encoder.finish(&finish);
                self.store().await;
                (frames, false)
            }
            Some(Ok(event)) => (self.encoder.push(&event), true),
            Some(Err(error)) => {
                tracing::warn!(
                    id = self.id,
                    code = error.kind.code(),
                    "stream ended with an error"
                );
                (self.encoder.fail(&error), false)
            }
            None => (self.encoder.broken_off(), false),
        }
    }
}

/// Frames that are ready together are joined into one write up to about this many bytes.
const COALESCE_LIMIT: usize = 16 * 1024;

/// The answer as the Responses event stream: `response.created` and `response.in_progress`
/// at once, then the answer's events as they come.
fn sse(mut answer: Answer, events: EventStream) -> Response {
    let start = answer.encoder.start();
    let body = futures::stream::unfold(Some((events, answer)), |state| async move {
        let (mut events, mut answer) = state?;
        // Wait for the next event, then take every event that is ready at once too and send
        // them as one write. Nothing waits for more.
        let mut frames = BytesMut::new();
        let (first, mut open) = answer.encode(events.next().await).await;
        frames.extend_from_slice(&first);
        while open && frames.len() < COALESCE_LIMIT {
            match events.next().now_or_never() {
                Some(item) => {
                    let (more, still) = answer.encode(item).await;
                    frames.extend_from_slice(&more);
                    open = still;
                }
                None => break,
            }
        }
        let next = open.then_some((events, answer));
        Some((frames.freeze(), next))
    });
    let body = futures::stream::once(futures::future::ready(start))
        .chain(body)
        .map(Ok::<_, std::convert::Infallible>);
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

/// The answer as one `response` object. A failure is an error status: the client has seen
/// nothing yet.
async fn json(mut answer: Answer, mut events: EventStream) -> Result<Response, ApiError> {
    while let Some(event) = events.next().await {
        match event? {
            CompletionEvent::Finish(finish) => {
                answer.encoder.finish(&finish);
                answer.store().await;
                return Ok(axum::Json(answer.encoder.response()).into_response());
            }
            event => {
                answer.encoder.push(&event);
            }
        }
    }
    Err(ApiError::upstream(
        "The answer ended before it was complete.",
    ))
}

/// `GET /v1/responses/{id}`: a stored response of the caller's.
pub async fn retrieve<G: Gate>(
    State(state): State<ApiState<G>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let entry = match state.gate.enter(&headers).await {
        Ok(entry) => entry,
        Err(Refusal { error, headers }) => return with_headers(error.into_response(), headers),
    };
    let tenant = super::tenant(state.gate.as_ref(), &entry, &headers);
    let result = async {
        let storage = state
            .responses
            .as_ref()
            .ok_or_else(|| response_not_found(&id))?;
        let text = storage
            .get(&tenant, &id)
            .await?
            .ok_or_else(|| response_not_found(&id))?;
        let stored = StoredResponse::from_json(&text)?;
        Ok::<_, ApiError>(axum::Json(stored.response))
    }
    .await;
    with_headers(result.into_response(), entry.headers)
}
