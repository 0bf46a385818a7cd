//! Credit-aware scheduling, from the product documents:
//! `score = credits × (available_slots + 1) / (queue_depth + 1)`; the highest score wins.
//!
//! # Who is a candidate
//!
//! An account is a candidate for a request when it serves the requested model, has not been
//! tried for this request yet, its worker is reachable and not draining, the worker does not
//! report it unhealthy, its circuit breaker admits traffic, it is not cooling down after a
//! rate-limit error, and it has credits left ([`Account::exclusion`] says which rule keeps it
//! out). When nobody is left, [`Shortage`] says why, so the client gets the right error: every
//! account spent its credits (429 `insufficient_quota`), every one is resting after rate
//! limits (429 with `Retry-After`), or none is usable for other reasons (503).
//!
//! # Credits in the score
//!
//! `credits` is the account's balance in credits (a fraction of one is fine). An *unmetered*
//! account (no balance: its credits are not tracked) scores as if it had the largest balance
//! among the metered candidates of the same request, or 1 when none is metered: metering
//! neither favours nor starves it, and among unmetered accounts slots and queues decide.
//!
//! # Near-equal scores
//!
//! Scores within [`NEAR_TIE`] of the best count as equal, and the choice among them rotates
//! with a counter the caller advances per request, so a burst spreads over accounts whose
//! balances differ by a few credits instead of piling onto the one that is ahead.

use std::time::Duration;

/// Scores at least `best × (1 − NEAR_TIE)` are near-equal to the best.
pub const NEAR_TIE: f64 = 0.05;

/// The seed's scoring formula.
pub fn score(credits: f64, available_slots: u32, queue_depth: u32) -> f64 {
    credits.max(0.0) * (f64::from(available_slots) + 1.0) / (f64::from(queue_depth) + 1.0)
}

/// One account that might serve a request, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Account<K> {
    pub key: K,
    pub serves_model: bool,
    /// Already used by this request (a retry or a resumption goes elsewhere).
    pub tried: bool,
    /// Its worker answered its last call.
    pub reachable: bool,
    /// Its worker is draining.
    pub draining: bool,
    /// Its worker reports it unhealthy (agents that cannot start).
    pub unhealthy: bool,
    /// Its circuit breaker refuses traffic now.
    pub breaker_open: bool,
    /// Resting after a rate-limit error, for this long still.
    pub cooldown: Option<Duration>,
    /// Credits left; `None`: unmetered.
    pub credits: Option<f64>,
    pub available_slots: u32,
    pub queue_depth: u32,
}

/// Why an account is not a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exclusion {
    Model,
    Tried,
    Unreachable,
    Draining,
    Unhealthy,
    BreakerOpen,
    CoolingDown,
    CreditsSpent,
}

impl<K> Account<K> {
    /// The rule that keeps this account out, if any (the first that applies, in the order
    /// of [`Exclusion`]'s variants).
    pub fn exclusion(&self) -> Option<Exclusion> {
        if !self.serves_model {
            Some(Exclusion::Model)
        } else if self.tried {
            Some(Exclusion::Tried)
        } else if !self.reachable {
            Some(Exclusion::Unreachable)
        } else if self.draining {
            Some(Exclusion::Draining)
        } else if self.unhealthy {
            Some(Exclusion::Unhealthy)
        } else if self.breaker_open {
            Some(Exclusion::BreakerOpen)
        } else if self.cooldown.is_some_and(|left| !left.is_zero()) {
            Some(Exclusion::CoolingDown)
        } else if self.credits.is_some_and(|c| c <= 0.0) {
            Some(Exclusion::CreditsSpent)
        } else {
            None
        }
    }
}

