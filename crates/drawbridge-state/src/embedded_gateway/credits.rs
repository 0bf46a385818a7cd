//! The single-node engine's account balances.

use super::EmbeddedGatewayStore;
use crate::credits::{Charge, CreditStore, Grant};
use crate::registry::StateFuture;

/// The single-node engine's credits, kept in the data file with the gateway's records: every
/// change is written behind (within [`FLUSH_INTERVAL`](super::FLUSH_INTERVAL), and at shutdown), so a restart keeps the
/// balances (a crash may forget the last second of charges).
impl CreditStore for EmbeddedGatewayStore {
    fn apply_grants<'a>(&'a self, grants: &'a [Grant]) -> StateFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut data = self.data_to_change()?;
            let applied = self.shared.credits.apply_grants_now(grants)?;
            if !applied.is_empty() {
                data.dirty.credits = true;
            }
            Ok(applied)
        })
    }

    fn balances<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, Vec<Option<i64>>> {
        self.shared.credits.balances(accounts)
    }

    fn charge<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, Option<Charge>> {
        Box::pin(async move {
            let mut data = self.data_to_change()?;
            let charge = self.shared.credits.charge_now(account, amount)?;
            if charge.is_some_and(|c| c.charged > 0) {
                data.dirty.credits = true;
            }
            Ok(charge)
        })
    }

    fn top_up<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, i64> {
        Box::pin(async move {
            let mut data = self.data_to_change()?;
            let balance = self.shared.credits.top_up_now(account, amount)?;
            data.dirty.credits = true;
            Ok(balance)
        })
    }

    fn set_balance<'a>(&'a self, account: &'a str, balance: Option<i64>) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut data = self.data_to_change()?;
            self.shared.credits.set_balance_now(account, balance)?;
            data.dirty.credits = true;
            Ok(())
        })
    }
}
