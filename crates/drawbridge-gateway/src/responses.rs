//! The Responses API's stored responses on the gateway's stores: the HTTP layer's
//! [`ResponseStorage`] over the state crate's [`ResponseStore`], each response kept for
//! `gateway.responses_ttl`.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_http::dialect::responses::ResponseStorage;
use drawbridge_state::{ResponseStore, StateError, valid_response_id};
use drawbridge_types::ApiError;
use futures::FutureExt as _;
use futures::future::BoxFuture;

/// Responses kept in `store` for `ttl`.
pub(crate) struct StoredResponses {
    pub store: Arc<dyn ResponseStore>,
    pub ttl: Duration,
}

fn unavailable(error: &StateError) -> ApiError {
    tracing::warn!(%error, "the response store failed");
    ApiError::unavailable("The gateway cannot reach its response store right now; retry shortly.")
}

impl ResponseStorage for StoredResponses {
    fn put<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        stored: String,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        async move {
            self.store
                .put_response(tenant, id, &stored, self.ttl)
                .await
                .map_err(|error| unavailable(&error))
        }
        .boxed()
    }

    fn get<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ApiError>> {
        async move {
            // An id no response can have (a client's typo) is simply not found.
            if !valid_response_id(id) {
                return Ok(None);
            }
            self.store
                .response(tenant, id)
                .await
                .map_err(|error| unavailable(&error))
        }
        .boxed()
    }
}
