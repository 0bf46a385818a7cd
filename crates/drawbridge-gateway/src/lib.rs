//! Layer 1: the gateway. It serves the public OpenAI API behind client keys and hands each
//! request to a [`ChatBackend`]: [`HttpEngine`] (a remote engine over HTTP, the three-process
//! shape) or the engine itself (inside the single-process `drawbridge`).

mod engine_client;

use std::sync::Arc;

use drawbridge_config::Config;
use drawbridge_http::{ApiState, ChatBackend, Keys};
use tokio_util::sync::CancellationToken;

pub use engine_client::HttpEngine;

/// The public API in front of `backend`.
pub fn router(
    config: &Config,
    backend: Arc<dyn ChatBackend>,
    draining: CancellationToken,
) -> axum::Router {
    drawbridge_http::openai_router(ApiState::new(
        backend,
        Arc::new(Keys::required(&config.gateway.api_keys)),
        config.gateway.max_body_bytes,
        draining,
    ))
}
