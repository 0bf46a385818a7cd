//! Keep-alive for streamed answers that show nothing for a while (a long tool phase, a slow
//! first byte, a retry on another account): after `engine.keepalive_interval` without text or
//! reasoning, the answer commits (its `200` and SSE headers go out) and a
//! [`CompletionEvent::KeepAlive`] (rendered as the SSE comment `: keep-alive`) follows every
//! interval until the first text or reasoning. Clients, the gateway and proxies in between
//! then see a live connection instead of a silent one they would time out.
//!
//! The trade-off: once committed, the status is 200 whatever happens. Retries before the first
//! text go on inside the open stream, invisibly; an answer no account can give ends with the
//! OpenAI error chunk (`finish_reason: "error"`, the `error` object) and `[DONE]`, not with an
//! error status. A non-streamed answer never commits early: it is one JSON body at the end.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use drawbridge_http::EventStream;
use drawbridge_types::{ApiError, CompletionEvent};
use futures::future::{BoxFuture, Either};
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

/// Start the answer with `start`: an answer that starts (or fails) within `interval` is
/// returned as it is, with keep-alives until its first content; one that has not started by
/// then is committed now: its stream begins with a keep-alive and waits for the start inside.
pub(crate) async fn start(
    start: BoxFuture<'static, Result<EventStream, ApiError>>,
    interval: Duration,
) -> Result<EventStream, ApiError> {
    let timer = Box::pin(tokio::time::sleep(interval));
    match futures::future::select(start, timer).await {
        Either::Left((started, _)) => Ok(until_content(started?, interval, false)),
        Either::Right(((), start)) => {
            let events = futures::stream::once(start)
                .flat_map(|started| match started {
                    Ok(events) => events,
                    Err(error) => futures::stream::iter([Err(error)]).boxed(),
                })
                .boxed();
            Ok(until_content(events, interval, true))
        }
    }
}

/// `events`, with a keep-alive whenever they have been silent for `interval` and nothing has
/// been shown yet (text or reasoning); `now`: one is due at once.
fn until_content(events: EventStream, interval: Duration, now: bool) -> EventStream {
    let first = if now {
        Instant::now()
    } else {
        Instant::now() + interval
    };
    Box::pin(KeepAlive {
        events,
        interval,
        timer: Box::pin(tokio::time::sleep_until(first)),
        shown: false,
    })
}

struct KeepAlive {
    events: EventStream,
    interval: Duration,
    timer: Pin<Box<Sleep>>,
    /// Text or reasoning has gone out: no more keep-alives.
    shown: bool,
}

impl Stream for KeepAlive {
    type Item = Result<CompletionEvent, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = this.events.poll_next_unpin(cx) {
            if matches!(
                item,
                Some(Ok(CompletionEvent::Delta(_) | CompletionEvent::Reasoning(_)))
            ) {
                this.shown = true;
            }
            let next = Instant::now() + this.interval;
            this.timer.as_mut().reset(next);
            return Poll::Ready(item);
        }
        if this.shown {
            return Poll::Pending;
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let next = Instant::now() + this.interval;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(CompletionEvent::KeepAlive)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn delta(text: &str) -> Result<CompletionEvent, ApiError> {
        Ok(CompletionEvent::Delta(text.to_owned()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_start_is_not_committed_and_content_stops_the_keep_alives() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<CompletionEvent, ApiError>> = rx;
        let events: EventStream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        let mut events = start(
            futures::future::ready(Ok(events)).boxed(),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        let began = Instant::now();
        assert_eq!(
            events.next().await,
            Some(Ok(CompletionEvent::KeepAlive)),
            "silent for the interval"
        );
        assert_eq!(began.elapsed(), Duration::from_secs(2));
        tx.send(delta("hi")).unwrap();
        assert_eq!(events.next().await, Some(delta("hi")));
        // After content, silence is the idle limit's business: no keep-alive comes.
        let later = tokio::time::timeout(Duration::from_secs(30), events.next()).await;
        assert!(later.is_err(), "{later:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_start_commits_and_its_failure_arrives_in_the_stream() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Err::<EventStream, _>(ApiError::unavailable("nobody"))
        }
        .boxed();
        let began = Instant::now();
        let events = start(slow, Duration::from_secs(2)).await.unwrap();
        assert_eq!(
            began.elapsed(),
            Duration::from_secs(2),
            "committed at the interval"
        );
        let items: Vec<_> = events.collect().await;
        // At 2 s (the commit) and 4 s, then the failure at 5 s.
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(
            items[..2]
                .iter()
                .all(|i| matches!(i, Ok(CompletionEvent::KeepAlive))),
            "{items:?}"
        );
        assert!(matches!(&items[2], Err(e) if e.kind == drawbridge_types::ErrorKind::Unavailable));
    }
}
