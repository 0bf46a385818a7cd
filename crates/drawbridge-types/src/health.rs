//! `GET /health` as the product documents it: `{"status","accounts","total_slots","available_slots"}`,
//! plus `providers` (each HTTP provider account's availability and recent latency) when the
//! engine serves any.

use serde::{Deserialize, Serialize};

/// The status of a process as `GET /health` reports it, and of a pod as the registry keeps it
/// (`drawbridge_state::PodStatus` is this type): the same lowercase names on the wire and in
/// ValKey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Each HTTP provider account the engine serves (left out when there is none, so that a
    /// deployment of ACP accounts only answers as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderHealth>,
}

/// One HTTP provider account in `GET /health`: whether a request could go to it now, and how
/// fast it has been answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderHealth {
    /// The account's id.
    pub id: String,
    /// Its kind: `openai`, `anthropic` or `gemini`.
    pub kind: String,
    /// Its circuit breaker is closed, it is not resting after a rate limit, and it has a free
    /// slot (`provider.max_concurrency`).
    pub available: bool,
    /// The median time to the first event of its recent turns, in milliseconds (`None` until
    /// it has served one since the engine started).
    pub latency_p50_ms: Option<f64>,
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
            providers: Vec::new(),
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
            default_model: None,
            tools_refused: 0,
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
        assert!(h.providers.is_empty());
        for status in [
            HealthStatus::Healthy,
            HealthStatus::Degraded,
            HealthStatus::Draining,
            HealthStatus::Unhealthy,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn providers_are_left_out_when_there_are_none_and_read_back_when_present() {
        let mut h = HealthReport::from_accounts(&[account(AccountStatus::Healthy, 1, 1)], false);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "healthy", "accounts": 1, "total_slots": 1, "available_slots": 1})
        );
        // An engine without the field (an older one) reads as no providers.
        let back: HealthReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, h);
        h.providers = vec![ProviderHealth {
            id: "oa".into(),
            kind: "openai".into(),
            available: true,
            latency_p50_ms: None,
        }];
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(
            json["providers"],
            serde_json::json!([{"id": "oa", "kind": "openai", "available": true, "latency_p50_ms": null}])
        );
        assert_eq!(serde_json::from_value::<HealthReport>(json).unwrap(), h);
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
    /// Credits left, in milli-credits (1000 = one Kiro credit); `None` when the account's
    /// credits are not tracked (unmetered).
    pub credits: Option<i64>,
    pub last_error: Option<String>,
    /// The worker is draining: it takes no new turns.
    pub draining: bool,
    /// The model the account's agent runs when a request names one of its labels (e.g.
    /// `kiro`), when the agent announced it.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Tool runs the account's agents asked for and were refused, since their worker started.
    #[serde(default)]
    pub tools_refused: u64,
}

/// A change to an account's credits, in milli-credits (1000 = one Kiro credit): the body of
/// the engine's `POST /internal/accounts/{id}/credits`, `{"add": N}` or `{"set": N}`, or
/// `{"set": null}` to stop tracking the account's credits (unmetered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditChange {
    /// Top up by this many milli-credits (an unmetered account starts from 0).
    Add(i64),
    /// Set the balance, or (`None`) make the account unmetered.
    Set(Option<i64>),
}

impl CreditChange {
    /// Parse the request body; a bad one is a 400 naming the field.
    pub fn from_json(body: &[u8]) -> Result<CreditChange, crate::ApiError> {
        /// `Some(None)` for an explicit `null`, `None` when the field is absent.
        fn present<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Option<i64>>, D::Error> {
            Option::<i64>::deserialize(d).map(Some)
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[serde(default)]
            add: Option<i64>,
            #[serde(default, deserialize_with = "present")]
            set: Option<Option<i64>>,
        }
        let body: Body = serde_json::from_slice(body).map_err(|e| {
            crate::ApiError::invalid_request(format!(
                "The body must be {{\"add\": N}} or {{\"set\": N or null}} (milli-credits): {e}"
            ))
        })?;
        let negative = |n: i64| {
            crate::ApiError::invalid_request(format!("Credits must not be negative, not {n}."))
        };
        match (body.add, body.set) {
            (Some(n), None) if n < 0 => Err(negative(n).with_param("add")),
            (Some(n), None) => Ok(CreditChange::Add(n)),
            (None, Some(Some(n))) if n < 0 => Err(negative(n).with_param("set")),
            (None, Some(set)) => Ok(CreditChange::Set(set)),
            _ => Err(crate::ApiError::invalid_request(
                "Give exactly one of \"add\" and \"set\".",
            )),
        }
    }
}

#[cfg(test)]
mod credit_change_tests {
    use super::*;

    #[test]
    fn bodies_parse_and_bad_ones_are_refused() {
        let parse = |s: &str| CreditChange::from_json(s.as_bytes());
        assert_eq!(parse(r#"{"add": 2500}"#), Ok(CreditChange::Add(2500)));
        assert_eq!(parse(r#"{"set": 0}"#), Ok(CreditChange::Set(Some(0))));
        assert_eq!(parse(r#"{"set": null}"#), Ok(CreditChange::Set(None)));
        for bad in [
            "{}",
            r#"{"add": 1, "set": 2}"#,
            r#"{"add": -1}"#,
            r#"{"set": -5}"#,
            r#"{"add": 1.5}"#,
            r#"{"top_up": 1}"#,
            "nope",
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.status(), 400, "{bad}");
        }
        assert_eq!(
            parse(r#"{"set": -5}"#).unwrap_err().param.as_deref(),
            Some("set")
        );
    }
}
