//! The sequential test behind model experiments: is a challenger's log
//! loss lower than the champion's on the same games, with an error rate
//! that holds however often anyone looks?
//!
//! Each finished game gives a paired difference `d = loss(challenger) -
//! loss(champion)` (per-game log loss, probabilities clamped to
//! `[1e-4, 1 - 1e-4]` so that one confident miss cannot swamp the rest).
//! Their running mean gets an *asymptotic confidence sequence*
//! (Waudby-Smith, Arnold, Wu and Ramdas, "Time-uniform central limit
//! theory", 2021, Theorem 2.2; Robbins' normal mixture):
//!
//! ```text
//! mean ± sqrt( 2(n s² ρ² + 1) / (n² ρ²) · ln( sqrt(n s² ρ² + 1) / α ) )
//! ρ² = (-2 ln α + ln(-2 ln α + 1)) / n*
//! ```
//!
//! with `s²` the sample variance and `n*` the number of games where the
//! sequence is tightest. Unlike a fixed-n t-test, the chance that the
//! sequence *ever* excludes the true mean is at most `α` (asymptotically),
//! so the trainer may look after every batch of outcomes and stop as soon
//! as zero is outside: upper bound below zero, the challenger is better;
//! lower bound above zero, it is worse.

use serde::Serialize;

/// Probabilities are clamped to `[CLAMP, 1 - CLAMP]` for the test's losses.
pub const CLAMP: f64 = 1e-4;

/// The test's per-game loss.
pub fn loss(p: f64, won: bool) -> f64 {
    let q = p.clamp(CLAMP, 1.0 - CLAMP);
    -if won { q.ln() } else { (1.0 - q).ln() }
}

/// Where the mean of the paired differences stands.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Interval {
    /// Games.
    pub n: u64,
    /// Mean difference (challenger minus champion): below zero, the
    /// challenger's log loss is lower.
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
    /// The differences' sample standard deviation.
    pub sd: f64,
    /// The error rate the interval was made for.
    pub alpha: f64,
}

/// What the interval says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole interval is below zero.
    Better,
    /// The whole interval is above zero.
    Worse,
    Undecided,
}

impl Interval {
    pub fn verdict(&self) -> Verdict {
        if self.upper < 0.0 {
            Verdict::Better
        } else if self.lower > 0.0 {
            Verdict::Worse
        } else {
            Verdict::Undecided
        }
    }
}

/// The confidence sequence's interval after the differences `d`, at error
/// rate `alpha`, tightest near `tuned_for` games; `None` for fewer than two
/// games.
pub fn interval(d: &[f64], alpha: f64, tuned_for: u64) -> Option<Interval> {
    let n = d.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mean = d.iter().sum::<f64>() / nf;
    let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (nf - 1.0);
    let l = -2.0 * alpha.ln();
    let rho2 = (l + (l + 1.0).ln()) / tuned_for.max(1) as f64;
    let v = nf * var * rho2 + 1.0;
    let radius = (2.0 * v / (nf * nf * rho2) * (v.sqrt() / alpha).ln()).sqrt();
    Some(Interval {
        n: n as u64,
        mean,
        lower: mean - radius,
        upper: mean + radius,
        sd: var.sqrt(),
        alpha,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng as _};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// Paired losses of two models on games whose true probability is
    /// drawn at random: the champion predicts the truth shrunk by
    /// `champion_shrink` toward 0.5, the challenger by `challenger_shrink`.
    fn differences(
        rng: &mut Xoshiro256PlusPlus,
        n: usize,
        champion_shrink: f64,
        challenger_shrink: f64,
    ) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let truth: f64 = rng.random_range(0.2..0.8);
                let won = rng.random::<f64>() < truth;
                let shrink = |k: f64| 0.5 + (truth - 0.5) * (1.0 - k);
                loss(shrink(challenger_shrink), won) - loss(shrink(champion_shrink), won)
            })
            .collect()
    }

    /// The first look (every 10 games) at which the test decides.
    fn first_decision(d: &[f64], alpha: f64) -> Option<(usize, Verdict)> {
        (10..=d.len()).step_by(10).find_map(|n| {
            let v = interval(&d[..n], alpha, 1000)?.verdict();
            (v != Verdict::Undecided).then_some((n, v))
        })
    }

    #[test]
    fn looking_after_every_batch_keeps_the_error_rate() {
        // Two models of the same quality that disagree game by game: a
        // fixed-n test looked at 300 times would call one better far more
        // often than alpha.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let runs = 200;
        let mut wrong = 0;
        for _ in 0..runs {
            let d: Vec<f64> = (0..3000)
                .map(|_| {
                    let truth: f64 = rng.random_range(0.2..0.8);
                    let won = rng.random::<f64>() < truth;
                    // Same expected loss: noise of equal size either way.
                    let e: f64 = rng.random_range(-0.1..0.1);
                    loss((truth + e).clamp(0.01, 0.99), won)
                        - loss((truth - e).clamp(0.01, 0.99), won)
                })
                .collect();
            if first_decision(&d, 0.05).is_some() {
                wrong += 1;
            }
        }
        let rate = f64::from(wrong) / f64::from(runs);
        assert!(rate <= 0.05, "wrong decisions in {rate} of runs");
    }

    #[test]
    fn a_better_challenger_is_found_and_a_worse_one_stopped() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        // The challenger knows the truth; the champion is shrunk halfway.
        let better = differences(&mut rng, 20_000, 0.5, 0.0);
        let (n, v) = first_decision(&better, 0.05).expect("decides");
        assert_eq!(v, Verdict::Better);
        assert!(n < 5000, "needed {n} games");
        let worse = differences(&mut rng, 20_000, 0.0, 0.9);
        let (n, v) = first_decision(&worse, 0.05).expect("decides");
        assert_eq!(v, Verdict::Worse);
        assert!(n < 2000, "needed {n} games");
        // The same model twice: every difference is zero, never a decision.
        let same = vec![0.0; 5000];
        assert_eq!(first_decision(&same, 0.05), None);
        assert!(interval(&[0.1], 0.05, 1000).is_none());
    }

    #[test]
    fn the_interval_narrows_and_covers_the_mean() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let d = differences(&mut rng, 10_000, 0.3, 0.0);
        let early = interval(&d[..500], 0.05, 1000).unwrap();
        let late = interval(&d, 0.05, 1000).unwrap();
        assert!(late.upper - late.lower < early.upper - early.lower);
        assert!(late.lower <= late.mean && late.mean <= late.upper);
    }
}
