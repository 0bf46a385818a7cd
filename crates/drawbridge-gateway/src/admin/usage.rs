//! `GET /admin/usage`: the usage ledger, filtered and grouped.

use std::collections::BTreeMap;

use drawbridge_state::{UsageFilter, UsageRow};
use drawbridge_types::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Admin, store_error};

/// `GET /admin/usage` query: filters, and what to group by.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    key: Option<String>,
    account: Option<String>,
    model: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC); default 30 days before `to`.
    from: Option<String>,
    /// Last day, inclusive; default today.
    to: Option<String>,
    /// Comma-separated subset of `day,key,account,model` (default: all four: the ledger's rows).
    group_by: Option<String>,
}

impl UsageQuery {
    /// The query string, its days checked.
    pub(super) fn parse(query: &str) -> Result<UsageQuery, ApiError> {
        let query: UsageQuery = serde_urlencoded::from_str(query).map_err(|e| {
            ApiError::invalid_request(format!(
                "Bad query ({e}): use key, account, model, from, to, group_by."
            ))
        })?;
        for (param, day) in [("from", &query.from), ("to", &query.to)] {
            if let Some(day) = day {
                valid_day(param, day)?;
            }
        }
        Ok(query)
    }

    /// What to group by, checked.
    fn groups(&self) -> Result<Vec<String>, ApiError> {
        let groups: Vec<String> = self
            .group_by
            .as_deref()
            .unwrap_or("day,key,account,model")
            .split(',')
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect();
        if let Some(bad) = groups
            .iter()
            .find(|g| !matches!(g.as_str(), "day" | "key" | "account" | "model"))
        {
            return Err(ApiError::invalid_request(format!(
                "Cannot group by '{bad}': use day, key, account, model."
            ))
            .with_param("group_by"));
        }
        Ok(groups)
    }
}

#[derive(Debug, Default, Clone, Serialize)]
struct UsageOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    credits: f64,
    /// Requests whose token counts are estimates.
    estimated_requests: u64,
}

impl UsageOut {
    fn add(&mut self, row: &UsageRow) {
        self.requests += row.requests;
        self.prompt_tokens += row.prompt_tokens;
        self.completion_tokens += row.completion_tokens;
        self.total_tokens += row.prompt_tokens + row.completion_tokens;
        self.credits += row.credits;
        self.estimated_requests += row.estimated_requests;
    }
}

fn valid_day(param: &str, day: &str) -> Result<(), ApiError> {
    if drawbridge_core::day::parse_day(day).is_some() {
        Ok(())
    } else {
        Err(
            ApiError::invalid_request(format!("{param} must be a day like 2026-12-01."))
                .with_param(param),
        )
    }
}

/// The ledger's rows matching `query`, grouped, and their total.
pub(super) async fn usage(admin: &Admin, query: &UsageQuery) -> Result<Value, ApiError> {
    let groups = query.groups()?;
    let filter = UsageFilter {
        key_id: query.key.clone(),
        account: query.account.clone(),
        model: query.model.clone(),
        from_day: query.from.clone(),
        to_day: query.to.clone(),
    };
    let rows = admin
        .stores
        .usage
        .usage(&filter)
        .await
        .map_err(store_error)?;
    let by = |g: &str| groups.iter().any(|x| x == g);
    let mut grouped: BTreeMap<(String, String, String, String), UsageOut> = BTreeMap::new();
    let mut total = UsageOut::default();
    for row in &rows {
        let pick = |on: bool, v: &String| if on { v.clone() } else { String::new() };
        let group = (
            pick(by("day"), &row.day),
            pick(by("key"), &row.key_id),
            pick(by("account"), &row.account),
            pick(by("model"), &row.model),
        );
        let out = grouped.entry(group.clone()).or_insert_with(|| UsageOut {
            day: by("day").then_some(group.0),
            key: by("key").then_some(group.1),
            account: by("account").then_some(group.2),
            model: by("model").then_some(group.3),
            ..UsageOut::default()
        });
        out.add(row);
        total.add(row);
    }
    Ok(serde_json::json!({
        "object": "list",
        "data": grouped.into_values().collect::<Vec<_>>(),
        "total": total,
    }))
}
