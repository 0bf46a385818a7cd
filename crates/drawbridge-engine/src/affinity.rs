//! Session affinity: requests of one conversation (the same key in the configured header, or
//! else the same `user` field) go to the account that served the conversation last, while that
//! account is a candidate (see `drawbridge_core::schedule::pick_bound`). The binding is stored
//! with a TTL ([`AffinityStore`]: `affinity:{key}` in ValKey, shared by every engine), renewed
//! by every request of the conversation, and moves when another account serves it (the bound
//! one failed, or could not take the request).

use std::sync::Arc;
use std::time::Duration;

use drawbridge_http::ChatContext;
use drawbridge_state::{AffinityStore, MAX_AFFINITY_KEY};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::ChatCompletionRequest;
use sha2::{Digest as _, Sha256};

use crate::settings::Settings;

/// How long a request waits for its conversation's binding before it is scheduled without
/// one (the store is slow or away).
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);

/// `engine.affinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinitySettings {
    pub enabled: bool,
    /// Use the request's `user` field when the header is absent.
    pub user_field: bool,
    /// How long a binding outlives its conversation's last request.
    pub ttl: Duration,
    /// How long the binding of a live or warm session lasts (`engine.affinity.session_ttl`).
    pub session_ttl: Duration,
}

impl Default for AffinitySettings {
    fn default() -> Self {
        AffinitySettings {
            enabled: false,
            user_field: true,
            ttl: Duration::from_secs(3600),
            session_ttl: Duration::from_secs(300),
        }
    }
}

pub(crate) struct Affinity {
    store: Arc<dyn AffinityStore>,
    /// `affinity`: follows the configuration (a reload).
    settings: Settings,
}

impl Affinity {
    pub fn new(store: Arc<dyn AffinityStore>, settings: Settings) -> Self {
        Affinity { store, settings }
    }

    /// The conversation key of a request, if affinity is on and it has one: the SHA-256 (hex)
    /// of the request's tenant and the header's value (`s:` in front) or the `user` field (`u:`
    /// in front, so the two never meet).
    pub fn key(&self, request: &ChatCompletionRequest, ctx: &ChatContext) -> Option<String> {
        let settings = self.settings.get().affinity;
        if !settings.enabled {
            return None;
        }
        let key = match (&ctx.session, &request.user) {
            (Some(session), _) => format!("s:{session}"),
            (None, Some(user)) if settings.user_field && !user.is_empty() => {
                format!("u:{user}")
            }
            _ => return None,
        };
        if key.len() > MAX_AFFINITY_KEY {
            return None;
        }
        // Per client key, and hashed: the store holds no raw user id, and two clients' equal
        // conversation keys are two conversations.
        let digest = Sha256::new()
            .chain_update(ctx.tenant.as_bytes())
            .chain_update([0u8])
            .chain_update(key.as_bytes())
            .finalize();
        Some(drawbridge_core::hex::encode(&digest))
    }

    /// The account `key` is bound to; `None` when there is none or the store does not answer
    /// in time (the request is scheduled as if the conversation were new).
    pub async fn lookup(&self, key: &str) -> Option<String> {
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.store.affinity(key)).await {
            Ok(Ok(account)) => account,
            Ok(Err(error)) => {
                tracing::debug!(%error, "could not read the conversation's account");
                None
            }
            Err(_) => {
                tracing::debug!("the conversation's account was not read in time");
                None
            }
        }
    }

    /// Bind the conversation `key` to `account` (again: the TTL starts over), in the
    /// background.
    pub fn bind(self: &Arc<Self>, key: &str, account: &str, shutdown: &Shutdown) {
        let ttl = self.settings.get().affinity.ttl;
        self.bind_for(key, account, ttl, shutdown);
    }

    /// Bind the live or warm session `key` to the account whose worker holds it, for as long
    /// as a worker keeps such a session.
    pub fn bind_session(self: &Arc<Self>, key: &str, account: &str, shutdown: &Shutdown) {
        let ttl = self.settings.get().affinity.session_ttl;
        self.bind_for(key, account, ttl, shutdown);
    }

    fn bind_for(self: &Arc<Self>, key: &str, account: &str, ttl: Duration, shutdown: &Shutdown) {
        let affinity = Arc::clone(self);
        let (key, account) = (key.to_owned(), account.to_owned());
        shutdown.spawn(async move {
            if let Err(error) = affinity.store.set_affinity(&key, &account, ttl).await {
                tracing::debug!(account, %error, "could not bind the conversation to its account");
            }
        });
    }
}
