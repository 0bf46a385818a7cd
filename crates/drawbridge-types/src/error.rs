//! The classified API error every layer speaks, and its OpenAI wire shape.
//!
//! Each error knows its kind (which fixes the HTTP status, the OpenAI `type` and `code`, and
//! whether another account could succeed where this one failed). Layers map it to HTTP in
//! exactly one place ([`ApiError::status`] plus the `axum` feature's `IntoResponse`) and to
//! gRPC in one place (the proto crate).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What went wrong, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or asks for something impossible (400, final).
    InvalidRequest,
    /// Missing, unknown, revoked or expired API key (401; only ever for a key problem).
    InvalidApiKey,
    /// The key is valid but not allowed to do this (403).
    PermissionDenied,
    /// No such route (404).
    NotFound,
    /// No account serves the requested model (404).
    ModelNotFound,
    /// The body is larger than the configured limit (413).
    PayloadTooLarge,
    /// Too many requests for this key or account (429, retry later).
    RateLimited,
    /// The key's budget, or every account's credits, are spent (429).
    InsufficientQuota,
    /// One account's quota is spent (its agent said so: Kiro's monthly limit). Another account
    /// may serve the request; the engine marks this one exhausted (429 if it ever reaches a
    /// client).
    AccountQuotaExhausted,
    /// One account is rate limited by its provider for a while (`retry_after` when the agent
    /// said how long). Another account may serve the request; the engine rests this one (429
    /// if it ever reaches a client).
    AccountRateLimited,
    /// Every slot is busy and the wait queue is full or timed out (503, retry elsewhere).
    NoCapacity,
    /// The agent or a worker failed while serving the request (502, retry elsewhere).
    Upstream,
    /// The request hit a deadline (504).
    Timeout,
    /// The service is draining or has no worker to send to (503).
    Unavailable,
    /// A bug or an unexpected state inside Drawbridge (500).
    Internal,
}

impl ErrorKind {
    /// Every kind, for tests and for parsing.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::InvalidRequest,
        ErrorKind::InvalidApiKey,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::ModelNotFound,
        ErrorKind::PayloadTooLarge,
        ErrorKind::RateLimited,
        ErrorKind::InsufficientQuota,
        ErrorKind::AccountQuotaExhausted,
        ErrorKind::AccountRateLimited,
        ErrorKind::NoCapacity,
        ErrorKind::Upstream,
        ErrorKind::Timeout,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    /// The HTTP status the OpenAI SDKs (and NEW-API) expect for this kind.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::InvalidApiKey => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound | ErrorKind::ModelNotFound => 404,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RateLimited
            | ErrorKind::InsufficientQuota
            | ErrorKind::AccountQuotaExhausted
            | ErrorKind::AccountRateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Upstream => 502,
            ErrorKind::NoCapacity | ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// The OpenAI error `type`.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::NotFound
            | ErrorKind::ModelNotFound
            | ErrorKind::PayloadTooLarge
            | ErrorKind::InvalidApiKey => "invalid_request_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::RateLimited | ErrorKind::AccountRateLimited => "requests",
            ErrorKind::InsufficientQuota | ErrorKind::AccountQuotaExhausted => "insufficient_quota",
            ErrorKind::NoCapacity
            | ErrorKind::Upstream
            | ErrorKind::Timeout
            | ErrorKind::Unavailable
            | ErrorKind::Internal => "server_error",
        }
    }

    /// The OpenAI error `code`, which doubles as this kind's stable name on internal wires.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::InvalidApiKey => "invalid_api_key",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RateLimited => "rate_limit_exceeded",
            ErrorKind::InsufficientQuota => "insufficient_quota",
            ErrorKind::AccountQuotaExhausted => "account_quota_exhausted",
            ErrorKind::AccountRateLimited => "account_rate_limited",
            ErrorKind::NoCapacity => "no_capacity",
            ErrorKind::Upstream => "upstream_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "service_unavailable",
            ErrorKind::Internal => "internal_error",
        }
    }

    /// The kind whose [`code`](Self::code) is `code`.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// Whether another account or worker could succeed where this attempt failed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::NoCapacity
                | ErrorKind::Upstream
                | ErrorKind::Timeout
                | ErrorKind::Unavailable
                | ErrorKind::AccountQuotaExhausted
                | ErrorKind::AccountRateLimited
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error on its way to a caller. Its message must never hold a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, in OpenAI's `param` (e.g. `messages[2].role`).
    pub param: Option<String>,
    /// How long the caller should wait before trying again (sent as `Retry-After`).
    pub retry_after: Option<Duration>,
    /// The HTTP status a provider account's upstream answered with, when the error stands
    /// for one (what a route's `retry.on_status` matches). Never sent to clients: the
    /// client's status is the kind's.
    pub upstream_status: Option<u16>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
            upstream_status: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The error as one that stands for the upstream's HTTP `status`.
    pub fn with_upstream_status(mut self, status: u16) -> Self {
        self.upstream_status = Some(status);
        self
    }

    /// The status of the failure: the upstream's when a provider answered with one, else
    /// the one this error's kind has for clients.
    pub fn failure_status(&self) -> u16 {
        self.upstream_status.unwrap_or_else(|| self.status())
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn invalid_api_key() -> Self {
        Self::new(
            ErrorKind::InvalidApiKey,
            "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.",
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            ErrorKind::ModelNotFound,
            format!("The model '{model}' does not exist or no account serves it."),
        )
        .with_param("model")
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Upstream, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }

    /// The OpenAI error object.
    pub fn to_object(&self) -> ErrorObject {
        ErrorObject {
            message: self.message.clone(),
            kind: self.kind.error_type().to_owned(),
            param: self.param.clone(),
            code: Some(self.kind.code().to_owned()),
        }
    }

    /// The OpenAI error body `{"error": {...}}`.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: self.to_object(),
        }
    }

    /// Rebuild an error from an OpenAI error object and the HTTP status it came with (as
    /// read back from another Drawbridge layer or an OpenAI-compatible upstream).
    pub fn from_object(status: u16, object: ErrorObject) -> Self {
        let kind = object
            .code
            .as_deref()
            .and_then(ErrorKind::from_code)
            .unwrap_or(match status {
                400 | 422 => ErrorKind::InvalidRequest,
                401 => ErrorKind::InvalidApiKey,
                403 => ErrorKind::PermissionDenied,
                404 => ErrorKind::NotFound,
                413 => ErrorKind::PayloadTooLarge,
                429 => ErrorKind::RateLimited,
                503 => ErrorKind::Unavailable,
                504 => ErrorKind::Timeout,
                500 => ErrorKind::Internal,
                _ => ErrorKind::Upstream,
            });
        ApiError {
            kind,
            message: object.message,
            param: object.param,
            retry_after: None,
            upstream_status: None,
        }
    }
}

