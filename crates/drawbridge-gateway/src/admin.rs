//! The admin API (`/admin/*`): API keys, accounts, usage, a JSON metrics snapshot. Behind
//! `admin.auth_token` (or `DRAWBRIDGE_ADMIN_TOKEN`) as a bearer token, compared in constant
//! time; with no token configured the whole API is off (404), never open.
//!
//! Handlers are thin: check the token, parse, call the store or the backend, render. Times are
//! Unix seconds, as in the OpenAI API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use drawbridge_http::ChatBackend;
use drawbridge_state::{
    ApiKeyRecord, KeyLimits, Quota, QuotaUnit, StateError, UsageFilter, UsageRow,
};
use drawbridge_telemetry::Metrics;
use drawbridge_types::openai::parse_json;
use drawbridge_types::{ApiError, CreditChange, ErrorKind};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::gate::{LiveSettings, Stores, now_ms};
use crate::secret;

/// What the admin handlers share.
pub struct Admin {
    settings: Arc<LiveSettings>,
    stores: Stores,
    backend: Arc<dyn ChatBackend>,
    metrics: Arc<Metrics>,
}

impl Admin {
    pub fn new(
        settings: Arc<LiveSettings>,
        stores: Stores,
        backend: Arc<dyn ChatBackend>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Admin {
            settings,
            stores,
            backend,
            metrics,
        }
    }

    /// The config's keys (listed, never revocable here): name and own rate limit.
    fn static_keys(&self) -> Vec<(String, Option<u32>)> {
        let mut keys: Vec<_> = self
            .settings
            .now()
            .static_rpm
            .iter()
            .map(|(name, rpm)| (name.clone(), *rpm))
            .collect();
        keys.sort();
        keys
    }

    fn default_rpm(&self) -> u32 {
        self.settings.now().default_rpm
    }

    /// Check the admin token.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let settings = self.settings.now();
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
}

