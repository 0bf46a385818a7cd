//! Requests in flight, streamed answers included: a drain waits for them before it stops
//! accepting connections, so that while it drains, `/health` still answers `draining` (a load
//! balancer sees it and moves traffic away) instead of the port going dark at once.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Counts every request until its response body has been sent or dropped.
pub async fn track(State(tracker): State<TaskTracker>, request: Request, next: Next) -> Response {
    let token = tracker.token();
    let response = next.run(request).await;
    response.map(|inner| {
        Body::new(Tracked {
            inner,
            _token: token,
        })
    })
}

struct Tracked {
    inner: Body,
    _token: TaskTrackerToken,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
