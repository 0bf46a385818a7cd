//! Pieces of the chaos suite (`tests/chaos.rs`) that need the HTTP stack: a streamed request
//! that reports a refused connection or a broken body as a value instead of panicking, since
//! under fault injection both are outcomes to classify, not test failures.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A response body as it arrives; an `Err` is a broken connection (with hyper's reason).
pub type BodyChunks = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// A response head, its body still streaming.
pub struct Streaming {
    pub status: u16,
    /// `Retry-After` in whole seconds, when the server sent one.
    pub retry_after: Option<Duration>,
    pub body: BodyChunks,
}

/// A plain HTTP/1.1 client that never panics on transport trouble.
#[derive(Clone)]
pub struct ChaosClient {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

/// Why a request got no response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The connection was refused or reset before the request was written (the server is
    /// down): nothing reached it, so sending again elsewhere is safe.
    NotSent(String),
    /// It failed after the request may have been sent.
    Failed(String),
}

impl ChaosClient {
    pub fn new() -> Self {
        ChaosClient {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// POST `body` as JSON to `url` with a bearer `key` and these extra `headers`; the head
    /// and the body still streaming.
    pub async fn post_streaming(
        &self,
        url: &str,
        key: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<Streaming, SendError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = serde_json::to_vec(body).expect("json");
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        match self.inner.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse().ok())
                    .map(Duration::from_secs);
                let chunks = response
                    .into_body()
                    .into_data_stream()
                    .map(|item| item.map_err(|e| error_chain(&e)));
                Ok(Streaming {
                    status,
                    retry_after,
                    body: Box::pin(chunks),
                })
            }
            Err(error) if error.is_connect() => Err(SendError::NotSent(error_chain(&error))),
            Err(error) => Err(SendError::Failed(error_chain(&error))),
        }
    }
}

impl Default for ChaosClient {
    fn default() -> Self {
        Self::new()
    }
}

/// An error with its sources, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`); `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
