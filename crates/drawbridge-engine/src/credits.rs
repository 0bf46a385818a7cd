//! The engine's view of the accounts' credits: a cache of the shared balances (re-read with
//! every refresh, so a charge or a top-up made through another engine is seen within one
//! `engine.refresh_interval`) that the scheduler reads without I/O, and the charges of finished
//! turns (applied to the cache at once, and to the store in the background: the client's
//! answer never waits for the store).

use std::sync::Arc;
use std::time::Duration;

use drawbridge_state::{CreditStore, Grant, StateError, from_milli, to_milli};
use drawbridge_telemetry::Shutdown;
use drawbridge_types::{ApiError, CreditChange, ErrorKind};

use crate::settings::Settings;
use crate::versioned::{Changes, Versioned};

/// How long a store operation made for a client (an admin change) may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) struct Credits {
    store: Arc<dyn CreditStore>,
    /// `request_cost`: milli-credits charged for a finished turn that reported no cost.
    settings: Settings,
    /// Balances as last read or changed (`None`: unmetered; an account not read yet counts as
    /// unmetered).
    cache: Versioned<Option<i64>>,
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
    pub fn new(store: Arc<dyn CreditStore>, settings: Settings, changes: Changes) -> Self {
        Credits {
            store,
            settings,
            cache: Versioned::new(changes),
        }
    }

    /// Every balance known, in milli-credits.
    pub fn balances(&self) -> std::collections::HashMap<String, Option<i64>> {
        self.cache.all()
    }

    /// A balance this engine just learned from its own change.
    fn remember(&self, account: &str, balance: Option<i64>) {
        self.cache.write(account, balance);
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
        let began = self.cache.began();
        match self.store.balances(accounts).await {
            Ok(balances) => {
                self.cache
                    .refreshed(began, accounts.iter().cloned().zip(balances), |_, _| false);
            }
            Err(error) => tracing::debug!(%error, "could not read the credit balances"),
        }
    }

    /// Charge a finished turn of `account`: what its agent reported, or the configured cost
    /// when it reported none. The cache drops at once; the store is charged in the background.
    pub fn charge(self: &Arc<Self>, account: &str, reported: f64, shutdown: &Shutdown) {
        let amount = match to_milli(reported) {
            0 => to_milli(self.settings.get().request_cost),
            amount => amount,
        };
        if amount == 0 {
            return;
        }
        self.cache.update(account, |cached| {
            cached
                .copied()
                .flatten()
                .map(|balance| Some(balance.saturating_sub(amount).max(0)))
        });
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
