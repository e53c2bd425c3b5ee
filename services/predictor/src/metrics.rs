//! The predictor's metrics, and the catalogue its process describes at
//! start-up: its own, the HTTP layer's and those of the libraries it runs
//! (see [`fantasy_telemetry::MetricDef`]).

use fantasy_telemetry::{MetricDef, Unit};

/// The service's name in its HTTP metrics (`predictor_http_*`).
pub const SERVICE: &str = "predictor";

/// The metrics the predictor itself records.
pub const METRICS: &[MetricDef] = &[
    // models
    MetricDef::counter(
        "predictor_model_rejected_total",
        "Model versions refused (not swapped in), by reason (artifact, invalid)",
    ),
    MetricDef::counter(
        "predictor_model_swaps_total",
        "Model versions loaded and swapped in to serve",
    ),
    // the games stream
    MetricDef::counter(
        "predictor_stream_skipped_total",
        "Games from the stream not predicted, by reason (final, feature_set, feature_count, feature_range)",
    ),
    MetricDef::histogram(
        "predictor_stream_sink_seconds",
        "Time writing one batch of predictions to one sink, by sink (postgres, redis, kafka)",
    )
    .unit(Unit::Seconds),
    MetricDef::counter(
        "predictor_stream_predictions_total",
        "Predictions stored in every sink",
    ),
    MetricDef::histogram(
        "predictor_stream_event_age_seconds",
        "Time from a game event's production to its prediction being stored",
    )
    .unit(Unit::Seconds),
];

/// Every metric the predictor's process records.
pub fn catalogue() -> Vec<MetricDef> {
    let mut defs = [
        METRICS,
        fantasy_inference::metrics::METRICS,
        fantasy_kafka::metrics::METRICS,
    ]
    .concat();
    defs.extend(fantasy_http::metrics::catalogue(SERVICE));
    defs
}

/// Describes [`catalogue`] to the process's recorder (installing it), so
/// that `/metrics` gives each series its `# HELP`.
pub fn describe() {
    fantasy_telemetry::describe(&catalogue());
}