/// Why no account can take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// No account serves the model.
    NoModel,
    /// Every account that serves it was tried already.
    AllTried,
    /// Every untried account that serves it has spent its credits.
    CreditsSpent,
    /// Every untried account that serves it is resting after a rate limit (or has spent its
    /// credits, with at least one resting): the soonest is back after `retry_after`.
    CoolingDown { retry_after: Duration },
    /// Otherwise: unreachable, draining, unhealthy, isolated by its breaker.
    Unavailable,
}

/// The index of the account to use, or why there is none; see the module docs.
/// `rotation` is any counter the caller advances per request.
pub fn pick<K>(accounts: &[Account<K>], rotation: usize) -> Result<usize, Shortage> {
    let serving: Vec<(usize, Option<Exclusion>)> = accounts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.serves_model)
        .map(|(i, a)| (i, a.exclusion()))
        .collect();
    if serving.is_empty() {
        return Err(Shortage::NoModel);
    }
    let eligible: Vec<usize> = serving
        .iter()
        .filter(|(_, why)| why.is_none())
        .map(|(i, _)| *i)
        .collect();
    if eligible.is_empty() {
        return Err(shortage(accounts, &serving));
    }
    let top_metered = eligible
        .iter()
        .filter_map(|i| accounts[*i].credits)
        .fold(None, |best: Option<f64>, c| {
            Some(best.map_or(c, |b| b.max(c)))
        });
    let unmetered = top_metered.unwrap_or(1.0);
    let scores: Vec<(usize, f64)> = eligible
        .iter()
        .map(|&i| {
            let a = &accounts[i];
            let credits = a.credits.unwrap_or(unmetered);
            (i, score(credits, a.available_slots, a.queue_depth))
        })
        .collect();
    let best = scores.iter().map(|(_, s)| *s).fold(0.0, f64::max);
    let near: Vec<usize> = scores
        .iter()
        .filter(|(_, s)| *s >= best * (1.0 - NEAR_TIE))
        .map(|(i, _)| *i)
        .collect();
    // `near` holds at least the best one.
    Ok(near[rotation % near.len()])
}

/// [`pick`] for a conversation that already has an account (session affinity): that account,
/// found by `bound`, while it is a candidate, whatever its score; otherwise the usual choice.
pub fn pick_bound<K>(
    accounts: &[Account<K>],
    rotation: usize,
    bound: impl Fn(&K) -> bool,
) -> Result<usize, Shortage> {
    accounts
        .iter()
        .position(|a| a.exclusion().is_none() && bound(&a.key))
        .map_or_else(|| pick(accounts, rotation), Ok)
}

