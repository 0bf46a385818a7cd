//! The errors the engine gives its clients when no account can answer: built here, once.

use std::time::Duration;

use drawbridge_core::schedule::Shortage;
use drawbridge_types::{ApiError, ErrorKind};

/// The request's deadline (`engine.request_timeout`) has passed (504).
pub(crate) fn deadline_passed() -> ApiError {
    ApiError::new(
        ErrorKind::Timeout,
        "The request took longer than the engine's request timeout.",
    )
}

/// Every account for `model` has spent its credits (429 `insufficient_quota`).
fn spent(model: &str) -> ApiError {
    ApiError::new(
        ErrorKind::InsufficientQuota,
        format!("Every account that serves '{model}' has used up its credits."),
    )
}

/// Every account for `model` is resting after rate limits (429 with `Retry-After`).
fn resting(model: &str, retry_after: Duration) -> ApiError {
    ApiError::new(
        ErrorKind::RateLimited,
        format!("Every account that serves '{model}' is rate limited right now."),
    )
    .with_retry_after(retry_after)
}

/// Whether `error` is one account's limit (another account may serve).
pub(crate) fn account_limit(error: &ApiError) -> bool {
    matches!(
        error.kind,
        ErrorKind::AccountQuotaExhausted | ErrorKind::AccountRateLimited
    )
}

/// An error as the client gets it once no account is left: one account's limit becomes the
/// model's (429 `insufficient_quota`, or 429 `rate_limit_exceeded` with `Retry-After`).
pub(crate) fn for_client(error: ApiError, model: &str) -> ApiError {
    match error.kind {
        ErrorKind::AccountQuotaExhausted => spent(model),
        ErrorKind::AccountRateLimited => {
            resting(model, error.retry_after.unwrap_or(Duration::from_secs(1)))
        }
        _ => error,
    }
}

/// Why no account can take a request for `model`, as the client's error. `serving_any`: some
/// worker is reachable and serves some model (else a missing model is an outage, not a 404).
pub(crate) fn shortage(shortage: Shortage, model: &str, serving_any: bool) -> ApiError {
    match shortage {
        Shortage::NoModel => {
            if serving_any {
                ApiError::model_not_found(model)
            } else {
                ApiError::unavailable("No worker is reachable right now.")
            }
        }
        Shortage::AllTried => no_account_left(),
        Shortage::CreditsSpent => spent(model),
        Shortage::CoolingDown { retry_after } => resting(model, retry_after),
        Shortage::Unavailable => {
            ApiError::unavailable(format!("No healthy account can serve '{model}' right now."))
                .with_retry_after(Duration::from_secs(1))
        }
    }
}

/// The rotation budget is spent, or every account was tried (503).
/// A request with images for a model no account of which takes them (ACP agents take text).
pub(crate) fn no_images(model: &str) -> ApiError {
    ApiError::invalid_request(format!(
        "The model '{model}' does not take images: send text, or use a model a provider \
         account serves."
    ))
    .with_param("messages")
}

pub(crate) fn no_account_left() -> ApiError {
    ApiError::unavailable("No account is left to try.")
}

/// The engine is draining (503).
pub(crate) fn shutting_down() -> ApiError {
    ApiError::unavailable("The engine is shutting down.")
}

/// An admin change names an account no worker serves (404).
pub(crate) fn unknown_account(account: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("No worker serves an account '{account}'."),
    )
    .with_param("account")
}
