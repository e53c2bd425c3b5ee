//! The metrics this crate records: its entry in the metric catalogue (see
//! [`fantasy_telemetry::MetricDef`]). A service that uses the crate
//! describes these at start-up.

use fantasy_telemetry::MetricDef;

/// The dedup's counters; all but the last count keys.
pub const METRICS: &[MetricDef] = &[
    MetricDef::counter("dedup_checks_total", "Keys checked by the dedup"),
    MetricDef::counter(
        "dedup_bloom_hits_total",
        "Keys a bloom filter (local or Redis) said may have been seen",
    ),
    MetricDef::counter(
        "dedup_duplicates_total",
        "Keys confirmed seen (by the exact store, or repeated within one batch) and dropped as duplicates",
    ),
    MetricDef::counter(
        "dedup_false_positives_total",
        "Bloom hits the exact store did not confirm",
    ),
    MetricDef::counter(
        "dedup_redis_fallbacks_total",
        "Dedup calls (check, mark_seen) that went to Postgres alone because Redis was unavailable",
    ),
];
