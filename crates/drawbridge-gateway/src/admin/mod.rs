//! The admin API (`/admin/*`): API keys, accounts, usage, a JSON metrics snapshot. Behind
//! `admin.auth_token` (or `DRAWBRIDGE_ADMIN_TOKEN`) as a bearer token, compared in constant
//! time; with no token configured the whole API is off (404), never open.
//!
//! The token is checked once, by a layer on every admin route ([`require_admin`]): a handler
//! cannot forget it. Handlers are thin: extract, call a plain function of [`keys`] or
//! [`usage`] (which never see axum), map the result to JSON. Times are Unix seconds, as in
//! the OpenAI API.

mod keys;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, middleware};
use drawbridge_http::AccountsAdmin;
use drawbridge_state::StateError;
use drawbridge_telemetry::Metrics;
use drawbridge_types::openai::parse_json;
use drawbridge_types::{ApiError, CreditChange, ErrorKind};
use serde::Serialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::gate::{LiveSettings, Settings, Stores};

/// What the admin handlers share.
pub struct Admin {
    settings: Arc<LiveSettings>,
    stores: Stores,
    accounts: Arc<dyn AccountsAdmin>,
    metrics: Arc<Metrics>,
}

impl Admin {
    pub fn new(
        settings: Arc<LiveSettings>,
        stores: Stores,
        accounts: Arc<dyn AccountsAdmin>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Admin {
            settings,
            stores,
            accounts,
            metrics,
        }
    }

    /// Now, in ms since the Unix epoch, on the gateway's clock.
    fn now_ms(&self) -> u64 {
        (self.stores.clock)()
    }
}

/// `/admin/keys`, `/admin/keys/{id}`, `/admin/accounts`, `/admin/usage`, `/admin/metrics`,
/// every route behind [`require_admin`].
pub fn router(admin: Arc<Admin>) -> Router {
    let settings = Arc::clone(&admin.settings);
    Router::new()
        .route("/admin/keys", post(create_key).get(list_keys))
        .route(
            "/admin/keys/{id}",
            get(get_key).patch(update_key).delete(revoke_key),
        )
        .route("/admin/accounts", get(list_accounts))
        .route("/admin/accounts/{id}/credits", post(change_credits))
        .route("/admin/usage", get(usage))
        .route("/admin/metrics", get(metrics_snapshot))
        .route_layer(middleware::from_fn_with_state(settings, require_admin))
        .with_state(admin)
}

/// The one admin check: the API is off (404) without a configured token, and a request
/// without that token as its bearer is refused (401) before any handler runs.
async fn require_admin(
    State(settings): State<Arc<LiveSettings>>,
    request: Request,
    next: Next,
) -> Response {
    match authorize(&settings.now(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Check the admin token.
fn authorize(settings: &Settings, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &settings.admin_token else {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "The admin API is off: set admin.auth_token (or DRAWBRIDGE_ADMIN_TOKEN) to turn it on.",
        ));
    };
    let presented = drawbridge_http::auth::bearer(headers).ok_or_else(|| {
        ApiError::new(
            ErrorKind::InvalidApiKey,
            "The admin API needs `Authorization: Bearer <admin token>`.",
        )
    })?;
    if bool::from(token.expose().as_bytes().ct_eq(presented.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::InvalidApiKey,
            "The admin token is not valid.",
        ))
    }
}

fn store_error(error: StateError) -> ApiError {
    match error {
        StateError::Invalid(message) => ApiError::invalid_request(message),
        StateError::Unavailable(_) => {
            tracing::warn!(%error, "admin: store unreachable");
            ApiError::unavailable("The gateway's store is unreachable; retry shortly.")
                .with_retry_after(Duration::from_secs(1))
        }
        other => {
            tracing::error!(error = %other, "admin: store error");
            ApiError::internal("The gateway's store failed; see its log.")
        }
    }
}

/// A JSON request body, refused in the OpenAI error shape when it does not parse.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        parse_json(&body)
            .map(JsonBody)
            .map_err(IntoResponse::into_response)
    }
}

/// What a handler answers: a status and a JSON body, or the error.
type Answer = Result<(StatusCode, Json<Value>), ApiError>;

fn ok(body: impl Serialize) -> Answer {
    with_status(StatusCode::OK, body)
}

fn with_status(status: StatusCode, body: impl Serialize) -> Answer {
    let body = serde_json::to_value(body)
        .map_err(|e| ApiError::internal(format!("cannot render the answer: {e}")))?;
    Ok((status, Json(body)))
}

fn list(data: impl Serialize) -> Answer {
    ok(serde_json::json!({ "object": "list", "data": data }))
}

async fn create_key(
    State(admin): State<Arc<Admin>>,
    JsonBody(request): JsonBody<keys::KeyRequest>,
) -> Answer {
    with_status(StatusCode::CREATED, keys::create(&admin, request).await?)
}

async fn list_keys(State(admin): State<Arc<Admin>>) -> Answer {
    list(keys::list(&admin).await?)
}

async fn get_key(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Answer {
    ok(keys::get(&admin, &id).await?)
}

async fn update_key(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<keys::KeyRequest>,
) -> Answer {
    ok(keys::update(&admin, &id, request).await?)
}

async fn revoke_key(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Answer {
    ok(keys::revoke(&admin, &id).await?)
}

async fn list_accounts(State(admin): State<Arc<Admin>>) -> Answer {
    list(admin.accounts.accounts().await?)
}

/// `POST /admin/accounts/{id}/credits`: `{"add": N}` or `{"set": N}` (milli-credits: 1000 is
/// one Kiro credit), or `{"set": null}` to stop tracking the account's credits.
async fn change_credits(
    State(admin): State<Arc<Admin>>,
    Path(account): Path<String>,
    body: Bytes,
) -> Answer {
    let change = CreditChange::from_json(&body)?;
    let credits = admin.accounts.change_credits(&account, change).await?;
    tracing::info!(account, ?credits, "account credits changed");
    ok(serde_json::json!({ "account": account, "credits": credits }))
}

async fn usage(State(admin): State<Arc<Admin>>, RawQuery(query): RawQuery) -> Answer {
    let query = usage::UsageQuery::parse(query.as_deref().unwrap_or(""))?;
    ok(usage::usage(&admin, &query).await?)
}

async fn metrics_snapshot(State(admin): State<Arc<Admin>>) -> Answer {
    drawbridge_http::refresh_account_gauges(admin.accounts.as_ref(), &admin.metrics).await;
    ok(admin.metrics.snapshot())
}
