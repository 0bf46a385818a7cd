//! The OpenAI-compatible HTTP surface. The gateway (public, behind client keys) and the engine
//! (internal, behind channel keys) serve the same API; what answers is a [`ChatBackend`]:
//! the engine's scheduler, or an HTTP client of a remote engine.
//!
//! Handlers are thin: authenticate, read and parse the body, call the backend, render its
//! event stream as SSE or as one JSON answer. Every error leaves as the OpenAI error shape.

pub mod auth;
pub mod dialect;
pub mod events;
pub mod gate;
mod inflight;
mod listen;
pub mod meter;
pub mod passthrough;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use drawbridge_telemetry::Metrics;
use drawbridge_types::openai::ModelList;
use drawbridge_types::{
    AccountView, ApiError, ChatCompletionRequest, CompletionEvent, CreditChange, ErrorKind,
    HealthReport, HealthStatus,
};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

pub use auth::{Caller, Keys};
pub use gate::{Ended, Entry, FreePass, Gate, Outcome, Pass, Refusal};
pub use listen::{bind_or_inherit, serve, serve_until_signal, set_nodelay};
pub use passthrough::{Endpoint, Forward, Forwarded};

/// The answer to one chat request: text (and reasoning, and keep-alives while nothing is
/// shown), then one `Finish`; failures as `Err` items.
pub type EventStream = BoxStream<'static, Result<CompletionEvent, ApiError>>;

/// Who is asking, for logs and routing.
#[derive(Debug, Clone)]
pub struct ChatContext {
    pub request_id: String,
    pub caller: Caller,
    /// The conversation key the client sent in [`ApiState::session_header`] (session
    /// affinity), if any.
    pub session: Option<String>,
    /// Whose conversation keys these are: the client's API key id (on the gateway, or in
    /// `drawbridge`); on the engine's internal API, the id the gateway passes in
    /// [`TENANT_HEADER`] (else the channel key's). Two clients' equal keys never meet.
    pub tenant: String,
    /// The body's last message is the part of the answer the client already has, and the
    /// answer continues it ([`RESUME_HEADER`]): what the gateway asks of an engine when the
    /// one that was answering died mid-stream.
    pub resume: bool,
}

/// The header in which Drawbridge's gateway asks an engine to continue an answer another
/// engine began: the request's last message is the assistant's text the client has, and
/// the answer brings only the rest. Read only from a caller trusted to speak for clients (a
/// channel key marked `trust_tenant`), and only when that message is assistant text without
/// tool calls; the engine then sets the same header on its answer, so the gateway knows the
/// continuation, not a whole answer, follows.
pub const RESUME_HEADER: &str = "x-drawbridge-resume";

/// The header in which Drawbridge's gateway tells the engine whose request it forwards (the
/// client's key id). Read only from a caller with a channel key marked `trust_tenant`.
pub const TENANT_HEADER: &str = "x-drawbridge-tenant";

/// The longest conversation key taken from a request header; a longer one is ignored.
pub const MAX_SESSION_KEY: usize = 200;

/// The header named `name` (`engine.affinity.header`, validated by the config), as a header
/// name.
pub fn session_header(name: &str) -> Option<axum::http::HeaderName> {
    axum::http::HeaderName::try_from(name.to_ascii_lowercase()).ok()
}

/// Whatever answers chat requests behind the HTTP surface.
pub trait ChatBackend: Send + Sync + 'static {
    /// Start answering. An `Err` here (before any text exists) becomes an HTTP error status;
    /// a failure later arrives as an `Err` item of the stream. A backend may return the stream
    /// before it has anything to show (a streamed answer kept alive with
    /// [`CompletionEvent::KeepAlive`]): the status is then committed, and a failure before the
    /// first text is an item too.
    fn chat(
        &self,
        request: ChatCompletionRequest,
        ctx: ChatContext,
    ) -> BoxFuture<'_, Result<EventStream, ApiError>>;

    /// The model ids that can be served.
    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, ApiError>>;

    fn health(&self) -> BoxFuture<'_, HealthReport>;

    /// Answer a request that is passed through to a provider account whole
    /// (`POST /v1/embeddings`, `POST /v1/images/generations`: see [`passthrough`]): the
    /// upstream's JSON body as it came, and the account that gave it. A backend that forwards
    /// nothing answers 404.
    fn forward(
        &self,
        request: Forward,
        ctx: ChatContext,
    ) -> BoxFuture<'_, Result<Forwarded, ApiError>> {
        let _ = ctx;
        Box::pin(futures::future::ready(Err(ApiError::new(
            ErrorKind::NotFound,
            format!("This API serves no {}.", request.endpoint.what()),
        ))))
    }
}

