//! The trainer's metrics, and the catalogue its process describes at
//! start-up: its own, the HTTP layer's and those of the libraries it runs
//! (see [`fantasy_telemetry::MetricDef`]).

use fantasy_telemetry::{MetricDef, Unit};

/// The service's name in its HTTP metrics (`trainer_http_*`).
pub const SERVICE: &str = "trainer";

/// The metrics the trainer itself records.
pub const METRICS: &[MetricDef] = &[
    // experiments
    MetricDef::counter(
        "trainer_experiment_decisions_total",
        "Decisions the sequential test made on experiments, by action (promote, drop, stop, step, inconclusive, verdict)",
    ),
    MetricDef::gauge(
        "trainer_experiment_log_loss",
        "Log loss of each variant of the running experiment on its finished games",
    ),
    MetricDef::gauge(
        "trainer_experiment_brier",
        "Brier score of each variant of the running experiment on its finished games",
    ),
    MetricDef::gauge(
        "trainer_experiment_outcomes",
        "Finished games each variant of the running experiment scored",
    ),
    // evaluation
    MetricDef::counter(
        "trainer_predictions_total",
        "Predictions read from the predictions stream",
    ),
    MetricDef::counter(
        "trainer_outcomes_total",
        "Outcomes read, by kind (new, duplicate, unknown_game)",
    ),
    MetricDef::gauge(
        "trainer_model_accuracy",
        "Share of its recent finished games a model version called right, by model and version",
    ),
    MetricDef::gauge(
        "trainer_model_brier",
        "Brier score of a model version on its recent finished games (lower is better), by model and version",
    ),
    MetricDef::gauge(
        "trainer_model_log_loss",
        "Log loss of a model version on its recent finished games (lower is better), by model and version",
    ),
    MetricDef::gauge(
        "trainer_model_evaluated_games",
        "Finished games the scores of a model version are computed on, by model and version",
    ),
    // retraining
    MetricDef::counter(
        "trainer_triggers_total",
        "Retrain requests acted on, by reason (bootstrap, accuracy, brier, outcomes, api, cli)",
    ),
    MetricDef::counter(
        "trainer_triggers_suppressed_total",
        "Automatic retrain requests dropped during the cool-down, by reason",
    ),
    MetricDef::counter(
        "trainer_training_runs_total",
        "Training runs, by reason and result (promoted, rejected, not_enough_data, busy, failed)",
    ),
    MetricDef::histogram(
        "trainer_training_duration_seconds",
        "Time of a training run that produced a candidate model (promoted or not)",
    )
    .unit(Unit::Seconds),
    MetricDef::counter(
        "trainer_history_rows_skipped_total",
        "Rows of the training history left out, by reason (not_finite, width)",
    ),
    MetricDef::gauge(
        "trainer_active_model_info",
        "1 for the active model version, 0 for the one it replaced, by model and version",
    ),
];

/// Every metric the trainer's process records.
pub fn catalogue() -> Vec<MetricDef> {
    let mut defs = [METRICS, fantasy_kafka::metrics::METRICS].concat();
    defs.extend(fantasy_http::metrics::catalogue(SERVICE));
    defs
}

/// Describes [`catalogue`] to the process's recorder (installing it), so
/// that `/metrics` gives each series its `# HELP`.
pub fn describe() {
    fantasy_telemetry::describe(&catalogue());
}
