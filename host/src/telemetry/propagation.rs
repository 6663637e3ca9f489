//! W3C trace context (`traceparent`, `tracestate`) in and out of the host's edges: HTTP request
//! headers, the outbox row, AMQP message headers and the CloudEvent's `traceparent` attribute.
//!
//! Without an OpenTelemetry layer (no exporter configured) spans have no context: nothing is
//! injected, and an extracted context is simply not used.

use std::collections::HashMap;

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The context a client sent with its request, if any.
pub fn from_http(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HttpHeaders(headers))
}

/// The context of a publisher's span, from a delivery's AMQP headers, else from the event's
/// `traceparent` attribute.
pub fn from_amqp(headers: Option<&FieldTable>, traceparent: Option<&str>) -> Context {
    let mut carrier = HashMap::new();
    if let Some(headers) = headers {
        for key in [TRACEPARENT, TRACESTATE] {
            if let Some(AMQPValue::LongString(value)) = headers.inner().get(key) {
                carrier.insert(
                    key.to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                );
            }
        }
    }
    if !carrier.contains_key(TRACEPARENT)
        && let Some(traceparent) = traceparent
    {
        carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// The context stored with an outbox row.
pub fn from_traceparent(traceparent: Option<&str>) -> Context {
    from_amqp(None, traceparent)
}

/// `traceparent` in its canonical form if it is a valid one, `None` otherwise: for a value read
/// back from a table the component's own SQL can write.
pub fn valid_traceparent(traceparent: Option<&str>) -> Option<String> {
    let context = from_traceparent(traceparent);
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// `traceparent` (and `tracestate` when there is one) of `span`; empty when it has no context.
pub fn headers_of(span: &tracing::Span) -> HashMap<String, String> {
    let context = span.context();
    let mut carrier = HashMap::new();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
    }
    carrier
}

/// The `traceparent` of `span`, when it has a context.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    headers_of(span).remove(TRACEPARENT)
}

/// Renames `span` once it has started (recording `otel.name` then changes nothing): the
/// server span learns its route only after the component ran.
pub fn rename(span: &tracing::Span, name: String) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        context.span().update_name(name);
    }
}

/// Trace and span id of the current span, in hex, when it has a context: for log lines.
pub fn current_ids() -> Option<(String, String)> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_clients_traceparent_is_the_context_of_its_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", PARENT.parse().unwrap());
        let context = from_http(&headers);
        let span = context.span();
        assert_eq!(
            span.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span.span_context().is_remote());
    }

    #[test]
    fn amqp_headers_win_over_the_events_attribute_and_a_bad_one_is_no_context() {
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), AMQPValue::LongString(PARENT.into()));
        let other = "00-11111111111111111111111111111111-2222222222222222-01";
        let context = from_amqp(Some(&headers), Some(other));
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let context = from_amqp(None, Some(other));
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "11111111111111111111111111111111"
        );
        assert!(
            !from_traceparent(Some("00-not-a-trace"))
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn only_a_valid_traceparent_passes_through() {
        assert_eq!(valid_traceparent(Some(PARENT)).as_deref(), Some(PARENT));
        assert_eq!(valid_traceparent(Some(&"x".repeat(100_000))), None);
        assert_eq!(
            valid_traceparent(Some(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            )),
            None
        );
        assert_eq!(valid_traceparent(None), None);
    }
}