/// The operators' side of a backend: its accounts and their credits. Apart from
/// [`ChatBackend`], so answering chat requests never needs it; the gateway's admin API and the
/// engine's internal `/internal/accounts` use it, and `/metrics` reads its accounts' gauges.
pub trait AccountsAdmin: Send + Sync + 'static {
    /// Every account as the engine sees it (`GET /internal/accounts` on the engine).
    fn accounts(&self) -> BoxFuture<'_, Result<Vec<AccountView>, ApiError>>;

    /// Top up or set an account's credits (`POST /internal/accounts/{id}/credits` on the
    /// engine): its balance after, in milli-credits (`None`: unmetered). A backend that keeps
    /// no credits answers 404.
    fn change_credits<'a>(
        &'a self,
        account: &'a str,
        change: CreditChange,
    ) -> BoxFuture<'a, Result<Option<i64>, ApiError>> {
        let _ = (account, change);
        Box::pin(futures::future::ready(Err(no_credits())))
    }
}

fn no_credits() -> ApiError {
    ApiError::new(ErrorKind::NotFound, "This API keeps no account credits.")
}

/// What the router needs, with the gate `G` that lets callers in.
pub struct ApiState<G> {
    pub backend: Arc<dyn ChatBackend>,
    /// The backend's accounts: `/internal/accounts` and the gauges of `/metrics` (none: the
    /// internal account routes answer 404, and `/metrics` has no account gauges).
    pub accounts: Option<Arc<dyn AccountsAdmin>>,
    /// Who may call, within which limits, and what an answer costs.
    pub gate: Arc<G>,
    pub max_body_bytes: usize,
    /// Cancelled when shutdown begins: `/health` then says `draining`.
    pub draining: CancellationToken,
    /// This process's metrics: counted per request, served on `GET /metrics`.
    pub metrics: Option<Arc<Metrics>>,
    /// Put each answer's metering (accounts, credits) on its usage chunk: only for a caller
    /// that is Drawbridge's own gateway (the engine's internal API). Whether the
    /// [`TENANT_HEADER`] is taken is the gate's decision ([`Gate::trusts_tenant`]).
    pub expose_metering: bool,
    /// The request header carrying a conversation key (`engine.affinity.header`), passed to
    /// the backend as [`ChatContext::session`].
    pub session_header: Option<axum::http::HeaderName>,
    /// Where `POST /v1/responses` keeps its responses for `previous_response_id` and
    /// `GET /v1/responses/{id}` (none: nothing is kept).
    pub responses: Option<Arc<dyn dialect::responses::ResponseStorage>>,
}

impl<G> Clone for ApiState<G> {
    fn clone(&self) -> Self {
        ApiState {
            backend: Arc::clone(&self.backend),
            accounts: self.accounts.clone(),
            gate: Arc::clone(&self.gate),
            max_body_bytes: self.max_body_bytes,
            draining: self.draining.clone(),
            metrics: self.metrics.clone(),
            expose_metering: self.expose_metering,
            session_header: self.session_header.clone(),
            responses: self.responses.clone(),
        }
    }
}

impl<G: Gate> ApiState<G> {
    /// The state of a router behind `gate`, without metrics or metering.
    pub fn new(
        backend: Arc<dyn ChatBackend>,
        gate: Arc<G>,
        max_body_bytes: usize,
        draining: CancellationToken,
    ) -> Self {
        ApiState {
            backend,
            accounts: None,
            gate,
            max_body_bytes,
            draining,
            metrics: None,
            expose_metering: false,
            session_header: None,
            responses: None,
        }
    }

    /// Keep the Responses API's responses in `storage`.
    pub fn with_responses(mut self, storage: Arc<dyn dialect::responses::ResponseStorage>) -> Self {
        self.responses = Some(storage);
        self
    }

    /// Read conversation keys from the header `name` (session affinity).
    pub fn with_session_header(mut self, name: axum::http::HeaderName) -> Self {
        self.session_header = Some(name);
        self
    }

