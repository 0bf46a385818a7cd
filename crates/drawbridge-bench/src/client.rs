//! A minimal HTTP/1 load client: one dedicated keep-alive connection per client, so C clients
//! are exactly C connections, and nothing between the clock and the socket but hyper.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::stats::Samples;

/// Where a load client sends its prompts: the worker's `POST /prompt`, or an OpenAI
/// `POST /v1/chat/completions` behind a bearer key.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    /// The whole `Authorization` header value, if the endpoint wants one.
    pub authorization: Option<String>,
}

impl Target {
    /// The worker's own `POST /prompt` (no authentication).
    pub fn prompt(addr: SocketAddr) -> Target {
        Target {
            addr,
            path: "/prompt",
            authorization: None,
        }
    }

    /// `POST /v1/chat/completions` with `Authorization: Bearer key`.
    pub fn chat(addr: SocketAddr, key: &str) -> Target {
        Target {
            addr,
            path: "/v1/chat/completions",
            authorization: Some(format!("Bearer {key}")),
        }
    }
}

/// One keep-alive HTTP/1 connection. Dropping it closes the connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    /// Drives the connection; aborted on drop.
    _driver: JoinSet<()>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let mut driver = JoinSet::new();
        driver.spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
            _driver: driver,
        })
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let request = request.body(Full::new(body))?;
        self.sender.ready().await.context("connection not ready")?;
        Ok(self.sender.send_request(request).await?)
    }

    /// Send a request and read the whole answer: status and body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Bytes,
    ) -> Result<(u16, Bytes)> {
        let response = self.send(method, path, authorization, body).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, Bytes)> {
        self.call(Method::GET, path, None, Bytes::new()).await
    }

    /// POST a streaming prompt to `target`; the time from `started` to the first SSE `data:`
    /// chunk whose delta has content, then the rest of the stream (read to the end so the
    /// connection and the agent are free for the next one).
    pub async fn first_content(
        &mut self,
        target: &Target,
        body: Bytes,
        started: Instant,
    ) -> Result<(Duration, Bytes)> {
        let response = self
            .send(
                Method::POST,
                target.path,
                target.authorization.as_deref(),
                body,
            )
            .await?;
        let status = response.status().as_u16();
        let mut incoming = response.into_body();
        let mut received = Vec::new();
        let mut scanned = 0;
        let mut first = None;
        while let Some(frame) = incoming.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            received.extend_from_slice(&data);
            if first.is_none() {
                while let Some(end) = find(&received[scanned..], b"\n\n") {
                    let event = &received[scanned..scanned + end];
                    scanned += end + 2;
                    if has_content(event) {
                        first = Some(started.elapsed());
                        break;
                    }
                }
            }
        }
        let received = Bytes::from(received);
        if status != 200 {
            bail!("status {status}: {}", excerpt(&received));
        }
        match first {
            Some(first) => Ok((first, received)),
            None => bail!("the stream had no content: {}", excerpt(&received)),
        }
    }
}

/// Whether one SSE event is a `data:` chunk whose first choice's delta has non-empty content.
fn has_content(event: &[u8]) -> bool {
    let Ok(event) = std::str::from_utf8(event) else {
        return false;
    };
    event
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<serde_json::Value>(data).ok())
        .any(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|content| !content.is_empty())
        })
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// The start of a body, for an error message.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

/// How a load client tells a good answer from a bad one.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A `chat.completion` whose message content is exactly this text.
    Json(Bytes),
    /// An SSE stream that finished normally and ended with `[DONE]`.
    Stream,
}

