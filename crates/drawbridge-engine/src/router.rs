//! The engine's HTTP surface: its internal OpenAI-compatible API, served through
//! [`drawbridge_http`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::Engine;

/// The engine's internal OpenAI-compatible API.
pub fn router(
    engine: Arc<Engine>,
    config: &drawbridge_config::Config,
    draining: CancellationToken,
) -> axum::Router {
    let metrics = engine.metrics();
    let mut state = drawbridge_http::ApiState::new(
        engine.clone(),
        Arc::new(drawbridge_http::Keys::optional(&config.engine.channel_keys)),
        config.gateway.max_body_bytes,
        draining,
    )
    .with_metrics(metrics)
    .with_accounts(engine);
    if let Some(header) = drawbridge_http::session_header(&config.engine.affinity.header) {
        state = state.with_session_header(header);
    }
    // Its callers are Drawbridge's gateway (which charges by the metering) and NEW-API (which
    // ignores the extra field).
    state.expose_metering = true;
    drawbridge_http::internal_router(state)
}