    /// Serve the accounts of `accounts` (`/internal/accounts`, the `/metrics` gauges).
    pub fn with_accounts(mut self, accounts: Arc<dyn AccountsAdmin>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// `/v1/chat/completions`, `/v1/completions`, `/v1/messages` (Anthropic's, with
/// `count_tokens`), `/v1/responses` (and `GET /v1/responses/{id}`), `/v1/embeddings` and
/// `/v1/images/generations` (passed through to a provider account), `/v1/models`,
/// `/health`, `/metrics` (when the state has metrics); anything else is an OpenAI-shaped
/// 404.
pub fn openai_router<G: Gate>(state: ApiState<G>) -> Router {
    let mut router = Router::new()
        .route(
            "/v1/chat/completions",
            dialect_route::<G, _>(dialect::openai::OpenAiChat),
        )
        .route(
            "/v1/completions",
            dialect_route::<G, _>(dialect::completions::Completions),
        )
        .route(
            "/v1/messages",
            dialect_route::<G, _>(dialect::anthropic::AnthropicMessages),
        )
        .route(
            "/v1/messages/count_tokens",
            post(dialect::anthropic::count_tokens::<G>),
        )
        .route(
            "/v1/responses",
            dialect_route::<G, _>(dialect::responses::Responses::new(state.responses.clone())),
        )
        .route("/v1/responses/{id}", get(dialect::responses::retrieve::<G>))
        .route("/v1/embeddings", forward_route::<G>(Endpoint::Embeddings))
        .route(
            "/v1/images/generations",
            forward_route::<G>(Endpoint::Images),
        )
        .route("/v1/models", get(list_models::<G>))
        .route("/health", get(health::<G>));
    if state.metrics.is_some() {
        router = router.route("/metrics", get(metrics::<G>));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The engine's internal API: [`openai_router`] plus `GET /internal/accounts` (behind the same
/// channel keys), which the gateway's admin API reads. Not for the public side: a client key
/// must not see the accounts.
pub fn internal_router<G: Gate>(state: ApiState<G>) -> Router {
    Router::new()
        .route("/internal/accounts", get(list_accounts::<G>))
        .route("/internal/accounts/{id}/credits", post(change_credits::<G>))
        .with_state(state.clone())
        .merge(openai_router(state))
}

/// A `POST` route answering in dialect `D`.
pub fn dialect_route<G: Gate, D: dialect::Dialect>(
    dialect: D,
) -> axum::routing::MethodRouter<ApiState<G>> {
    let dialect = Arc::new(dialect);
    post(move |state: State<ApiState<G>>, request: Request| {
        dialect::endpoint(state, Arc::clone(&dialect), request)
    })
}

/// A `POST` route passed through to a provider account ([`passthrough`]).
fn forward_route<G: Gate>(endpoint: Endpoint) -> axum::routing::MethodRouter<ApiState<G>> {
    post(move |state: State<ApiState<G>>, request: Request| {
        passthrough::endpoint(state, endpoint, request)
    })
}

pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.is_ascii())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

pub(crate) fn with_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// `response` with `headers` added (the gate's rate-limit headers).
pub(crate) fn with_headers(mut response: Response, headers: HeaderMap) -> Response {
    response.headers_mut().extend(headers);
    response
}

/// How much of an over-long body is read and thrown away before answering 413, so the client
/// finishes sending and then reads the answer (a server that answers and closes mid-upload makes
/// clients see a broken connection instead of the 413).
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
/// How long reading a request body may take in all.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use futures::StreamExt;
    let mut frames = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let read = async {
        while let Some(frame) = frames.next().await {
            let frame = frame.map_err(|err| {
                ApiError::invalid_request(format!("Could not read the request body: {err}"))
            })?;
            seen = seen.saturating_add(frame.len());
            if seen > limit {
                buf.clear(); // over the limit: drain, keep nothing
                if seen > DRAIN_LIMIT {
                    break;
                }
            } else {
                buf.extend_from_slice(&frame);
            }
        }
        Ok::<_, ApiError>(())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ApiError::new(
                ErrorKind::Timeout,
                "The request body took too long to arrive.",
            ));
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("The request body is larger than the limit of {limit} bytes."),
        ));
    }
    Ok(buf.freeze())
}

