//! The tracing subscriber, the log format switch and the optional OpenTelemetry exporter. Stays
//! out of metrics and business logic.
//!
//! Every span goes through an OpenTelemetry layer, so every request and every scan has a trace id
//! whether or not traces leave the process: log lines inside a request or a scan carry it
//! (`trace_id`), and the same id is what a trace backend shows. Spans are exported over OTLP only
//! when [`crate::config::OtlpExport`] says so (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set); otherwise they are dropped when they end. Callers
//! never check which case applies: they create spans, and call [`record_trace_id`] on the root
//! spans they open (a request, a scan).
//!
//! Span attributes use the names callers see in the API (`test_id`, `workspace_id`,
//! `component_id`, `assessment_id`), so a trace is found by the same key a client holds.
//! Which spans export is decided separately from the log filter: the spans of this crate at INFO
//! and above always reach the exporter, whatever `CERTUS_ASSURANCE_LOG_LEVEL` hides from the log.

use std::io::IsTerminal;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, OtlpExport, OtlpProtocol};

/// The name of the span field that carries the trace id into log lines.
const TRACE_ID_FIELD: &str = "trace_id";

/// How long shutdown waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Owns the tracer provider. [`Telemetry::shutdown`] (or dropping it) exports the spans still
/// buffered; the binary calls it after the service has drained.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports buffered spans (bounded by a timeout) and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
                eprintln!("certus-assurance: exporting the last spans failed: {err}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber without exporting traces. `RUST_LOG` overrides `level` when set.
pub fn init(format: Option<LogFormat>, level: &str) -> anyhow::Result<()> {
    init_with_traces(format, level, None).map(std::mem::forget)
}

/// Installs the global subscriber and, when `export` is given, the OTLP span exporter. Must be
/// called inside the Tokio runtime (the gRPC exporter's connection lives on it), and the returned
/// [`Telemetry`] shut down before the runtime stops.
pub fn init_with_traces(
    format: Option<LogFormat>,
    level: &str,
    export: Option<OtlpExport>,
) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .map_err(|e| anyhow::anyhow!("CERTUS_ASSURANCE_LOG_LEVEL is not a valid filter: {e}"))?;
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });

    let provider = tracer_provider(export.as_ref())?;
    let tracer = provider.tracer("certus-assurance");
    let ours = || Targets::new().with_target("certus_assurance", tracing::Level::INFO);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(ours());
    let fmt_layer = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .map_event_format(|inner| WithTraceId { inner })
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel)
        .with(TraceIdLayer.with_filter(ours()))
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    if let Some(export) = &export {
        tracing::info!(
            otlp.endpoint = %export.endpoint,
            otlp.protocol = export.protocol.as_str(),
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry {
        provider: Some(provider),
    })
}

fn tracer_provider(export: Option<&OtlpExport>) -> anyhow::Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder();
    let Some(export) = export else {
        // No processor: spans get ids (for the logs) and are dropped when they end.
        return Ok(builder.build());
    };
    // `service.name` defaults to the crate name; OTEL_RESOURCE_ATTRIBUTES, then
    // OTEL_SERVICE_NAME, override it, as the specification orders them.
    let mut resource = Resource::builder_empty()
        .with_service_name("certus-assurance")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_detector(Box::new(
            opentelemetry_sdk::resource::EnvResourceDetector::new(),
        ));
    if let Some(name) = &export.service_name {
        resource = resource.with_service_name(name.clone());
    }
    // Endpoint, headers, timeout and compression come from the standard OTEL_EXPORTER_OTLP_*
    // variables, read by the exporter itself (including the `/v1/traces` suffix rule of http).
    let exporter = match export.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build(),
    }
    .map_err(|e| anyhow::anyhow!("building the OTLP span exporter ({}): {e}", export.endpoint))?;
    Ok(builder
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build())
}

/// Records the span's trace id in its `trace_id` field (declared `Empty` by the caller), so log
/// lines inside it and inside its children carry the id. Call it on root spans right after
/// creating them (after any [`set_remote_parent`]).
pub fn record_trace_id(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record(TRACE_ID_FIELD, span_context.trace_id().to_string());
    }
}

/// The span of one HTTP request: named after the route template, child of the caller's trace
/// when the request carries a W3C `traceparent` header.
pub fn http_request_span(req: &Request<Body>, route: &str) -> Span {
    let method = req.method().as_str();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    set_remote_parent(&span, req.headers());
    record_trace_id(&span);
    span
}

/// Records the status code of an answered request on its span; 5xx marks the span as failed.
pub fn record_http_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// Makes `span` a child of the trace context in `headers` (W3C trace context), if any.
pub fn set_remote_parent(span: &Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when the span was already started, which cannot happen right after creation.
        let _ = span.set_parent(parent);
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace id a span carries in its extensions (its own `trace_id` field, or its parent's).
#[derive(Clone)]
struct TraceIdExt(String);

/// Keeps the `trace_id` of root spans in the extensions of every descendant, so the JSON log
/// format can print it for events deep inside a request or a scan.
struct TraceIdLayer;

struct TraceIdVisitor(Option<String>);

impl Visit for TraceIdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == TRACE_ID_FIELD {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == TRACE_ID_FIELD {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

impl<S> Layer<S> for TraceIdLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = TraceIdVisitor(None);
        attrs.record(&mut visitor);
        let trace_id = visitor.0.or_else(|| {
            span.parent()
                .and_then(|parent| parent.extensions().get::<TraceIdExt>().map(|t| t.0.clone()))
        });
        if let Some(trace_id) = trace_id {
            span.extensions_mut().replace(TraceIdExt(trace_id));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut visitor = TraceIdVisitor(None);
        values.record(&mut visitor);
        if let (Some(trace_id), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().replace(TraceIdExt(trace_id));
        }
    }
}

/// The JSON log format with a top-level `trace_id` on every line written inside a traced span.
struct WithTraceId<F> {
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let trace_id = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<TraceIdExt>().map(|t| t.0.clone()))
        });
        let Some(trace_id) = trace_id else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// For one-off commands whose standard output is their result (`scan`): human-readable logs at
/// `level` (warnings by default) on standard error.
pub fn init_stderr(level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .map_err(|e| anyhow::anyhow!("CERTUS_ASSURANCE_LOG_LEVEL is not a valid filter: {e}"))?;
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(std::io::stderr))
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_header_becomes_the_parent() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(TraceIdLayer);
        tracing::subscriber::with_default(subscriber, || {
            let req = Request::builder()
                .uri("/health")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(Body::empty())
                .unwrap();
            let span = http_request_span(&req, "/health");
            let context = span.context();
            assert_eq!(
                context.span().span_context().trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            // Without the header, a new trace starts.
            let req = Request::builder().uri("/").body(Body::empty()).unwrap();
            let other = http_request_span(&req, "unmatched");
            assert_ne!(
                other.context().span().span_context().trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
        });
    }
}
