//! Credits in process, for the single-node binary: two maps behind one lock, so every operation
//! is atomic like the ValKey scripts. [`EmbeddedCredits::snapshot`] and
//! [`EmbeddedCredits::restore`] let the caller keep them in a file.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::credits::{
    Charge, CreditSnapshot, CreditStore, Grant, MAX_BALANCE, validate_account_id, validate_amount,
    validate_grants,
};
use crate::error::StateError;
use crate::registry::StateFuture;

#[derive(Debug, Default)]
pub struct EmbeddedCredits {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    balances: BTreeMap<String, i64>,
    grants: BTreeMap<String, i64>,
}

impl EmbeddedCredits {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding what `snapshot` holds.
    pub fn restore(snapshot: CreditSnapshot) -> Self {
        EmbeddedCredits {
            state: Mutex::new(State {
                balances: snapshot.balances.into_iter().collect(),
                grants: snapshot.grants.into_iter().collect(),
            }),
        }
    }

    /// Everything the store holds now (sorted by account id).
    pub fn snapshot(&self) -> CreditSnapshot {
        let state = self.state();
        CreditSnapshot {
            balances: state
                .balances
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            grants: state.grants.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    /// Every metered account's balance (sorted by account id).
    pub fn all_balances(&self) -> Vec<(String, i64)> {
        self.snapshot().balances
    }

    // The changes, synchronous so that a caller can make them under a lock of its own (the
    // gateway store's data lock, taken before this one).

    /// [`CreditStore::apply_grants`].
    pub(crate) fn apply_grants_now(&self, grants: &[Grant]) -> Result<Vec<String>, StateError> {
        validate_grants(grants)?;
        let mut state = self.state();
        let mut applied = Vec::new();
        for (account, grant) in grants {
            let previous = state.grants.get(account).copied();
            let changed = previous != *grant;
            let missing = grant.is_some() && !state.balances.contains_key(account);
            if !(changed || missing) {
                continue;
            }
            match grant {
                Some(grant) => {
                    state.balances.insert(account.clone(), *grant);
                    state.grants.insert(account.clone(), *grant);
                }
                None => {
                    state.balances.remove(account);
                    state.grants.remove(account);
                }
            }
            applied.push(account.clone());
        }
        Ok(applied)
    }

    /// [`CreditStore::charge`].
    pub(crate) fn charge_now(
        &self,
        account: &str,
        amount: i64,
    ) -> Result<Option<Charge>, StateError> {
        validate_account_id(account)?;
        validate_amount("a charge", amount)?;
        let mut state = self.state();
        Ok(state.balances.get_mut(account).map(|balance| {
            let charged = amount.min(*balance).max(0);
            *balance -= charged;
            Charge {
                charged,
                balance: *balance,
            }
        }))
    }

    /// [`CreditStore::top_up`].
    pub(crate) fn top_up_now(&self, account: &str, amount: i64) -> Result<i64, StateError> {
        validate_account_id(account)?;
        validate_amount("a top-up", amount)?;
        let mut state = self.state();
        let balance = state.balances.entry(account.to_owned()).or_insert(0);
        *balance = balance.saturating_add(amount).min(MAX_BALANCE);
        Ok(*balance)
    }

    /// [`CreditStore::set_balance`].
    pub(crate) fn set_balance_now(
        &self,
        account: &str,
        balance: Option<i64>,
    ) -> Result<(), StateError> {
        validate_account_id(account)?;
        let mut state = self.state();
        match balance {
            Some(balance) => {
                validate_amount("a balance", balance)?;
                state.balances.insert(account.to_owned(), balance);
            }
            None => {
                state.balances.remove(account);
            }
        }
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CreditStore for EmbeddedCredits {
    fn apply_grants<'a>(&'a self, grants: &'a [Grant]) -> StateFuture<'a, Vec<String>> {
        Box::pin(async move { self.apply_grants_now(grants) })
    }

    fn balances<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, Vec<Option<i64>>> {
        Box::pin(async move {
            let state = self.state();
            Ok(accounts
                .iter()
                .map(|a| state.balances.get(a).copied())
                .collect())
        })
    }

    fn charge<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, Option<Charge>> {
        Box::pin(async move { self.charge_now(account, amount) })
    }

    fn top_up<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, i64> {
        Box::pin(async move { self.top_up_now(account, amount) })
    }

    fn set_balance<'a>(&'a self, account: &'a str, balance: Option<i64>) -> StateFuture<'a, ()> {
        Box::pin(async move { self.set_balance_now(account, balance) })
    }
}
