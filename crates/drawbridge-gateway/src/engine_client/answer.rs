//! An engine's streamed answer read back into events ([`Reader`]), and the answer as the
//! gateway's client sees it ([`stream`]): when the engine's stream breaks off mid-answer (the
//! engine died, or the connection to it), the answer moves to another engine instead of
//! ending in an error.
//!
//! - Nothing but keep-alives (or reasoning) reached the client yet: the request is sent again,
//!   as a call that failed before its answer would be.
//! - Text reached the client: the next engine is asked to continue it
//!   ([`drawbridge_http::RESUME_HEADER`]: the request plus the text so far as the assistant's
//!   last message), and the engine's answer brings only the rest, which the client gets
//!   after what it has. An engine that does not confirm the continuation in its answer's
//!   headers (an older engine, or a caller it does not trust) is not used: its whole answer
//!   would repeat what the client has.
//! - Tool calls reached the client: they belong to the broken turn's live session, which no
//!   other engine holds, so the answer ends with the error.
//!
//! An error the engine itself sent is the answer's end: the engine already moved the answer
//! across its accounts as far as it could. The answer moves at most once per other engine
//! (once with a single engine URL, which a load balancer may spread), within the client's
//! patience: the request's own deadline is the engine's.

use std::collections::VecDeque;

use bytes::Bytes;
use drawbridge_http::{ChatContext, EventStream};
use drawbridge_types::openai::{ChatMessage, Role};
use drawbridge_types::sse::{SseDecoder, SseItem};
use drawbridge_types::{ApiError, ChatCompletionRequest, ChunkReader, CompletionEvent};
use futures::StreamExt;
use http::StatusCode;
use tokio::time::Instant;

use super::{HttpEngine, error_from};

/// The body of the engine's answer, as its data frames.
pub(super) type Body = futures::stream::BoxStream<'static, Result<Bytes, String>>;

/// What an engine's answer said next.
#[derive(Debug)]
enum Read {
    Event(CompletionEvent),
    /// An error the engine sent: the answer's end.
    Error(ApiError),
    /// The body broke off, or ended before the finish: the engine, or the way to it, failed.
    Broken(ApiError),
}

pub(super) struct Reader {
    body: Body,
    decoder: SseDecoder,
    chunks: ChunkReader,
    pending: VecDeque<Read>,
    finished: bool,
}

impl Reader {
    pub(super) fn new(body: Body) -> Self {
        Reader {
            body,
            decoder: SseDecoder::new(),
            chunks: ChunkReader::new(),
            pending: VecDeque::new(),
            finished: false,
        }
    }

    /// The next event, reading more of the body as needed; nothing after the finish or the
    /// first error.
    async fn next(&mut self) -> Option<Read> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                let ends = match &item {
                    Read::Event(CompletionEvent::Finish(_)) | Read::Error(_) | Read::Broken(_) => {
                        true
                    }
                    Read::Event(_) => false,
                };
                if ends {
                    self.finished = true;
                    self.pending.clear();
                }
                return Some(item);
            }
            if self.finished {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    for item in self.decoder.push_items(&bytes) {
                        let data = match item {
                            SseItem::Data(data) => data,
                            // The engine keeps a quiet answer alive with comments: so does
                            // this layer, for its own client.
                            SseItem::Comment => {
                                self.pending
                                    .push_back(Read::Event(CompletionEvent::KeepAlive));
                                continue;
                            }
                        };
                        match self.chunks.push(&data) {
                            Ok(events) => self.pending.extend(events.into_iter().map(Read::Event)),
                            Err(error) => self.pending.push_back(Read::Error(error)),
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "engine stream broke off");
                    self.pending.push_back(Read::Broken(ApiError::upstream(
                        "The engine stream broke off.",
                    )));
                }
                None => {
                    self.pending.push_back(Read::Broken(ApiError::upstream(
                        "The engine stream ended before the answer was complete.",
                    )));
                }
            }
        }
    }
}

