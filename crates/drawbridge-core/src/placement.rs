//! Where each desired account should run: the reconciler's plan, as a pure function of the
//! desired accounts (with their current assignment) and the live pods.
//!
//! Rules, in order:
//! - An account a static pod serves (one with its own configured accounts) and that is not
//!   assigned is left alone: someone else placed it.
//! - An account assigned to a live, assignable pod that takes work (not draining, not
//!   unhealthy) stays there (but see rebalancing below).
//! - An unassigned account that such a pod already serves is assigned to it (after the store
//!   lost its data, the assignment is rebuilt from what runs, without moving anything).
//! - Any other account (unassigned, or its pod is gone, draining, unhealthy, or no longer takes
//!   assignments) moves to the assignable pod that takes work and carries the least load
//!   (ties: fewer accounts, then smallest id), while it has room (`max_per_pod` accounts, 0 = no
//!   limit). A pod's load is the weight of its accounts: each account's
//!   [`AccountView::weight`], the agent processes it runs (its `pool_size`), so an account of
//!   eight processes counts as much as eight of one. The loads include the accounts this plan
//!   has just placed, so a burst of unassigned accounts spreads over the pods within one plan.
//! - An account with nowhere to go keeps a pod that is still registered (a draining pod serves
//!   it until then) and loses an assignment to a pod that is gone.
//! - Rebalancing, once the above is planned: an account moves from a more loaded assignable pod
//!   that takes work to the least loaded one with room when that narrows the gap: the target's
//!   load plus the account's weight stays below the source's load (with weights of 1: the
//!   source holds at least 2 more accounts). At most [`MAX_REBALANCE_PER_PASS`] such moves per
//!   plan (the next pass continues). Only an account that stays where it is assigned and is
//!   idle there moves: the pod reports no request in flight or queued for it
//!   ([`PodView::busy`]). A busy account is skipped this pass and moves on a later one once
//!   idle; this is how an account is drained before it moves. Choice: the most loaded pod
//!   (ties: smallest id) that has an idle account whose move narrows the gap, and the first
//!   such account by id; if the most loaded pods hold none, the next most loaded pod gives one.
//!   Accounts that were just placed by this plan do not move again in it.
//!
//! An account that moves starts on the new pod when it sees the new assignment; the old pod,
//! if it still runs, keeps serving it until the new one reports a ready agent, then stops it
//! (turns in flight finish): see the worker's `assignment` module.

use std::collections::{BTreeMap, BTreeSet};

/// At most this many accounts move per plan to even out the load (moves off dead, draining or
/// unhealthy pods are not bounded).
pub const MAX_REBALANCE_PER_PASS: usize = 1;

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
    /// The accounts it serves with a request in flight or queued: they are not moved to
    /// rebalance until idle.
    pub busy: BTreeSet<String>,
}

/// A desired account and the pod it is assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub id: String,
    pub assigned_pod: Option<String>,
    /// The load it puts on a pod: the agent processes it runs (its `pool_size`; 0 counts as 1).
    pub weight: u32,
}

impl AccountView {
    fn weight(&self) -> u64 {
        u64::from(self.weight.max(1))
    }
}

/// What a pod carries: the weight of its accounts, and how many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Load {
    weight: u64,
    accounts: usize,
}

impl Load {
    fn add(&mut self, weight: u64) {
        self.weight += weight;
        self.accounts += 1;
    }

    fn remove(&mut self, weight: u64) {
        self.weight = self.weight.saturating_sub(weight);
        self.accounts = self.accounts.saturating_sub(1);
    }

    fn has_room(&self, max_per_pod: usize) -> bool {
        max_per_pod == 0 || self.accounts < max_per_pod
    }
}

