//! Credits on ValKey: `credits:{id}` integers of milli-credits and `credits:{id}:grant`, the
//! last configured grant (see `keys.rs`). Changes of a balance that must not lose another
//! engine's are scripts (`DECRBY`/`INCRBY` inside, so they are atomic); reads are one `MGET`.

use std::sync::LazyLock;

use fred::prelude::KeysInterface;
use fred::types::scripts::Script;

use super::{ValkeyRegistry, keys};
use crate::credits::{
    Charge, CreditStore, Grant, MAX_BALANCE, validate_account_id, validate_amount, validate_grants,
};
use crate::error::StateError;
use crate::registry::StateFuture;
use crate::routing::validate_accounts;

static GRANTS: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("credits_grants.lua")));
static CHARGE: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("credits_charge.lua")));
static TOP_UP: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("credits_top_up.lua")));

fn parse_balance(account: &str, text: Option<String>) -> Result<Option<i64>, StateError> {
    text.map(|text| {
        text.parse::<i64>().map_err(|_| {
            StateError::Corrupt(format!(
                "credits of {account} hold {text:?}, not an integer"
            ))
        })
    })
    .transpose()
}

impl CreditStore for ValkeyRegistry {
    fn apply_grants<'a>(&'a self, grants: &'a [Grant]) -> StateFuture<'a, Vec<String>> {
        Box::pin(async move {
            validate_grants(grants)?;
            if grants.is_empty() {
                return Ok(Vec::new());
            }
            let mut script_keys = Vec::with_capacity(grants.len() * 2);
            let mut args = Vec::with_capacity(grants.len());
            for (account, grant) in grants {
                script_keys.push(keys::credits(account));
                script_keys.push(keys::credit_grant(account));
                args.push(grant.map(|g| g.to_string()).unwrap_or_default());
            }
            let applied: Vec<i64> = self.run("apply_grants", &GRANTS, script_keys, args).await?;
            Ok(applied
                .into_iter()
                .filter_map(|i| usize::try_from(i).ok()?.checked_sub(1))
                .filter_map(|i| grants.get(i).map(|(account, _)| account.clone()))
                .collect())
        })
    }

    fn balances<'a>(&'a self, accounts: &'a [String]) -> StateFuture<'a, Vec<Option<i64>>> {
        Box::pin(async move {
            if accounts.is_empty() {
                return Ok(Vec::new());
            }
            validate_accounts(accounts)?;
            let script_keys: Vec<String> = accounts.iter().map(|a| keys::credits(a)).collect();
            let stored: Vec<Option<String>> = self
                .bounded("balances", self.client.mget(script_keys))
                .await?;
            accounts
                .iter()
                .zip(stored)
                .map(|(account, text)| parse_balance(account, text))
                .collect()
        })
    }

    fn charge<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, Option<Charge>> {
        Box::pin(async move {
            validate_account_id(account)?;
            validate_amount("a charge", amount)?;
            let reply: Vec<i64> = self
                .run(
                    "charge",
                    &CHARGE,
                    vec![keys::credits(account)],
                    vec![amount.to_string()],
                )
                .await?;
            match reply.as_slice() {
                [0, ..] => Ok(None),
                [1, charged, balance] => Ok(Some(Charge {
                    charged: *charged,
                    balance: *balance,
                })),
                _ => Err(StateError::Corrupt(format!(
                    "the charge script answered {reply:?}"
                ))),
            }
        })
    }

    fn top_up<'a>(&'a self, account: &'a str, amount: i64) -> StateFuture<'a, i64> {
        Box::pin(async move {
            validate_account_id(account)?;
            validate_amount("a top-up", amount)?;
            self.run(
                "top_up",
                &TOP_UP,
                vec![keys::credits(account)],
                vec![amount.to_string(), MAX_BALANCE.to_string()],
            )
            .await
        })
    }

    fn set_balance<'a>(&'a self, account: &'a str, balance: Option<i64>) -> StateFuture<'a, ()> {
        Box::pin(async move {
            validate_account_id(account)?;
            let key = keys::credits(account);
            match balance {
                Some(balance) => {
                    validate_amount("a balance", balance)?;
                    let () = self
                        .bounded(
                            "set_balance",
                            self.client.set(key, balance, None, None, false),
                        )
                        .await?;
                }
                None => {
                    let _: i64 = self.bounded("set_balance", self.client.del(key)).await?;
                }
            }
            Ok(())
        })
    }
}
