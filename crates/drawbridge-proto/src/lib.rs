//! The engine↔worker gRPC service. Only this crate depends on prost; the mapping between
//! [`ApiError`] and the service's error shapes lives here and nowhere else.

use std::time::Duration;

use drawbridge_types::{ApiError, ErrorKind};

pub mod convert;

#[expect(
    clippy::allow_attributes,
    reason = "tonic's generated code uses #[allow]"
)]
pub mod worker {
    tonic::include_proto!("drawbridge.worker.v1");
}

pub use worker::worker_client::WorkerClient;
pub use worker::worker_server::{Worker, WorkerServer};

/// An error as a `Prompt` stream event.
pub fn error_info(error: &ApiError) -> worker::ErrorInfo {
    worker::ErrorInfo {
        code: error.kind.code().to_owned(),
        message: error.message.clone(),
        retry_after_ms: error.retry_after.map_or(0, |d| d.as_millis() as u64),
    }
}

/// A `Prompt` stream error event back to an error. An unknown code is an upstream failure.
pub fn from_error_info(info: worker::ErrorInfo) -> ApiError {
    let kind = ErrorKind::from_code(&info.code).unwrap_or(ErrorKind::Upstream);
    let mut error = ApiError::new(kind, info.message);
    if info.retry_after_ms > 0 {
        error = error.with_retry_after(Duration::from_millis(info.retry_after_ms));
    }
    error
}

/// An error as a gRPC status (for the unary calls).
pub fn to_status(error: &ApiError) -> tonic::Status {
    let code = match error.kind {
        ErrorKind::InvalidRequest | ErrorKind::PayloadTooLarge => tonic::Code::InvalidArgument,
        ErrorKind::InvalidApiKey => tonic::Code::Unauthenticated,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::NotFound | ErrorKind::ModelNotFound => tonic::Code::NotFound,
        ErrorKind::RateLimited
        | ErrorKind::InsufficientQuota
        | ErrorKind::AccountQuotaExhausted
        | ErrorKind::AccountRateLimited
        | ErrorKind::NoCapacity => tonic::Code::ResourceExhausted,
        ErrorKind::Timeout => tonic::Code::DeadlineExceeded,
        ErrorKind::Unavailable | ErrorKind::Upstream => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    };
    tonic::Status::new(code, format!("{}: {}", error.kind.code(), error.message))
}

/// A gRPC status (a failed call, or a broken connection) as an error. A worker that cannot be
/// reached or breaks off is an upstream failure another worker may not have.
pub fn from_status(status: &tonic::Status) -> ApiError {
    let kind = match status.code() {
        tonic::Code::InvalidArgument => ErrorKind::InvalidRequest,
        tonic::Code::NotFound => ErrorKind::ModelNotFound,
        tonic::Code::ResourceExhausted => ErrorKind::NoCapacity,
        tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
        tonic::Code::Internal => ErrorKind::Internal,
        _ => ErrorKind::Upstream,
    };
    let message = status.message();
    // A status made by `to_status` carries the precise kind in front of its message.
    if let Some((code, rest)) = message.split_once(": ")
        && let Some(precise) = ErrorKind::from_code(code)
    {
        return ApiError::new(precise, rest);
    }
    ApiError::new(
        kind,
        format!("worker call failed ({:?}): {message}", status.code()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_both_wires() {
        for kind in ErrorKind::ALL {
            let error = ApiError::new(kind, "boom").with_retry_after(Duration::from_millis(1500));
            assert_eq!(from_error_info(error_info(&error)), error);
            let back = from_status(&to_status(&error));
            assert_eq!((back.kind, back.message.as_str()), (kind, "boom"));
        }
    }

    #[test]
    fn a_transport_failure_is_upstream() {
        let status = tonic::Status::unavailable("connection refused");
        let error = from_status(&status);
        assert_eq!(error.kind, ErrorKind::Upstream);
        assert!(error.retryable());
    }
}