/// `{"message","type","param","code"}` as the OpenAI SDKs read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[cfg(feature = "axum")]
mod http {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    use super::ApiError;

    impl IntoResponse for ApiError {
        fn into_response(self) -> Response {
            let status =
                StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, axum::Json(self.to_body())).into_response();
            if let Some(after) = self.retry_after {
                // Whole seconds, rounded up, as Retry-After requires; the ms form for the SDKs.
                let secs = after.as_millis().div_ceil(1000).max(1);
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
                headers.insert(
                    "retry-after-ms",
                    HeaderValue::from(after.as_millis() as u64),
                );
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_what_the_sdks_expect() {
        assert_eq!(ApiError::invalid_api_key().status(), 401);
        assert_eq!(ApiError::model_not_found("x").status(), 404);
        assert_eq!(ApiError::invalid_request("x").status(), 400);
        assert_eq!(ErrorKind::RateLimited.status(), 429);
        assert_eq!(ErrorKind::InsufficientQuota.status(), 429);
        assert_eq!(ErrorKind::Upstream.status(), 502);
        assert_eq!(ErrorKind::NoCapacity.status(), 503);
        // 401 is for keys only: NEW-API disables a channel on it.
        for kind in ErrorKind::ALL {
            assert_eq!(
                kind.status() == 401,
                kind == ErrorKind::InvalidApiKey,
                "{kind}"
            );
        }
    }

    #[test]
    fn codes_round_trip_and_are_unique() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ErrorKind::from_code("nope"), None);
    }

    #[test]
    fn body_has_the_openai_shape() {
        let err = ApiError::model_not_found("gpt-9");
        let json = serde_json::to_value(err.to_body()).unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["code"], "model_not_found");
        assert_eq!(json["error"]["param"], "model");
        assert!(json["error"]["message"].as_str().unwrap().contains("gpt-9"));
    }

    #[test]
    fn from_object_prefers_code_then_status() {
        let obj = ApiError::upstream("agent died").to_object();
        assert_eq!(ApiError::from_object(502, obj).kind, ErrorKind::Upstream);
        let foreign = ErrorObject {
            message: "m".into(),
            kind: "whatever".into(),
            param: None,
            code: None,
        };
        assert_eq!(
            ApiError::from_object(401, foreign.clone()).kind,
            ErrorKind::InvalidApiKey
        );
        assert_eq!(
            ApiError::from_object(599, foreign).kind,
            ErrorKind::Upstream
        );
    }

    #[test]
    fn a_failure_has_the_upstreams_status_else_its_kinds() {
        let error = ApiError::upstream("The provider answered with status 503.");
        assert_eq!(error.failure_status(), 502);
        let error = error.with_upstream_status(503);
        assert_eq!(error.failure_status(), 503);
        // The client still sees the kind's status and body.
        assert_eq!(error.status(), 502);
        let body = serde_json::to_value(error.to_body()).unwrap();
        // Sorted: a workspace build keeps serde_json's insertion order, a crate build sorts.
        let mut fields: Vec<&String> = body["error"].as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(fields, ["code", "message", "param", "type"], "{body}");
        assert_eq!(body["error"]["code"], "upstream_error");
    }

    #[test]
    fn only_server_side_failures_are_retryable() {
        assert!(ErrorKind::Upstream.retryable());
        assert!(ErrorKind::NoCapacity.retryable());
        assert!(!ErrorKind::InvalidRequest.retryable());
        assert!(!ErrorKind::InvalidApiKey.retryable());
        // One account's limits: another account can serve; the client's own limits: no.
        assert!(ErrorKind::AccountQuotaExhausted.retryable());
        assert!(ErrorKind::AccountRateLimited.retryable());
        assert!(!ErrorKind::InsufficientQuota.retryable());
        assert!(!ErrorKind::RateLimited.retryable());
    }
}
