//! The metrics this crate records: its entry in the metric catalogue (see
//! [`fantasy_telemetry::MetricDef`]). A service that uses the crate
//! describes these at start-up.

use fantasy_telemetry::{MetricDef, Unit};

/// Every metric the engine and the batcher record.
pub const METRICS: &[MetricDef] = &[
    // engine
    MetricDef::counter("inference_model_swaps_total", "Models swapped in to serve"),
    MetricDef::gauge(
        "inference_model_info",
        "1 for the model version serving, 0 for the one it replaced, by version and device",
    ),
    // batcher
    MetricDef::counter(
        "inference_rejected_total",
        "Requests refused because the batcher's queue was full (a 503), by reason",
    ),
    MetricDef::histogram(
        "inference_queue_wait_seconds",
        "Time the longest-waiting request of a batch spent queued before the batch ran",
    )
    .unit(Unit::Seconds),
    MetricDef::gauge(
        "inference_queue_depth",
        "Requests still queued when a batch starts",
    ),
    MetricDef::histogram(
        "inference_batch_seconds",
        "Time one batch took to run through the model",
    )
    .unit(Unit::Seconds),
    MetricDef::histogram(
        "inference_batch_rows",
        "Rows per batch run through the model",
    )
    .unit(Unit::Count),
    MetricDef::counter("inference_rows_total", "Rows scored"),
    MetricDef::counter(
        "inference_batch_failures_total",
        "Batches the model failed to run (each of their requests gets an error)",
    ),
];
