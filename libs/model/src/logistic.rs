//! Logistic regression on standardised features.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// How to fit.
#[derive(Clone, Debug, PartialEq)]
pub struct FitOptions {
    /// L2 penalty on the weights (`alpha` in linfa): the cost is the summed
    /// log loss plus `l2 / 2 · |w|²`.
    pub l2: f64,
    /// Most L-BFGS iterations.
    pub max_iterations: u64,
    /// Stop once the gradient's norm is below this.
    pub gradient_tolerance: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            l2: 1.0,
            max_iterations: 200,
            gradient_tolerance: 1e-6,
        }
    }
}

/// Why a model could not be fitted.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("no rows to train on")]
    Empty,
    #[error("{rows} rows of {n_features} features need {expected} values, got {got}")]
    Shape {
        rows: usize,
        n_features: usize,
        expected: usize,
        got: usize,
    },
    #[error("{0} labels for {1} rows")]
    Labels(usize, usize),
    #[error("row {0} has a value that is not finite")]
    NotFinite(usize),
    #[error("every result is the same: a classifier needs both wins and losses")]
    OneClass,
    #[error("fitting failed: {0}")]
    Fit(String),
}

/// A fitted model: `P(home win) = σ(w · (x − mean) / scale + b)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogisticModel {
    pub mean: Vec<f64>,
    /// Standard deviation of each feature in the training rows (1 where a
    /// feature is constant).
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl LogisticModel {
    /// Fits on `x` (rows of `n_features` values, row-major) against `y`
    /// (`true`: home win).
    pub fn fit(
        x: &[f32],
        y: &[bool],
        n_features: usize,
        opts: &FitOptions,
    ) -> Result<Self, FitError> {
        let rows = y.len();
        if rows == 0 || n_features == 0 {
            return Err(FitError::Empty);
        }
        if x.len() != rows * n_features {
            if x.len().is_multiple_of(n_features) {
                return Err(FitError::Labels(rows, x.len() / n_features));
            }
            return Err(FitError::Shape {
                rows,
                n_features,
                expected: rows * n_features,
                got: x.len(),
            });
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(FitError::NotFinite(i / n_features));
        }
        if y.iter().all(|&w| w) || y.iter().all(|&w| !w) {
            return Err(FitError::OneClass);
        }
        let (mean, scale) = standardisation(x, n_features);
        let mut features = Array2::<f64>::zeros((rows, n_features));
        for (r, mut row) in features.rows_mut().into_iter().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (f64::from(x[r * n_features + j]) - mean[j]) / scale[j];
            }
        }
        let targets = Array1::from_iter(y.iter().copied());
        let data = Dataset::new(features, targets);
        let fitted = LogisticRegression::default()
            .alpha(opts.l2)
            .max_iterations(opts.max_iterations)
            .gradient_tolerance(opts.gradient_tolerance)
            .fit(&data)
            .map_err(|e| FitError::Fit(e.to_string()))?;
        // linfa models the larger class as the positive one: flip the signs
        // when that is `false` (more away wins than home wins).
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        Ok(Self {
            mean,
            scale,
            weights: fitted.params().iter().map(|w| sign * w).collect(),
            intercept: sign * fitted.intercept(),
        })
    }

    /// How many features a row has.
    pub fn n_features(&self) -> usize {
        self.weights.len()
    }

    /// The home-win probability of one row.
    pub fn predict(&self, row: &[f32]) -> f64 {
        let z: f64 = row
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((x, m), s), w)| w * (f64::from(*x) - m) / s)
            .sum();
        sigmoid(z + self.intercept)
    }

    /// The probabilities of rows (row-major).
    pub fn predict_all(&self, x: &[f32]) -> Vec<f64> {
        x.chunks_exact(self.n_features())
            .map(|r| self.predict(r))
            .collect()
    }
}

