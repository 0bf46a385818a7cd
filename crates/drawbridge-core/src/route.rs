//! Routes: for a model with a route, which of its targets serves the next try, and which
//! account in that target.
//!
//! A route lists targets, each a group of accounts (one account is a group of one). The
//! strategy chooses a target among those with an account that can take the request (see
//! [`schedule::Account::exclusion`]); inside the chosen target the credit-aware score of
//! [`schedule::pick`] chooses the account. An account outside every target is never chosen.
//! Each call gives one account: a retry calls again with the accounts already tried marked,
//! so the order a request tries accounts in is the order successive calls give.
//!
//! When no target has an account left, the reason is the one [`schedule::pick`] gives for the
//! accounts of every target together (all spent, all resting, none usable), so the client
//! gets the same error as without a route.
//!
//! The score-based choices (the cheapest target, the fastest one) treat values within
//! [`schedule::NEAR_TIE`] of the best as equal and rotate among them with the caller's
//! counter, as the credit-aware score does, so a burst does not pile onto one target.

use crate::schedule::{self, Account, NEAR_TIE, Shortage};

/// How a route chooses among its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// One target only.
    Single,
    /// The first target (in the route's order) with an account left.
    Fallback,
    /// A weighted random choice among the targets with an account left.
    Loadbalance,
    /// The targets whose rule matches the request, in order, like `Fallback`.
    Conditional,
    /// The target whose accounts answered fastest recently (rolling p50 of the time to the
    /// first event); an account with no measurement yet counts as the fastest, so it gets
    /// measured.
    LeastLatency,
    /// The target whose accounts are cheapest by the price catalogue.
    CostOptimized,
    /// No grouping: the credit-aware score over every account of every target.
    #[default]
    CreditAware,
}

/// One target of a route: indices into the accounts given to [`pick`].
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub accounts: Vec<usize>,
    /// Its share of the traffic under [`Strategy::Loadbalance`] (relative to the others').
    pub weight: u32,
    /// Whether its rule matches this request ([`Strategy::Conditional`]; true otherwise).
    pub applies: bool,
}

/// The index of the account to try next under `strategy`, or why there is none (see the
/// module docs). `measure` gives an account's latency in milliseconds
/// ([`Strategy::LeastLatency`]; `None`: not measured yet) or its price
/// ([`Strategy::CostOptimized`]; `None`: no price, ranked last); `rotation` is a counter the
/// caller advances per pick (it rotates near ties and draws the weighted choice).
pub fn pick<K: Clone>(
    strategy: Strategy,
    accounts: &[Account<K>],
    targets: &[Target],
    measure: impl Fn(usize) -> Option<f64>,
    rotation: usize,
) -> Result<usize, Shortage> {
    pick_in_target(strategy, accounts, targets, measure, rotation).map(|c| c.account)
}

/// What [`pick_in_target`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The account's index.
    pub account: usize,
    /// The index (in the targets given) of the target it was chosen in; under
    /// [`Strategy::CreditAware`], which does not choose a target, the first open one that
    /// holds the account.
    pub target: usize,
}

/// [`pick`], saying which target the account was chosen in (a target's own retry policy
/// counts the tries made in it).
pub fn pick_in_target<K: Clone>(
    strategy: Strategy,
    accounts: &[Account<K>],
    targets: &[Target],
    measure: impl Fn(usize) -> Option<f64>,
    rotation: usize,
) -> Result<Choice, Shortage> {
    let targets: Vec<(usize, &Target)> = match strategy {
        Strategy::Conditional => targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.applies)
            .collect(),
        Strategy::Single => targets.iter().enumerate().take(1).collect(),
        _ => targets.iter().enumerate().collect(),
    };
    // The targets with an account left, in the route's order.
    let open: Vec<(usize, &Target)> = targets
        .iter()
        .copied()
        .filter(|(_, t)| {
            t.accounts
                .iter()
                .any(|&i| accounts.get(i).is_some_and(|a| a.exclusion().is_none()))
        })
        .collect();
    let open_targets: Vec<&Target> = open.iter().map(|(_, t)| *t).collect();
    let chosen = match strategy {
        _ if open.is_empty() => None,
        Strategy::CreditAware => {
            let every: Vec<usize> = open.iter().flat_map(|(_, t)| t.accounts.clone()).collect();
            let account = within(accounts, &every, rotation)?;
            let target = open
                .iter()
                .find(|(_, t)| t.accounts.contains(&account))
                .map_or(0, |(n, _)| *n);
            return Ok(Choice { account, target });
        }
        Strategy::Single | Strategy::Fallback | Strategy::Conditional => {
            open_targets.first().copied()
        }
        Strategy::Loadbalance => weighted(&open_targets, rotation),
        Strategy::LeastLatency => {
            // Unmeasured: 0 ms, the fastest.
            lowest(
                &open_targets,
                accounts,
                |i| Some(measure(i).unwrap_or(0.0)),
                rotation,
            )
        }
        Strategy::CostOptimized => lowest(&open_targets, accounts, &measure, rotation),
    };
    match chosen {
        Some(target) => {
            let index = open
                .iter()
                .find(|(_, t)| std::ptr::eq(*t, target))
                .map_or(0, |(n, _)| *n);
            within(accounts, &target.accounts, rotation).map(|account| Choice {
                account,
                target: index,
            })
        }
        None => {
            // Why nobody is left, over every account of the route's targets.
            let every: Vec<usize> = targets
                .iter()
                .flat_map(|(_, t)| t.accounts.clone())
                .collect();
            within(accounts, &every, rotation).map(|account| Choice { account, target: 0 })
        }
    }
}