/// `/admin/keys`, `/admin/keys/{id}`, `/admin/accounts`, `/admin/usage`, `/admin/metrics`.
pub fn router(admin: Arc<Admin>) -> Router {
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
        .with_state(admin)
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

fn secs(ms: u64) -> u64 {
    ms / 1000
}

/// A key as the admin API shows it: never its secret or its hash.
#[derive(Debug, Serialize)]
struct KeyView {
    id: String,
    object: &'static str,
    name: String,
    /// `admin` (made with this API) or `config` (`gateway.api_keys`).
    source: &'static str,
    /// The first characters of the secret (keys made with this API only).
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    /// `active`, `revoked` or `expired`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<u64>,
    /// Requests per minute in force (0: unlimited).
    rpm: u32,
    quota: Option<Quota>,
    /// Allowed models; empty: all.
    models: Vec<String>,
    /// What the key has used so far (`GET /admin/keys/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    spent: Option<SpentView>,
}

#[derive(Debug, Serialize)]
struct SpentView {
    requests: u64,
    tokens: u64,
    credits: f64,
}

impl KeyView {
    fn of(record: &ApiKeyRecord, default_rpm: u32, now: u64) -> Self {
        let status = if record.revoked_at_ms.is_some() {
            "revoked"
        } else if record.expires_at_ms.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        KeyView {
            id: record.id.clone(),
            object: "api_key",
            name: record.name.clone(),
            source: "admin",
            prefix: Some(record.prefix.clone()),
            status,
            created_at: Some(secs(record.created_at_ms)),
            last_used_at: record.last_used_at_ms.map(secs),
            expires_at: record.expires_at_ms.map(secs),
            revoked_at: record.revoked_at_ms.map(secs),
            rpm: record.limits.rpm.unwrap_or(default_rpm),
            quota: record.limits.quota.clone(),
            models: record.limits.models.clone(),
            spent: None,
        }
    }

    fn of_static(name: &str, rpm: Option<u32>, default_rpm: u32) -> Self {
        KeyView {
            id: drawbridge_http::Caller::from_static(name).key_id,
            object: "api_key",
            name: name.to_owned(),
            source: "config",
            prefix: None,
            status: "active",
            created_at: None,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
            rpm: rpm.unwrap_or(default_rpm),
            quota: None,
            models: Vec::new(),
            spent: None,
        }
    }
}

/// `POST /admin/keys` and `PATCH /admin/keys/{id}` bodies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    name: Option<String>,
    /// Requests per minute; 0: unlimited; absent: the gateway's default.
    rpm: Option<u32>,
    quota: Option<QuotaRequest>,
    models: Option<Vec<String>>,
    /// Unix seconds.
    expires_at: Option<u64>,
    /// A duration from now, e.g. `30d`, `12h` (instead of `expires_at`).
    expires_in: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaRequest {
    unit: QuotaUnit,
    limit: f64,
}

const MAX_NAME: usize = 100;

impl KeyRequest {
    fn limits(&self, current: Option<&KeyLimits>) -> Result<KeyLimits, ApiError> {
        let mut limits = current.cloned().unwrap_or_default();
        if let Some(rpm) = self.rpm {
            limits.rpm = Some(rpm);
        }
        if let Some(quota) = &self.quota {
            if !(quota.limit.is_finite() && quota.limit > 0.0) {
                return Err(ApiError::invalid_request(
                    "The quota's limit must be a number above 0.",
                )
                .with_param("quota.limit"));
            }
            limits.quota = Some(Quota {
                unit: quota.unit,
                limit: quota.limit,
            });
        }
        if let Some(models) = &self.models {
            if models.iter().any(|m| m.trim().is_empty()) {
                return Err(ApiError::invalid_request("A model name must not be empty.")
                    .with_param("models"));
            }
            limits.models = models.clone();
        }
        Ok(limits)
    }

    /// The expiry in ms, if the request sets one.
    fn expires_at_ms(&self, now: u64) -> Result<Option<u64>, ApiError> {
        match (&self.expires_at, &self.expires_in) {
            (Some(_), Some(_)) => Err(ApiError::invalid_request(
                "Set expires_at or expires_in, not both.",
            )),
            (Some(at), None) => {
                let at = at.saturating_mul(1000);
                if at <= now {
                    return Err(ApiError::invalid_request("expires_at is in the past.")
                        .with_param("expires_at"));
                }
                Ok(Some(at))
            }
            (None, Some(text)) => {
                let after = humantime::parse_duration(text).map_err(|e| {
                    ApiError::invalid_request(format!(
                        "expires_in must be a duration like 30d or 12h: {e}"
                    ))
                    .with_param("expires_in")
                })?;
                if after.is_zero() {
                    return Err(ApiError::invalid_request("expires_in must be above 0.")
                        .with_param("expires_in"));
                }
                Ok(Some(now.saturating_add(after.as_millis() as u64)))
            }
            (None, None) => Ok(None),
        }
    }
}

fn no_such_key(id: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("No API key with id '{id}'."))
}