/// One change of assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub account: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The assignment changes that bring `accounts` onto `pods`: in account order, then the
/// rebalancing moves.
pub fn plan(accounts: &[AccountView], pods: &[PodView], max_per_pod: usize) -> Vec<Move> {
    let by_id: BTreeMap<&str, &PodView> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
    let statically_served: BTreeSet<&str> = pods
        .iter()
        .filter(|p| !p.assignable)
        .flat_map(|p| p.serving.iter().map(String::as_str))
        .collect();
    let keeps = |pod: &str| by_id.get(pod).is_some_and(|p| p.assignable && p.accepting);
    // Load of each pod that can take work: the accounts that stay on it.
    let mut load: BTreeMap<&str, Load> = pods
        .iter()
        .filter(|p| p.assignable && p.accepting)
        .map(|p| (p.id.as_str(), Load::default()))
        .collect();
    let weights: BTreeMap<&str, u64> = accounts
        .iter()
        .map(|a| (a.id.as_str(), a.weight()))
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
    // The accounts that stay where they are assigned, by pod: those rebalancing may move.
    let mut staying: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for account in accounts {
        let stays = account.assigned_pod.as_deref().filter(|pod| keeps(pod));
        if let Some(pod) = stays {
            staying.entry(pod).or_default().insert(account.id.as_str());
        }
        if let Some(pod) = stays.or_else(|| adopter(account))
            && let Some(n) = load.get_mut(pod)
        {
            n.add(account.weight());
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
            .filter(|(_, n)| n.has_room(max_per_pod))
            .min_by_key(|(id, n)| (**n, **id))
            .map(|(id, _)| *id);
        let to = match target {
            Some(pod) => {
                if let Some(n) = load.get_mut(pod) {
                    n.add(account.weight());
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
    rebalance(
        &mut moves,
        &mut load,
        &mut staying,
        &Placed { by_id, weights },
        max_per_pod,
    );
    moves
}

/// What rebalancing reads: the pods by id, the accounts' weights.
struct Placed<'a> {
    by_id: BTreeMap<&'a str, &'a PodView>,
    weights: BTreeMap<&'a str, u64>,
}

/// Even out `load` by moving idle `staying` accounts, at most [`MAX_REBALANCE_PER_PASS`].
fn rebalance(
    moves: &mut Vec<Move>,
    load: &mut BTreeMap<&str, Load>,
    staying: &mut BTreeMap<&str, BTreeSet<&str>>,
    placed: &Placed<'_>,
    max_per_pod: usize,
) {
    for _ in 0..MAX_REBALANCE_PER_PASS {
        let Some((target, least)) = load
            .iter()
            .filter(|(_, n)| n.has_room(max_per_pod))
            .min_by_key(|(id, n)| (**n, **id))
            .map(|(id, n)| (*id, n.weight))
        else {
            return;
        };
        let mut sources: Vec<(&str, u64)> = load
            .iter()
            .filter(|(id, n)| **id != target && n.weight > least)
            .map(|(id, n)| (*id, n.weight))
            .collect();
        sources.sort_by_key(|(id, n)| (std::cmp::Reverse(*n), *id));
        // An idle account whose move narrows the gap: the target ends below the source.
        let pick = sources.iter().find_map(|(pod, carried)| {
            let busy = &placed.by_id.get(pod)?.busy;
            staying
                .get(pod)?
                .iter()
                .filter(|account| !busy.contains(**account))
                .find_map(|account| {
                    let weight = placed.weights.get(account).copied().unwrap_or(1);
                    (least + weight < *carried).then_some((*pod, *account, weight))
                })
        });
        let Some((from, account, weight)) = pick else {
            return;
        };
        if let Some(accounts) = staying.get_mut(from) {
            accounts.remove(account);
        }
        if let Some(n) = load.get_mut(from) {
            n.remove(weight);
        }
        if let Some(n) = load.get_mut(target) {
            n.add(weight);
        }
        moves.push(Move {
            account: account.to_owned(),
            from: Some(from.to_owned()),
            to: Some(target.to_owned()),
        });
    }
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
            busy: BTreeSet::new(),
        }
    }

    fn busy(mut pod: PodView, accounts: &[&str]) -> PodView {
        pod.busy = accounts.iter().map(|a| (*a).to_owned()).collect();
        pod
    }

    fn account(id: &str, pod: Option<&str>) -> AccountView {
        weighted(id, pod, 1)
    }

    fn weighted(id: &str, pod: Option<&str>, weight: u32) -> AccountView {
        AccountView {
            id: id.into(),
            assigned_pod: pod.map(str::to_owned),
            weight,
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

    /// How many accounts each pod is assigned, by pod id.
    fn counts(accounts: &[AccountView], pods: &[PodView]) -> Vec<(String, usize)> {
        pods.iter()
            .map(|p| {
                let n = accounts
                    .iter()
                    .filter(|a| a.assigned_pod.as_deref() == Some(p.id.as_str()))
                    .count();
                (p.id.clone(), n)
            })
            .collect()
    }

    /// One reconcile pass: plan, then apply the moves to the views (the pods serve what they
    /// are assigned, as workers do once they see the assignment). The moves it made.
    fn pass(accounts: &mut [AccountView], pods: &mut [PodView]) -> Vec<Move> {
        let moves = plan(accounts, pods, 0);
        for m in &moves {
            for a in accounts.iter_mut().filter(|a| a.id == m.account) {
                a.assigned_pod.clone_from(&m.to);
            }
        }
        for p in pods.iter_mut() {
            p.serving = accounts
                .iter()
                .filter(|a| a.assigned_pod.as_deref() == Some(p.id.as_str()))
                .map(|a| a.id.clone())
                .collect();
        }
        moves
    }

    #[test]
    fn a_burst_of_unassigned_accounts_spreads_within_one_plan() {
        let mut pods = [
            pod("w1", true, true, &[]),
            pod("w2", true, true, &[]),
            pod("w3", true, true, &[]),
        ];
        let mut accounts: Vec<AccountView> = ["a", "b", "c", "d", "e", "f", "g"]
            .map(|a| account(a, None))
            .into();
        assert_eq!(pass(&mut accounts, &mut pods).len(), 7);
        assert_eq!(
            counts(&accounts, &pods),
            vec![("w1".into(), 3), ("w2".into(), 2), ("w3".into(), 2)]
        );
        assert!(pass(&mut accounts, &mut pods).is_empty());
    }

    #[test]
    fn an_idle_account_moves_from_the_most_to_the_least_loaded_pod() {
        let pods = [
            pod("w1", true, true, &["a", "b", "c"]),
            pod("w2", true, true, &[]),
        ];
        let accounts = [
            account("a", Some("w1")),
            account("b", Some("w1")),
            account("c", Some("w1")),
        ];
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![mv("a", Some("w1"), Some("w2"))]
        );
    }

    #[test]
    fn a_difference_of_one_account_is_left_alone() {
        let pods = [
            pod("w1", true, true, &["a", "b"]),
            pod("w2", true, true, &["c"]),
            pod("w3", true, true, &["d"]),
        ];
        let accounts = [
            account("a", Some("w1")),
            account("b", Some("w1")),
            account("c", Some("w2")),
            account("d", Some("w3")),
        ];
        assert!(plan(&accounts, &pods, 0).is_empty());
    }

    #[test]
    fn rebalancing_moves_at_most_the_bound_per_plan() {
        let pods = [
            pod("w1", true, true, &["a", "b", "c", "d", "e", "f"]),
            pod("w2", true, true, &[]),
            pod("w3", true, true, &[]),
        ];
        let accounts = ["a", "b", "c", "d", "e", "f"].map(|a| account(a, Some("w1")));
        let moves = plan(&accounts, &pods, 0);
        assert_eq!(moves.len(), MAX_REBALANCE_PER_PASS);
        assert_eq!(moves[0], mv("a", Some("w1"), Some("w2")));
    }

    #[test]
    fn busy_accounts_are_not_moved_to_rebalance() {
        let accounts = [
            account("a", Some("w1")),
            account("b", Some("w1")),
            account("c", Some("w1")),
        ];
        let loaded = pod("w1", true, true, &["a", "b", "c"]);
        let pods = [busy(loaded.clone(), &["a"]), pod("w2", true, true, &[])];
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![mv("b", Some("w1"), Some("w2"))]
        );
        let pods = [busy(loaded, &["a", "b", "c"]), pod("w2", true, true, &[])];
        assert!(plan(&accounts, &pods, 0).is_empty());
    }

    #[test]
    fn when_the_most_loaded_pod_is_all_busy_the_next_one_still_two_above_gives() {
        let pods = [
            busy(
                pod("w1", true, true, &["a", "b", "c", "d"]),
                &["a", "b", "c", "d"],
            ),
            pod("w2", true, true, &["e", "f", "g"]),
            pod("w3", true, true, &[]),
        ];
        let accounts = [
            account("a", Some("w1")),
            account("b", Some("w1")),
            account("c", Some("w1")),
            account("d", Some("w1")),
            account("e", Some("w2")),
            account("f", Some("w2")),
            account("g", Some("w2")),
        ];
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![mv("e", Some("w2"), Some("w3"))]
        );
    }

    #[test]
    fn equally_loaded_pods_give_in_id_order() {
        let pods = [
            pod("w2", true, true, &["d", "e", "f"]),
            pod("w1", true, true, &["a", "b", "c"]),
            pod("w3", true, true, &[]),
        ];
        let accounts = [
            account("a", Some("w1")),
            account("b", Some("w1")),
            account("c", Some("w1")),
            account("d", Some("w2")),
            account("e", Some("w2")),
            account("f", Some("w2")),
        ];
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![mv("a", Some("w1"), Some("w3"))]
        );
    }

    #[test]
    fn rebalancing_respects_the_room_per_pod() {
        // w1 holds more than the bound (it was raised, then lowered); w2 is full.
        let pods = [
            pod("w1", true, true, &["a", "b", "c"]),
            pod("w2", true, true, &["d"]),
        ];
        let accounts = [
            account("a", Some("w1")),
            account("b", Some("w1")),
            account("c", Some("w1")),
            account("d", Some("w2")),
        ];
        assert!(plan(&accounts, &pods, 1).is_empty());
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![mv("a", Some("w1"), Some("w2"))]
        );
    }

    #[test]
    fn rebalancing_counts_the_accounts_just_placed_and_does_not_move_them_again() {
        let pods = [
            pod("w1", true, true, &["a", "b", "c"]),
            pod("w2", true, true, &[]),
        ];
        let accounts = [
            account("a", Some("w1")),
            account("b", Some("w1")),
            account("c", Some("w1")),
            account("d", None),
        ];
        // d goes to w2 (1), w1 still holds 3: one of w1's moves too, and d stays put.
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![mv("d", None, Some("w2")), mv("a", Some("w1"), Some("w2")),]
        );
        // The store lost its data: w1's accounts are assigned back to it, none moves twice in
        // one plan; the next plan evens out.
        let pods = [
            pod("w1", true, true, &["a", "b", "c"]),
            pod("w2", true, true, &[]),
        ];
        let accounts = [account("a", None), account("b", None), account("c", None)];
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![
                mv("a", None, Some("w1")),
                mv("b", None, Some("w1")),
                mv("c", None, Some("w1")),
            ]
        );
    }

    #[test]
    fn the_issue_scenario_one_pod_takes_all_then_joiners_even_out() {
        // The store restarted empty; one worker is back and gets the three accounts.
        let mut accounts: Vec<AccountView> = ["a", "b", "c"].map(|a| account(a, None)).into();
        let mut pods = vec![pod("w1", true, true, &[])];
        assert_eq!(pass(&mut accounts, &mut pods).len(), 3);
        assert_eq!(counts(&accounts, &pods), vec![("w1".into(), 3)]);
        // Two more come back; a and b have requests in flight on w1.
        pods.push(pod("w2", true, true, &[]));
        pods.push(pod("w3", true, true, &[]));
        pods[0].busy = ["a".to_owned(), "b".to_owned()].into();
        let mut passes = 0;
        loop {
            let moves = pass(&mut accounts, &mut pods);
            assert!(moves.len() <= MAX_REBALANCE_PER_PASS, "{moves:?}");
            for m in &moves {
                assert!(!["a", "b"].contains(&m.account.as_str()), "{m:?}");
            }
            if moves.is_empty() {
                break;
            }
            passes += 1;
            assert!(passes < 10, "never settles");
        }
        // c moved; a and b stay on w1 while busy, and nothing else moves.
        assert_eq!(
            counts(&accounts, &pods),
            vec![("w1".into(), 2), ("w2".into(), 1), ("w3".into(), 0)]
        );
        assert!(pass(&mut accounts, &mut pods).is_empty());
        // a's request finishes: it moves on the next pass, and the fleet is even.
        pods[0].busy = ["b".to_owned()].into();
        let moves = pass(&mut accounts, &mut pods);
        assert_eq!(moves, vec![mv("a", Some("w1"), Some("w3"))]);
        assert_eq!(
            counts(&accounts, &pods),
            vec![("w1".into(), 1), ("w2".into(), 1), ("w3".into(), 1)]
        );
        assert!(pass(&mut accounts, &mut pods).is_empty());
    }

    /// Each pod's load: the weight of the accounts assigned to it.
    fn weights(accounts: &[AccountView], pods: &[PodView]) -> Vec<(String, u64)> {
        pods.iter()
            .map(|p| {
                let w = accounts
                    .iter()
                    .filter(|a| a.assigned_pod.as_deref() == Some(p.id.as_str()))
                    .map(AccountView::weight)
                    .sum();
                (p.id.clone(), w)
            })
            .collect()
    }

    #[test]
    fn accounts_spread_by_the_processes_they_run_not_by_their_number() {
        // One account of eight agents and eight of one: by count, each pod would get 4 or 5
        // accounts and one of them 12 processes; by weight, each carries 8.
        let mut pods = [pod("w1", true, true, &[]), pod("w2", true, true, &[])];
        let mut accounts = vec![weighted("big", None, 8)];
        accounts.extend((0..8).map(|i| weighted(&format!("s{i}"), None, 1)));
        assert_eq!(pass(&mut accounts, &mut pods).len(), 9);
        assert_eq!(
            weights(&accounts, &pods),
            vec![("w1".into(), 8), ("w2".into(), 8)]
        );
        assert_eq!(
            counts(&accounts, &pods),
            vec![("w1".into(), 1), ("w2".into(), 8)]
        );
        assert!(pass(&mut accounts, &mut pods).is_empty(), "settled");
    }

    #[test]
    fn rebalancing_moves_an_account_only_when_that_narrows_the_gap() {
        // w1 carries 8 in one account, w2 carries 1: moving the big one would only swap the
        // imbalance (9 against 0), so nothing moves.
        let pods = [
            pod("w1", true, true, &["big"]),
            pod("w2", true, true, &["s"]),
        ];
        let accounts = [weighted("big", Some("w1"), 8), weighted("s", Some("w2"), 1)];
        assert!(plan(&accounts, &pods, 0).is_empty());
        // w1 carries two of 4, w2 nothing: one of them moves, and the pods are even.
        let mut pods = [
            pod("w1", true, true, &["a", "b"]),
            pod("w2", true, true, &[]),
        ];
        let mut accounts = [weighted("a", Some("w1"), 4), weighted("b", Some("w1"), 4)];
        assert_eq!(
            pass(&mut accounts, &mut pods),
            vec![mv("a", Some("w1"), Some("w2"))]
        );
        assert_eq!(
            weights(&accounts, &pods),
            vec![("w1".into(), 4), ("w2".into(), 4)]
        );
        assert!(pass(&mut accounts, &mut pods).is_empty());
        // The first idle account whose move narrows the gap, by id: not the big one, the
        // small one.
        let pods = [
            pod("w1", true, true, &["a-big", "b-small"]),
            pod("w2", true, true, &["c"]),
        ];
        let accounts = [
            weighted("a-big", Some("w1"), 6),
            weighted("b-small", Some("w1"), 2),
            weighted("c", Some("w2"), 3),
        ];
        // w1 = 8, w2 = 3: a-big (6) would make w2 9 > 8; b-small (2) makes 6 / 5.
        assert_eq!(
            plan(&accounts, &pods, 0),
            vec![mv("b-small", Some("w1"), Some("w2"))]
        );
    }

    #[test]
    fn a_weight_of_zero_counts_as_one() {
        let mut pods = [pod("w1", true, true, &[]), pod("w2", true, true, &[])];
        let mut accounts = [weighted("a", None, 0), weighted("b", None, 0)];
        pass(&mut accounts, &mut pods);
        assert_eq!(
            counts(&accounts, &pods),
            vec![("w1".into(), 1), ("w2".into(), 1)]
        );
    }
}
