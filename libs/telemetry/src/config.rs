//! Telemetry settings.

use std::fmt;
use std::io::IsTerminal as _;
use std::str::FromStr;

use fantasy_config::Parser;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (for Loki and other collectors).
    Json,
    /// Coloured, aligned text for people.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            _ => Err("expected json or pretty".into()),
        }
    }
}

/// Telemetry settings of a service.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// The service's name: `service.name` in traces.
    pub service: String,
    /// `LOG_FORMAT`: `json` or `pretty`; by default pretty on a terminal,
    /// JSON otherwise.
    pub log_format: LogFormat,
    /// `RUST_LOG`: a `tracing` filter, default `info`.
    pub log_filter: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the OTLP/HTTP collector (e.g.
    /// `http://otel-collector:4318`); unset, no traces are exported.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Defaults for `service`.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            log_format: if std::io::stderr().is_terminal() {
                LogFormat::Pretty
            } else {
                LogFormat::Json
            },
            log_filter: "info".into(),
            otlp_endpoint: None,
        }
    }

    /// Reads `LOG_FORMAT`, `RUST_LOG` and `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn from_env(p: &mut Parser<'_>, service: &str) -> Self {
        let d = Self::new(service);
        let log_filter = p.string("RUST_LOG", &d.log_filter);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            p.problem("RUST_LOG", format!("{e}"));
        }
        let otlp_endpoint = p
            .url_opt("OTEL_EXPORTER_OTLP_ENDPOINT", &["http", "https"])
            .map(|u| u.to_string());
        Self {
            service: d.service,
            log_format: p.parse("LOG_FORMAT", d.log_format),
            log_filter,
            otlp_endpoint,
        }
    }
}

impl fmt::Display for TelemetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service={} log_format={:?} log_filter={:?} otlp_endpoint={}",
            self.service,
            self.log_format,
            self.log_filter,
            self.otlp_endpoint.as_deref().unwrap_or("(off)")
        )
    }
}
