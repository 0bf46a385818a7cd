//! `POST /v1/embeddings` and `POST /v1/images/generations`: requests a provider account
//! answers as a whole, passed through. The body is validated here (a 400 in OpenAI's shape
//! naming the field), then the backend's [`ChatBackend::forward`](crate::ChatBackend::forward)
//! sends it to an account that serves the model and returns the upstream's JSON as it came:
//! its floats are never re-encoded, and base64 stays base64.
//!
//! The request goes the same way as a chat request: keys and rate limits
//! ([`Gate::enter`]), the key's models and quota ([`Gate::admit`], shown the request as a chat
//! request of one user message holding the input or the prompt, answering nothing), and a
//! [`Pass`](crate::Pass) told how it ended, with the usage the upstream reported (embeddings:
//! `usage.prompt_tokens`; images: `usage.input_tokens` and `usage.output_tokens` when the
//! upstream reports them, else nothing). Requests are counted in the metrics under the
//! `dialect` label `embeddings` or `images`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use drawbridge_types::openai::{ChatMessage, Role, Usage};
use drawbridge_types::{
    ApiError, ChatCompletionRequest, CompletionEvent, ErrorKind, Finish, FinishReason, Metering,
};
use futures::StreamExt as _;
use serde_json::{Map, Value};
use tracing::Instrument as _;

use crate::dialect::{MAX_MODEL_LABEL, log_refusal, tenant};
use crate::gate::{Ended, Gate, Outcome, Refusal};
use crate::{ApiState, ChatContext, meter, read_body, request_id, with_headers, with_request_id};

/// The header in which the engine's internal API names the account that answered a
/// forwarded request (only with [`ApiState::expose_metering`]): what the gateway's ledger
/// records.
pub const ACCOUNT_HEADER: &str = "x-drawbridge-account";

/// An endpoint whose answers are passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/images/generations`.
    Images,
}

impl Endpoint {
    /// The path under an OpenAI base URL (which ends in `/v1`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Images => "/images/generations",
        }
    }

    /// The `dialect` label of the request metrics, and the logs'.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Embeddings => "embeddings",
            Endpoint::Images => "images",
        }
    }

    /// What the endpoint makes, in an error message ("does not serve embeddings").
    pub fn what(self) -> &'static str {
        match self {
            Endpoint::Embeddings => "embeddings",
            Endpoint::Images => "image generation",
        }
    }

    /// The 400 of a model whose accounts cannot answer this endpoint (ACP accounts, and
    /// provider accounts of a kind other than `openai`).
    pub fn not_served(self, model: &str) -> ApiError {
        ApiError::invalid_request(format!(
            "The model '{model}' does not serve {}.",
            self.what()
        ))
        .with_param("model")
    }
}

/// One request to forward: the endpoint, the model it names, its body as the client sent it.
#[derive(Debug, Clone)]
pub struct Forward {
    pub endpoint: Endpoint,
    pub model: String,
    pub body: Bytes,
}

/// The upstream's answer: its JSON body, as it came, and the account that gave it.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub body: Bytes,
    pub account: Option<String>,
}

/// The usage an upstream answer reports, as token counts: embeddings' `prompt_tokens`,
/// images' `input_tokens` and `output_tokens`; none reported is none charged.
pub fn usage_of(body: &[u8]) -> Usage {
    let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
        return Usage::new(0, 0);
    };
    let count = |name: &str| {
        answer
            .get("usage")
            .and_then(|u| u.get(name))
            .and_then(Value::as_u64)
    };
    let prompt = count("prompt_tokens").or_else(|| count("input_tokens"));
    let completion = count("output_tokens").or_else(|| count("completion_tokens"));
    Usage::new(prompt.unwrap_or(0), completion.unwrap_or(0))
}

/// A validated request: the model, and the text its admission is estimated from.
struct Parsed {
    model: String,
    /// The input's text (embeddings) or the prompt (images), for the quota's estimate.
    text: String,
    user: Option<String>,
}

fn field_error(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).with_param(field)
}

/// The body as a JSON object, or the 400 of a body that is not one.
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_request(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::invalid_request(format!(
            "We could not parse the JSON body of your request: {e}"
        ))),
    }
}

fn required_string(map: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match map.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(field_error(field, format!("'{field}' must not be empty."))),
        None | Some(Value::Null) => Err(field_error(
            field,
            format!("Missing required parameter: '{field}'."),
        )),
        Some(_) => Err(field_error(field, format!("'{field}' must be a string."))),
    }
}

