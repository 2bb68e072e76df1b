//! Logging and traces.
//!
//! Logs: `tracing` with pretty output locally and JSON when `LOG_FORMAT=json`.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the same `tracing` spans are exported by
//! OTLP (HTTP, protobuf) and the W3C trace context travels with the work: read from an
//! incoming request's `traceparent`, sent on calls to other services, stored with each outbox
//! row, put in the Kafka headers by the relay, and continued by the consumer. When it is not
//! set, no OpenTelemetry layer is installed and every function here returns at once: traces
//! off cost one relaxed atomic load where context would travel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Our crates at `info`, the chatty ones at `warn`: the default log filter, and the traces'.
const QUIET: &str = "info,sqlx=warn,sea_orm=warn,rdkafka=warn,librdkafka=warn,actix_server=warn";

/// Whether spans are exported (an OTLP endpoint was configured and the exporter built).
static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// The provider, kept for [`flush`] at shutdown.
static PROVIDER: OnceLock<Mutex<Option<SdkTracerProvider>>> = OnceLock::new();

/// The W3C header names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Where the log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    /// A service's: its output is its log.
    Stdout,
    /// A command's whose standard output is its answer (JSON lines, a report).
    Stderr,
}

/// Installs the global subscriber once, logging to `to`; later calls (tests) are no-ops. With `traces` (the
/// OTLP endpoint), spans are also exported, named by `service` unless `OTEL_SERVICE_NAME`
/// says otherwise; the exporter reads the other `OTEL_*` settings (sampler, batch delay,
/// headers) itself.
pub fn init(format: LogFormat, to: LogTo, service: &str, traces: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(QUIET));
    let provider = traces.and_then(|endpoint| match exporter(service, endpoint) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("{service}: traces are off: the OTLP exporter could not be built: {e}");
            None
        }
    });
    // Colours only for a person at a terminal, never in log files.
    let ansi = match to {
        LogTo::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
        LogTo::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let installed = match &provider {
        // Traces off: `RUST_LOG` filters globally, so a span no layer wants is never made.
        None => tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(format, to, ansi))
            .try_init(),
        // Traces on: spans are exported whatever `RUST_LOG` says (a service that logs only
        // warnings is still traced); each layer has its own filter, the traces' keeping the
        // noisy crates out.
        Some(p) => tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(p.tracer("ticketing"))
                    .with_threads(false)
                    .with_location(false)
                    .with_filter(EnvFilter::new(QUIET)),
            )
            .with(log_layer(format, to, ansi).with_filter(filter))
            .try_init(),
    };
    if installed.is_ok()
        && let Some(p) = provider
    {
        TRACES_ON.store(true, Ordering::Relaxed);
        let _ = PROVIDER.set(Mutex::new(Some(p)));
        tracing::info!(
            endpoint = traces.unwrap_or_default(),
            "exporting traces by OTLP"
        );
    }
}

/// The log lines: JSON or compact text.
fn log_layer<S>(format: LogFormat, to: LogTo, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let writer = match to {
        LogTo::Stdout => BoxMakeWriter::new(std::io::stdout),
        LogTo::Stderr => BoxMakeWriter::new(std::io::stderr),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    }
}

fn exporter(service: &str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Whether spans are being exported.
pub fn traces_on() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// Exports what is still buffered and stops the exporter (at shutdown). Blocks the calling
/// thread for at most the exporter's timeout.
pub fn flush() {
    let provider = PROVIDER
        .get()
        .and_then(|p| p.lock().ok().and_then(|mut p| p.take()));
    if let Some(p) = provider
        && let Err(e) = p.shutdown()
    {
        eprintln!("traces: the last spans could not be exported: {e}");
    }
}

/// Makes `span` continue the trace of a W3C `traceparent` (and `tracestate`), from a request
/// header, an outbox row or a Kafka header. Does nothing when traces are off or the value is
/// not a valid context; must be called before the span is first entered.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|_| traces_on()) else {
        return;
    };
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the traces of `traceparents` (the other messages of a batch it handles,
/// whose traces it cannot all continue). Does nothing when traces are off; skips any value
/// that is not a valid context; must be called before the span is first entered.
pub fn link_traces<'a>(
    span: &tracing::Span,
    traceparents: impl IntoIterator<Item = Option<&'a str>>,
) {
    if !traces_on() {
        return;
    }
    for traceparent in traceparents.into_iter().flatten() {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        let linked = cx.span().span_context().clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
}

/// The W3C context of `span` (`traceparent`, and `tracestate` if any), to send on with work
/// it causes; empty when traces are off or the span is not traced.
pub fn context_of(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if !traces_on() {
        return Vec::new();
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|k| carrier.remove(k).map(|v| (k, v)))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The `traceparent` of the current span, if it is traced.
pub fn current_traceparent() -> Option<String> {
    context_of(&tracing::Span::current())
        .into_iter()
        .find_map(|(k, v)| (k == TRACEPARENT).then_some(v))
}

/// Names `span` in its trace once the name is known (a request's route is known only after
/// routing, when the span has started). Does nothing when traces are off.
pub fn rename(span: &tracing::Span, name: impl FnOnce() -> String) {
    if traces_on() {
        span.context().span().update_name(name());
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};

    use super::*;

    /// Keeps what is exported.
    #[derive(Debug, Clone, Default)]
    struct Collected(std::sync::Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collected {
        async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// A batch's span: the first message's trace continued, the others' linked, anything
    /// that is not a context skipped.
    #[test]
    fn a_span_continues_one_trace_and_links_the_others() {
        let collected = Collected::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(collected.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        TRACES_ON.store(true, Ordering::Relaxed);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("events");
            continue_trace(
                &span,
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                None,
            );
            link_traces(
                &span,
                [
                    Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                    Some("not a context"),
                    None,
                ],
            );
            drop(span.entered());
        });
        TRACES_ON.store(false, Ordering::Relaxed);
        provider.force_flush().unwrap();
        let spans = collected.0.lock().unwrap();
        let span = spans.iter().find(|s| s.name == "events").expect("exported");
        assert_eq!(
            span.span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            span.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        let linked: Vec<_> = span
            .links
            .links
            .iter()
            .map(|l| (l.span_context.trace_id(), l.span_context.span_id()))
            .collect();
        assert_eq!(
            linked,
            [(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("b7ad6b7169203331").unwrap()
            )]
        );
    }
}
