//! `GET /health` as the product documents it: `{"status","accounts","total_slots","available_slots"}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every account can take traffic.
    Healthy,
    /// Some accounts cannot, or capacity is partly lost.
    Degraded,
    /// Shutting down: finishing in-flight work, admitting none.
    Draining,
    /// Nothing can be served.
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Draining => "draining",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    /// Whether a load balancer should send traffic here.
    pub fn is_serving(self) -> bool {
        matches!(self, HealthStatus::Healthy | HealthStatus::Degraded)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub accounts: u32,
    pub total_slots: u32,
    pub available_slots: u32,
}

impl HealthReport {
    /// The overall status of a set of accounts: healthy when every one is, unhealthy when none
    /// is serving, degraded in between.
    pub fn from_accounts(accounts: &[crate::worker::AccountSlots], draining: bool) -> Self {
        use crate::worker::AccountStatus;
        let serving = accounts
            .iter()
            .filter(|a| a.status != AccountStatus::Unhealthy)
            .count();
        let all_healthy = accounts.iter().all(|a| a.status == AccountStatus::Healthy);
        let status = if draining {
            HealthStatus::Draining
        } else if serving == 0 {
            HealthStatus::Unhealthy
        } else if all_healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        };
        HealthReport {
            status,
            accounts: accounts.len() as u32,
            total_slots: accounts.iter().map(|a| a.size).sum(),
            available_slots: accounts
                .iter()
                .filter(|a| a.status != AccountStatus::Unhealthy)
                .map(|a| a.idle)
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{AccountSlots, AccountStatus};

    fn account(status: AccountStatus, size: u32, idle: u32) -> AccountSlots {
        AccountSlots {
            account: "a".into(),
            models: vec!["kiro".into()],
            size,
            busy: size - idle,
            idle,
            starting: 0,
            failed: 0,
            queue_depth: 0,
            credits_used: 0.0,
            last_error: None,
            status,
        }
    }

    #[test]
    fn status_follows_the_accounts() {
        let h = HealthReport::from_accounts(
            &[
                account(AccountStatus::Healthy, 3, 2),
                account(AccountStatus::Healthy, 3, 3),
            ],
            false,
        );
        assert_eq!(
            (h.status, h.accounts, h.total_slots, h.available_slots),
            (HealthStatus::Healthy, 2, 6, 5)
        );
        let h = HealthReport::from_accounts(
            &[
                account(AccountStatus::Healthy, 3, 2),
                account(AccountStatus::Unhealthy, 3, 3),
            ],
            false,
        );
        assert_eq!((h.status, h.available_slots), (HealthStatus::Degraded, 2));
        let h = HealthReport::from_accounts(&[account(AccountStatus::Unhealthy, 3, 0)], false);
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(
            HealthReport::from_accounts(&[], false).status,
            HealthStatus::Unhealthy
        );
        let h = HealthReport::from_accounts(&[account(AccountStatus::Healthy, 1, 1)], true);
        assert_eq!(h.status, HealthStatus::Draining);
        assert!(!h.status.is_serving());
        for status in [
            HealthStatus::Healthy,
            HealthStatus::Degraded,
            HealthStatus::Draining,
            HealthStatus::Unhealthy,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}

/// One account as the engine sees it: what `GET /admin/accounts` lists and what the
/// per-account metrics export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub account: String,
    /// The worker holding the account's pool.
    pub worker: String,
    pub models: Vec<String>,
    /// The account's status after the engine's own judgement (an open breaker makes it
    /// unhealthy whatever the worker reports).
    pub status: crate::worker::AccountStatus,
    pub slots: u32,
    pub busy: u32,
    pub queue_depth: u32,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Credits left; `None` when the account's credits are not tracked.
    pub credits: Option<i64>,
    pub last_error: Option<String>,
    /// The worker is draining: it takes no new turns.
    pub draining: bool,
}