fn shortage<K>(accounts: &[Account<K>], serving: &[(usize, Option<Exclusion>)]) -> Shortage {
    let untried: Vec<(usize, Exclusion)> = serving
        .iter()
        .filter_map(|(i, why)| why.map(|why| (*i, why)))
        .filter(|(_, why)| *why != Exclusion::Tried)
        .collect();
    if untried.is_empty() {
        return Shortage::AllTried;
    }
    if untried
        .iter()
        .all(|(_, why)| *why == Exclusion::CreditsSpent)
    {
        return Shortage::CreditsSpent;
    }
    let resting_or_spent = untried
        .iter()
        .all(|(_, why)| matches!(why, Exclusion::CoolingDown | Exclusion::CreditsSpent));
    if resting_or_spent {
        let retry_after = untried
            .iter()
            .filter_map(|(i, _)| accounts[*i].cooldown)
            .filter(|left| !left.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(1));
        return Shortage::CoolingDown { retry_after };
    }
    Shortage::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A healthy account serving the model, with `credits` (None: unmetered).
    fn a(key: &'static str, credits: Option<f64>, slots: u32, queue: u32) -> Account<&'static str> {
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
            available_slots: slots,
            queue_depth: queue,
        }
    }

    fn picked(
        accounts: &[Account<&'static str>],
        rotation: usize,
    ) -> Result<&'static str, Shortage> {
        pick(accounts, rotation).map(|i| accounts[i].key)
    }

    #[test]
    fn formula_matches_the_seed() {
        assert_eq!(score(100.0, 2, 0), 300.0);
        assert_eq!(score(100.0, 0, 3), 25.0);
        assert_eq!(score(0.0, 5, 0), 0.0);
        assert_eq!(score(-5.0, 5, 0), 0.0);
        assert_eq!(score(0.5, 1, 1), 0.5);
    }

    #[test]
    fn the_highest_score_wins_with_real_balances() {
        // (credits, available slots, queue depth) → score
        let table = [
            // a: 100×1/3 = 33.3, b: 50×4/1 = 200, c: 1000×1/10 = 100
            (
                vec![
                    a("a", Some(100.0), 0, 2),
                    a("b", Some(50.0), 3, 0),
                    a("c", Some(1000.0), 0, 9),
                ],
                "b",
            ),
            // The richer account wins at equal load …
            (
                vec![a("a", Some(10.0), 2, 0), a("b", Some(900.0), 2, 0)],
                "b",
            ),
            // … until its queue outweighs its balance: 900×1/31 = 29 < 10×3 = 30.
            (
                vec![a("a", Some(10.0), 2, 0), a("b", Some(900.0), 0, 30)],
                "a",
            ),
            // Fractions of a credit count.
            (vec![a("a", Some(0.25), 3, 0), a("b", Some(0.5), 0, 0)], "a"),
        ];
        for (accounts, winner) in table {
            assert_eq!(picked(&accounts, 0), Ok(winner), "{accounts:?}");
        }
    }

    #[test]
    fn every_exclusion_keeps_an_account_out() {
        type Rule = fn(&mut Account<&'static str>);
        let rules: [(Exclusion, Rule); 8] = [
            (Exclusion::Model, |x| x.serves_model = false),
            (Exclusion::Tried, |x| x.tried = true),
            (Exclusion::Unreachable, |x| x.reachable = false),
            (Exclusion::Draining, |x| x.draining = true),
            (Exclusion::Unhealthy, |x| x.unhealthy = true),
            (Exclusion::BreakerOpen, |x| x.breaker_open = true),
            (Exclusion::CoolingDown, |x| {
                x.cooldown = Some(Duration::from_secs(3))
            }),
            (Exclusion::CreditsSpent, |x| x.credits = Some(0.0)),
        ];
        for (why, rule) in rules {
            // The excluded account would win on score by far.
            let mut best = a("best", Some(1_000_000.0), 8, 0);
            rule(&mut best);
            assert_eq!(best.exclusion(), Some(why));
            let accounts = [best, a("other", Some(1.0), 0, 5)];
            for rotation in 0..4 {
                assert_eq!(picked(&accounts, rotation), Ok("other"), "{why:?}");
            }
        }
        // A cooldown that has run out, and a positive balance, exclude nothing.
        let mut back = a("back", Some(0.001), 1, 0);
        back.cooldown = Some(Duration::ZERO);
        assert_eq!(back.exclusion(), None);
    }

    #[test]
    fn shortages_say_why() {
        let spent = |k| a(k, Some(0.0), 3, 0);
        let resting = |k, secs| Account {
            cooldown: Some(Duration::from_secs(secs)),
            ..a(k, Some(5.0), 3, 0)
        };
        let open = |k| Account {
            breaker_open: true,
            ..a(k, None, 3, 0)
        };
        let tried = |k| Account {
            tried: true,
            ..a(k, None, 3, 0)
        };
        let other_model = Account {
            serves_model: false,
            ..a("m", None, 3, 0)
        };
        let table = [
            (vec![], Shortage::NoModel),
            (vec![other_model.clone()], Shortage::NoModel),
            (vec![tried("a"), tried("b")], Shortage::AllTried),
            (
                vec![spent("a"), spent("b"), other_model],
                Shortage::CreditsSpent,
            ),
            // A tried account does not hide that the others are all spent.
            (vec![tried("a"), spent("b")], Shortage::CreditsSpent),
            (
                vec![resting("a", 30), resting("b", 7), spent("c")],
                Shortage::CoolingDown {
                    retry_after: Duration::from_secs(7),
                },
            ),
            (vec![spent("a"), open("b")], Shortage::Unavailable),
            (vec![resting("a", 3), open("b")], Shortage::Unavailable),
        ];
        for (accounts, why) in table {
            assert_eq!(pick(&accounts, 0), Err(why), "{accounts:?}");
        }
    }

    #[test]
    fn unmetered_accounts_score_like_the_richest_metered_one() {
        // Equal load: the unmetered account ties with the richest and they rotate.
        let accounts = [
            a("poor", Some(1.0), 2, 0),
            a("rich", Some(500.0), 2, 0),
            a("free", None, 2, 0),
        ];
        assert_eq!(picked(&accounts, 0), Ok("rich"));
        assert_eq!(picked(&accounts, 1), Ok("free"));
        // More room wins whatever the metering.
        let accounts = [a("rich", Some(500.0), 0, 0), a("free", None, 1, 0)];
        assert_eq!(picked(&accounts, 0), Ok("free"));
        let accounts = [a("rich", Some(500.0), 1, 0), a("free", None, 0, 0)];
        assert_eq!(picked(&accounts, 0), Ok("rich"));
        // Only unmetered accounts: slots and queues decide.
        let accounts = [a("x", None, 0, 1), a("y", None, 1, 0)];
        assert_eq!(picked(&accounts, 0), Ok("y"));
    }

    #[test]
    fn a_bound_conversation_keeps_its_account_while_it_is_a_candidate() {
        let accounts = [
            a("best", Some(100.0), 8, 0),
            a("bound", Some(1.0), 0, 3),
            a("other", Some(50.0), 2, 0),
        ];
        let bound = |key: &&str| *key == "bound";
        for rotation in 0..3 {
            let chosen = pick_bound(&accounts, rotation, bound).map(|i| accounts[i].key);
            assert_eq!(chosen, Ok("bound"), "stuck whatever its score");
        }
        // Not a candidate (any exclusion): the usual choice.
        for spoil in [
            |x: &mut Account<&'static str>| x.breaker_open = true,
            |x: &mut Account<&'static str>| x.credits = Some(0.0),
            |x: &mut Account<&'static str>| x.draining = true,
            |x: &mut Account<&'static str>| x.cooldown = Some(Duration::from_secs(1)),
        ] {
            let mut accounts = accounts.clone();
            spoil(&mut accounts[1]);
            let chosen = pick_bound(&accounts, 0, bound).map(|i| accounts[i].key);
            assert_eq!(chosen, Ok("best"));
        }
        // An account nobody serves any more, or no binding at all: the usual choice.
        assert_eq!(pick_bound(&accounts, 0, |k| *k == "gone"), Ok(0));
        let spent = [a("x", Some(0.0), 1, 0)];
        assert_eq!(pick_bound(&spent, 0, |_| true), Err(Shortage::CreditsSpent));
    }

    #[test]
    fn near_equal_scores_rotate() {
        // 1000 and 980 credits are within 5%: a burst alternates between them.
        let accounts = [
            a("a", Some(1000.0), 2, 0),
            a("b", Some(980.0), 2, 0),
            a("c", Some(900.0), 2, 0),
        ];
        let chosen: Vec<_> = (0..4).map(|r| picked(&accounts, r)).collect();
        assert_eq!(chosen, [Ok("a"), Ok("b"), Ok("a"), Ok("b")]);
        // Exact ties rotate too; a clearly lower score never gets picked.
        let accounts = [a("a", None, 2, 0), a("b", None, 2, 0), a("c", None, 1, 0)];
        let chosen: Vec<_> = (0..3).map(|r| picked(&accounts, r)).collect();
        assert_eq!(chosen, [Ok("a"), Ok("b"), Ok("a")]);
    }
}
