//! A worker's event stream as the completion events the HTTP surface renders.

use drawbridge_types::openai::UsageDetails;
use drawbridge_types::worker::{TurnSummary, WorkerEvent};
use drawbridge_types::{ApiError, CompletionEvent, Finish, Metering, Usage};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::EventStream;

/// A turn whose first event after `Started` (activity, reasoning, text or the finish) has
/// arrived: that event, and the rest.
pub type Started = (WorkerEvent, BoxStream<'static, WorkerEvent>);

/// Wait for the turn's first sign of life, skipping `Started`: any frame (activity,
/// reasoning, text) or the finish. An error before it is returned as the `Err`: nothing has
/// reached the client yet, so it can still become an HTTP status or a retry elsewhere.
pub async fn first_content(
    mut events: BoxStream<'static, WorkerEvent>,
) -> Result<Started, ApiError> {
    while let Some(event) = events.next().await {
        match event {
            WorkerEvent::Started { .. } => continue,
            WorkerEvent::Error(error) => return Err(error),
            event => return Ok((event, events)),
        }
    }
    // The worker's stream ended before it said anything: the worker's failure (its
    // transport), not the account's.
    Err(ApiError::new(
        drawbridge_types::ErrorKind::Unavailable,
        "The worker ended the turn without an answer.",
    ))
}

/// The rest of a started turn as completion events, ending after the finish or the error.
/// `guard` lives as long as the stream (e.g. an in-flight counter).
pub fn completion_stream<G: Send + 'static>((first, rest): Started, guard: G) -> EventStream {
    futures::stream::iter([first])
        .chain(rest)
        .scan((false, 0_u32, guard), |(done, calls, _guard), event| {
            if *done {
                return futures::future::ready(None);
            }
            let item = match event {
                WorkerEvent::Started { .. } | WorkerEvent::Activity => Some(None),
                WorkerEvent::Text(text) => Some(Some(Ok(CompletionEvent::Delta(text)))),
                WorkerEvent::Reasoning(text) => Some(Some(Ok(CompletionEvent::Reasoning(text)))),
                WorkerEvent::ToolCall(call) => {
                    let index = std::mem::replace(calls, calls.saturating_add(1));
                    Some(Some(Ok(CompletionEvent::ToolCall { index, call })))
                }
                WorkerEvent::Finished(summary) => {
                    *done = true;
                    Some(Some(Ok(CompletionEvent::Finish(finish(&summary)))))
                }
                WorkerEvent::Error(error) => {
                    *done = true;
                    Some(Some(Err(error)))
                }
            };
            futures::future::ready(item)
        })
        .filter_map(futures::future::ready)
        .boxed()
}

fn finish(summary: &TurnSummary) -> Finish {
    let details = UsageDetails {
        tool_choice_unmet: summary.tool_choice_unmet,
        ..UsageDetails::of(
            summary.tokens_estimated,
            summary.credits,
            summary.context_usage_percent,
        )
    };
    Finish {
        finish_reason: summary.finish_reason,
        usage: Usage::new(summary.prompt_tokens, summary.completion_tokens).with_details(details),
        metering: Metering {
            accounts: Vec::new(),
            credits: summary.credits,
            tokens_estimated: summary.tokens_estimated,
        },
    }
}

/// `events`, polled inside the span that is current now (a stream has no `Instrument`).
pub fn in_current_span(events: EventStream) -> EventStream {
    let span = tracing::Span::current();
    Box::pin(futures::stream::unfold(
        (events, span),
        |(mut events, span)| async move {
            let next = {
                let polled = futures::StreamExt::next(&mut events);
                tracing::Instrument::instrument(polled, span.clone()).await
            };
            next.map(|item| (item, (events, span)))
        },
    ))
}
