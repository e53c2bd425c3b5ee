//! Spans captured in memory, for tests that follow a trace across the
//! services of one process (feature `testing`).

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// One finished span, as the exporter saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedSpan {
    pub name: String,
    /// Hex, as in a `traceparent` header.
    pub trace_id: String,
    pub span_id: String,
    /// All zeros for a root span.
    pub parent_span_id: String,
    /// The trace ids of the spans this one links to.
    pub links: Vec<String>,
    pub attributes: Vec<(String, String)>,
}

impl CapturedSpan {
    /// The value of attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, Default)]
struct Exporter(Arc<Mutex<Vec<CapturedSpan>>>);

impl SpanExporter for Exporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let mut spans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        spans.extend(batch.into_iter().map(|s| {
            CapturedSpan {
                name: s.name.into_owned(),
                trace_id: s.span_context.trace_id().to_string(),
                span_id: s.span_context.span_id().to_string(),
                parent_span_id: s.parent_span_id.to_string(),
                links: s
                    .links
                    .iter()
                    .map(|l| l.span_context.trace_id().to_string())
                    .collect(),
                attributes: s
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect(),
            }
        }));
        std::future::ready(Ok(()))
    }
}

/// What the process's spans were, once they ended.
#[derive(Debug)]
pub struct SpanCapture {
    spans: Arc<Mutex<Vec<CapturedSpan>>>,
    _provider: SdkTracerProvider,
}

impl SpanCapture {
    /// Installs the process's subscriber: `RUST_LOG` (default `warn`) logs
    /// to stderr and every span, exported into memory as it ends; and the
    /// W3C propagator, as [`crate::init`] does. Once per process (nextest
    /// runs each test in its own); `None` if a subscriber was there first.
    pub fn install() -> Option<Self> {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let exporter = Exporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        // Spans reach the exporter whatever the log filter says.
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing_subscriber::registry()
            .with(otel)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()
            .ok()?;
        Some(Self {
            spans: exporter.0,
            _provider: provider,
        })
    }

    /// Every span ended so far.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
