//! Layer 1: the gateway. It serves the public OpenAI API behind API keys (the config's static
//! keys and keys made with the admin API), per-key rate limits and quotas, records usage in a
//! ledger, serves the admin API and Prometheus metrics, and hands each request to a
//! [`Backend`]: [`HttpEngine`] (a remote engine over HTTP, the three-process shape) or the
//! engine itself (inside the single-process `drawbridge`).
//!
//! Its records (keys, rate-limit windows, usage, quotas) live in ValKey with `redis.url`, shared
//! by every gateway node, and otherwise in a local data file ([`open_stores`]).

pub mod admin;
mod app;
mod charge;
mod engine_client;
pub mod gate;
pub mod secret;

use std::sync::Arc;

use drawbridge_config::Config;
use drawbridge_http::{AccountsAdmin, ApiState, ChatBackend};
use drawbridge_state::{CreditStore, EmbeddedGatewayStore, ValkeyRegistry};
use drawbridge_telemetry::{LiveConfig, Metrics, Shutdown};
use tokio_util::sync::CancellationToken;

pub use app::GatewayApp;
pub use charge::UNKNOWN_ACCOUNT;
pub use engine_client::HttpEngine;
pub use gate::{GatewayGate, KeyContext, LiveSettings, Stores, system_clock};

/// The store behind [`Stores`], to close at the end of the drain.
pub enum StoreHandle {
    Valkey(Arc<ValkeyRegistry>),
    Embedded(Arc<EmbeddedGatewayStore>),
}

impl StoreHandle {
    /// Where an engine in the same process keeps its account credits: the same ValKey, or the
    /// same data file (so the single-node binary's balances survive a restart).
    pub fn credit_store(&self) -> Arc<dyn CreditStore> {
        match self {
            StoreHandle::Valkey(store) => store.clone(),
            StoreHandle::Embedded(store) => store.clone(),
        }
    }

    /// Flush and close (the embedded file is complete on disk afterwards).
    pub async fn close(&self) {
        match self {
            StoreHandle::Valkey(store) => store.close().await,
            StoreHandle::Embedded(store) => {
                if let Err(error) = store.close().await {
                    tracing::error!(%error, "cannot flush the gateway's data file");
                }
            }
        }
    }
}

/// Open the gateway's stores: ValKey with `redis.url`, else the data file
/// `gateway.data_file` (created if missing; a second process opening it is refused). The data
/// file's background writer runs on `shutdown` until [`StoreHandle::close`].
pub async fn open_stores(
    config: &Config,
    shutdown: &Shutdown,
) -> anyhow::Result<(Stores, StoreHandle)> {
    match &config.redis {
        Some(redis) => {
            let store = Arc::new(ValkeyRegistry::connect(&redis.url).await?);
            tracing::info!(
                url = drawbridge_state::redact_url(&redis.url),
                "gateway records in ValKey"
            );
            let stores = Stores {
                keys: store.clone(),
                limiter: store.clone(),
                usage: store.clone(),
                clock: gate::system_clock(),
            };
            Ok((stores, StoreHandle::Valkey(store)))
        }
        None => {
            let path = &config.gateway.data_file;
            let store = Arc::new(EmbeddedGatewayStore::open(path, shutdown).await?);
            tracing::info!(file = %path.display(), "gateway records in the local data file");
            let stores = Stores {
                keys: store.clone(),
                limiter: store.clone(),
                usage: store.clone(),
                clock: gate::system_clock(),
            };
            Ok((stores, StoreHandle::Embedded(store)))
        }
    }
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
/// (a reload takes effect at the next request); `gateway.max_body_bytes` is read once.
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
    .with_accounts(Arc::clone(&accounts));
    // A conversation key in `engine.affinity.header` is passed on to the engine.
    let state = match drawbridge_http::session_header(&live.load().engine.affinity.header) {
        Some(header) => state.with_session_header(header),
        None => state,
    };
    let admin = admin::Admin::new(settings, deps.stores, accounts, deps.metrics);
    admin::router(Arc::new(admin)).merge(drawbridge_http::openai_router(state))
}
