//! The worker's HTTP surface: `GET /health` and `GET /slots` for probes and people.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use drawbridge_types::{ApiError, ErrorKind};

use crate::Worker;

pub fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/slots", get(slots))
        .fallback(|| async { ApiError::new(ErrorKind::NotFound, "Unknown request URL.") })
        .with_state(worker)
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