fn optional_string(map: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field_error(field, format!("'{field}' must be a string."))),
    }
}

fn one_of(
    map: &Map<String, Value>,
    field: &str,
    allowed: &[&str],
) -> Result<Option<String>, ApiError> {
    let value = optional_string(map, field)?;
    if let Some(v) = &value
        && !allowed.contains(&v.as_str())
    {
        return Err(field_error(
            field,
            format!(
                "Invalid value for '{field}': '{v}'. Supported values are: {}.",
                allowed
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(value)
}

fn positive_integer(
    map: &Map<String, Value>,
    field: &str,
    max: Option<u64>,
) -> Result<Option<u64>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 && max.is_none_or(|max| n <= max) => Ok(Some(n)),
            _ => Err(field_error(
                field,
                match max {
                    Some(max) => format!("'{field}' must be an integer from 1 to {max}."),
                    None => format!("'{field}' must be a positive integer."),
                },
            )),
        },
    }
}

/// The most inputs one embeddings request may carry (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// `input` of an embeddings request: a string, an array of strings, an array of token ids or
/// an array of such arrays; its text (token ids count as one word each) for the estimate.
fn embeddings_input(map: &Map<String, Value>) -> Result<String, ApiError> {
    let bad = || {
        field_error(
            "input",
            "'input' must be a string, an array of strings, an array of token ids or an array of arrays of token ids.",
        )
    };
    let tokens = |items: &[Value]| -> Option<String> {
        items
            .iter()
            .all(|t| t.as_u64().is_some())
            .then(|| "t ".repeat(items.len()))
    };
    match map.get("input") {
        None | Some(Value::Null) => {
            Err(field_error("input", "Missing required parameter: 'input'."))
        }
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(field_error("input", "'input' must not be an empty array."));
            }
            if items.len() > MAX_INPUTS {
                return Err(field_error(
                    "input",
                    format!("'input' may hold at most {MAX_INPUTS} items."),
                ));
            }
            if let Some(text) = tokens(items) {
                return Ok(text);
            }
            let mut text = String::new();
            for item in items {
                match item {
                    Value::String(s) => text.push_str(s),
                    Value::Array(ids) if !ids.is_empty() => {
                        text.push_str(&tokens(ids).ok_or_else(bad)?);
                    }
                    _ => return Err(bad()),
                }
                text.push('\n');
            }
            Ok(text)
        }
        Some(_) => Err(bad()),
    }
}

impl Endpoint {
    /// Validate `body` (see the module docs): a 400 naming the field, or what admission needs.
    fn parse(self, body: &[u8]) -> Result<Parsed, ApiError> {
        let map = object(body)?;
        let model = required_string(&map, "model")?;
        let text = match self {
            Endpoint::Embeddings => {
                let text = embeddings_input(&map)?;
                one_of(&map, "encoding_format", &["float", "base64"])?;
                positive_integer(&map, "dimensions", None)?;
                text
            }
            Endpoint::Images => {
                let prompt = required_string(&map, "prompt")?;
                positive_integer(&map, "n", Some(10))?;
                one_of(&map, "response_format", &["url", "b64_json"])?;
                for field in ["size", "quality", "style"] {
                    optional_string(&map, field)?;
                }
                prompt
            }
        };
        let user = optional_string(&map, "user")?;
        Ok(Parsed { model, text, user })
    }
}

/// What the gate is shown of a forwarded request: a chat request of one user message (the
/// input or the prompt) that answers nothing.
fn as_chat(parsed: &Parsed) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: parsed.model.clone(),
        messages: vec![ChatMessage::new(Role::User, parsed.text.clone())],
        stream: None,
        stream_options: None,
        max_tokens: Some(0),
        max_completion_tokens: None,
        n: None,
        user: parsed.user.clone(),
        tools: None,
        tool_choice: None,
        parallel_tool_calls: None,
        extra: Map::new(),
    }
}

