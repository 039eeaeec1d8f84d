//! Logging and tracing: `tracing` to stderr, and OTLP export of spans when the standard
//! `OTEL_*` variables ask for it. The only module that touches the OpenTelemetry SDK.
//!
//! - No exporter at all unless `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (or `OTEL_TRACES_EXPORTER=otlp`).
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or `grpc`),
//!   `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER(_ARG)` are honoured.
//! - Export never runs on the request path: finished spans go into a bounded queue
//!   ([`QueueProcessor`]); a dedicated thread batches and exports them. A full queue drops
//!   the span and counts it ([`ExportStats::dropped`], shown in `/metrics`), so a dead or slow
//!   collector never slows a turn.
//! - W3C trace context crosses process boundaries in HTTP headers and in MCP `_meta`
//!   (`traceparent`, `tracestate`): [`inject_context`], [`extract_context`].

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::shared::metrics::Counter;

/// Spans buffered before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most spans per export request.
const MAX_BATCH: usize = 512;
/// How long a span may wait for its batch.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Longest wait for one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The exporter could not be built from the `OTEL_*` settings.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// The export thread could not start.
    #[error("cannot start the export thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Export counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans handed to the exporter queue.
    pub queued: Counter,
    /// Spans dropped because the queue was full (collector down or slow).
    pub dropped: Counter,
    /// Spans exported successfully.
    pub exported: Counter,
    /// Export requests that failed (their spans are lost).
    pub failed_batches: Counter,
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes what is queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    stats: Arc<ExportStats>,
}

impl Telemetry {
    /// Export counters (all zero when no exporter is configured).
    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }

    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter. Blocking: called off the async threads.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let handle = std::thread::spawn(move || {
                if let Err(error) = provider.shutdown() {
                    eprintln!("memento: telemetry shutdown: {error}");
                }
            });
            let _ = handle.join();
        }
    }
}

/// Which OTLP protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// Installs the global `tracing` subscriber (stderr, filtered by `RUST_LOG`, default
/// `info`) and, when configured, the OTLP exporter. `default_service` names the service
/// when `OTEL_SERVICE_NAME` is unset.
pub fn init(default_service: &str) -> Result<Telemetry, TelemetryError> {
    init_with_env(default_service, &|name| std::env::var(name).ok())
}

fn init_with_env(
    default_service: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Telemetry, TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=warn"));
    // `RUST_LOG` filters what is logged to stderr only; spans for export have their own
    // filter (info and above), so quiet logs never mean missing traces.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let stats = Arc::new(ExportStats::default());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let Some(protocol) = export_protocol(env) else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Ok(Telemetry {
            provider: None,
            stats,
        });
    };
    let service = env("OTEL_SERVICE_NAME")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default_service.to_owned());
    let processor = QueueProcessor::start(protocol, stats.clone())?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            Resource::builder()
                .with_service_name(service.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("memento");
    // Only Memento's own spans are exported (dependencies' internal spans would only add
    // noise to a turn's trace).
    let otel = tracing_subscriber::filter::Targets::new()
        .with_target("memento", tracing::Level::INFO)
        .with_default(tracing::Level::WARN);
    // Source location, thread, target and busy/idle times (eight attributes per span) are
    // left out: they cost the daemon CPU on every span and say nothing about a turn
    // (measured under load in BENCHMARKS.md, "Tracing under load").
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(otel);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    tracing::info!(service, ?protocol, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
        stats,
    })
}

fn export_protocol(env: &dyn Fn(&str) -> Option<String>) -> Option<Protocol> {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let wanted = set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "otlp");
    if !wanted || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none") {
        return None;
    }
    let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    Some(match protocol.trim() {
        "grpc" => Protocol::Grpc,
        _ => Protocol::HttpProtobuf,
    })
}

// === QueueProcessor ===

/// A span processor with a bounded queue and its own export thread, so that finishing a
/// span never blocks and never waits for the network, and drops are counted.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: crossbeam_channel::Sender<Command>,
    stats: Arc<ExportStats>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

enum Command {
    Span(Box<SpanData>),
    Flush(crossbeam_channel::Sender<()>),
    /// The provider's resource (service name...), for the exporter.
    Resource(Box<Resource>),
}