/// The engine's SSE answer `body` as completion events, ending after the finish or the first
/// error (a broken body included): one engine's answer, moved nowhere.
#[cfg(test)]
pub(super) fn events(body: Body) -> EventStream {
    futures::stream::unfold(Reader::new(body), |mut reader| async move {
        let item = match reader.next().await? {
            Read::Event(event) => Ok(event),
            Read::Error(error) | Read::Broken(error) => Err(error),
        };
        Some((item, reader))
    })
    .boxed()
}

/// One answer across engines.
struct Answer {
    engines: HttpEngine,
    request: ChatCompletionRequest,
    ctx: ChatContext,
    /// The engine answering now (its index) and its answer.
    serving: usize,
    reader: Reader,
    /// The text the client has.
    text: String,
    /// The client has tool calls of this answer.
    tool_calls: bool,
    /// Moves to another engine still allowed.
    moves: usize,
    done: bool,
}

/// The answer `reader` began on engine `serving`, moved to another engine if it breaks off.
pub(super) fn stream(
    engines: HttpEngine,
    request: ChatCompletionRequest,
    ctx: ChatContext,
    serving: usize,
    reader: Reader,
) -> EventStream {
    let moves = engines.engines.len().max(2) - 1;
    let answer = Answer {
        engines,
        request,
        ctx,
        serving,
        reader,
        text: String::new(),
        tool_calls: false,
        moves,
        done: false,
    };
    futures::stream::unfold(answer, |mut answer| async move {
        let item = answer.next().await?;
        Some((item, answer))
    })
    .boxed()
}

impl Answer {
    async fn next(&mut self) -> Option<Result<CompletionEvent, ApiError>> {
        if self.done {
            return None;
        }
        loop {
            let Some(read) = self.reader.next().await else {
                self.done = true;
                return None;
            };
            match read {
                Read::Event(event) => {
                    match &event {
                        CompletionEvent::Delta(text) => self.text.push_str(text),
                        CompletionEvent::ToolCall { .. } => self.tool_calls = true,
                        CompletionEvent::Finish(_) => self.done = true,
                        _ => {}
                    }
                    return Some(Ok(event));
                }
                Read::Error(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
                Read::Broken(error) => match self.move_on(&error).await {
                    Some((serving, reader)) => {
                        self.serving = serving;
                        self.reader = reader;
                    }
                    None => {
                        self.done = true;
                        return Some(Err(error));
                    }
                },
            }
        }
    }

    /// The answer broke off on its engine: the next engine's answer that carries it on, if
    /// one may and does.
    async fn move_on(&mut self, error: &ApiError) -> Option<(usize, Reader)> {
        let request_id = self.ctx.request_id.as_str();
        if self.tool_calls || self.moves == 0 {
            tracing::warn!(
                request_id,
                tool_calls = self.tool_calls,
                "engine answer broke off; it cannot move"
            );
            return None;
        }
        self.moves -= 1;
        let broken = &self.engines.engines[self.serving];
        broken.failed(Instant::now());
        let resume = !self.text.is_empty();
        let mut request = self.request.clone();
        if resume {
            request
                .messages
                .push(ChatMessage::new(Role::Assistant, self.text.clone()));
        }
        let sent = self.engines.send_chat(&request, &self.ctx, resume).await;
        let (serving, response) = match sent {
            Ok(sent) => sent,
            Err(move_error) => {
                tracing::warn!(request_id, %error, %move_error, "no engine could carry on the answer");
                return None;
            }
        };
        let to = self.engines.engines[serving].base.as_str();
        if response.status() != StatusCode::OK {
            let refusal = error_from(response).await;
            tracing::warn!(request_id, to, %refusal, "the next engine refused the answer");
            return None;
        }
        let confirmed = response
            .headers()
            .get(drawbridge_http::RESUME_HEADER)
            .is_some();
        if resume && !confirmed {
            // Dropping the answer cancels it on that engine.
            tracing::warn!(
                request_id,
                to,
                "the next engine did not confirm continuing the answer"
            );
            return None;
        }
        tracing::info!(
            request_id,
            from = broken.base,
            to,
            sent_chars = self.text.len(),
            "answer moved to another engine"
        );
        if let Some(metrics) = &self.engines.metrics {
            metrics.record_failover(if resume {
                "engine_resume"
            } else {
                "engine_retry"
            });
        }
        Some((serving, Reader::new(super::data_frames(response))))
    }
}
