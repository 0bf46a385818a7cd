//! The worker's HTTP surface, for probes, operators and benchmarks: `POST /prompt` (one turn,
//! answered in the OpenAI chunk format or as one JSON answer), `GET /health`, `GET /slots`,
//! `POST /drain`. It has no authentication: keep the port private.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use drawbridge_http::{events, render};
use drawbridge_types::openai::{ChatMessage, StreamOptions};
use drawbridge_types::worker::{PromptBody, PromptInput};
use drawbridge_types::{ApiError, ErrorKind};
use futures::StreamExt;
use serde::Deserialize;

use crate::Worker;

pub fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/prompt", post(prompt))
        .route("/health", get(health))
        .route("/slots", get(slots))
        .route("/drain", post(drain))
        .fallback(|| async { ApiError::new(ErrorKind::NotFound, "Unknown request URL.") })
        .with_state(worker)
}

/// `POST /prompt`: OpenAI `messages` or a plain `prompt`, on a given account or the
/// least-loaded one serving `model`.
#[derive(Debug, Deserialize)]
struct PromptRequest {
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

async fn prompt(State(worker): State<Arc<Worker>>, body: Bytes) -> Response {
    match start_prompt(&worker, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn start_prompt(worker: &Worker, body: &[u8]) -> Result<Response, ApiError> {
    let request: PromptRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_request(format!("Invalid /prompt body: {e}")))?;
    let body = match (request.messages, request.prompt) {
        (Some(messages), None) if !messages.is_empty() => PromptBody::Messages(messages),
        (None, Some(prompt)) if !prompt.is_empty() => PromptBody::Text(prompt),
        _ => {
            return Err(ApiError::invalid_request(
                "Send either a non-empty 'messages' or a non-empty 'prompt'.",
            ));
        }
    };
    let model = match (request.model, &request.account) {
        (Some(model), _) => model,
        (None, Some(account)) => worker
            .default_model(account)
            .ok_or_else(|| ApiError::invalid_request(format!("Unknown account '{account}'.")))?,
        (None, None) => {
            return Err(ApiError::invalid_request("Send 'model' or 'account'.").with_param("model"));
        }
    };
    let include_usage = request
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let input = PromptInput {
        request_id: uuid::Uuid::new_v4().simple().to_string(),
        model: model.clone(),
        account: request.account,
        body,
        max_output_tokens: request.max_completion_tokens.or(request.max_tokens),
        // The worker's own endpoint is for operators trying an account: no client tools.
        tools: Default::default(),
        live_session: None,
        conversation: None,
        params: Default::default(),
    };
    let turn = tokio_stream::wrappers::ReceiverStream::new(worker.prompt(input)).boxed();
    let started = events::first_content(turn).await?;
    let answer = events::completion_stream(started, ());
    if request.stream {
        Ok(render::sse(model, include_usage, false, answer))
    } else {
        render::json(model, answer).await
    }
}

async fn health(State(worker): State<Arc<Worker>>) -> Response {
    let (status, reasons) = worker.health();
    let code = if status.is_serving() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let slots = worker.slots();
    let body = serde_json::json!({
        "status": status,
        "reasons": reasons,
        "worker_id": worker.id(),
        "accounts": slots.accounts.len(),
        "total_slots": slots.accounts.iter().map(|a| a.size).sum::<u32>(),
        "available_slots": slots.accounts.iter().map(|a| a.idle).sum::<u32>(),
    });
    (code, axum::Json(body)).into_response()
}

async fn slots(State(worker): State<Arc<Worker>>) -> Response {
    axum::Json(worker.slots()).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct DrainRequest {
    #[serde(default)]
    keep_running: bool,
}

/// `POST /drain`: stop admitting, finish in-flight turns, then exit (or, with
/// `{"keep_running": true}`, stay up drained). Answers at once with the turns in flight.
async fn drain(State(worker): State<Arc<Worker>>, body: Bytes) -> Response {
    let request: DrainRequest = if body.is_empty() {
        DrainRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return ApiError::invalid_request(format!("Invalid /drain body: {e}"))
                    .into_response();
            }
        }
    };
    let in_flight = worker.request_drain(request.keep_running);
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "draining", "in_flight": in_flight})),
    )
        .into_response()
}
