//! Accounts resting after their provider rate-limited them: shared through the
//! [`CooldownStore`] (`cooldown:{id}` with a TTL), read by the scheduler from a cache re-read on
//! every refresh, and set here at once when this engine meets the rate limit.

use std::sync::Arc;
use std::time::Duration;

use drawbridge_state::{CooldownStore, MAX_ROUTING_TTL};
use drawbridge_telemetry::Shutdown;
use tokio::time::Instant;

use crate::versioned::{Changes, Versioned};

pub(crate) struct Cooldowns {
    store: Arc<dyn CooldownStore>,
    /// Until when each resting account rests, as last read or set.
    cache: Versioned<Instant>,
}

impl Cooldowns {
    pub fn new(store: Arc<dyn CooldownStore>, changes: Changes) -> Self {
        Cooldowns {
            store,
            cache: Versioned::new(changes),
        }
    }

    /// How long `account` still rests (`None`: it does not).
    #[cfg(test)]
    fn left(&self, account: &str) -> Option<Duration> {
        left(self.cache.get(account))
    }

    /// Until when each account rests (some of those times may have passed).
    pub fn ends(&self) -> std::collections::HashMap<String, Instant> {
        self.cache.all()
    }

    /// Re-read the cooldowns of `accounts`; on failure the cache stays as it was. Of two ends
    /// of one account's rest (one this engine set or read before, one just read), the later
    /// wins: a rest this engine just began may not be stored yet.
    pub async fn refresh(&self, accounts: &[String]) {
        let began = self.cache.began();
        match self.store.cooldowns(accounts).await {
            Ok(left) => {
                let now = Instant::now();
                let read = accounts
                    .iter()
                    .zip(left)
                    .filter_map(|(account, left)| Some((account.clone(), now + left?)));
                self.cache.refreshed(began, read, |mine, read| mine > read);
            }
            Err(error) => tracing::debug!(%error, "could not read the cooldowns"),
        }
    }

    /// Rest `account` for `duration`: here at once, in the store in the background.
    /// A rest longer than the stores keep one ([`MAX_ROUTING_TTL`]; an agent may ask for
    /// anything) is cut to that.
    pub fn cool_down(self: &Arc<Self>, account: &str, duration: Duration, shutdown: &Shutdown) {
        let duration = duration.min(MAX_ROUTING_TTL);
        let until = Instant::now() + duration;
        self.cache.update(account, |end| {
            Some(end.map_or(until, |end| (*end).max(until)))
        });
        let cooldowns = Arc::clone(self);
        let account = account.to_owned();
        shutdown.spawn(async move {
            if let Err(error) = cooldowns.store.cool_down(&account, duration).await {
                tracing::warn!(account, %error, "could not share the account's cooldown");
            }
        });
    }
}

/// How long a rest that ends at `end` still lasts (`None`: it is over).
pub(crate) fn left(end: Option<Instant>) -> Option<Duration> {
    let now = Instant::now();
    end.filter(|until| *until > now).map(|until| until - now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent asking for an absurd rest (a worker passes its `retry_after` on) does not
    /// overflow the clock: the account rests for the longest rest the stores keep.
    #[tokio::test]
    async fn an_absurd_rest_is_cut_to_the_longest_kept() {
        let cooldowns = Arc::new(Cooldowns::new(
            Arc::new(drawbridge_state::EmbeddedRouting::default()),
            Changes::default(),
        ));
        let scope = Shutdown::new();
        cooldowns.cool_down("acct-1", Duration::MAX, &scope);
        let left = cooldowns.left("acct-1").expect("resting");
        assert!(
            left <= MAX_ROUTING_TTL && left > MAX_ROUTING_TTL / 2,
            "{left:?}"
        );
        assert!(scope.drain(Duration::from_secs(5)).await);
    }
}
