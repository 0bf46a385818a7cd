//! Where each desired account should run: the reconciler's plan, as a pure function of the
//! desired accounts (with their current assignment) and the live pods.
//!
//! Rules, in order:
//! - An account a static pod serves (one with its own configured accounts) and that is not
//!   assigned is left alone: someone else placed it.
//! - An account assigned to a live, assignable pod that takes work (not draining, not
//!   unhealthy) stays there.
//! - An unassigned account that such a pod already serves is assigned to it (after the store
//!   lost its data, the assignment is rebuilt from what runs, without moving anything).
//! - Any other account (unassigned, or its pod is gone, draining, unhealthy, or no longer takes
//!   assignments) moves to the assignable pod that takes work and holds the fewest accounts
//!   (ties: smallest id), while it has room (`max_per_pod`, 0 = no limit).
//! - An account with nowhere to go keeps a pod that is still registered (a draining pod serves
//!   it until then) and loses an assignment to a pod that is gone.

use std::collections::{BTreeMap, BTreeSet};

/// A live pod as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub id: String,
    /// It takes assignments (`cluster.assignment: registry`).
    pub assignable: bool,
    /// Neither draining nor unhealthy.
    pub accepting: bool,
    /// The accounts it reports serving.
    pub serving: Vec<String>,
}

/// A desired account and the pod it is assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub id: String,
    pub assigned_pod: Option<String>,
}

/// One change of assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub account: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The assignment changes that bring `accounts` onto `pods`, in account order.
pub fn plan(accounts: &[AccountView], pods: &[PodView], max_per_pod: usize) -> Vec<Move> {
    let by_id: BTreeMap<&str, &PodView> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
    let statically_served: BTreeSet<&str> = pods
        .iter()
        .filter(|p| !p.assignable)
        .flat_map(|p| p.serving.iter().map(String::as_str))
        .collect();
    let keeps = |pod: &str| by_id.get(pod).is_some_and(|p| p.assignable && p.accepting);
    // Load of each pod that can take work: the accounts that stay on it.
    let mut load: BTreeMap<&str, usize> = pods
        .iter()
        .filter(|p| p.assignable && p.accepting)
        .map(|p| (p.id.as_str(), 0))
        .collect();
    // The pod that already serves an unassigned account, if one can keep it.
    let adopter = |account: &AccountView| -> Option<&str> {
        if account.assigned_pod.is_some() {
            return None;
        }
        pods.iter()
            .find(|p| p.assignable && p.accepting && p.serving.contains(&account.id))
            .map(|p| p.id.as_str())
    };
    for account in accounts {
        let stays = account.assigned_pod.as_deref().filter(|pod| keeps(pod));
        if let Some(pod) = stays.or_else(|| adopter(account))
            && let Some(n) = load.get_mut(pod)
        {
            *n += 1;
        }
    }
    let mut moves = Vec::new();
    for account in accounts {
        let current = account.assigned_pod.as_deref();
        if current.is_some_and(keeps) {
            continue;
        }
        if let Some(pod) = adopter(account) {
            moves.push(Move {
                account: account.id.clone(),
                from: None,
                to: Some(pod.to_owned()),
            });
            continue;
        }
        if current.is_none() && statically_served.contains(account.id.as_str()) {
            continue;
        }
        let target = load
            .iter()
            .filter(|(_, n)| max_per_pod == 0 || **n < max_per_pod)
            .min_by_key(|(id, n)| (**n, **id))
            .map(|(id, _)| *id);
        let to = match target {
            Some(pod) => {
                if let Some(n) = load.get_mut(pod) {
                    *n += 1;
                }
                Some(pod.to_owned())
            }
            None => match current {
                Some(pod) if by_id.contains_key(pod) => continue,
                Some(_) => None,
                None => continue,
            },
        };
        moves.push(Move {
            account: account.id.clone(),
            from: current.map(str::to_owned),
            to,
        });
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(id: &str, assignable: bool, accepting: bool, serving: &[&str]) -> PodView {
        PodView {
            id: id.into(),
            assignable,
            accepting,
            serving: serving.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn account(id: &str, pod: Option<&str>) -> AccountView {
        AccountView {
            id: id.into(),
            assigned_pod: pod.map(str::to_owned),
        }
    }

    fn mv(account: &str, from: Option<&str>, to: Option<&str>) -> Move {
        Move {
            account: account.into(),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn unassigned_accounts_spread_over_the_emptiest_pods() {
        let pods = [pod("w1", true, true, &[]), pod("w2", true, true, &[])];
        let accounts = [account("a", None), account("b", None), account("c", None)];
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![
                mv("a", None, Some("w1")),
                mv("b", None, Some("w2")),
                mv("c", None, Some("w1")),
            ]
        );
    }

    #[test]
    fn a_settled_fleet_needs_no_moves() {
        let pods = [pod("w1", true, true, &["a"]), pod("w2", true, true, &["b"])];
        let accounts = [account("a", Some("w1")), account("b", Some("w2"))];
        assert!(plan(&accounts, &pods, 0).is_empty());
    }

    #[test]
    fn accounts_leave_dead_draining_and_unhealthy_pods() {
        let pods = [
            pod("draining", true, false, &["b"]),
            pod("live", true, true, &["c"]),
        ];
        let accounts = [
            account("a", Some("dead")),
            account("b", Some("draining")),
            account("c", Some("live")),
        ];
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![
                mv("a", Some("dead"), Some("live")),
                mv("b", Some("draining"), Some("live")),
            ]
        );
    }

    #[test]
    fn with_nowhere_to_go_a_gone_pod_loses_the_account_and_a_draining_one_keeps_it() {
        let pods = [pod("draining", true, false, &["b"])];
        let accounts = [account("a", Some("dead")), account("b", Some("draining"))];
        assert_eq!(plan(&accounts, &pods, 0), vec![mv("a", Some("dead"), None)]);
    }

    #[test]
    fn unassigned_accounts_stay_where_they_run() {
        // The store lost its data: nothing is assigned, the pods still serve their accounts.
        let pods = [
            pod("w1", true, true, &["a", "b"]),
            pod("w2", true, true, &[]),
        ];
        let accounts = [account("a", None), account("b", None), account("c", None)];
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![
                mv("a", None, Some("w1")),
                mv("b", None, Some("w1")),
                mv("c", None, Some("w2")),
            ]
        );
    }

    #[test]
    fn room_is_bounded_per_pod() {
        let pods = [pod("w1", true, true, &["a"])];
        let accounts = [account("a", Some("w1")), account("b", None)];
        assert!(plan(&accounts, &pods, 1).is_empty());
        assert_eq!(plan(&accounts, &pods, 2), vec![mv("b", None, Some("w1"))]);
    }

    #[test]
    fn static_pods_are_left_alone_and_get_nothing() {
        let pods = [
            pod("static", false, true, &["a"]),
            pod("w1", true, true, &[]),
        ];
        let accounts = [account("a", None), account("b", Some("static"))];
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![mv("b", Some("static"), Some("w1"))]
        );
    }
}
