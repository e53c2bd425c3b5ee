//! How good probabilities were, once the results are known.

use serde::{Deserialize, Serialize};

/// Probabilities are clipped to `[EPS, 1 − EPS]` for the log loss, so one
/// confident miss costs a lot but not infinity.
const EPS: f64 = 1e-15;

/// One bucket of a calibration table: predictions in `[lower, upper)` (the
/// last bucket includes 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

/// Scores of home-win probabilities against results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub count: u64,
    /// Share of games where the side given ≥ 0.5 won (a draw counts as not a
    /// home win).
    pub accuracy: f64,
    /// Mean squared error of the probability.
    pub brier: f64,
    /// Mean negative log-likelihood.
    pub log_loss: f64,
    /// Non-empty buckets of `buckets` equal-width ones over `[0, 1]`.
    pub calibration: Vec<Bucket>,
}

impl Scores {
    /// The expected calibration error: the gap between the predicted and
    /// the observed rate in each bucket, weighted by its games.
    pub fn calibration_error(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.calibration
            .iter()
            .map(|b| b.count as f64 * (b.mean_predicted - b.observed_rate).abs())
            .sum::<f64>()
            / self.count as f64
    }

    /// Scores `(probability, home_won)` pairs; `None` when there are none.
    /// Pairs with a probability that is not in `[0, 1]` (NaN included) are
    /// left out: `count` says how many were scored.
    pub fn of(pairs: impl IntoIterator<Item = (f64, bool)>, buckets: usize) -> Option<Self> {
        let buckets = buckets.max(1);
        let mut count = 0u64;
        let (mut hits, mut brier, mut log_loss) = (0u64, 0.0, 0.0);
        // per bucket: count, sum of predictions, wins
        let mut table = vec![(0u64, 0.0f64, 0u64); buckets];
        for (p, won) in pairs {
            if !(0.0..=1.0).contains(&p) {
                continue;
            }
            count += 1;
            let y = if won { 1.0 } else { 0.0 };
            if (p >= 0.5) == won {
                hits += 1;
            }
            brier += (p - y) * (p - y);
            log_loss += log_loss_of(p, won);
            let b = ((p * buckets as f64) as usize).min(buckets - 1);
            table[b].0 += 1;
            table[b].1 += p;
            table[b].2 += u64::from(won);
        }
        if count == 0 {
            return None;
        }
        let n = count as f64;
        let calibration = table
            .iter()
            .enumerate()
            .filter(|(_, (c, _, _))| *c > 0)
            .map(|(i, (c, sum, wins))| Bucket {
                lower: i as f64 / buckets as f64,
                upper: (i + 1) as f64 / buckets as f64,
                count: *c,
                mean_predicted: sum / *c as f64,
                observed_rate: *wins as f64 / *c as f64,
            })
            .collect();
        Some(Self {
            count,
            accuracy: hits as f64 / n,
            brier: brier / n,
            log_loss: log_loss / n,
            calibration,
        })
    }
}

/// One game's log loss (the probability clamped away from 0 and 1, so a
/// sure miss costs about 34.5, not infinity).
pub fn log_loss_of(p: f64, won: bool) -> f64 {
    let q = p.clamp(EPS, 1.0 - EPS);
    -if won { q.ln() } else { (1.0 - q).ln() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_scores() {
        // p:    0.8 win, 0.3 loss, 0.6 loss, 0.5 win
        // hits: yes,     yes,      no,       yes  -> 3/4
        // brier: 0.04 + 0.09 + 0.36 + 0.25 = 0.74 / 4 = 0.185
        // log loss: -(ln .8 + ln .7 + ln .4 + ln .5) / 4
        let s =
            Scores::of([(0.8, true), (0.3, false), (0.6, false), (0.5, true)], 10).expect("scores");
        assert_eq!(s.count, 4);
        assert!((s.accuracy - 0.75).abs() < 1e-12);
        assert!((s.brier - 0.185).abs() < 1e-12);
        let ll = -(0.8f64.ln() + 0.7f64.ln() + 0.4f64.ln() + 0.5f64.ln()) / 4.0;
        assert!((s.log_loss - ll).abs() < 1e-12);
        // buckets [0.3,0.4), [0.5,0.6), [0.6,0.7), [0.8,0.9)
        let lowers: Vec<f64> = s.calibration.iter().map(|b| b.lower).collect();
        assert_eq!(lowers.len(), 4);
        assert!((lowers[0] - 0.3).abs() < 1e-12 && (lowers[3] - 0.8).abs() < 1e-12);
        assert_eq!(s.calibration[2].observed_rate, 0.0);
        assert_eq!(s.calibration[3].observed_rate, 1.0);
    }

    #[test]
    fn certainty_that_misses_is_finite_and_one_is_in_the_last_bucket() {
        let s = Scores::of([(1.0, false), (1.0, true)], 10).expect("scores");
        assert!(s.log_loss.is_finite() && s.log_loss > 10.0);
        assert_eq!(s.calibration.len(), 1);
        assert!((s.calibration[0].upper - 1.0).abs() < 1e-12);
    }

    #[test]
    fn out_of_range_probabilities_are_not_scored() {
        assert!(Scores::of([(f64::NAN, true), (1.5, false)], 10).is_none());
        let s = Scores::of([(f64::NAN, true), (0.9, true)], 10).expect("scores");
        assert_eq!(s.count, 1);
    }
}