/// Mean and standard deviation per feature (1 for a constant feature, so it
/// stays 0 after centring instead of dividing by zero).
fn standardisation(x: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = (x.len() / n) as f64;
    let mut mean = vec![0.0; n];
    for row in x.chunks_exact(n) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows);
    let mut var = vec![0.0; n];
    for row in x.chunks_exact(n) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(*v) - m).powi(2);
        }
    }
    let scale = var
        .into_iter()
        .map(|v| {
            let sd = (v / rows).sqrt();
            if sd > 1e-12 { sd } else { 1.0 }
        })
        .collect();
    (mean, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows from a known logistic model, drawn with a small LCG (the test
    /// needs no generator crate).
    fn synthetic(rows: usize, w: &[f64], b: f64) -> (Vec<f32>, Vec<bool>) {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..rows {
            let row: Vec<f64> = w.iter().map(|_| next() * 4.0 - 2.0).collect();
            let p = sigmoid(row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + b);
            y.push(next() < p);
            x.extend(row.iter().map(|v| *v as f32));
        }
        (x, y)
    }

    #[test]
    fn recovers_the_weights_of_a_known_model() {
        let (x, y) = synthetic(20_000, &[1.5, -0.8, 0.0], 0.3);
        let m = LogisticModel::fit(&x, &y, 3, &FitOptions::default()).expect("fits");
        // Weights on the raw scale: w / scale.
        let raw: Vec<f64> = m.weights.iter().zip(&m.scale).map(|(w, s)| w / s).collect();
        assert!((raw[0] - 1.5).abs() < 0.1, "{raw:?}");
        assert!((raw[1] + 0.8).abs() < 0.1, "{raw:?}");
        assert!(raw[2].abs() < 0.1, "{raw:?}");
    }

    #[test]
    fn positive_class_is_home_win_even_when_away_wins_are_the_majority() {
        // Mostly away wins: linfa's "positive" class is `false` here.
        let (x, y) = synthetic(5_000, &[2.0], -1.5);
        assert!(y.iter().filter(|w| **w).count() < y.len() / 2);
        let m = LogisticModel::fit(&x, &y, 1, &FitOptions::default()).expect("fits");
        assert!(m.weights[0] > 0.0, "a larger x means more home wins");
        assert!(m.predict(&[2.0]) > m.predict(&[-2.0]));
    }

    #[test]
    fn fitting_is_deterministic() {
        let (x, y) = synthetic(3_000, &[0.7, 0.2], 0.1);
        let a = LogisticModel::fit(&x, &y, 2, &FitOptions::default()).expect("fits");
        let b = LogisticModel::fit(&x, &y, 2, &FitOptions::default()).expect("fits");
        assert_eq!(a, b);
    }

    #[test]
    fn refuses_bad_input() {
        let opts = FitOptions::default();
        assert!(matches!(
            LogisticModel::fit(&[], &[], 2, &opts),
            Err(FitError::Empty)
        ));
        assert!(matches!(
            LogisticModel::fit(&[1.0, 2.0, 3.0], &[true, false], 2, &opts),
            Err(FitError::Shape { .. })
        ));
        assert!(matches!(
            LogisticModel::fit(&[1.0, f32::NAN, 0.0, 1.0], &[true, false], 2, &opts),
            Err(FitError::NotFinite(0))
        ));
        assert!(matches!(
            LogisticModel::fit(&[1.0, 2.0], &[true, true], 1, &opts),
            Err(FitError::OneClass)
        ));
    }

    #[test]
    fn a_constant_feature_does_not_divide_by_zero() {
        let (mut x, y) = synthetic(1_000, &[1.0, 0.0], 0.0);
        for row in x.chunks_exact_mut(2) {
            row[1] = 3.0;
        }
        let m = LogisticModel::fit(&x, &y, 2, &FitOptions::default()).expect("fits");
        assert_eq!(m.scale[1], 1.0);
        assert!(m.predict(&[0.5, 3.0]).is_finite());
    }
}
