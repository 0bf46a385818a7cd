//! What stands between a caller and the backend: who is calling, whether its limits let it in
//! now, and what its answer costs once it has ended.
//!
//! A [`Gate`] is asked twice per chat request: [`Gate::enter`] with the headers (authenticate,
//! count the request against the caller's rate limit; the answer carries the headers it
//! returns, e.g. `X-RateLimit-*`), and [`Gate::admit`] with the parsed request (may this caller
//! use this model, has it budget left). The [`Pass`] that `admit` returns is told exactly once
//! how the answer ended ([`Ended`]): finished (with its usage and metering), failed, or
//! abandoned by the client. What `enter` learnt that `admit` needs (e.g. the key's limits)
//! travels in the [`Entry`] as the gate's own typed [`Gate::Context`]. The engine's gate is its
//! channel keys ([`Keys`]); the gateway's adds API keys from the store, rate limits, quotas and
//! the usage ledger.

use std::time::Duration;

use axum::http::HeaderMap;
use drawbridge_types::{ApiError, ChatCompletionRequest, ErrorKind, Finish};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::auth::{Caller, Keys};

/// An authenticated caller, let in by its rate limit.
#[derive(Debug, Clone)]
pub struct Entry<C> {
    pub caller: Caller,
    /// Headers every answer to this request carries (the rate-limit headers).
    pub headers: HeaderMap,
    /// What the gate remembers between `enter` and `admit` (e.g. the key's limits).
    pub context: C,
}

/// A request turned away at the door: the error, and the headers its answer carries.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub error: ApiError,
    pub headers: HeaderMap,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal {
            error,
            headers: HeaderMap::new(),
        }
    }
}

/// How an answer ended, as its [`Pass`] learns it.
#[derive(Debug, Clone)]
pub struct Ended {
    pub outcome: Outcome,
    /// Characters of answer text the client received (0 for a non-streamed answer that
    /// failed: its client got an error status, not the text).
    pub delivered_chars: usize,
    /// From the request's arrival to the end.
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// The answer is complete: its usage and who served it.
    Finished(Finish),
    /// It failed, before or after its first byte.
    Failed(ErrorKind),
    /// The client went away before the end.
    Abandoned,
}

/// One admitted chat request; [`Pass::end`] is called exactly once, when its answer has ended
/// (or the client went away). It must not block: work that needs I/O is spawned.
pub trait Pass: Send + 'static {
    fn end(self: Box<Self>, ended: &Ended);
}

/// A pass that does nothing at the end.
pub struct FreePass;

impl Pass for FreePass {
    fn end(self: Box<Self>, _ended: &Ended) {}
}

pub trait Gate: Send + Sync + 'static {
    /// What [`Gate::enter`] hands to [`Gate::admit`] and [`Gate::visible_models`].
    type Context: Send + Sync + 'static;

    /// Authenticate the caller and count the request against its rate limit.
    fn enter<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> BoxFuture<'a, Result<Entry<Self::Context>, Refusal>>;

    /// Admit a parsed chat request: the caller may use the model and has budget left.
    fn admit<'a>(
        &'a self,
        entry: &'a Entry<Self::Context>,
        request: &'a ChatCompletionRequest,
        request_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Pass>, ApiError>>;

    /// Whether this caller may name whose request it forwards ([`crate::TENANT_HEADER`]): only
    /// a caller with an engine channel key marked `trust_tenant`.
    fn trusts_tenant(&self, _entry: &Entry<Self::Context>) -> bool {
        false
    }

    /// The models of `models` this caller may use (`GET /v1/models`).
    fn visible_models(&self, _entry: &Entry<Self::Context>, models: Vec<String>) -> Vec<String> {
        models
    }
}

/// Static keys are a gate with no limits: the engine's channel keys.
impl Gate for Keys {
    type Context = ();

    fn enter<'a>(&'a self, headers: &'a HeaderMap) -> BoxFuture<'a, Result<Entry<()>, Refusal>> {
        let entry = self.authenticate(headers).map(|caller| Entry {
            caller,
            headers: HeaderMap::new(),
            context: (),
        });
        futures::future::ready(entry.map_err(Refusal::from)).boxed()
    }

    fn trusts_tenant(&self, entry: &Entry<()>) -> bool {
        Keys::trusts_tenant(self, &entry.caller)
    }

    fn admit<'a>(
        &'a self,
        _entry: &'a Entry<()>,
        _request: &'a ChatCompletionRequest,
        _request_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Pass>, ApiError>> {
        futures::future::ready(Ok(Box::new(FreePass) as Box<dyn Pass>)).boxed()
    }
}