/// [`schedule::pick`] over the accounts at `members` only.
fn within<K: Clone>(
    accounts: &[Account<K>],
    members: &[usize],
    rotation: usize,
) -> Result<usize, Shortage> {
    let mut members = members.to_vec();
    members.sort_unstable();
    members.dedup();
    let group: Vec<Account<usize>> = members
        .iter()
        .filter_map(|&i| {
            accounts.get(i).map(|a| Account {
                key: i,
                serves_model: a.serves_model,
                tried: a.tried,
                reachable: a.reachable,
                draining: a.draining,
                unhealthy: a.unhealthy,
                breaker_open: a.breaker_open,
                cooldown: a.cooldown,
                credits: a.credits,
                available_slots: a.available_slots,
                queue_depth: a.queue_depth,
            })
        })
        .collect();
    schedule::pick(&group, rotation).map(|g| group[g].key)
}

/// A target drawn with probability proportional to its weight (a target of weight 0 only
/// when every open one weighs 0). The draw is a hash of `rotation`: deterministic for a
/// counter, spread like a random choice over successive counters.
fn weighted<'a>(open: &[&'a Target], rotation: usize) -> Option<&'a Target> {
    let total: u64 = open.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 {
        return open.get(rotation % open.len().max(1)).copied();
    }
    let mut draw = mix(rotation as u64) % total;
    for target in open {
        let weight = u64::from(target.weight);
        if draw < weight {
            return Some(target);
        }
        draw -= weight;
    }
    open.last().copied()
}

