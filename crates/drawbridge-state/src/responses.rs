//! The Responses API's stored responses ([`ResponseStore`]): one JSON text per (tenant, response
//! id), kept for a TTL, so a client can chain its next request with `previous_response_id` or
//! read a response back. Two implementations, ValKey ([`crate::ValkeyRegistry`], shared by
//! every gateway node) and embedded ([`EmbeddedResponses`], this process's memory), pass one
//! conformance suite (`tests/responses.rs`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::StateError;
use crate::registry::StateFuture;
use crate::routing::validate_ttl;

/// Stored responses, per tenant (the client key's id: one client never reads another's).
pub trait ResponseStore: Send + Sync + 'static {
    /// Keep `value` as `tenant`'s response `id` for `ttl` from now (replacing any).
    fn put_response<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> StateFuture<'a, ()>;

    /// `tenant`'s response `id`, if it is kept and its TTL has not run out.
    fn response<'a>(&'a self, tenant: &'a str, id: &'a str) -> StateFuture<'a, Option<String>>;
}

/// The longest tenant id and response id the stores take.
pub const MAX_RESPONSE_ID: usize = 128;

/// Whether `id` can name a stored response: 1 to [`MAX_RESPONSE_ID`] characters of
/// `[A-Za-z0-9_-]` (so a ValKey key made of it and a tenant is never ambiguous).
pub fn valid_response_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RESPONSE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn validate(tenant: &str, id: &str) -> Result<(), StateError> {
    if tenant.is_empty() || tenant.len() > MAX_RESPONSE_ID {
        return Err(StateError::Invalid(format!(
            "a tenant id must be 1 to {MAX_RESPONSE_ID} bytes"
        )));
    }
    if !valid_response_id(id) {
        return Err(StateError::Invalid(format!(
            "a response id must be 1 to {MAX_RESPONSE_ID} characters of [A-Za-z0-9_-]"
        )));
    }
    Ok(())
}

/// Responses kept before expired ones are first swept; after a sweep the next waits until the
/// map has doubled (or reached this again), so sweeping is amortised O(1) per response.
const SWEEP_AT: usize = 1024;

/// Stored responses in this process's memory (nothing survives it). Its clock is tokio's, so
/// paused-time tests run TTLs out without waiting.
#[derive(Debug)]
pub struct EmbeddedResponses {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    responses: HashMap<(String, String), (String, Instant)>,
    next_sweep: usize,
}

impl Default for EmbeddedResponses {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedResponses {
    pub fn new() -> Self {
        EmbeddedResponses {
            state: Mutex::new(State {
                responses: HashMap::new(),
                next_sweep: SWEEP_AT,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResponseStore for EmbeddedResponses {
    fn put_response<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            validate(tenant, id)?;
            validate_ttl("response TTL", ttl)?;
            let now = Instant::now();
            let until = now.checked_add(ttl).ok_or_else(|| {
                StateError::Invalid(format!("the response TTL {ttl:?} is too long"))
            })?;
            let mut state = self.state();
            if state.responses.len() >= state.next_sweep {
                state.responses.retain(|_, (_, until)| *until > now);
                state.next_sweep = SWEEP_AT.max(state.responses.len().saturating_mul(2));
            }
            state.responses.insert(
                (tenant.to_owned(), id.to_owned()),
                (value.to_owned(), until),
            );
            Ok(())
        })
    }

    fn response<'a>(&'a self, tenant: &'a str, id: &'a str) -> StateFuture<'a, Option<String>> {
        Box::pin(async move {
            validate(tenant, id)?;
            let now = Instant::now();
            let state = self.state();
            Ok(state
                .responses
                .get(&(tenant.to_owned(), id.to_owned()))
                .filter(|(_, until)| *until > now)
                .map(|(value, _)| value.clone()))
        })
    }
}
