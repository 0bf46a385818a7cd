//! The controller's shared state: a fenced lease (leader election) and the desired accounts with
//! their assignment to pods. Two implementations, ValKey ([`crate::ValkeyRegistry`]) and
//! embedded ([`crate::EmbeddedControl`]), pass one conformance suite (`tests/control.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::registry::StateFuture;

/// The lease the engines elect their controller (the reconciler) with.
pub const CONTROLLER_LEASE: &str = "controller";

/// Who holds a lease, and with which fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    /// Greater than the token of every earlier acquisition of the same lease, also after the
    /// store lost its data: a token is the larger of the last one + 1 and the store's clock in
    /// microseconds at the acquisition.
    pub token: u64,
}

impl Lease {
    /// The lease as stored: `TOKEN:HOLDER`.
    pub(crate) fn encode(&self) -> String {
        format!("{}:{}", self.token, self.holder)
    }

    pub(crate) fn decode(text: &str) -> Option<Lease> {
        let (token, holder) = text.split_once(':')?;
        Some(Lease {
            holder: holder.to_owned(),
            token: token.parse().ok()?,
        })
    }
}

/// A named lease with a TTL: one holder at a time, each acquisition with a new, larger fencing
/// token. Writes made under a lease ([`AccountStore::assign`]) pass only while the writer still
/// holds it with that token, so a leader that lost its lease (paused, partitioned, expired)
/// cannot overwrite its successor's decisions.
pub trait LeaseStore: Send + Sync + 'static {
    /// Take `name` for `holder` for `ttl` if nobody holds it: the new token, or `None` when
    /// someone (possibly `holder` itself, under an older token) holds it.
    fn acquire<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> StateFuture<'a, Option<u64>>;

    /// Extend `lease` to `ttl` from now, if it is still the current holder and token: `false`
    /// when the lease was lost.
    fn renew<'a>(&'a self, name: &'a str, lease: &'a Lease, ttl: Duration)
    -> StateFuture<'a, bool>;

    /// Give `lease` up, if it is still held: `false` when it was not.
    fn release<'a>(&'a self, name: &'a str, lease: &'a Lease) -> StateFuture<'a, bool>;

    /// The current holder of `name`, if any.
    fn holder<'a>(&'a self, name: &'a str) -> StateFuture<'a, Option<Lease>>;
}

/// One account of the desired state, and the pod it is assigned to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    pub models: Vec<String>,
    pub pool_size: u32,
    /// The pod (worker `node.id`) that should serve it; `None`: unassigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_pod: Option<String>,
}

/// The desired accounts (`account:{id}`): written from the engines' config, assigned to pods by
/// the leader's reconciler, read by workers in `cluster.assignment: registry` mode. Only ids,
/// models and pool sizes are stored: how to start an account's agent (and its credentials) stay
/// in each worker's own config.
pub trait AccountStore: Send + Sync + 'static {
    /// Create or update each account's id, models and pool size, keeping its assignment.
    fn put_accounts<'a>(&'a self, accounts: &'a [AccountRecord]) -> StateFuture<'a, ()>;

    /// Every desired account, by id.
    fn accounts(&self) -> StateFuture<'_, Vec<AccountRecord>>;

    /// Assign `account` to `pod` (or unassign it with `None`), fenced: only while `lease` is the
    /// current holder of the lease `lease_name`; otherwise [`StateError::Fenced`]. Assigning an
    /// account that is not stored is [`StateError::Invalid`].
    fn assign<'a>(
        &'a self,
        account: &'a str,
        pod: Option<&'a str>,
        lease_name: &'a str,
        lease: &'a Lease,
    ) -> StateFuture<'a, ()>;
}

pub(crate) fn validate_lease(name: &str, holder: &str, ttl: Duration) -> Result<(), StateError> {
    if name.is_empty() || holder.is_empty() {
        return Err(StateError::Invalid(
            "a lease needs a name and a holder".into(),
        ));
    }
    if ttl.as_millis() == 0 {
        return Err(StateError::Invalid(format!(
            "the TTL of lease {name} must be at least 1 ms"
        )));
    }
    Ok(())
}

pub(crate) fn validate_account(account: &AccountRecord) -> Result<(), StateError> {
    if account.id.is_empty() {
        return Err(StateError::Invalid(
            "an account id must not be empty".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_have_one_stored_form() {
        let lease = Lease {
            holder: "engine:a".into(),
            token: 42,
        };
        assert_eq!(lease.encode(), "42:engine:a");
        assert_eq!(Lease::decode(&lease.encode()), Some(lease));
        assert_eq!(Lease::decode("x:y"), None);
    }
}
