//! Requests passed through to a provider account whole (`POST /v1/embeddings`,
//! `POST /v1/images/generations`; see [`drawbridge_http::passthrough`]). They are scheduled
//! like a turn: the same pick (credits, breakers, rests, the model's route), a failure another
//! account could avoid (5xx, transport, 429, a timeout) moves on to the next account within
//! `max_attempts` and the request's deadline, and a 400 is the client's. Accounts that cannot
//! answer the endpoint (ACP accounts, `anthropic` and `gemini` ones) are passed over without
//! counting as an attempt; when no account of the model can, the client gets a 400 naming the
//! model.

use std::collections::HashSet;

use drawbridge_core::breaker::Outcome;
use drawbridge_http::{ChatContext, Forward, Forwarded};
use drawbridge_types::ApiError;
use tokio::time::Instant;

use crate::errors;
use crate::turn::Turns;

impl Turns {
    /// Answer `request` on the best account that serves its model and endpoint (see the
    /// module docs).
    pub async fn forward(
        &self,
        mut request: Forward,
        ctx: &ChatContext,
    ) -> Result<Forwarded, ApiError> {
        let settings = self.settings();
        let model = request.model.clone();
        let target = settings.target(&model).to_owned();
        let plan = settings.plan(&model, &ctx.tenant);
        if target != model {
            request.body = with_model(&request.body, &target)?;
        }
        let deadline = Instant::now() + settings.request_timeout;
        let max = settings.max_attempts.max(1);
        let mut tried = HashSet::new();
        let mut attempts = 0usize;
        let mut unserved = false;
        let mut last_error: Option<ApiError> = None;
        while attempts < max && Instant::now() < deadline {
            let picked = match self.routing.pick(&target, &tried, None, plan.as_ref()) {
                Ok(picked) => picked,
                Err(shortage) => {
                    if unserved && last_error.is_none() {
                        return Err(request.endpoint.not_served(&model));
                    }
                    return Err(self.no_account(shortage, last_error, &model));
                }
            };
            tried.insert(picked.key());
            let account = picked.route.slots.account.clone();
            let Some(worker) = self.routing.workers().get(picked.route.worker) else {
                continue;
            };
            if !worker.serves_endpoint(&account, request.endpoint) {
                unserved = true;
                continue;
            }
            attempts += 1;
            let Some(ticket) = self.breakers.admit(&account).await else {
                continue;
            };
            if last_error.is_some() {
                self.metrics.record_failover("retry");
            }
            let _guard = picked.inflight();
            let sent = Instant::now();
            let result =
                match tokio::time::timeout_at(deadline, worker.forward(&account, &request)).await {
                    Ok(result) => result,
                    Err(_) => Err(errors::deadline_passed()),
                };
            match result {
                Ok(body) => {
                    ticket.record(Outcome::Success);
                    self.routing.record_latency(&account, sent.elapsed());
                    tracing::debug!(
                        request_id = ctx.request_id,
                        account,
                        endpoint = request.endpoint.label(),
                        "forwarded request answered"
                    );
                    return Ok(Forwarded {
                        body,
                        account: Some(account),
                    });
                }
                Err(error) => {
                    tracing::warn!(
                        request_id = ctx.request_id,
                        account,
                        endpoint = request.endpoint.label(),
                        %error,
                        "forwarded request failed"
                    );
                    let expired = Instant::now() >= deadline;
                    self.settle(ticket, &account, &error, expired);
                    if !error.retryable() {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(match last_error {
            Some(_) if Instant::now() >= deadline => errors::deadline_passed(),
            Some(error) => errors::for_client(error, &model),
            None if unserved => request.endpoint.not_served(&model),
            None => errors::no_account_left(),
        })
    }
}

/// `body` with its `model` replaced by `model` (the alias's target): the rest of the request
/// is passed on as the client wrote it.
fn with_model(body: &[u8], model: &str) -> Result<bytes::Bytes, ApiError> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid_request("The request body must be a JSON object."))?;
    map.insert(
        "model".to_owned(),
        serde_json::Value::String(model.to_owned()),
    );
    serde_json::to_vec(&map)
        .map(bytes::Bytes::from)
        .map_err(|e| ApiError::internal(format!("cannot encode the request: {e}")))
}
