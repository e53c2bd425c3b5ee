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
    // experiments
    MetricDef::counter(
        "predictor_experiment_refused_total",
        "Experiments not served (a version that does not load, over EXPERIMENT_MAX_MODEL_BYTES, another champion)",
    ),
    MetricDef::gauge(
        "predictor_experiment_variant_info",
        "The served experiment's variants (experiment, variant, version, role): the share of games each serves",
    ),
    MetricDef::counter(
        "predictor_variant_predictions_total",
        "Predictions served, by experiment variant (none outside one) and path (rest, stream)",
    ),
    MetricDef::counter(
        "predictor_shadow_predictions_total",
        "Predictions made off the serving path by variants that did not serve them, by variant and source (rest, stream)",
    ),
    MetricDef::counter(
        "predictor_shadow_failures_total",
        "Shadow predictions that failed, by variant",
    ),
    MetricDef::counter(
        "predictor_shadow_shed_total",
        "Shadow jobs shed: the queue was full (source rest, stream) or their rows could not be stored (store)",
    ),
    MetricDef::gauge("predictor_shadow_queue_depth", "Shadow jobs waiting"),
    MetricDef::histogram(
        "predictor_shadow_job_seconds",
        "Time scoring (and storing) what the shadow worker took from its queue at once (the jobs of 50 ms, up to 1024)",
    )
    .unit(Unit::Seconds),
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
