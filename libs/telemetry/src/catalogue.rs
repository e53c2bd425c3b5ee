//! Metric catalogues: what each crate records, declared in one place.
//!
//! Every crate that records metrics lists them in its `metrics.rs` as a
//! `METRICS: &[MetricDef]` (name, kind, unit, one line of help). A service
//! gathers its own list and those of the libraries it runs into one
//! catalogue and [`describe`]s it at start-up, so `/metrics` carries a
//! `# HELP` line next to the `# TYPE` line of every series. The packaging
//! test reads the same catalogues: the metrics the dashboards and alerts may
//! query, and the names the code's `counter!`/`gauge!`/`histogram!` calls
//! must all be declared under, with the same kind.
//!
//! The Prometheus recorder prints a metric (and so its `HELP`) only once it
//! has been recorded: describing one that never is shows nothing.

use std::borrow::Cow;

use metrics::Unit;

/// The kind of a metric, as the `metrics` macros and Prometheus' `# TYPE`
/// name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricKind {
    /// Only goes up (`counter!`); named `..._total`.
    Counter,
    /// Goes up and down (`gauge!`).
    Gauge,
    /// A distribution of samples, bucketed (`histogram!`).
    Histogram,
}

impl MetricKind {
    /// `counter`, `gauge` or `histogram`: the macro that records it, and the
    /// `# TYPE` Prometheus shows.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

impl std::fmt::Display for MetricKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One metric a crate records.
///
/// Lists are `const`s built with [`MetricDef::counter`],
/// [`MetricDef::gauge`], [`MetricDef::histogram`] and [`MetricDef::unit`];
/// a name made at run time (the HTTP layer's `<service>_http_*`) is an owned
/// [`Cow`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricDef {
    /// `<component>_<what>_<unit>`; counters end in `_total`.
    pub name: Cow<'static, str>,
    pub kind: MetricKind,
    /// What one unit of the value is, where it has one (seconds, bytes).
    pub unit: Option<Unit>,
    /// One line: what is counted or measured, and by which labels.
    pub help: &'static str,
}

impl MetricDef {
    /// A counter, without a unit.
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self::new(name, MetricKind::Counter, help)
    }

    /// A gauge, without a unit.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self::new(name, MetricKind::Gauge, help)
    }

    /// A histogram, without a unit.
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self::new(name, MetricKind::Histogram, help)
    }

    const fn new(name: &'static str, kind: MetricKind, help: &'static str) -> Self {
        Self {
            name: Cow::Borrowed(name),
            kind,
            unit: None,
            help,
        }
    }

    /// The same metric, measured in `unit`.
    #[must_use]
    pub const fn unit(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    /// Describes this metric to the installed recorder (see [`describe`],
    /// which installs ours first).
    fn describe_now(&self) {
        let name = self.name.clone();
        let help = self.help;
        match (self.kind, self.unit) {
            (MetricKind::Counter, Some(unit)) => metrics::describe_counter!(name, unit, help),
            (MetricKind::Counter, None) => metrics::describe_counter!(name, help),
            (MetricKind::Gauge, Some(unit)) => metrics::describe_gauge!(name, unit, help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(name, help),
            (MetricKind::Histogram, Some(unit)) => metrics::describe_histogram!(name, unit, help),
            (MetricKind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

/// Describes `defs` to the process's Prometheus recorder, installing it
/// first ([`crate::metrics_handle`]): a description given to no recorder, or
/// to the no-op one the facade starts with, would be lost. Call it once at
/// start-up, before or after the first metric is recorded; the first
/// description of a name wins, so services sharing a process (`fantasy up`)
/// may each describe the libraries they share.
pub fn describe(defs: &[MetricDef]) {
    let _ = crate::metrics_handle();
    for def in defs {
        def.describe_now();
    }
}
