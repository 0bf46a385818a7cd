//! API keys through the admin API: create, list, read, change limits, revoke. Keys of the
//! config (`gateway.api_keys`) are listed and read, never changed here.

use drawbridge_state::{ApiKeyRecord, KeyLimits, Quota, QuotaUnit};
use drawbridge_types::{ApiError, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Admin, store_error};
use crate::secret;

fn secs(ms: u64) -> u64 {
    ms / 1000
}

/// A key as the admin API shows it: never its secret or its hash.
#[derive(Debug, Serialize)]
pub(super) struct KeyView {
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
pub(super) struct KeyRequest {
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

fn render(view: &KeyView) -> Result<Value, ApiError> {
    serde_json::to_value(view)
        .map_err(|e| ApiError::internal(format!("cannot render the key: {e}")))
}

/// Make a key: its view with its secret under `key` (in this answer and nowhere else, ever).
pub(super) async fn create(admin: &Admin, request: KeyRequest) -> Result<Value, ApiError> {
    let name = request.name.clone().unwrap_or_default();
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::invalid_request(format!(
            "A key needs a name of 1 to {MAX_NAME} characters."
        ))
        .with_param("name"));
    }
    let now = admin.now_ms();
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
    let mut body = render(&KeyView::of(&record, default_rpm(admin), now))?;
    body["key"] = Value::String(new.secret);
    Ok(body)
}

fn default_rpm(admin: &Admin) -> u32 {
    admin.settings.now().default_rpm
}

/// Every key: the config's (by name), then those made with this API.
pub(super) async fn list(admin: &Admin) -> Result<Vec<KeyView>, ApiError> {
    let now = admin.now_ms();
    let settings = admin.settings.now();
    let mut statics: Vec<_> = settings.static_rpm.iter().collect();
    statics.sort();
    let mut data: Vec<KeyView> = statics
        .into_iter()
        .map(|(name, rpm)| KeyView::of_static(name, *rpm, settings.default_rpm))
        .collect();
    let records = admin.stores.keys.keys().await.map_err(store_error)?;
    data.extend(
        records
            .iter()
            .map(|r| KeyView::of(r, settings.default_rpm, now)),
    );
    Ok(data)
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

/// One key, with what it has spent (a key of the config: its name and limit).
pub(super) async fn get(admin: &Admin, id: &str) -> Result<KeyView, ApiError> {
    let default_rpm = default_rpm(admin);
    if let Some(name) = drawbridge_http::Caller::static_name(id)
        && let Some(rpm) = admin.settings.now().static_rpm.get(name)
    {
        return Ok(KeyView::of_static(name, *rpm, default_rpm));
    }
    let record = stored_key(admin, id).await?;
    let spent = admin.stores.usage.spent(id).await.map_err(store_error)?;
    let mut view = KeyView::of(&record, default_rpm, admin.now_ms());
    view.spent = Some(SpentView {
        requests: spent.requests,
        tokens: spent.tokens,
        credits: spent.credits,
    });
    Ok(view)
}

/// Change a key's limits or expiry (never its name).
pub(super) async fn update(
    admin: &Admin,
    id: &str,
    request: KeyRequest,
) -> Result<KeyView, ApiError> {
    if request.name.is_some() {
        return Err(ApiError::invalid_request("A key's name cannot be changed.").with_param("name"));
    }
    let now = admin.now_ms();
    let record = stored_key(admin, id).await?;
    let limits = request.limits(Some(&record.limits))?;
    let expires = match request.expires_at_ms(now)? {
        Some(at) => Some(at),
        None => record.expires_at_ms,
    };
    let updated = admin
        .stores
        .keys
        .update_key(id, &limits, expires)
        .await
        .map_err(store_error)?
        .ok_or_else(|| no_such_key(id))?;
    tracing::info!(key_id = id, "API key limits changed");
    Ok(KeyView::of(&updated, default_rpm(admin), now))
}

/// Revoke a key: refused from the next request on, on every node.
pub(super) async fn revoke(admin: &Admin, id: &str) -> Result<Value, ApiError> {
    stored_key(admin, id).await?;
    let now = admin.now_ms();
    let record = admin
        .stores
        .keys
        .revoke_key(id, now)
        .await
        .map_err(store_error)?
        .ok_or_else(|| no_such_key(id))?;
    tracing::info!(key_id = id, "API key revoked");
    let mut body = render(&KeyView::of(&record, default_rpm(admin), now))?;
    body["revoked"] = Value::Bool(true);
    Ok(body)
}
