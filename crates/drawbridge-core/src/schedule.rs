//! Credit-aware scheduling, from the product documents:
//! `score = credits × (available_slots + 1) / (queue_depth + 1)`; the highest score wins.

/// One account that could serve a request, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<K> {
    pub key: K,
    pub credits: f64,
    pub available_slots: u32,
    pub queue_depth: u32,
}

/// The seed's scoring formula.
pub fn score(credits: f64, available_slots: u32, queue_depth: u32) -> f64 {
    credits.max(0.0) * (f64::from(available_slots) + 1.0) / (f64::from(queue_depth) + 1.0)
}

/// The index of the best candidate, or `None` when none has credits left. Among equal scores,
/// `rotation` (any counter the caller advances per request) picks which one, so equal
/// accounts share the load instead of the first always winning.
pub fn pick<K>(candidates: &[Candidate<K>], rotation: usize) -> Option<usize> {
    let scores: Vec<f64> = candidates
        .iter()
        .map(|c| score(c.credits, c.available_slots, c.queue_depth))
        .collect();
    let best = scores
        .iter()
        .copied()
        .filter(|s| *s > 0.0)
        .fold(None, |acc: Option<f64>, s| {
            Some(acc.map_or(s, |a| a.max(s)))
        })?;
    let tied: Vec<usize> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| (**s - best).abs() <= f64::EPSILON * best.max(1.0))
        .map(|(i, _)| i)
        .collect();
    tied.get(rotation % tied.len()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(
        key: &'static str,
        credits: f64,
        available_slots: u32,
        queue_depth: u32,
    ) -> Candidate<&'static str> {
        Candidate {
            key,
            credits,
            available_slots,
            queue_depth,
        }
    }

    #[test]
    fn formula_matches_the_seed() {
        assert_eq!(score(100.0, 2, 0), 300.0);
        assert_eq!(score(100.0, 0, 3), 25.0);
        assert_eq!(score(0.0, 5, 0), 0.0);
        assert_eq!(score(-5.0, 5, 0), 0.0);
    }

    #[test]
    fn highest_score_wins() {
        let cs = [
            c("a", 100.0, 0, 2),
            c("b", 50.0, 3, 0),
            c("c", 1000.0, 0, 9),
        ];
        // a: 100*1/3 = 33.3, b: 50*4/1 = 200, c: 1000*1/10 = 100
        assert_eq!(pick(&cs, 0), Some(1));
    }

    #[test]
    fn no_credits_no_candidate() {
        assert_eq!(pick(&[c("a", 0.0, 3, 0)], 0), None);
        assert_eq!(pick::<&str>(&[], 0), None);
    }

    #[test]
    fn ties_rotate() {
        let cs = [c("a", 1.0, 2, 0), c("b", 1.0, 2, 0), c("c", 1.0, 1, 0)];
        assert_eq!(pick(&cs, 0), Some(0));
        assert_eq!(pick(&cs, 1), Some(1));
        assert_eq!(pick(&cs, 2), Some(0));
    }
}