/// The axum handler of `endpoint`.
pub async fn endpoint<G: Gate>(
    State(state): State<ApiState<G>>,
    endpoint: Endpoint,
    request: Request,
) -> Response {
    let request_id = request_id(request.headers());
    let started = tokio::time::Instant::now();
    let span = tracing::info_span!(
        "forward",
        request_id = %request_id,
        dialect = endpoint.label(),
        trace_id = tracing::field::Empty
    );
    drawbridge_telemetry::continue_trace(&span, |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let (response, headers) = match start(&state, endpoint, request, &request_id, started)
        .instrument(span)
        .await
    {
        Ok(answer) => answer,
        Err(Refusal { error, headers }) => {
            log_refusal(&request_id, &error, started);
            let ended = Ended {
                outcome: Outcome::Failed(error.kind),
                delivered_chars: 0,
                duration: started.elapsed(),
            };
            meter::report(
                state.metrics.as_deref(),
                drawbridge_telemetry::metrics::UNKNOWN_MODEL,
                endpoint.label(),
                &ended,
                None,
            );
            (error.into_response(), headers)
        }
    };
    with_request_id(with_headers(response, headers), &request_id)
}

async fn start<G: Gate>(
    state: &ApiState<G>,
    endpoint: Endpoint,
    request: Request,
    request_id: &str,
    started: tokio::time::Instant,
) -> Result<(Response, HeaderMap), Refusal> {
    let entry = state.gate.enter(request.headers()).await?;
    let session = crate::dialect::session_key(state, request.headers());
    let tenant = tenant(state.gate.as_ref(), &entry, request.headers());
    let headers = entry.headers.clone();
    let refuse = |error: ApiError| Refusal {
        error,
        headers: headers.clone(),
    };
    if state.draining.is_cancelled() {
        return Err(refuse(crate::dialect::shutting_down()));
    }
    let body = read_body(request.into_body(), state.max_body_bytes)
        .await
        .map_err(refuse)?;
    let parsed = endpoint.parse(&body).map_err(refuse)?;
    let chat = as_chat(&parsed);
    let pass = state
        .gate
        .admit(&entry, &chat, request_id)
        .await
        .map_err(refuse)?;
    let model = parsed.model;
    let ctx = ChatContext {
        request_id: request_id.to_owned(),
        caller: entry.caller,
        session,
        tenant,
        resume: false,
    };
    let mut meter = meter::Meter {
        pass,
        request_id: request_id.to_owned(),
        metrics: state.metrics.clone(),
        model: if model.len() <= MAX_MODEL_LABEL {
            model.clone()
        } else {
            drawbridge_telemetry::metrics::UNKNOWN_MODEL.to_owned()
        },
        dialect: endpoint.label(),
        started,
        streamed: false,
    }
    .waiting();
    let forward = Forward {
        endpoint,
        model,
        body,
    };
    let forwarded = match state.backend.forward(forward, ctx).await {
        Ok(forwarded) => forwarded,
        Err(error) => {
            if error.kind == ErrorKind::ModelNotFound {
                meter.set_model(drawbridge_telemetry::metrics::UNKNOWN_MODEL);
            }
            log_refusal(request_id, &error, started);
            meter.refused(&error);
            return Ok((error.into_response(), headers));
        }
    };
    // The answer is whole: it ends now, with the usage the upstream reported.
    let finish = Finish {
        finish_reason: FinishReason::Stop,
        usage: usage_of(&forwarded.body),
        metering: Metering {
            accounts: forwarded.account.iter().cloned().collect(),
            credits: 0.0,
            tokens_estimated: false,
        },
    };
    let mut ended = meter.watch(Box::pin(futures::stream::iter([Ok(
        CompletionEvent::Finish(finish),
    )])));
    while ended.next().await.is_some() {}
    let mut response = (StatusCode::OK, forwarded.body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if state.expose_metering
        && let Some(account) = &forwarded.account
        && let Ok(value) = HeaderValue::from_str(account)
    {
        response.headers_mut().insert(ACCOUNT_HEADER, value);
    }
    Ok((response, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_either_shape() {
        let u = usage_of(br#"{"usage":{"prompt_tokens":7,"total_tokens":7}}"#);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (7, 0));
        let u = usage_of(br#"{"usage":{"input_tokens":3,"output_tokens":40}}"#);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 40));
        let u = usage_of(br#"{"data":[]}"#);
        assert_eq!(u.total_tokens, 0);
        assert_eq!(usage_of(b"not json").total_tokens, 0);
    }

    #[test]
    fn every_input_shape_is_accepted() {
        for input in [
            r#""one""#,
            r#"["one","two"]"#,
            "[1,2,3]",
            "[[1,2],[3]]",
            r#"["a",[1,2]]"#,
        ] {
            let body = format!(r#"{{"model":"m","input":{input}}}"#);
            assert!(
                Endpoint::Embeddings.parse(body.as_bytes()).is_ok(),
                "{input}"
            );
        }
    }
}
