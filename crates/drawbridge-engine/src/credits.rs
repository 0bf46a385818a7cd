//! The engine's view of the accounts' credits: a cache of the shared balances (re-read with
//! every refresh, so a charge or a top-up made through another engine is seen within one
//! `engine.refresh_interval`) that the scheduler reads without I/O, and the charges of finished
//! turns (applied to the cache at once, and to the store in the background: the client's
//! answer never waits for the store).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use drawbridge_state::{CreditStore, Grant, StateError, from_milli, to_milli};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::{ApiError, CreditChange, ErrorKind};

/// How long a store operation made for a client (an admin change) may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) struct Credits {
    store: Arc<dyn CreditStore>,
    /// Milli-credits charged for a finished turn that reported no cost (follows reloads).
    request_cost: AtomicI64,
    /// Balances as last read or changed (`None`: unmetered; an account not read yet counts as
    /// unmetered), with when this engine last changed each one.
    cache: RwLock<HashMap<String, Cached>>,
    /// Numbers this engine's own changes.
    changes: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    balance: Option<i64>,
    /// The number of this engine's last change of the balance (a read that began before it
    /// is older news); 0 for a balance read from the store.
    changed: u64,
}

/// The configured grants of `config`'s accounts, in milli-credits.
pub fn grants(config: &drawbridge_config::Config) -> Vec<Grant> {
    config
        .accounts
        .iter()
        .map(|a| (a.id.clone(), a.credits.map(to_milli)))
        .collect()
}

fn store_error(error: &StateError) -> ApiError {
    tracing::warn!(%error, "credit store failed");
    if error.retryable() {
        ApiError::unavailable("The credit store is unreachable; try again.")
            .with_retry_after(Duration::from_secs(1))
    } else {
        ApiError::internal("The credit store refused the change.")
    }
}

impl Credits {
    pub fn new(store: Arc<dyn CreditStore>, request_cost: f64) -> Self {
        Credits {
            store,
            request_cost: AtomicI64::new(to_milli(request_cost)),
            cache: RwLock::new(HashMap::new()),
            changes: AtomicU64::new(0),
        }
    }

    /// Charge `request_cost` credits from now on for turns that report none (a reload).
    pub fn set_request_cost(&self, request_cost: f64) {
        self.request_cost
            .store(to_milli(request_cost), Ordering::Relaxed);
    }

    /// The balance the scheduler sees, in milli-credits (`None`: unmetered).
    pub fn balance(&self, account: &str) -> Option<i64> {
        self.cache
            .read()
            .ok()
            .and_then(|cache| cache.get(account).and_then(|c| c.balance))
    }

    /// A new change number.
    fn next_change(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A balance this engine just learned from its own change.
    fn remember(&self, account: &str, balance: Option<i64>) {
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(
                account.to_owned(),
                Cached {
                    balance,
                    changed: self.next_change(),
                },
            );
        }
    }

    /// Apply the configured grants (at start, and on every reload).
    pub async fn apply_grants(&self, grants: &[Grant]) {
        match self.store.apply_grants(grants).await {
            Ok(applied) => {
                for account in applied {
                    tracing::info!(account, "configured credits applied");
                }
            }
            Err(error) => tracing::warn!(%error, "could not apply the configured credits"),
        }
    }

    /// Re-read the balances of `accounts`; on failure the cache stays as it was. A balance
    /// this engine changed while the read was on its way keeps the change.
    pub async fn refresh(&self, accounts: &[String]) {
        let asked = self.changes.load(Ordering::SeqCst);
        match self.store.balances(accounts).await {
            Ok(balances) => {
                if let Ok(mut cache) = self.cache.write() {
                    let mut fresh: HashMap<String, Cached> = accounts
                        .iter()
                        .cloned()
                        .zip(balances.into_iter().map(|balance| Cached {
                            balance,
                            changed: 0,
                        }))
                        .collect();
                    for (account, local) in cache.iter() {
                        if local.changed > asked
                            && let Some(entry) = fresh.get_mut(account)
                        {
                            *entry = *local;
                        }
                    }
                    *cache = fresh;
                }
            }
            Err(error) => tracing::debug!(%error, "could not read the credit balances"),
        }
    }

    /// Charge a finished turn of `account`: what its agent reported, or the configured cost
    /// when it reported none. The cache drops at once; the store is charged in the background.
    pub fn charge(self: &Arc<Self>, account: &str, reported: f64, shutdown: &Shutdown) {
        let amount = match to_milli(reported) {
            0 => self.request_cost.load(Ordering::Relaxed),
            amount => amount,
        };
        if amount == 0 {
            return;
        }
        if let Ok(mut cache) = self.cache.write()
            && let Some(cached) = cache.get_mut(account)
            && let Some(balance) = cached.balance
        {
            *cached = Cached {
                balance: Some(balance.saturating_sub(amount).max(0)),
                changed: self.next_change(),
            };
        }
        let credits = Arc::clone(self);
        let account = account.to_owned();
        shutdown.spawn(async move {
            match credits.store.charge(&account, amount).await {
                Ok(Some(charge)) => {
                    credits.remember(&account, Some(charge.balance));
                    if charge.balance == 0 {
                        tracing::warn!(account, "account credits exhausted");
                    }
                }
                Ok(None) => credits.remember(&account, None),
                Err(error) => tracing::warn!(
                    account,
                    milli_credits = amount,
                    %error,
                    "could not charge the account's credits"
                ),
            }
        });
    }

    /// `account`'s agent said its quota is spent: its balance is 0 (metered from now on) until
    /// an operator tops it up or resets it. The cache drops at once; the store in the
    /// background.
    pub fn exhaust(self: &Arc<Self>, account: &str, shutdown: &Shutdown) {
        self.remember(account, Some(0));
        let credits = Arc::clone(self);
        let account = account.to_owned();
        shutdown.spawn(async move {
            match credits.store.set_balance(&account, Some(0)).await {
                // Again once stored: a read that began before the write does not undo it.
                Ok(()) => credits.remember(&account, Some(0)),
                Err(error) => {
                    tracing::warn!(account, %error, "could not mark the account's credits spent");
                }
            }
        });
    }

    /// An admin change of `account`'s credits: the balance after (`None`: unmetered).
    pub async fn change(
        &self,
        account: &str,
        change: CreditChange,
    ) -> Result<Option<i64>, ApiError> {
        let result = tokio::time::timeout(STORE_TIMEOUT, async {
            match change {
                CreditChange::Add(amount) => self.store.top_up(account, amount).await.map(Some),
                CreditChange::Set(balance) => self
                    .store
                    .set_balance(account, balance)
                    .await
                    .map(|()| balance),
            }
        })
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorKind::Timeout,
                "The credit store did not answer in time.",
            )
        })?;
        let balance = match result {
            Ok(balance) => balance,
            Err(StateError::Invalid(message)) => {
                return Err(ApiError::invalid_request(message).with_param("credits"));
            }
            Err(error) => return Err(store_error(&error)),
        };
        self.remember(account, balance);
        tracing::info!(
            account,
            credits = balance.map(from_milli),
            "account credits changed"
        );
        Ok(balance)
    }
}
