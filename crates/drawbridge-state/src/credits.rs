//! Account credits: what each account has left to spend, shared by every engine. Two
//! implementations, ValKey ([`crate::ValkeyRegistry`]: `credits:{id}` integers, changed with
//! `DECRBY`/`INCRBY` inside scripts) and embedded ([`crate::EmbeddedCredits`]), pass one
//! conformance suite (`tests/credits.rs`).
//!
//! # The unit
//!
//! Balances are integers of **milli-credits**: 1 credit (Kiro's unit) is [`MILLI_CREDITS`] =
//! 1000. Kiro reports fractional credits per turn (0.01, 0.37, ...); [`to_milli`] turns a
//! reported amount into the integer charged, rounding up so that no turn is free.
//!
//! # Metered and unmetered accounts
//!
//! An account with a balance is *metered*: every finished turn is charged, and at 0 it gets no
//! more traffic. An account without one (no `credits` in its config, and no admin balance) is
//! *unmetered*: it is never exhausted and charges change nothing.
//!
//! # Configured grants
//!
//! `accounts[].credits` is a *grant*: the store remembers the last grant applied to each
//! account (`credits:{id}:grant`) and [`CreditStore::apply_grants`] sets the balance to the
//! grant only when the grant changed (a config edit is a top-up or a reset) or the account has
//! no balance yet. Restarting engines with the same config changes nothing, so what was spent
//! stays spent.

use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::gateway::check_id;
use crate::registry::StateFuture;

pub use drawbridge_types::rules::{MAX_BALANCE, MILLI_CREDITS};

/// `credits` (a reported or configured amount of credits) in milli-credits, rounded up;
/// negative, NaN and infinite amounts count as 0, huge ones as [`MAX_BALANCE`].
pub fn to_milli(credits: f64) -> i64 {
    if !credits.is_finite() || credits <= 0.0 {
        return 0;
    }
    let milli = (credits * MILLI_CREDITS as f64).ceil();
    if milli >= MAX_BALANCE as f64 {
        MAX_BALANCE
    } else {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "checked finite, positive and below MAX_BALANCE just above"
        )]
        let whole = milli as i64;
        whole
    }
}

/// `milli` milli-credits as credits.
pub fn from_milli(milli: i64) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "balances are below 2^53 (MAX_BALANCE)"
    )]
    let credits = milli as f64 / MILLI_CREDITS as f64;
    credits
}

/// What a charge took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    /// Milli-credits taken: the amount asked, or what was left when that was less.
    pub charged: i64,
    /// The balance after the charge.
    pub balance: i64,
}

/// The configured grant of one account: milli-credits, or `None` for an unmetered account.
pub type Grant = (String, Option<i64>);

/// Shared account balances; see the module docs.
pub trait CreditStore: Send + Sync + 'static {
    /// Apply the configured grants: for each account whose grant differs from the last one
    /// applied, or that is metered by config but has no balance, set its balance to the grant
    /// (`None`: remove the balance, the account is unmetered) and remember the grant. Returns
    /// the accounts whose balance was set this way.
    fn apply_grants<'a>(&'a self, grants: &'a [Grant]) -> StateFuture<'a, Vec<String>>;

    /// The balances of `accounts`, in order (`None`: unmetered).
    fn balances<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, Vec<Option<i64>>>;

    /// Take `amount` milli-credits (≥ 0) from `account`, atomically, never below zero: what was
    /// taken and what is left, or `None` for an unmetered account (nothing is taken).
    fn charge<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, Option<Charge>>;

    /// Add `amount` milli-credits (≥ 0) to `account`'s balance (an unmetered account starts
    /// from 0 and becomes metered): the new balance.
    fn top_up<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, i64>;

    /// Set `account`'s balance (`Some`, ≥ 0), or remove it (`None`: unmetered).
    fn set_balance<'a>(&'a self, account: &'a str, balance: Option<i64>) -> StateFuture<'a, ()>;
}

/// Everything an embedded store holds, to save it and start from it again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditSnapshot {
    /// Every metered account's balance, by account id.
    pub balances: Vec<(String, i64)>,
    /// The last grant applied to each account, by account id.
    pub grants: Vec<(String, i64)>,
}

/// An account id as the stores take it: what `accounts[].id` allows, the rule of every id
/// the stores take ([`crate::valid_id`]). It becomes part of a key, so nothing else gets in.
pub(crate) fn validate_account_id(id: &str) -> Result<(), StateError> {
    check_id("an account id", id)
}

/// A balance or amount the stores accept: 0 ..= [`MAX_BALANCE`].
pub(crate) fn validate_amount(what: &str, amount: i64) -> Result<(), StateError> {
    if (0..=MAX_BALANCE).contains(&amount) {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "{what} must be between 0 and {MAX_BALANCE} milli-credits, not {amount}"
        )))
    }
}

pub(crate) fn validate_grants(grants: &[Grant]) -> Result<(), StateError> {
    for (account, grant) in grants {
        validate_account_id(account)?;
        if let Some(grant) = grant {
            validate_amount("a grant", *grant)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_credits_round_up() {
        assert_eq!(to_milli(1.0), 1000);
        assert_eq!(to_milli(0.01), 10);
        assert_eq!(to_milli(0.0001), 1, "no turn is free");
        assert_eq!(to_milli(0.0), 0);
        assert_eq!(to_milli(-3.0), 0);
        assert_eq!(to_milli(f64::NAN), 0);
        assert_eq!(to_milli(f64::INFINITY), 0);
        assert_eq!(to_milli(1e30), MAX_BALANCE);
        assert_eq!(from_milli(1500), 1.5);
    }

    #[test]
    fn ids_and_amounts_are_checked() {
        assert!(validate_account_id("acct-1.a_b").is_ok());
        for bad in ["", "a:b", "a b", "../x", &"x".repeat(129)] {
            assert!(validate_account_id(bad).is_err(), "{bad}");
        }
        assert!(validate_amount("x", -1).is_err());
        assert!(validate_amount("x", MAX_BALANCE + 1).is_err());
        assert!(validate_amount("x", 0).is_ok());
    }
}
