//! The collector's metrics, and the catalogue its process describes at
//! start-up: its own, the HTTP layer's and those of the libraries it runs
//! (see [`fantasy_telemetry::MetricDef`]).

use fantasy_telemetry::{MetricDef, Unit};

/// The service's name in its HTTP metrics (`collector_http_*`).
pub const SERVICE: &str = "collector";

/// The metrics the collector itself records.
pub const METRICS: &[MetricDef] = &[
    // sources
    MetricDef::counter(
        crate::file_source::REJECTED_TOTAL,
        "Records a source could not read or that do not make valid messages, skipped, by source",
    ),
    MetricDef::counter(
        "collector_fetches_total",
        "Polls of an HTTP source, by source and result (ok, error, retry)",
    ),
    MetricDef::histogram(
        "collector_fetch_seconds",
        "Time one HTTP request to a source took, by source",
    )
    .unit(Unit::Seconds),
    MetricDef::counter(
        "collector_source_errors_total",
        "Fetches from a source that failed, by source",
    ),
    // the pipeline
    MetricDef::histogram(
        "collector_batch_seconds",
        "Time to dedup, store and publish one batch of a source, by source",
    )
    .unit(Unit::Seconds),
    MetricDef::counter(
        "collector_batch_errors_total",
        "Batches that failed and will be retried, by source",
    ),
    MetricDef::counter(
        "collector_published_total",
        "Messages published (and stored), by source and kind (game, outcome)",
    ),
    MetricDef::counter(
        "collector_ratings_applied_total",
        "Final results applied to the teams' ratings",
    ),
    MetricDef::counter(
        "collector_dedup_keys_purged_total",
        "Dedup keys older than the retention deleted",
    ),
];

/// Every metric the collector's process records.
pub fn catalogue() -> Vec<MetricDef> {
    let mut defs = [
        METRICS,
        fantasy_dedup::metrics::METRICS,
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
