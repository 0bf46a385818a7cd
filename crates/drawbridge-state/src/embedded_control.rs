//! The controller's state in process ([`LeaseStore`] and [`AccountStore`]): leases expire on
//! tokio's clock, so paused-time tests control them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::control::{
    AccountRecord, AccountStore, Lease, LeaseStore, validate_account, validate_lease,
};
use crate::error::StateError;
use crate::registry::StateFuture;

#[derive(Debug, Default)]
pub struct EmbeddedControl {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    leases: HashMap<String, (Lease, Instant)>,
    epochs: HashMap<String, u64>,
    accounts: BTreeMap<String, AccountRecord>,
}

impl State {
    /// The live holder of `name`, an expired lease dropped.
    fn holder(&mut self, name: &str) -> Option<&Lease> {
        let now = Instant::now();
        if self
            .leases
            .get(name)
            .is_some_and(|(_, until)| *until <= now)
        {
            self.leases.remove(name);
        }
        self.leases.get(name).map(|(lease, _)| lease)
    }
}

impl EmbeddedControl {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LeaseStore for EmbeddedControl {
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> StateFuture<'a, Option<u64>> {
        Box::pin(async move {
            validate_lease(name, holder, ttl)?;
            let mut state = self.state();
            if state.holder(name).is_some() {
                return Ok(None);
            }
            // As in ValKey: the larger of the last token + 1 and the clock in microseconds.
            let token = {
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
                let epoch = state.epochs.entry(name.to_owned()).or_default();
                *epoch = (*epoch + 1).max(now_us);
                *epoch
            };
            let lease = Lease {
                holder: holder.to_owned(),
                token,
            };
            state
                .leases
                .insert(name.to_owned(), (lease, Instant::now() + ttl));
            Ok(Some(token))
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
            let mut state = self.state();
            if state.holder(name) != Some(lease) {
                return Ok(false);
            }
            state
                .leases
                .insert(name.to_owned(), (lease.clone(), Instant::now() + ttl));
            Ok(true)
        })
    }

    fn release<'a>(&'a self, name: &'a str, lease: &'a Lease) -> StateFuture<'a, bool> {
        Box::pin(async move {
            let mut state = self.state();
            if state.holder(name) != Some(lease) {
                return Ok(false);
            }
            state.leases.remove(name);
            Ok(true)
        })
    }

    fn holder<'a>(&'a self, name: &'a str) -> StateFuture<'a, Option<Lease>> {
        Box::pin(async move { Ok(self.state().holder(name).cloned()) })
    }
}

impl AccountStore for EmbeddedControl {
    fn put_accounts<'a>(&'a self, accounts: &'a [AccountRecord]) -> StateFuture<'a, ()> {
        Box::pin(async move {
            for account in accounts {
                validate_account(account)?;
            }
            let mut state = self.state();
            for account in accounts {
                let assigned = state
                    .accounts
                    .get(&account.id)
                    .and_then(|a| a.assigned_pod.clone());
                state.accounts.insert(
                    account.id.clone(),
                    AccountRecord {
                        assigned_pod: assigned,
                        ..account.clone()
                    },
                );
            }
            Ok(())
        })
    }

    fn accounts(&self) -> StateFuture<'_, Vec<AccountRecord>> {
        Box::pin(async move { Ok(self.state().accounts.values().cloned().collect()) })
    }

    fn assign<'a>(
        &'a self,
        account: &'a str,
        pod: Option<&'a str>,
        lease_name: &'a str,
        lease: &'a Lease,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut state = self.state();
            if state.holder(lease_name) != Some(lease) {
                return Err(StateError::Fenced(format!(
                    "lease {lease_name} token {} is no longer current",
                    lease.token
                )));
            }
            let record = state.accounts.get_mut(account).ok_or_else(|| {
                StateError::Invalid(format!("no account {account} in the desired state"))
            })?;
            record.assigned_pod = pod.map(str::to_owned);
            Ok(())
        })
    }
}
