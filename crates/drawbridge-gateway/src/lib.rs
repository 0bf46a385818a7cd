//! Layer 1: the gateway. It serves the public OpenAI API behind API keys (the config's static
//! keys and keys made with the admin API), per-key rate limits and quotas, records usage in a
//! ledger, serves the admin API and Prometheus metrics, and hands each request to a
//! [`Backend`]: [`HttpEngine`] (a remote engine over HTTP, the three-process shape) or the
//! engine itself (inside the single-process `drawbridge`).
//!
//! Its records (keys, rate-limit windows, usage, quotas) live in ValKey with `redis.url`, shared
//! by every gateway node, and otherwise in a local data file ([`backing`]).

pub mod admin;
mod app;
mod charge;
mod engine_client;
pub mod gate;
mod responses;
pub mod secret;

use std::sync::Arc;

use drawbridge_config::Config;
use drawbridge_http::{AccountsAdmin, ApiState, ChatBackend};
use drawbridge_telemetry::{LiveConfig, Metrics, Shutdown};
use tokio_util::sync::CancellationToken;

pub use app::GatewayApp;
pub use charge::UNKNOWN_ACCOUNT;
pub use engine_client::HttpEngine;
pub use gate::{GatewayGate, KeyContext, LiveSettings, Stores, system_clock};

/// Where a gateway keeps its records: ValKey with `redis.url`, else the data file
/// `gateway.data_file` (created if missing; a second process opening it is refused).
pub fn backing(config: &Config) -> drawbridge_state::Backing {
    drawbridge_state::Backing::choose(
        config.redis.as_ref().map(|r| r.url.as_str()),
        Some(config.gateway.data_file.clone()),
    )
}

/// What the gateway answers from: chat requests ([`ChatBackend`]), and the accounts behind
/// them for the admin API and the metrics ([`AccountsAdmin`]).
pub trait Backend: ChatBackend + AccountsAdmin {}

impl<T: ChatBackend + AccountsAdmin> Backend for T {}

/// Everything the gateway's router needs.
pub struct GatewayDeps {
    pub backend: Arc<dyn Backend>,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    /// Usage writes run on this scope: the binary drains it after the server stopped and
    /// before it closes the stores (so it must not be the scope the store's writer runs on).
    pub tasks: Shutdown,
    /// Cancelled when shutdown begins: `/health` then says `draining`.
    pub draining: CancellationToken,
}

/// The public API (`/v1/*`, `/health`, `/metrics`) and the admin API (`/admin/*`). Keys of the
/// config, rate-limit and quota settings, `log.messages` and the admin token follow `live`
/// (a reload takes effect at the next request); `gateway.max_body_bytes` and
/// `gateway.responses_ttl` are read once.
pub fn router(live: &LiveConfig, deps: GatewayDeps) -> axum::Router {
    let settings = Arc::new(LiveSettings::new(live.clone()));
    let gate = GatewayGate::new(
        Arc::clone(&settings),
        deps.stores.clone(),
        Arc::clone(&deps.metrics),
        deps.tasks,
    );
    let chat: Arc<dyn ChatBackend> = deps.backend.clone();
    let accounts: Arc<dyn AccountsAdmin> = deps.backend;
    let state = ApiState::new(
        chat,
        Arc::new(gate),
        live.load().gateway.max_body_bytes,
        deps.draining,
    )
    .with_metrics(Arc::clone(&deps.metrics))
    .with_accounts(Arc::clone(&accounts))
    .with_responses(Arc::new(responses::StoredResponses {
        store: Arc::clone(&deps.stores.responses),
        ttl: live.load().gateway.responses_ttl,
    }));
    // A conversation key in `engine.affinity.header` is passed on to the engine.
    let state = match drawbridge_http::session_header(&live.load().engine.affinity.header) {
        Some(header) => state.with_session_header(header),
        None => state,
    };
    let admin = admin::Admin::new(settings, deps.stores, accounts, deps.metrics);
    admin::router(Arc::new(admin)).merge(drawbridge_http::openai_router(state))
}