impl Expect {
    pub(crate) fn check(&self, status: u16, body: &[u8]) -> Result<(), String> {
        let good = status == 200
            && match self {
                Expect::Json(content) => contains(body, content),
                Expect::Stream => {
                    // Compact JSON or not (a Python peer writes `"finish_reason": "stop"`).
                    body.ends_with(b"data: [DONE]\n\n")
                        && (contains(body, br#""finish_reason":"stop""#)
                            || contains(body, br#""finish_reason": "stop""#))
                }
            };
        if good {
            Ok(())
        } else {
            Err(format!("status {status}: {}", excerpt(body)))
        }
    }
}

/// What the load clients saw.
#[derive(Debug, Default)]
pub struct Load {
    /// Each good answer in full: from sending the request to its last byte.
    pub latencies: Samples,
    /// For streamed answers: from sending the request to the first chunk with content.
    pub first_content: Samples,
    pub errors: u64,
    pub first_errors: Vec<String>,
}

impl Load {
    pub fn record_error(&mut self, error: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(error);
        }
    }

    pub fn merge(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.first_content.extend(other.first_content);
        self.errors += other.errors;
        for error in other.first_errors {
            if self.first_errors.len() < 5 {
                self.first_errors.push(error);
            }
        }
    }
}

/// When a load client stops sending.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// Send no new request after this instant (the one in flight finishes).
    Deadline(Instant),
    /// Send this many requests.
    Count(usize),
}

/// A fixed schedule for one client: its first request at `first`, then one every `every`.
/// A request that cannot leave on time (the previous answer is still arriving) leaves at once,
/// and its clock still starts at the scheduled time, so a server that falls behind is charged
/// for the wait (no coordinated omission).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub first: Instant,
    pub every: Duration,
}

/// One load client: POST `body` to `target` on its own connection (reconnecting if it breaks)
/// until `until`, back to back or on the schedule `pace`, timing each answer in full (and,
/// for a stream, to its first content chunk).
pub async fn client(
    target: Target,
    body: Bytes,
    expect: Expect,
    until: Until,
    pace: Option<Pace>,
) -> Load {
    let mut load = Load::default();
    let mut sent = 0usize;
    let more = |sent: usize| match until {
        Until::Deadline(deadline) => Instant::now() < deadline,
        Until::Count(count) => sent < count,
    };
    let mut next = pace.map(|pace| pace.first);
    'connections: while more(sent) {
        let mut conn = match Conn::open(target.addr).await {
            Ok(conn) => conn,
            Err(error) => {
                sent += 1;
                load.record_error(format!("{error:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        loop {
            let started = match (next, pace) {
                (Some(at), Some(pace)) => {
                    tokio::time::sleep_until(at).await;
                    next = Some(at + pace.every);
                    at
                }
                _ => Instant::now(),
            };
            if !more(sent) {
                break 'connections;
            }
            sent += 1;
            let outcome = match expect {
                Expect::Stream => conn
                    .first_content(&target, body.clone(), started)
                    .await
                    .map(|(first, reply)| (200, reply, Some(first))),
                Expect::Json(_) => conn
                    .call(
                        Method::POST,
                        target.path,
                        target.authorization.as_deref(),
                        body.clone(),
                    )
                    .await
                    .map(|(status, reply)| (status, reply, None)),
            };
            match outcome {
                Ok((status, reply, first)) => match expect.check(status, &reply) {
                    Ok(()) => {
                        load.latencies.push(started.elapsed());
                        if let Some(first) = first {
                            load.first_content.push(first);
                        }
                    }
                    Err(error) => load.record_error(error),
                },
                Err(error) => {
                    load.record_error(format!("{error:#}"));
                    continue 'connections;
                }
            }
        }
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_content_skips_role_only_chunks() {
        let role = br#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        let text = br#"data: {"choices":[{"index":0,"delta":{"content":"hello "}}]}"#;
        assert!(!has_content(role));
        assert!(has_content(text));
        assert!(!has_content(b"data: [DONE]"));
        assert!(!has_content(b": keep-alive"));
    }

    #[test]
    fn answers_are_checked() {
        let json = Expect::Json(Bytes::from_static(br#""content":"hi there""#));
        assert!(
            json.check(
                200,
                br#"{"choices":[{"message":{"role":"assistant","content":"hi there"}}]}"#
            )
            .is_ok()
        );
        assert!(json.check(200, br#"{"content":"hi"}"#).is_err());
        assert!(json.check(503, br#""content":"hi there""#).is_err());
        let stream = Expect::Stream;
        assert!(
            stream
                .check(
                    200,
                    b"data: {\"finish_reason\":\"stop\"}\n\ndata: [DONE]\n\n"
                )
                .is_ok()
        );
        assert!(
            stream
                .check(
                    200,
                    b"data: {\"finish_reason\":\"error\"}\n\ndata: [DONE]\n\n"
                )
                .is_err()
        );
    }
}
