//! OpenTelemetry traces of delivery attempts, exported over OTLP (HTTP/protobuf).
//!
//! On when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set and not empty; `OTEL_SERVICE_NAME` names the service (`ferry` when unset), and the
//! exporter's other standard variables (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`,
//! `OTEL_BSP_SCHEDULE_DELAY`, …) are read by the OpenTelemetry SDK itself. When it is off there
//! is no exporter, no layer and no span: [`attempt_span`] is one atomic load and `Span::none()`.
//!
//! Each delivery attempt is a `tracing` span (`ferry.attempt`, kind client) that
//! `tracing-opentelemetry` turns into an OpenTelemetry span whose parent is the `traceparent`
//! the row was enqueued with (`ferry_outbox.traceparent`). It carries `outbox.id`, `workflow`,
//! `key`, `attempt` and `http.response.status_code`, and the request to the target carries the
//! attempt's own `traceparent`. With tracing off, a row's stored `traceparent` is passed to the
//! target unchanged, so the target's spans still join the producer's trace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use reqwest::header::HeaderValue;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::filter::Directive;
use tracing_subscriber::Layer;

use super::OpsError;
use crate::outbox::{Claimed, Outcome};

/// The `tracing` target of attempt spans; the OpenTelemetry layer takes these spans only.
pub const ATTEMPT_TARGET: &str = "ferry::attempt";

/// The log filter's directive that lets attempt spans through whatever the log level.
pub(crate) fn attempt_directive() -> Directive {
    format!("{ATTEMPT_TARGET}=info")
        .parse()
        .expect("a valid directive")
}

/// The environment variables that turn tracing on (either, non-empty).
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Set once an exporting layer has been built: attempt spans are made only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether attempt spans are being made (an OTLP exporter was set up).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Whether the environment asks for OTLP export.
pub fn configured() -> bool {
    ENDPOINT_VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()))
}

/// Keeps the tracer provider; dropping it exports what is buffered and stops the exporter.
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for OtelGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtelGuard")
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        // The batch processor's shutdown blocks until its last export is done: run it on a
        // thread of its own, so dropping the guard inside a tokio runtime does not block a
        // worker in a way tokio forbids (the exporter's blocking client has its own runtime).
        let provider = self.provider.clone();
        let done = std::thread::spawn(move || provider.shutdown());
        if let Ok(Err(e)) = done.join() {
            eprintln!("ferry: OpenTelemetry exporter did not shut down cleanly: {e}");
        }
    }
}

/// The layer exporting attempt spans over OTLP, when [`configured`]; `None` when not.
pub(crate) fn layer() -> Result<Option<(super::logging::BoxedLayer, OtelGuard)>, OpsError> {
    if !configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| OpsError::Otel(e.to_string()))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|v| v.is_empty()) {
        resource = resource.with_service_name("ferry");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("ferry");
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|meta| {
            meta.is_span() && meta.target() == ATTEMPT_TARGET
        }))
        .boxed();
    ACTIVE.store(true, Ordering::Relaxed);
    Ok(Some((layer, OtelGuard { provider })))
}

/// The span of one delivery attempt of `row`, its parent the row's stored `traceparent`;
/// `Span::none()` when tracing is off.
pub fn attempt_span(row: &Claimed) -> Span {
    if !active() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: ATTEMPT_TARGET,
        "ferry.attempt",
        otel.kind = "client",
        otel.status_code = Empty,
        outbox.id = row.id,
        workflow = %row.workflow,
        key = %row.key,
        attempt = row.attempt,
        http.response.status_code = Empty,
    );
    if let Some(parent) = row.traceparent.as_deref().and_then(parent_context) {
        // Fails only when no OpenTelemetry layer sees the span (a subscriber of the caller's
        // own): the span is then a plain tracing span.
        let _ = span.set_parent(parent);
    }
    span
}

/// The `traceparent` header for the request of `row`'s attempt: the attempt span's context, or,
/// when there is no such span (tracing off), the row's stored `traceparent` unchanged.
pub fn request_traceparent(span: &Span, row: &Claimed) -> Option<HeaderValue> {
    let own = (!span.is_none())
        .then(|| traceparent_of(&span.context()))
        .flatten();
    own.or_else(|| row.traceparent.clone())
        .and_then(|tp| HeaderValue::from_str(&tp).ok())
}

/// Record what the attempt ended with on its span.
pub fn record_attempt(span: &Span, status: Option<u16>, outcome: &Outcome) {
    if span.is_none() {
        return;
    }
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status));
    }
    if matches!(outcome, Outcome::Retry { .. } | Outcome::Dead { .. }) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The context a W3C `traceparent` names, as a remote parent; `None` when it is not valid.
pub fn parent_context(traceparent: &str) -> Option<Context> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` of the span in `cx`; `None` when it holds no valid span.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The caller's current trace context as a `traceparent`: the current `tracing` span's
/// OpenTelemetry context, else OpenTelemetry's current context (for
/// [`crate::outbox::EnqueueOptions::current_trace`]).
pub fn current_traceparent() -> Option<String> {
    let span = Span::current();
    (!span.is_none())
        .then(|| traceparent_of(&span.context()))
        .flatten()
        .or_else(|| traceparent_of(&Context::current()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips() {
        let cx = parent_context(TP).expect("valid");
        assert_eq!(traceparent_of(&cx).as_deref(), Some(TP));
        assert!(
            parent_context("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(parent_context("garbage").is_none());
    }

    #[test]
    fn without_tracing_the_stored_traceparent_is_passed_on() {
        let row = Claimed {
            id: 1,
            workflow: "w".into(),
            key: "k".into(),
            payload: "{}".into(),
            attempt: 1,
            token: uuid::Uuid::nil(),
            created_at: chrono::Utc::now(),
            replay_of: None,
            traceparent: Some(TP.into()),
        };
        let span = Span::none();
        assert_eq!(
            request_traceparent(&span, &row)
                .as_ref()
                .map(|v| v.to_str().unwrap()),
            Some(TP)
        );
        assert!(current_traceparent().is_none());
    }
}
