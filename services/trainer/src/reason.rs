//! Why a training starts: what the control loop, the evaluator, the API
//! and `fantasy train` ask for, and what a run records.

use serde::Serialize;

/// Why a training started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No active model yet.
    Bootstrap,
    /// The active model's rolling accuracy fell under the threshold.
    Accuracy,
    /// Its rolling Brier score rose over the threshold.
    Brier,
    /// `RETRAIN_EVERY_OUTCOMES` new outcomes.
    Outcomes,
    /// `POST /v1/train`.
    Api,
    /// `fantasy train`.
    Cli,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Bootstrap => "bootstrap",
            Reason::Accuracy => "accuracy",
            Reason::Brier => "brier",
            Reason::Outcomes => "outcomes",
            Reason::Api => "api",
            Reason::Cli => "cli",
        }
    }
}
