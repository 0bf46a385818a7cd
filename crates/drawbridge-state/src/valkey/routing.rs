//! The routing state on ValKey: `cb:{id}` (a breaker's JSON, swapped by a compare-and-set
//! script on the server's clock), `cooldown:{id}` and `affinity:{key}` (keys with a TTL).

use std::sync::LazyLock;
use std::time::Duration;

use fred::prelude::KeysInterface;
use fred::types::Expiration;
use fred::types::scripts::Script;

use super::{ValkeyRegistry, keys};
use crate::clock::millis;
use crate::credits::validate_account_id;
use crate::error::StateError;
use crate::registry::StateFuture;
use crate::routing::{
    AffinityStore, BreakerRead, BreakerStore, CooldownStore, Swap, validate_accounts,
    validate_affinity_key, validate_breaker, validate_ttl,
};

static READ: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("breakers_read.lua")));
static SWAP: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("breaker_swap.lua")));
static COOL_DOWN: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("cool_down.lua")));
static COOLDOWNS: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("cooldowns.lua")));

fn clock(text: &str) -> Result<u64, StateError> {
    text.parse()
        .map_err(|_| StateError::Corrupt(format!("the server's clock read {text:?}")))
}

/// `''` is how the scripts say "nothing stored" (a breaker is a JSON object, never empty).
fn stored(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

impl BreakerStore for ValkeyRegistry {
    fn breakers<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, BreakerRead> {
        Box::pin(async move {
            validate_accounts(accounts)?;
            let script_keys = accounts.iter().map(|a| keys::breaker(a)).collect();
            let reply: Vec<String> = self.run("breakers", &READ, script_keys, vec![]).await?;
            let mut reply = reply.into_iter();
            let now_ms = clock(&reply.next().unwrap_or_default())?;
            let values: Vec<Option<String>> = reply.map(stored).collect();
            if values.len() != accounts.len() {
                return Err(StateError::Corrupt(format!(
                    "read {} breakers for {} accounts",
                    values.len(),
                    accounts.len()
                )));
            }
            Ok(BreakerRead { values, now_ms })
        })
    }

    fn swap_breaker<'a>(
        &'a self,
        account: &'a str,
        expected: Option<&'a str>,
        new: &'a str,
    ) -> StateFuture<'a, Swap> {
        Box::pin(async move {
            validate_breaker(account, new)?;
            let args = vec![
                if expected.is_some() { "1" } else { "0" }.to_owned(),
                expected.unwrap_or_default().to_owned(),
                new.to_owned(),
            ];
            let reply: Vec<String> = self
                .run("swap_breaker", &SWAP, vec![keys::breaker(account)], args)
                .await?;
            match <[String; 3]>::try_from(reply) {
                Ok([done, now, current]) => {
                    let now_ms = clock(&now)?;
                    Ok(if done == "1" {
                        Swap::Done { now_ms }
                    } else {
                        Swap::Conflict {
                            current: stored(current),
                            now_ms,
                        }
                    })
                }
                Err(reply) => Err(StateError::Corrupt(format!(
                    "the breaker swap answered {reply:?}"
                ))),
            }
        })
    }
}

impl CooldownStore for ValkeyRegistry {
    fn cool_down<'a>(&'a self, account: &'a str, duration: Duration) -> StateFuture<'a, ()> {
        Box::pin(async move {
            validate_account_id(account)?;
            validate_ttl("cooldown", duration)?;
            let _: i64 = self
                .run(
                    "cool_down",
                    &COOL_DOWN,
                    vec![keys::cooldown(account)],
                    vec![millis(duration).to_string()],
                )
                .await?;
            Ok(())
        })
    }

    fn cooldowns<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, Vec<Option<Duration>>> {
        Box::pin(async move {
            validate_accounts(accounts)?;
            if accounts.is_empty() {
                return Ok(Vec::new());
            }
            let script_keys = accounts.iter().map(|a| keys::cooldown(a)).collect();
            let left: Vec<i64> = self
                .run("cooldowns", &COOLDOWNS, script_keys, vec![])
                .await?;
            Ok(left
                .into_iter()
                .map(|ms| {
                    u64::try_from(ms)
                        .ok()
                        .filter(|ms| *ms > 0)
                        .map(Duration::from_millis)
                })
                .collect())
        })
    }
}

impl AffinityStore for ValkeyRegistry {
    fn affinity<'a>(&'a self, key: &'a str) -> StateFuture<'a, Option<String>> {
        Box::pin(async move {
            validate_affinity_key(key)?;
            self.bounded("affinity", self.client.get(keys::affinity(key)))
                .await
        })
    }

    fn set_affinity<'a>(
        &'a self,
        key: &'a str,
        account: &'a str,
        ttl: Duration,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            validate_affinity_key(key)?;
            validate_account_id(account)?;
            validate_ttl("affinity TTL", ttl)?;
            let ms = i64::try_from(millis(ttl)).unwrap_or(i64::MAX);
            self.bounded(
                "set_affinity",
                self.client.set(
                    keys::affinity(key),
                    account,
                    Some(Expiration::PX(ms)),
                    None,
                    false,
                ),
            )
            .await
        })
    }
}
