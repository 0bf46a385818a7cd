//! The controller's state on ValKey: leases and the desired accounts (see `keys.rs`).

use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;

use super::{ValkeyRegistry, keys};
use crate::clock::millis;
use crate::control::{
    AccountRecord, AccountStore, Lease, LeaseStore, validate_account, validate_lease,
};
use crate::error::StateError;
use crate::registry::StateFuture;

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("acquire.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("renew.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("release.lua")));
static PUT_ACCOUNTS: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("put_accounts.lua")));
static ASSIGN: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("assign.lua")));
static MEMBERS: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("members.lua")));

impl LeaseStore for ValkeyRegistry {
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> StateFuture<'a, Option<u64>> {
        Box::pin(async move {
            validate_lease(name, holder, ttl)?;
            let token: u64 = self
                .run(
                    "acquire",
                    &ACQUIRE,
                    vec![keys::lease(name), keys::lease_epoch(name)],
                    vec![holder.to_owned(), millis(ttl).to_string()],
                )
                .await?;
            Ok((token > 0).then_some(token))
        })
    }

    fn renew<'a>(
        &'a self,
        name: &'a str,
        lease: &'a Lease,
        ttl: Duration,
    ) -> StateFuture<'a, bool> {
        Box::pin(async move {
            validate_lease(name, &lease.holder, ttl)?;
            let renewed: i64 = self
                .run(
                    "renew",
                    &RENEW,
                    vec![keys::lease(name)],
                    vec![lease.encode(), millis(ttl).to_string()],
                )
                .await?;
            Ok(renewed == 1)
        })
    }

    fn release<'a>(&'a self, name: &'a str, lease: &'a Lease) -> StateFuture<'a, bool> {
        Box::pin(async move {
            let released: i64 = self
                .run(
                    "release",
                    &RELEASE,
                    vec![keys::lease(name)],
                    vec![lease.encode()],
                )
                .await?;
            Ok(released == 1)
        })
    }

    fn holder<'a>(&'a self, name: &'a str) -> StateFuture<'a, Option<Lease>> {
        Box::pin(async move {
            use fred::prelude::KeysInterface;
            let stored: Option<String> = self
                .bounded("holder", self.client.get(keys::lease(name)))
                .await?;
            match stored {
                None => Ok(None),
                Some(text) => Lease::decode(&text)
                    .map(Some)
                    .ok_or_else(|| StateError::Corrupt(format!("lease {name} holds {text:?}"))),
            }
        })
    }
}

impl AccountStore for ValkeyRegistry {
    fn put_accounts<'a>(&'a self, accounts: &'a [AccountRecord]) -> StateFuture<'a, ()> {
        Box::pin(async move {
            if accounts.is_empty() {
                return Ok(());
            }
            let mut script_keys = vec![keys::ACCOUNTS.to_owned()];
            let mut args = Vec::with_capacity(accounts.len());
            for account in accounts {
                validate_account(account)?;
                let body = serde_json::to_string(&AccountRecord {
                    assigned_pod: None,
                    ..account.clone()
                })
                .map_err(|e| StateError::Invalid(format!("account {}: {e}", account.id)))?;
                script_keys.push(keys::account(&account.id));
                args.push(body);
            }
            let _: i64 = self
                .run("put_accounts", &PUT_ACCOUNTS, script_keys, args)
                .await?;
            Ok(())
        })
    }

    fn accounts(&self) -> StateFuture<'_, Vec<AccountRecord>> {
        Box::pin(async move {
            let stored: Vec<String> = self
                .run(
                    "accounts",
                    &MEMBERS,
                    vec![keys::ACCOUNTS.to_owned()],
                    vec![keys::ACCOUNT_PREFIX.to_owned()],
                )
                .await?;
            let mut records: Vec<AccountRecord> = stored
                .iter()
                .filter_map(|text| match serde_json::from_str(text) {
                    Ok(record) => Some(record),
                    Err(error) => {
                        tracing::warn!(store = %self.target, %error, "skipping an unreadable account");
                        None
                    }
                })
                .collect();
            records.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(records)
        })
    }

    fn assign<'a>(
        &'a self,
        account: &'a str,
        pod: Option<&'a str>,
        lease_name: &'a str,
        lease: &'a Lease,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let written: i64 = self
                .run(
                    "assign",
                    &ASSIGN,
                    vec![keys::lease(lease_name), keys::account(account)],
                    vec![lease.encode(), pod.unwrap_or_default().to_owned()],
                )
                .await?;
            match written {
                1 => Ok(()),
                0 => Err(StateError::Invalid(format!(
                    "no account {account} in the desired state"
                ))),
                _ => Err(StateError::Fenced(format!(
                    "lease {lease_name} token {} is no longer current",
                    lease.token
                ))),
            }
        })
    }
}
