//! Telemetry for every service: logs, traces, metrics, and the
//! `/health`, `/ready`, `/metrics` endpoints.
//!
//! - Logs: `tracing` events to stderr, as JSON (`LOG_FORMAT=json`, the default
//!   when stderr is not a terminal, as in containers, for Loki) or pretty text
//!   for people; filtered by `RUST_LOG` (default `info`).
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans go to an OTLP
//!   collector over HTTP. The W3C trace-context propagator is always installed,
//!   so the Kafka crate carries trace context in message headers and a game's
//!   journey through the services is one trace.
//! - Metrics: the `metrics` facade with a Prometheus recorder; [`router`]
//!   serves its text format at `/metrics`.
//!
//! Metric names follow `<component>_<what>_<unit>` (`_total` for counters),
//! and labels stay low-cardinality: never a game id. Each crate that records
//! metrics declares them in its `metrics.rs` ([`MetricDef`]); a service
//! [`describe`]s its catalogue at start-up, which gives every series its
//! `# HELP` line.

mod catalogue;
mod config;
mod health;
#[cfg(feature = "testing")]
pub mod testing;

pub use catalogue::{MetricDef, MetricKind, describe};
pub use config::{LogFormat, TelemetryConfig};
pub use health::{CheckResult, Readiness, ReadinessReport, router};
pub use metrics::Unit;

use std::sync::OnceLock;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Makes `span` a child of the W3C trace context a request carried
/// (`traceparent`), so a caller's trace goes on through the service.
pub fn adopt_http_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    struct Headers<'a>(&'a axum::http::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(axum::http::HeaderName::as_str).collect()
        }
    }
    if headers.contains_key("traceparent") {
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
        let _ = span.set_parent(cx);
    }
}

/// Flushes pending spans when dropped; keep it alive until `main` returns.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("tracing_exported", &self.provider.is_some())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the process's telemetry: the log subscriber, the trace exporter
/// (when configured), the W3C propagator and the Prometheus recorder.
///
/// Call once, early in `main`. A second call (several services in one
/// process, as `fantasy up` runs them) keeps the first subscriber and returns
/// a guard that does nothing.
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    install_crypto_provider();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let _ = metrics_handle();

    let filter = EnvFilter::try_new(&cfg.log_filter)
        .with_context(|| format!("RUST_LOG {:?} is not a valid filter", cfg.log_filter))?;

    let provider = match &cfg.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(&cfg.service, endpoint)?),
        None => None,
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(cfg.service.clone())));

    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let installed = match cfg.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    match installed {
        Ok(()) => {
            if let Some(p) = &provider {
                opentelemetry::global::set_tracer_provider(p.clone());
            }
            Ok(TelemetryGuard { provider })
        }
        // Someone (another service in this process, a test) got there first.
        Err(_) => Ok(TelemetryGuard { provider: None }),
    }
}

fn tracer_provider(service: &str, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&endpoint)
        .build()
        .with_context(|| format!("building the OTLP exporter for {endpoint}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Makes `ring` the process's TLS crypto provider (the one TLS stack of the
/// workspace: rustls on ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Histograms that count items, bucketed 1, 2, 4, ... 1024 instead of in
/// seconds.
pub const SIZE_HISTOGRAMS: [&str; 2] = ["inference_batch_rows", "kafka_consumer_batch_size"];

/// The Prometheus recorder's handle, installing the recorder on first use.
///
/// The `metrics` facade has one global recorder per process; every service
/// in the process records into it and every `/metrics` renders all of it.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            // Latency buckets from 100 µs to 10 s: inference batches sit at
            // the bottom, Kafka round trips in the middle.
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ])
            .unwrap_or_else(|_| PrometheusBuilder::new());
        // Sizes, not seconds: rows per inference batch, messages per
        // consumer batch.
        let sizes = [
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ];
        let recorder = SIZE_HISTOGRAMS
            .iter()
            .fold(recorder, |b, name| {
                b.set_buckets_for_metric(Matcher::Full((*name).to_owned()), &sizes)
                    .expect("non-empty buckets")
            })
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed already; then our
        // handle renders nothing, which the /metrics test would catch.
        if metrics::set_global_recorder(recorder).is_err() {
            eprintln!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}
