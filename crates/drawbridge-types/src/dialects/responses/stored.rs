//! The whole answer as kept between requests: a stored response, and the errors for one that
//! is not there.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorKind};

/// What a stored response keeps: the whole conversation's input items up to it (the previous
/// responses' inputs and outputs, then its own request's input), and the `response` object
/// itself (whose `output` continues the conversation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub input: Vec<Value>,
    pub response: Value,
}

impl StoredResponse {
    /// Read a stored response back; a stored value that does not fit is an internal error.
    pub fn from_json(text: &str) -> Result<Self, ApiError> {
        serde_json::from_str(text)
            .map_err(|err| ApiError::internal(format!("A stored response is unreadable: {err}")))
    }

    /// The stored JSON text.
    pub fn to_json(&self) -> String {
        // Plain values: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The conversation after this response: its input items, then its output items.
    pub(super) fn conversation(&self) -> Vec<Value> {
        let mut items = self.input.clone();
        if let Some(Value::Array(output)) = self.response.get("output") {
            items.extend(output.iter().cloned());
        }
        items
    }
}

/// The error for a `previous_response_id` that names no stored response of this caller.
pub fn previous_not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("Previous response with id '{id}' not found."),
    )
    .with_param("previous_response_id")
}

/// The error for `GET /v1/responses/{id}` of a response that is not stored for this caller.
pub fn response_not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("No response found with id '{id}'."),
    )
}