impl QueueProcessor {
    fn start(
        protocol: Protocol,
        stats: Arc<ExportStats>,
    ) -> Result<QueueProcessor, TelemetryError> {
        let (queue, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        // Build the exporter on the export thread: the gRPC client needs the runtime it
        // will run on.
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("memento-otlp-export".into())
            .spawn(move || export_thread(protocol, rx, ready_tx, thread_stats))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(TelemetryError::Exporter(message)),
            Err(_) => return Err(TelemetryError::Exporter("export thread died".into())),
        }
        Ok(QueueProcessor {
            queue,
            stats,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(Command::Span(Box::new(span))) {
            Ok(()) => self.stats.queued.inc(),
            Err(_) => self.stats.dropped.inc(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self
            .queue
            .send_timeout(Command::Flush(tx), EXPORT_TIMEOUT)
            .is_ok()
        {
            let _ = rx.recv_timeout(EXPORT_TIMEOUT * 2);
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self
            .queue
            .send(Command::Resource(Box::new(resource.clone())));
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.queue.send_timeout(Command::Flush(tx), timeout).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
        if let Ok(mut thread) = self.thread.lock() {
            // Dropping our sender would end the thread, but other clones may live; the
            // flush above already exported everything queued.
            drop(thread.take());
        }
        Ok(())
    }
}

fn export_thread(
    protocol: Protocol,
    rx: crossbeam_channel::Receiver<Command>,
    ready: crossbeam_channel::Sender<Result<(), String>>,
    stats: Arc<ExportStats>,
) {
    // gRPC (tonic) needs a Tokio runtime; the blocking HTTP client must not run inside one.
    let runtime = match protocol {
        Protocol::Grpc => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => Some(runtime),
            Err(error) => {
                let _ = ready.send(Err(error.to_string()));
                return;
            }
        },
        Protocol::HttpProtobuf => None,
    };
    let built = match protocol {
        Protocol::Grpc => {
            let _guard = runtime.as_ref().map(|r| r.enter());
            use opentelemetry_otlp::WithExportConfig;
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_timeout(EXPORT_TIMEOUT)
                .build()
        }
        Protocol::HttpProtobuf => {
            use opentelemetry_otlp::WithExportConfig;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
        }
    };
    let mut exporter = match built {
        Ok(exporter) => exporter,
        Err(error) => {
            let _ = ready.send(Err(error.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let export = |exporter: &opentelemetry_otlp::SpanExporter, batch: Vec<SpanData>| {
        let count = batch.len() as u64;
        let result = match &runtime {
            Some(runtime) => runtime.block_on(exporter.export(batch)),
            None => futures::executor::block_on(exporter.export(batch)),
        };
        match result {
            Ok(()) => stats.exported.add(count),
            Err(_) => stats.failed_batches.inc(),
        }
    };
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    loop {
        let command = if batch.is_empty() {
            match rx.recv() {
                Ok(command) => command,
                Err(_) => break,
            }
        } else {
            match rx.recv_timeout(BATCH_DELAY) {
                Ok(command) => command,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    export(&exporter, std::mem::take(&mut batch));
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        };
        match command {
            Command::Span(span) => {
                batch.push(*span);
                if batch.len() >= MAX_BATCH {
                    export(&exporter, std::mem::take(&mut batch));
                }
            }
            Command::Resource(resource) => exporter.set_resource(&resource),
            Command::Flush(done) => {
                let mut waiting = vec![done];
                loop {
                    match rx.try_recv() {
                        Ok(Command::Span(span)) => batch.push(*span),
                        Ok(Command::Flush(done)) => waiting.push(done),
                        Ok(Command::Resource(resource)) => exporter.set_resource(&resource),
                        Err(_) => break,
                    }
                }
                while !batch.is_empty() {
                    let rest = batch.split_off(batch.len().min(MAX_BATCH));
                    export(&exporter, std::mem::replace(&mut batch, rest));
                }
                for done in waiting {
                    let _ = done.send(());
                }
            }
        }
    }
    if !batch.is_empty() {
        export(&exporter, batch);
    }
}

// === Propagation ===

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct JsonCarrier<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl Extractor for JsonCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The W3C trace context (`traceparent`, `tracestate`) of `span`, for an outgoing MCP
/// request's `_meta` or HTTP headers. Empty when tracing is off.
pub fn inject_context(span: &tracing::Span) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut MapCarrier(&mut fields));
    fields
}

/// Makes `span` a child of the trace context found in an MCP request's `_meta`.
pub fn extract_from_meta(span: &tracing::Span, meta: &serde_json::Map<String, serde_json::Value>) {
    let parent = TraceContextPropagator::new().extract(&JsonCarrier(meta));
    if opentelemetry::trace::TraceContextExt::span(&parent)
        .span_context()
        .is_valid()
    {
        let _ = span.set_parent(parent);
    }
}

/// Makes `span` a child of the trace context in HTTP request headers.
pub fn extract_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderCarrier(headers));
    if opentelemetry::trace::TraceContextExt::span(&parent)
        .span_context()
        .is_valid()
    {
        let _ = span.set_parent(parent);
    }
}

/// The trace id of `span` as 32 hex digits, when it belongs to a valid (exported or not)
/// OpenTelemetry trace.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_ref = opentelemetry::trace::TraceContextExt::span(&context);
    let span_context = span_ref.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The span of one MCP `tools/call` for tool `$name` (MCP semantic conventions), of
/// `otel.kind` `$kind` ("client" in the daemon, "server" in the memory server), with the
/// side's own fields after (`error.type` and the like).
macro_rules! tools_call_span {
    ($name:expr, $kind:literal, $($fields:tt)*) => {
        tracing::info_span!(
            "tools/call",
            otel.name = %format!("tools/call {}", $name),
            otel.kind = $kind,
            mcp.method.name = "tools/call",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %$name,
            $($fields)*
        )
    };
}
pub(crate) use tools_call_span;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_only_when_configured() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(export_protocol(&env(&[])), None);
        assert_eq!(
            export_protocol(&env(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://127.0.0.1:4318"
            )])),
            Some(Protocol::HttpProtobuf)
        );
        assert_eq!(
            export_protocol(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ])),
            Some(Protocol::Grpc)
        );
        assert_eq!(
            export_protocol(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ])),
            None
        );
    }
}
