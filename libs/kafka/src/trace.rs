//! W3C trace context in Kafka headers, so a game's journey through the
//! services is one trace.
//!
//! The propagator is OpenTelemetry's global one: a no-op until the telemetry
//! crate installs the W3C propagator, so services without tracing pay nothing.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header names the W3C propagator reads; the only ones we copy off a message.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

struct VecInjector(Vec<(String, String)>);

impl Injector for VecInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// Headers carrying the current span's context (none when tracing is off).
pub(crate) fn current_context_headers() -> Option<OwnedHeaders> {
    let cx = tracing::Span::current().context();
    let mut injector = VecInjector(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut injector));
    if injector.0.is_empty() {
        return None;
    }
    let mut headers = OwnedHeaders::new_with_capacity(injector.0.len());
    for (key, value) in &injector.0 {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    Some(headers)
}

/// The trace headers of a received message, kept so the handler can continue
/// the producer's trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceHeaders(HashMap<String, String>);

impl TraceHeaders {
    pub(crate) fn from_message<H: Headers>(headers: Option<&H>) -> Option<Self> {
        let headers = headers?;
        let mut found = HashMap::new();
        for h in headers.iter() {
            if TRACE_HEADERS.contains(&h.key)
                && let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok())
            {
                found.insert(h.key.to_owned(), v.to_owned());
            }
        }
        (!found.is_empty()).then_some(Self(found))
    }

    /// The remote context these headers describe.
    pub fn context(&self) -> opentelemetry::Context {
        opentelemetry::global::get_text_map_propagator(|p| p.extract(self))
    }

    /// Makes `span` a child of the remote span.
    pub fn adopt(&self, span: &tracing::Span) {
        let _ = span.set_parent(self.context());
    }

    /// Links `span` to the remote span (a batch span links every record it
    /// handles; its parent is only the first one's).
    pub fn link(&self, span: &tracing::Span) {
        use opentelemetry::trace::TraceContextExt as _;
        let cx = self.context();
        let remote = cx.span().span_context().clone();
        if remote.is_valid() {
            span.add_link(remote);
        }
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
