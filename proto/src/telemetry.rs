//! Logging and tracing shared by every binary: `tracing` to stderr with
//! `RUST_LOG`-style filters, and OpenTelemetry spans exported over OTLP/gRPC
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard `OTEL_*`
//! variables apply). Spans always carry W3C trace context, exported or not,
//! so a command's `traceparent` is the same trace end to end:
//! fleetctl → aggregator → hostd → tmux.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the exporter alive; [`Telemetry::shutdown`] flushes it.
#[must_use = "call shutdown() before exit so buffered spans are sent"]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Installs the subscriber. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans
/// go there (the exporter needs a Tokio runtime: call this inside one).
/// `log` is the stderr filter (`RUST_LOG` wins when set); `None` writes no
/// log lines at all (fleetctl's own output stays clean).
pub fn init(service: &'static str, log: Option<&str>) -> Telemetry {
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build(),
    );
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let mut export_error = None;
    if endpoint.is_some() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => export_error = Some(e.to_string()),
        }
    }
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    let fmt = log.map(|l| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(l));
        use std::io::IsTerminal;
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colour for a person at a terminal, never in log files.
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
    });
    // Spans of our own crates at info and above are what a trace shows.
    let span_filter = tracing_subscriber::filter::Targets::new()
        .with_target("fleet", tracing::Level::INFO)
        .with_target("fleet_hostd", tracing::Level::INFO)
        .with_target("fleet_aggregator", tracing::Level::INFO)
        .with_target("fleetctl", tracing::Level::INFO)
        .with_target("fleet_proto", tracing::Level::INFO);
    use tracing_subscriber::Layer as _;
    let _ = tracing_subscriber::registry()
        .with(otel.with_filter(span_filter))
        .with(fmt)
        .try_init();
    if let Some(e) = export_error {
        tracing::error!(error = %e, "OTLP exporter not started; spans are not exported");
    } else if let Some(ep) = endpoint {
        tracing::info!(endpoint = %ep, service, "exporting spans over OTLP");
    }
    Telemetry { provider }
}

impl Telemetry {
    /// Flushes buffered spans and stops the exporter (blocking: call it
    /// outside async code or from `spawn_blocking`).
    pub fn shutdown(self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }
}

/// Makes `span` a child of the W3C `traceparent` (ignored when invalid).
pub fn adopt(span: &tracing::Span, traceparent: &str) {
    if crate::trace::TraceParent::parse(traceparent).is_none() {
        return;
    }
    let carrier: HashMap<String, String> =
        HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The `traceparent` naming `span` (empty when it has no valid context,
/// e.g. no subscriber is installed).
pub fn traceparent_of(span: &tracing::Span) -> String {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// The `traceparent` to send on: `span`'s own context when tracing is set
/// up, else the caller's, else a fresh root.
pub fn outgoing(span: &tracing::Span, incoming: &str) -> String {
    let mine = traceparent_of(span);
    if crate::trace::TraceParent::parse(&mine).is_some() {
        return mine;
    }
    crate::trace::TraceParent::parse(incoming)
        .unwrap_or_else(crate::trace::TraceParent::fresh)
        .to_string()
}