/// SplitMix64's output function: successive counters give well-spread values.
fn mix(counter: u64) -> u64 {
    let mut z = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The open target whose best eligible account has the lowest `measure` (`None`: last),
/// rotating among those within [`NEAR_TIE`] of it.
fn lowest<'a, K>(
    open: &[&'a Target],
    accounts: &[Account<K>],
    measure: impl Fn(usize) -> Option<f64>,
    rotation: usize,
) -> Option<&'a Target> {
    let values: Vec<(&'a Target, Option<f64>)> = open
        .iter()
        .map(|t| {
            let best = t
                .accounts
                .iter()
                .filter(|&&i| accounts.get(i).is_some_and(|a| a.exclusion().is_none()))
                .filter_map(|&i| measure(i).filter(|v| v.is_finite()))
                .fold(None, |best: Option<f64>, v| {
                    Some(best.map_or(v, |b| b.min(v)))
                });
            (*t, best)
        })
        .collect();
    let Some(best) = values
        .iter()
        .filter_map(|(_, v)| *v)
        .fold(None, |best: Option<f64>, v| {
            Some(best.map_or(v, |b| b.min(v)))
        })
    else {
        // Nothing measured or priced: the route's order.
        return open.first().copied();
    };
    let near: Vec<&'a Target> = values
        .iter()
        .filter(|(_, v)| v.is_some_and(|v| v <= best + best.abs() * NEAR_TIE))
        .map(|(t, _)| *t)
        .collect();
    near.get(rotation % near.len().max(1)).copied()
}

/// The median of `samples` (the lower middle one of an even count); `None` when empty.
pub fn p50(samples: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    sorted.get((sorted.len() - 1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A healthy account serving the model.
    fn a(key: &'static str, credits: Option<f64>) -> Account<&'static str> {
        Account {
            key,
            serves_model: true,
            tried: false,
            reachable: true,
            draining: false,
            unhealthy: false,
            breaker_open: false,
            cooldown: None,
            credits,
            available_slots: 2,
            queue_depth: 0,
        }
    }

    fn t(accounts: &[usize]) -> Target {
        Target {
            accounts: accounts.to_vec(),
            weight: 1,
            applies: true,
        }
    }

    fn no_measure(_: usize) -> Option<f64> {
        None
    }

    /// The keys successive picks give when each picked account is then marked tried: the
    /// order one request tries the accounts in.
    fn order(
        strategy: Strategy,
        accounts: &[Account<&'static str>],
        targets: &[Target],
        measure: impl Fn(usize) -> Option<f64> + Copy,
    ) -> (Vec<&'static str>, Shortage) {
        let mut accounts = accounts.to_vec();
        let mut keys = Vec::new();
        for rotation in 0.. {
            match pick(strategy, &accounts, targets, measure, rotation) {
                Ok(i) => {
                    keys.push(accounts[i].key);
                    accounts[i].tried = true;
                }
                Err(why) => return (keys, why),
            }
        }
        unreachable!()
    }

    #[test]
    fn fallback_tries_targets_in_order_and_scores_inside_a_group() {
        // Target 0: kiro-1 (poor) and kiro-2 (rich); target 1: openai.
        let accounts = [
            a("kiro-1", Some(10.0)),
            a("kiro-2", Some(500.0)),
            a("openai", None),
        ];
        let targets = [t(&[0, 1]), t(&[2])];
        let (keys, why) = order(Strategy::Fallback, &accounts, &targets, no_measure);
        assert_eq!(keys, ["kiro-2", "kiro-1", "openai"]);
        assert_eq!(why, Shortage::AllTried);
        // The group spent or broken: the next target at once.
        for spoil in [
            |x: &mut Account<&'static str>| x.credits = Some(0.0),
            |x: &mut Account<&'static str>| x.breaker_open = true,
            |x: &mut Account<&'static str>| x.cooldown = Some(Duration::from_secs(9)),
        ] {
            let mut accounts = accounts.clone();
            spoil(&mut accounts[0]);
            spoil(&mut accounts[1]);
            let first = pick(Strategy::Fallback, &accounts, &targets, no_measure, 0);
            assert_eq!(first, Ok(2));
        }
    }

    #[test]
    fn an_account_outside_the_route_is_never_chosen() {
        // `rich` would win on score by far, but no target lists it.
        let accounts = [a("rich", Some(1e6)), a("x", Some(1.0)), a("y", Some(1.0))];
        let targets = [t(&[1]), t(&[2])];
        for strategy in [
            Strategy::Single,
            Strategy::Fallback,
            Strategy::Loadbalance,
            Strategy::Conditional,
            Strategy::LeastLatency,
            Strategy::CostOptimized,
            Strategy::CreditAware,
        ] {
            let (keys, _) = order(strategy, &accounts, &targets, no_measure);
            assert!(!keys.contains(&"rich"), "{strategy:?}: {keys:?}");
            assert!(!keys.is_empty(), "{strategy:?}");
        }
    }

    #[test]
    fn single_uses_its_one_target_only() {
        let accounts = [a("x", Some(5.0)), a("y", Some(5.0))];
        let (keys, why) = order(Strategy::Single, &accounts, &[t(&[0]), t(&[1])], no_measure);
        assert_eq!(keys, ["x"]);
        assert_eq!(why, Shortage::AllTried);
    }

    #[test]
    fn shortages_over_the_route_say_why() {
        let spent = |k| a(k, Some(0.0));
        let resting = |k, secs| Account {
            cooldown: Some(Duration::from_secs(secs)),
            ..a(k, Some(3.0))
        };
        // Every account of the route spent: 429 quota, whatever an account outside holds.
        let accounts = [spent("x"), spent("y"), a("outside", Some(9.0))];
        let targets = [t(&[0]), t(&[1])];
        for strategy in [
            Strategy::Fallback,
            Strategy::Loadbalance,
            Strategy::CreditAware,
        ] {
            assert_eq!(
                pick(strategy, &accounts, &targets, no_measure, 0),
                Err(Shortage::CreditsSpent)
            );
        }
        let accounts = [resting("x", 20), resting("y", 4)];
        assert_eq!(
            pick(Strategy::Fallback, &accounts, &targets, no_measure, 0),
            Err(Shortage::CoolingDown {
                retry_after: Duration::from_secs(4)
            })
        );
        // No account of the route serves the model: as if none did.
        let other = Account {
            serves_model: false,
            ..a("x", None)
        };
        assert_eq!(
            pick(Strategy::Fallback, &[other], &[t(&[0])], no_measure, 0),
            Err(Shortage::NoModel)
        );
        // A route whose targets name nobody the view knows.
        assert_eq!(
            pick(Strategy::Fallback, &accounts, &[t(&[7])], no_measure, 0),
            Err(Shortage::NoModel)
        );
    }

    #[test]
    fn loadbalance_follows_the_weights() {
        let accounts = [a("x", None), a("y", None), a("z", None)];
        let targets = [
            Target {
                weight: 70,
                ..t(&[0])
            },
            Target {
                weight: 30,
                ..t(&[1])
            },
            Target {
                weight: 0,
                ..t(&[2])
            },
        ];
        let mut counts = [0usize; 3];
        let picks = 10_000;
        for rotation in 0..picks {
            let i = pick(
                Strategy::Loadbalance,
                &accounts,
                &targets,
                no_measure,
                rotation,
            );
            counts[i.unwrap()] += 1;
        }
        let share = |n: usize| n as f64 / picks as f64;
        assert!((share(counts[0]) - 0.7).abs() < 0.02, "{counts:?}");
        assert!((share(counts[1]) - 0.3).abs() < 0.02, "{counts:?}");
        assert_eq!(counts[2], 0, "weight 0 gets nothing while others are open");
        // A short burst already mixes (no run of 70 then 30).
        let first: Vec<usize> = (0..10)
            .map(|r| pick(Strategy::Loadbalance, &accounts, &targets, no_measure, r).unwrap())
            .collect();
        assert!(first.contains(&0) && first.contains(&1), "{first:?}");
        // The same counter draws the same target.
        assert_eq!(
            pick(Strategy::Loadbalance, &accounts, &targets, no_measure, 42),
            pick(Strategy::Loadbalance, &accounts, &targets, no_measure, 42)
        );
        // A closed target's share goes to the open ones.
        let mut spent = accounts.clone();
        spent[0].credits = Some(0.0);
        for rotation in 0..200 {
            let i = pick(
                Strategy::Loadbalance,
                &spent,
                &targets,
                no_measure,
                rotation,
            );
            assert_eq!(i, Ok(1));
        }
        // Only weight-0 targets open: they still serve.
        spent[1].credits = Some(0.0);
        assert_eq!(
            pick(Strategy::Loadbalance, &spent, &targets, no_measure, 3),
            Ok(2)
        );
    }

    #[test]
    fn conditional_uses_the_matching_targets_in_order() {
        let accounts = [a("cheap", None), a("premium", None), a("default", None)];
        let mut targets = [t(&[0]), t(&[1]), t(&[2])];
        targets[0].applies = false;
        let (keys, _) = order(Strategy::Conditional, &accounts, &targets, no_measure);
        assert_eq!(keys, ["premium", "default"]);
        for target in &mut targets {
            target.applies = false;
        }
        assert_eq!(
            pick(Strategy::Conditional, &accounts, &targets, no_measure, 0),
            Err(Shortage::NoModel),
            "no rule matches: nobody serves the request"
        );
    }

    #[test]
    fn least_latency_prefers_the_fastest_and_measures_the_unmeasured() {
        let accounts = [a("slow", None), a("fast", None), a("new", None)];
        let targets = [t(&[0]), t(&[1]), t(&[2])];
        let ms = [Some(900.0), Some(120.0), None];
        let measure = |i: usize| ms[i];
        // The unmeasured one first (it counts as 0 ms), then by p50.
        let (keys, _) = order(Strategy::LeastLatency, &accounts, &targets, measure);
        assert_eq!(keys, ["new", "fast", "slow"]);
        // Measured: the fastest wins; near ties (within 5 %) rotate.
        let ms = [Some(100.0), Some(103.0), Some(400.0)];
        let measure = |i: usize| ms[i];
        let chosen: Vec<usize> = (0..4)
            .map(|r| pick(Strategy::LeastLatency, &accounts, &targets, measure, r).unwrap())
            .collect();
        assert_eq!(chosen, [0, 1, 0, 1]);
    }

    #[test]
    fn cost_optimized_orders_by_price() {
        let accounts = [
            a("pricey", None),
            a("cheap", None),
            a("mid", None),
            a("free-but-spent", Some(0.0)),
        ];
        let targets = [t(&[0]), t(&[1]), t(&[2]), t(&[3])];
        let prices = [Some(18.0), Some(0.5), Some(3.0), Some(0.0)];
        let measure = |i: usize| prices[i];
        let (keys, why) = order(Strategy::CostOptimized, &accounts, &targets, measure);
        assert_eq!(
            keys,
            ["cheap", "mid", "pricey"],
            "a spent account is skipped"
        );
        assert_eq!(why, Shortage::CreditsSpent);
        // Near-equal prices rotate.
        let prices = [Some(1.0), Some(1.02), Some(3.0), None];
        let measure = |i: usize| prices[i];
        let chosen: Vec<usize> = (0..4)
            .map(|r| pick(Strategy::CostOptimized, &accounts, &targets, measure, r).unwrap())
            .collect();
        assert_eq!(chosen, [0, 1, 0, 1]);
        // A group costs what its cheapest open account costs.
        let grouped = [t(&[0, 1]), t(&[2])];
        let prices = [Some(20.0), Some(0.1), Some(3.0), None];
        let measure = |i: usize| prices[i];
        let first = pick(Strategy::CostOptimized, &accounts, &grouped, measure, 0);
        assert!(first == Ok(0) || first == Ok(1), "{first:?}");
    }

    #[test]
    fn credit_aware_scores_every_account_of_the_route_and_rotates_ties() {
        let accounts = [a("x", Some(100.0)), a("y", Some(99.0)), a("z", Some(1.0))];
        let targets = [t(&[0]), t(&[1, 2])];
        let chosen: Vec<usize> = (0..4)
            .map(|r| pick(Strategy::CreditAware, &accounts, &targets, no_measure, r).unwrap())
            .collect();
        assert_eq!(
            chosen,
            [0, 1, 0, 1],
            "groups do not matter; near ties rotate"
        );
        // Inside a fallback group, near ties rotate too.
        let chosen: Vec<usize> = (0..4)
            .map(|r| pick(Strategy::Fallback, &accounts, &targets, no_measure, r).unwrap())
            .collect();
        assert_eq!(chosen, [0, 0, 0, 0]);
        let group = [t(&[0, 1])];
        let chosen: Vec<usize> = (0..4)
            .map(|r| pick(Strategy::Fallback, &accounts, &group, no_measure, r).unwrap())
            .collect();
        assert_eq!(chosen, [0, 1, 0, 1]);
    }

    #[test]
    fn the_choice_names_the_target_it_was_made_in() {
        // kiro-1 is in targets 0 and 2; openai in target 1.
        let accounts = [a("kiro-1", Some(10.0)), a("openai", None)];
        let targets = [t(&[0]), t(&[1]), t(&[0])];
        let choose = |strategy, accounts: &[Account<&'static str>], targets: &[Target]| {
            pick_in_target(strategy, accounts, targets, no_measure, 0).unwrap()
        };
        assert_eq!(
            choose(Strategy::Fallback, &accounts, &targets),
            Choice {
                account: 0,
                target: 0
            }
        );
        // A target left out (its accounts taken away): the next one, by its own index.
        let without_first = [t(&[]), t(&[1]), t(&[0])];
        assert_eq!(
            choose(Strategy::Fallback, &accounts, &without_first),
            Choice {
                account: 1,
                target: 1
            }
        );
        // Rules keep the route's indices.
        let mut rules = targets.clone();
        rules[0].applies = false;
        rules[1].applies = false;
        assert_eq!(
            choose(Strategy::Conditional, &accounts, &rules),
            Choice {
                account: 0,
                target: 2
            }
        );
        // Credit-aware chooses no target: the first open one holding the account.
        let only_openai = [t(&[1]), t(&[0, 1])];
        let mut spent = accounts.clone();
        spent[0].credits = Some(0.0);
        assert_eq!(
            choose(Strategy::CreditAware, &spent, &only_openai),
            Choice {
                account: 1,
                target: 0
            }
        );
        assert_eq!(
            pick(Strategy::Fallback, &accounts, &without_first, no_measure, 0),
            Ok(1)
        );
    }

    #[test]
    fn p50_is_the_median() {
        assert_eq!(p50(&[]), None);
        assert_eq!(p50(&[5.0]), Some(5.0));
        assert_eq!(p50(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(p50(&[4.0, 1.0, 9.0, 2.0]), Some(2.0));
        assert_eq!(p50(&[f64::NAN, 3.0]), Some(3.0));
    }
}
