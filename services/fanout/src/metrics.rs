//! The fanout's metrics, and the catalogue its process describes at
//! start-up: its own, the HTTP layer's and those of the libraries it runs
//! (see [`fantasy_telemetry::MetricDef`]).

use fantasy_telemetry::{MetricDef, Unit};

/// The service's name in its HTTP metrics (`fanout_http_*`).
pub const SERVICE: &str = "fanout";

/// The metrics the fanout itself records.
pub const METRICS: &[MetricDef] = &[
    // connections
    MetricDef::gauge("fanout_connections", "WebSocket connections open"),
    MetricDef::counter(
        "fanout_refused_total",
        "WebSocket upgrades refused, by reason (max_connections)",
    ),
    MetricDef::counter(
        "fanout_bytes_out_total",
        "Bytes of frames written to clients' sockets",
    )
    .unit(Unit::Bytes),
    MetricDef::histogram(
        "fanout_e2e_latency_seconds",
        "Time from a prediction's predicted_at to its frame being written to a socket (one frame in 16 per connection)",
    )
    .unit(Unit::Seconds),
    MetricDef::histogram(
        "fanout_stage_seconds",
        "Where a prediction's time goes, by stage: kafka (predicted_at to the hub's receipt, every message), fanout (the hub's receipt to the frame written to a socket: routing, the client's queue, the write; sampled as the e2e latency)",
    )
    .unit(Unit::Seconds),
    MetricDef::counter(
        "fanout_recovery_total",
        "Subscriptions that asked to resume from positions, by result (hit: the history covered them, miss: it did not)",
    ),
    // the hub
    MetricDef::counter(
        "fanout_messages_in_total",
        "Records of the predictions topic the hub read",
    ),
    MetricDef::counter(
        "fanout_messages_out_total",
        "Frames queued to clients (one per subscriber a prediction reached)",
    ),
    MetricDef::counter(
        "fanout_slow_closes_total",
        "Clients closed because their send queue was full (too slow to keep up)",
    ),
    MetricDef::counter(
        "fanout_undecodable_total",
        "Predictions the hub could not decode, skipped",
    ),
    MetricDef::counter(
        "fanout_repeated_total",
        "Predictions the hub passed over as repeats of one already published (a predictor's redelivery)",
    ),
    MetricDef::gauge("fanout_subscriptions", "Channel subscriptions held"),
    MetricDef::gauge(
        "fanout_channels",
        "Channels the hub keeps (subscribed, or with recent history)",
    ),
];

/// Every metric the fanout's process records.
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
