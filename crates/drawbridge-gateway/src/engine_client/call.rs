//! One call to the engines over HTTP: the request (channel key, request id, the conversation
//! and resumption headers, trace context), sent to the first engine that takes it, and the
//! engine's answer read back as frames, JSON or the error it carries.

use std::time::Duration;

use bytes::Bytes;
use drawbridge_http::ChatContext;
use drawbridge_types::{ApiError, ChatCompletionRequest, ErrorBody, ErrorKind, HealthReport};
use futures::StreamExt;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::HttpEngine;
use super::answer;
use super::targets::Target;

/// Error bodies larger than this are not read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Which failures of a call may send it to the next engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// Any failure before the answer's head (the engine may have seen the request: for reads,
    /// and for chat requests, which an engine that dies leaves unanswered).
    BeforeAnswer,
    /// Only a failure that shows the engine never had the request (connecting failed, or it
    /// refused as unavailable): for a change that must not be made twice.
    Unsent,
}

/// One call to the engines.
pub(super) struct Call<'a> {
    pub(super) method: Method,
    pub(super) path: &'a str,
    pub(super) body: Bytes,
    pub(super) request_id: Option<&'a str>,
    pub(super) conversation: Option<(&'a str, Option<&'a str>)>,
    pub(super) replay: Replay,
    /// Ask the engine to continue the answer in the body's last message.
    pub(super) resume: bool,
}

impl<'a> Call<'a> {
    pub(super) fn get(path: &'a str) -> Self {
        Call {
            method: Method::GET,
            path,
            body: Bytes::new(),
            request_id: None,
            conversation: None,
            replay: Replay::BeforeAnswer,
            resume: false,
        }
    }
}

/// The error of a call no engine could take, when the last engine was unreachable.
fn unreachable() -> ApiError {
    ApiError::unavailable("The engine is unreachable.").with_retry_after(Duration::from_secs(1))
}

impl HttpEngine {
    /// `call` as a request to `engine`.
    pub(super) fn request(
        &self,
        engine: &Target,
        call: &Call<'_>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(format!("{}{}", engine.base, call.path))
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        if let Some(id) = call.request_id {
            request = request.header("x-request-id", id);
        }
        if call.resume {
            request = request.header(drawbridge_http::RESUME_HEADER, "continue");
        }
        // Whose request it is (the client's key id: conversation keys are kept per key), and
        // the client's conversation key.
        if let Some((tenant, session)) = call.conversation {
            request = request.header(drawbridge_http::TENANT_HEADER, tenant);
            if let (Some(name), Some(session)) = (&self.session_header, session) {
                request = request.header(name, session);
            }
        }
        for (name, value) in drawbridge_telemetry::current_context_headers() {
            request = request.header(name, value);
        }
        // The error names what was wrong with the request's parts (never the key's value).
        request
            .body(Full::new(call.body.clone()))
            .map_err(|e| e.to_string())
    }

    /// Send `call` to the engines in [`HttpEngine::order`] until one answers: its answer's
    /// head (any status but a 503, which moves on like a transport failure unless it is
    /// `no_capacity`, returned as its error), and which engine it was. When none does, the
    /// last one's error.
    pub(super) async fn send_to_any(
        &self,
        call: Call<'_>,
    ) -> Result<(usize, Response<hyper::body::Incoming>), ApiError> {
        let mut last = None;
        for i in self.order() {
            let engine = &self.engines[i];
            let request = match self.request(engine, &call) {
                Ok(request) => request,
                Err(error) => {
                    tracing::error!(engine = engine.base, %error, "cannot build a request to the engine");
                    engine.failed(Instant::now());
                    last = Some(ApiError::internal("The engine's address is not valid."));
                    continue;
                }
            };
            match self.client.request(request).await {
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let error = error_from(response).await;
                    // Full queues are the cluster's, not this engine's: that 503 is the answer.
                    if error.kind == ErrorKind::NoCapacity {
                        engine.answered();
                        return Err(error);
                    }
                    tracing::warn!(engine = engine.base, error = %error.message, "engine unavailable; trying the next");
                    engine.failed(Instant::now());
                    last = Some(error);
                }
                Ok(response) => {
                    engine.answered();
                    return Ok((i, response));
                }
                Err(error) => {
                    tracing::warn!(engine = engine.base, %error, "engine unreachable");
                    engine.failed(Instant::now());
                    if call.replay == Replay::Unsent && !error.is_connect() {
                        // The change may have reached the engine: it is not made again.
                        return Err(unreachable());
                    }
                    last = Some(unreachable());
                }
            }
        }
        Err(last.unwrap_or_else(|| ApiError::unavailable("No engine is configured.")))
    }

    /// [`HttpEngine::send_to_any`], for calls whose answer is read whole.
    pub(super) async fn send(
        &self,
        call: Call<'_>,
    ) -> Result<Response<hyper::body::Incoming>, ApiError> {
        self.send_to_any(call).await.map(|(_, response)| response)
    }

    /// Send a chat request (streamed, with usage; `resume`: continuing the body's last
    /// message) to the engines; the head of the first answer and its engine.
    pub(super) async fn send_chat(
        &self,
        request: &ChatCompletionRequest,
        ctx: &ChatContext,
        resume: bool,
    ) -> Result<(usize, Response<hyper::body::Incoming>), ApiError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ApiError::internal(format!("cannot encode the request: {e}")))?;
        self.send_to_any(Call {
            method: Method::POST,
            path: "/v1/chat/completions",
            body: Bytes::from(body),
            request_id: Some(&ctx.request_id),
            conversation: Some((ctx.tenant.as_str(), ctx.session.as_deref())),
            replay: Replay::BeforeAnswer,
            resume,
        })
        .await
    }

    /// `engine`'s health report: `None` when it is unreachable or answers something else.
    pub(super) async fn health_of(&self, engine: &Target) -> Option<HealthReport> {
        let request = self.request(engine, &Call::get("/health")).ok()?;
        let response = self.client.request(request).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice::<HealthReport>(&body).ok()
    }
}

/// An answer's body as its data frames.
pub(super) fn data_frames(response: Response<hyper::body::Incoming>) -> answer::Body {
    response
        .into_body()
        .into_data_stream()
        .map(|frame| frame.map_err(|error| error.to_string()))
        .boxed()
}

/// A non-200 answer from the engine, as the error it carries.
pub(super) async fn error_from(response: Response<hyper::body::Incoming>) -> ApiError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut error = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(body) => ApiError::from_object(status, body.error),
        Err(_) => ApiError::upstream(format!("The engine answered with status {status}.")),
    };
    // 401 from the engine is our own misconfiguration (the channel key), not the client's.
    if error.kind == ErrorKind::InvalidApiKey {
        tracing::error!("the engine refused the gateway's engine_key");
        error = ApiError::internal("The gateway is not authorized by the engine.");
    }
    if let Some(after) = retry_after {
        error = error.with_retry_after(after);
    }
    error
}

/// The engine's JSON answer to a request: its error when not 200; `what` names the answer in
/// the error when it breaks off or does not parse.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    response: Response<hyper::body::Incoming>,
    what: &str,
) -> Result<T, ApiError> {
    if response.status() != StatusCode::OK {
        return Err(error_from(response).await);
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| ApiError::upstream(format!("The engine's {what} broke off.")))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|_| ApiError::upstream(format!("The engine sent a malformed {what}.")))
}