fn json(status: StatusCode, body: impl Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn create_key(State(admin): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        admin.authorize(&headers)?;
        let request: KeyRequest = parse_json(&body)?;
        let name = request.name.clone().unwrap_or_default();
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(ApiError::invalid_request(format!(
                "A key needs a name of 1 to {MAX_NAME} characters."
            ))
            .with_param("name"));
        }
        let now = now_ms();
        let limits = request.limits(None)?;
        let expires_at_ms = request.expires_at_ms(now)?;
        let new = secret::generate()?;
        let record = ApiKeyRecord {
            id: secret::new_id()?,
            name: name.to_owned(),
            prefix: new.prefix.clone(),
            hash: new.hash.clone(),
            created_at_ms: now,
            expires_at_ms,
            revoked_at_ms: None,
            last_used_at_ms: None,
            limits,
        };
        admin
            .stores
            .keys
            .create_key(&record)
            .await
            .map_err(store_error)?;
        tracing::info!(key_id = record.id, name = record.name, "API key created");
        let view = KeyView::of(&record, admin.default_rpm(), now);
        // The secret is in this answer and nowhere else, ever.
        let mut body = serde_json::to_value(&view)
            .map_err(|e| ApiError::internal(format!("cannot render the key: {e}")))?;
        body["key"] = serde_json::Value::String(new.secret);
        Ok(json(StatusCode::CREATED, body))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn list_keys(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let result = async {
        admin.authorize(&headers)?;
        let now = now_ms();
        let mut data: Vec<KeyView> = admin
            .static_keys()
            .iter()
            .map(|(name, rpm)| KeyView::of_static(name, *rpm, admin.default_rpm()))
            .collect();
        let records = admin.stores.keys.keys().await.map_err(store_error)?;
        data.extend(
            records
                .iter()
                .map(|r| KeyView::of(r, admin.default_rpm(), now)),
        );
        Ok::<_, ApiError>(json(
            StatusCode::OK,
            serde_json::json!({ "object": "list", "data": data }),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A key made with the admin API; 400 for a key of the config, 404 for no key.
async fn stored_key(admin: &Admin, id: &str) -> Result<ApiKeyRecord, ApiError> {
    if let Some(name) = drawbridge_http::Caller::static_name(id) {
        if admin.settings.now().static_rpm.contains_key(name) {
            return Err(ApiError::invalid_request(
                "This key is defined in the config (gateway.api_keys): change it there.",
            ));
        }
        return Err(no_such_key(id));
    }
    admin
        .stores
        .keys
        .key(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| no_such_key(id))
}

async fn get_key(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        admin.authorize(&headers)?;
        if let Some(name) = drawbridge_http::Caller::static_name(&id)
            && let Some(rpm) = admin.settings.now().static_rpm.get(name)
        {
            return Ok(json(
                StatusCode::OK,
                KeyView::of_static(name, *rpm, admin.default_rpm()),
            ));
        }
        let record = stored_key(&admin, &id).await?;
        let spent = admin.stores.usage.spent(&id).await.map_err(store_error)?;
        let mut view = KeyView::of(&record, admin.default_rpm(), now_ms());
        view.spent = Some(SpentView {
            requests: spent.requests,
            tokens: spent.tokens,
            credits: spent.credits,
        });
        Ok::<_, ApiError>(json(StatusCode::OK, view))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn update_key(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let result = async {
        admin.authorize(&headers)?;
        let request: KeyRequest = parse_json(&body)?;
        if request.name.is_some() {
            return Err(
                ApiError::invalid_request("A key's name cannot be changed.").with_param("name")
            );
        }
        let now = now_ms();
        let record = stored_key(&admin, &id).await?;
        let limits = request.limits(Some(&record.limits))?;
        let expires = match request.expires_at_ms(now)? {
            Some(at) => Some(at),
            None => record.expires_at_ms,
        };
        let updated = admin
            .stores
            .keys
            .update_key(&id, &limits, expires)
            .await
            .map_err(store_error)?
            .ok_or_else(|| no_such_key(&id))?;
        tracing::info!(key_id = id, "API key limits changed");
        Ok::<_, ApiError>(json(
            StatusCode::OK,
            KeyView::of(&updated, admin.default_rpm(), now),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn revoke_key(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        admin.authorize(&headers)?;
        stored_key(&admin, &id).await?;
        let now = now_ms();
        let record = admin
            .stores
            .keys
            .revoke_key(&id, now)
            .await
            .map_err(store_error)?
            .ok_or_else(|| no_such_key(&id))?;
        tracing::info!(key_id = id, "API key revoked");
        let mut body = serde_json::to_value(KeyView::of(&record, admin.default_rpm(), now))
            .map_err(|e| ApiError::internal(format!("cannot render the key: {e}")))?;
        body["revoked"] = serde_json::Value::Bool(true);
        Ok::<_, ApiError>(json(StatusCode::OK, body))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn list_accounts(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let result = async {
        admin.authorize(&headers)?;
        let accounts = admin.backend.accounts().await?;
        Ok::<_, ApiError>(json(
            StatusCode::OK,
            serde_json::json!({ "object": "list", "data": accounts }),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /admin/accounts/{id}/credits`: `{"add": N}` or `{"set": N}` (milli-credits: 1000 is
/// one Kiro credit), or `{"set": null}` to stop tracking the account's credits.
async fn change_credits(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Path(account): Path<String>,
    body: Bytes,
) -> Response {
    let result = async {
        admin.authorize(&headers)?;
        let change = CreditChange::from_json(&body)?;
        let credits = admin.backend.change_credits(&account, change).await?;
        tracing::info!(account, ?credits, "account credits changed");
        Ok::<_, ApiError>(json(
            StatusCode::OK,
            serde_json::json!({ "account": account, "credits": credits }),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /admin/usage` query: filters, and what to group by.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    key: Option<String>,
    account: Option<String>,
    model: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC); default 30 days before `to`.
    from: Option<String>,
    /// Last day, inclusive; default today.
    to: Option<String>,
    /// Comma-separated subset of `day,key,account,model` (default: all four: the ledger's rows).
    group_by: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct UsageOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    credits: f64,
    /// Requests whose token counts are estimates.
    estimated_requests: u64,
}

impl UsageOut {
    fn add(&mut self, row: &UsageRow) {
        self.requests += row.requests;
        self.prompt_tokens += row.prompt_tokens;
        self.completion_tokens += row.completion_tokens;
        self.total_tokens += row.prompt_tokens + row.completion_tokens;
        self.credits += row.credits;
        self.estimated_requests += row.estimated_requests;
    }
}

fn valid_day(param: &str, day: &str) -> Result<(), ApiError> {
    if drawbridge_core::day::parse_day(day).is_some() {
        Ok(())
    } else {
        Err(
            ApiError::invalid_request(format!("{param} must be a day like 2026-12-01."))
                .with_param(param),
        )
    }
}

async fn usage(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        admin.authorize(&headers)?;
        let query: UsageQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| {
                ApiError::invalid_request(format!(
                    "Bad query ({e}): use key, account, model, from, to, group_by."
                ))
            })?;
        for (param, day) in [("from", &query.from), ("to", &query.to)] {
            if let Some(day) = day {
                valid_day(param, day)?;
            }
        }
        let groups: Vec<String> = query
            .group_by
            .as_deref()
            .unwrap_or("day,key,account,model")
            .split(',')
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect();
        if let Some(bad) = groups
            .iter()
            .find(|g| !matches!(g.as_str(), "day" | "key" | "account" | "model"))
        {
            return Err(ApiError::invalid_request(format!(
                "Cannot group by '{bad}': use day, key, account, model."
            ))
            .with_param("group_by"));
        }
        let filter = UsageFilter {
            key_id: query.key.clone(),
            account: query.account.clone(),
            model: query.model.clone(),
            from_day: query.from.clone(),
            to_day: query.to.clone(),
        };
        let rows = admin
            .stores
            .usage
            .usage(&filter)
            .await
            .map_err(store_error)?;
        let by = |g: &str| groups.iter().any(|x| x == g);
        let mut grouped: BTreeMap<(String, String, String, String), UsageOut> = BTreeMap::new();
        let mut total = UsageOut::default();
        for row in &rows {
            let pick = |on: bool, v: &String| if on { v.clone() } else { String::new() };
            let group = (
                pick(by("day"), &row.day),
                pick(by("key"), &row.key_id),
                pick(by("account"), &row.account),
                pick(by("model"), &row.model),
            );
            let out = grouped.entry(group.clone()).or_insert_with(|| UsageOut {
                day: by("day").then_some(group.0),
                key: by("key").then_some(group.1),
                account: by("account").then_some(group.2),
                model: by("model").then_some(group.3),
                ..UsageOut::default()
            });
            out.add(row);
            total.add(row);
        }
        Ok::<_, ApiError>(json(
            StatusCode::OK,
            serde_json::json!({
                "object": "list",
                "data": grouped.into_values().collect::<Vec<_>>(),
                "total": total,
            }),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn metrics_snapshot(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let result = async {
        admin.authorize(&headers)?;
        drawbridge_http::refresh_account_gauges(admin.backend.as_ref(), &admin.metrics).await;
        Ok::<_, ApiError>(json(StatusCode::OK, admin.metrics.snapshot()))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
