//! The metrics this crate records: its entry in the metric catalogue (see
//! [`fantasy_telemetry::MetricDef`]). The request metrics carry the
//! service's name, so a service describes [`catalogue`]`(its name)` at
//! start-up.

use fantasy_telemetry::{MetricDef, MetricKind, Unit};

/// The metrics whose names do not depend on the service.
pub const METRICS: &[MetricDef] = &[MetricDef::counter(
    "http_rate_limited_total",
    "Requests refused with a 429 by the per-client rate limit",
)];

/// `<service>_http_requests_total`, the counter [`crate::layers::apply`]
/// records for `service`.
pub fn requests_total(service: &str) -> String {
    format!("{service}_http_requests_total")
}

/// `<service>_http_request_duration_seconds`, the histogram
/// [`crate::layers::apply`] records for `service`.
pub fn request_duration_seconds(service: &str) -> String {
    format!("{service}_http_request_duration_seconds")
}

/// Every metric the layers record for `service`: [`METRICS`] and the
/// request metrics named after it.
pub fn catalogue(service: &str) -> Vec<MetricDef> {
    let mut defs = METRICS.to_vec();
    defs.push(MetricDef {
        name: requests_total(service).into(),
        kind: MetricKind::Counter,
        unit: None,
        help: "Requests answered, by route, method and status",
    });
    defs.push(MetricDef {
        name: request_duration_seconds(service).into(),
        kind: MetricKind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from a request's arrival to its response, by route and method",
    });
    defs
}