async fn list_models<G: Gate>(State(state): State<ApiState<G>>, headers: HeaderMap) -> Response {
    let entry = match state.gate.enter(&headers).await {
        Ok(entry) => entry,
        Err(Refusal { error, headers }) => return with_headers(error.into_response(), headers),
    };
    let result = async {
        let mut ids = state.backend.models().await?;
        ids.sort();
        ids.dedup();
        let ids = state.gate.visible_models(&entry, ids);
        Ok::<_, ApiError>(axum::Json(ModelList::new(ids, 0)))
    }
    .await;
    with_headers(result.into_response(), entry.headers)
}

/// The accounts behind this API, for operators (the gateway's `/admin/accounts` reads the
/// engine's through it). Behind the same keys as the rest of the API.
async fn list_accounts<G: Gate>(State(state): State<ApiState<G>>, headers: HeaderMap) -> Response {
    let result = async {
        state.gate.enter(&headers).await.map_err(|r| r.error)?;
        let accounts = state
            .accounts
            .as_ref()
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "This API lists no accounts."))?
            .accounts()
            .await?;
        Ok::<_, ApiError>(axum::Json(serde_json::json!({ "accounts": accounts })))
    }
    .await;
    result.into_response()
}

/// The largest body `POST /internal/accounts/{id}/credits` reads.
const MAX_CREDITS_BODY: usize = 4096;

/// `POST /internal/accounts/{id}/credits` (`{"add": N}`, `{"set": N}`, `{"set": null}`, in
/// milli-credits): `{"account", "credits"}` after the change. Behind the same keys as the
/// rest of the internal API.
async fn change_credits<G: Gate>(
    State(state): State<ApiState<G>>,
    axum::extract::Path(account): axum::extract::Path<String>,
    request: Request,
) -> Response {
    let result = async {
        state
            .gate
            .enter(request.headers())
            .await
            .map_err(|r| r.error)?;
        let body = read_body(request.into_body(), MAX_CREDITS_BODY).await?;
        let change = CreditChange::from_json(&body)?;
        let accounts = state.accounts.as_ref().ok_or_else(no_credits)?;
        let credits = accounts.change_credits(&account, change).await?;
        Ok::<_, ApiError>(axum::Json(
            serde_json::json!({ "account": account, "credits": credits }),
        ))
    }
    .await;
    result.into_response()
}

/// `GET /metrics`: this process's counters and, read now from the backend, the per-account
/// gauges. No authentication, like `/health`: it names no key and no secret.
async fn metrics<G>(State(state): State<ApiState<G>>) -> Response {
    let Some(metrics) = &state.metrics else {
        return ApiError::new(ErrorKind::NotFound, "Metrics are off.").into_response();
    };
    if let Some(accounts) = &state.accounts {
        refresh_account_gauges(accounts.as_ref(), metrics).await;
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            drawbridge_telemetry::metrics::CONTENT_TYPE,
        )],
        metrics.render(),
    )
        .into_response()
}

/// Set `metrics`' per-account gauges from `accounts` now, within [`HEALTH_TIMEOUT`]; with no
/// answer in time, the gauges are cleared rather than left stale.
pub async fn refresh_account_gauges(accounts: &dyn AccountsAdmin, metrics: &Metrics) {
    match tokio::time::timeout(HEALTH_TIMEOUT, accounts.accounts()).await {
        Ok(Ok(accounts)) => metrics.set_accounts(accounts),
        Ok(Err(error)) => {
            tracing::debug!(%error, "no account snapshot for the metrics");
            metrics.set_accounts(Vec::new());
        }
        Err(_) => {
            tracing::debug!("the account snapshot for the metrics timed out");
            metrics.set_accounts(Vec::new());
        }
    }
}

async fn health<G>(State(state): State<ApiState<G>>) -> Response {
    let mut report = state.backend.health().await;
    if state.draining.is_cancelled() {
        report.status = HealthStatus::Draining;
    }
    let status = if report.status.is_serving() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

async fn not_found(request: Request) -> Response {
    ApiError::new(
        ErrorKind::NotFound,
        format!(
            "Unknown request URL: {} {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    let mut response = ApiError::invalid_request(format!(
        "Method {} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
    .into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// How long `/health` may take before a backend counts as unhealthy (used by backends that
/// ask another process).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
