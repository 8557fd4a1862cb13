//! OTLP export, built once per `[telemetry]` config: the tracer whose spans
//! [`super::spans`] makes, the bounded queue they wait in, the task that sends them to the
//! collector in batches, and (when asked) the GenAI metric instruments.
//!
//! Nothing here runs on a request's path but [`ExportQueue::on_end`], which never waits: it
//! pushes the span onto a bounded buffer (a full one drops it and counts it) and wakes the
//! export task only when a batch is full, so a request never pays for a wake-up. The SDK's
//! own batch processor would do the batching, but it hides its drop count and calls the
//! exporter from a thread of its own; this queue counts every span's fate in
//! `thinkgate_telemetry_spans_total` and exports on the proxy's tokio runtime, where the
//! HTTP client lives. A collector that is down or slow costs an export timeout on that
//! task, never a request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use thinkgate_config::Telemetry;
use thinkgate_metrics::Metrics;
use tokio::sync::{oneshot, Notify};

/// The most spans one export carries (fewer when the queue is shorter).
const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for others before the batch goes.
const EXPORT_DELAY: Duration = Duration::from_millis(500);

/// One `[telemetry]` config's exporters; see the module docs.
pub struct Exporter {
    config: Telemetry,
    tracer: SdkTracer,
    /// Kept so the tracer's spans have somewhere to go until the last one ends.
    _provider: SdkTracerProvider,
    queue: Arc<Waiting>,
    meters: Option<GenAiMeters>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("endpoint", &self.config.endpoint)
            .finish_non_exhaustive()
    }
}

/// The conventions' client instruments.
struct GenAiMeters {
    provider: SdkMeterProvider,
    token_usage: Histogram<u64>,
    duration: Histogram<f64>,
}

/// The bucket boundaries the GenAI conventions advise.
const TOKEN_BOUNDARIES: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const DURATION_BOUNDARIES: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// What one finished call says to the metric instruments.
pub struct CallRecord<'a> {
    pub operation: &'static str,
    /// The model that answered (its upstream name is the request's and the response's).
    pub model: &'a super::spans::ModelValues,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub seconds: f64,
    pub error_type: Option<&'a str>,
}

impl Exporter {
    /// The exporters `config` asks for: `None` when it names no endpoint, or when there is
    /// no tokio runtime to export on (a CLI command that only plans).
    pub fn start(config: &Telemetry, counters: &Metrics) -> Result<Option<Arc<Exporter>>, String> {
        let Some(endpoint) = &config.endpoint else {
            return Ok(None);
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(None);
        };
        let client = OnRuntime::new(runtime.clone(), config.export_timeout);
        let headers: HashMap<String, String> = config
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.expose().to_string()))
            .collect();
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let mut spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(config.export_timeout)
            .with_headers(headers.clone())
            .with_http_client(client.clone())
            .build()
            .map_err(|e| format!("telemetry: cannot build the span exporter: {e}"))?;
        spans.set_resource(&resource);
        let queue = Arc::new(Waiting {
            spans: Mutex::new(Vec::new()),
            flushes: Mutex::new(Vec::new()),
            capacity: config.queue_spans,
            batch: MAX_BATCH.min(config.queue_spans),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let outcomes = SpanOutcomes {
            exported: counters.telemetry_spans.with_label_values(&["exported"]),
            queue_full: counters.telemetry_spans.with_label_values(&["queue_full"]),
            export_failed: counters
                .telemetry_spans
                .with_label_values(&["export_failed"]),
        };
        runtime.spawn(export_spans(
            queue.clone(),
            spans,
            outcomes.clone(),
            config.export_timeout,
        ));
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(ExportQueue {
                queue: queue.clone(),
                outcomes,
            })
            .with_sampler(sampler)
            .with_resource(resource.clone())
            .build();
        let tracer = provider.tracer_with_scope(scope());
        let meters = match config.metrics {
            false => None,
            true => Some(GenAiMeters::start(
                config, endpoint, headers, client, resource,
            )?),
        };
        Ok(Some(Arc::new(Exporter {
            config: config.clone(),
            tracer,
            _provider: provider,
            queue,
            meters,
            runtime,
        })))
    }

    /// The config this was built from (a reload with the same one keeps it).
    pub fn config(&self) -> &Telemetry {
        &self.config
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    pub fn capture_content(&self) -> bool {
        self.config.capture_content
    }

    /// Records one finished call in the GenAI instruments, when they are exported.
    pub fn record(&self, call: &CallRecord<'_>) {
        let Some(m) = &self.meters else { return };
        let mut attributes = vec![
            KeyValue::new(super::spans::attr::OPERATION, call.operation),
            KeyValue::new(super::spans::attr::PROVIDER, call.model.provider.clone()),
            KeyValue::new(
                super::spans::attr::REQUEST_MODEL,
                call.model.upstream_model.clone(),
            ),
            KeyValue::new(
                super::spans::attr::RESPONSE_MODEL,
                call.model.upstream_model.clone(),
            ),
        ];
        if let Some(error) = call.error_type {
            attributes.push(KeyValue::new(
                super::spans::attr::ERROR_TYPE,
                error.to_string(),
            ));
        }
        m.duration.record(call.seconds, &attributes);
        for (kind, n) in [("input", call.input_tokens), ("output", call.output_tokens)] {
            if let Some(n) = n {
                attributes.push(KeyValue::new("gen_ai.token.type", kind));
                m.token_usage.record(n, &attributes);
                attributes.pop();
            }
        }
    }

    /// Sends every span ended so far, and the metrics, waiting at most `within` (the last
    /// step of a shutdown).
    pub async fn flush(&self, within: Duration) {
        let (done, flushed) = oneshot::channel();
        lock(&self.queue.flushes).push(done);
        self.queue.ready.notify_one();
        let _ = tokio::time::timeout(within, flushed).await;
        if let Some(m) = &self.meters {
            let provider = m.provider.clone();
            let flushing = tokio::task::spawn_blocking(move || provider.force_flush());
            let _ = tokio::time::timeout(within, flushing).await;
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // The meter provider's shutdown waits for its last export: not on a serving thread.
        if let Some(m) = self.meters.take() {
            let provider = m.provider;
            self.runtime.spawn_blocking(move || provider.shutdown());
        }
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("thinkgate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

impl GenAiMeters {
    fn start(
        config: &Telemetry,
        endpoint: &str,
        headers: HashMap<String, String>,
        client: OnRuntime,
        resource: Resource,
    ) -> Result<GenAiMeters, String> {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/metrics"))
            .with_timeout(config.export_timeout)
            .with_headers(headers)
            .with_http_client(client)
            .build()
            .map_err(|e| format!("telemetry: cannot build the metric exporter: {e}"))?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(config.metrics_interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        let meter = provider.meter_with_scope(scope());
        let token_usage = meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Number of input and output tokens used.")
            .with_boundaries(TOKEN_BOUNDARIES.to_vec())
            .build();
        let duration = meter
            .f64_histogram("gen_ai.client.operation.duration")
            .with_unit("s")
            .with_description("GenAI operation duration.")
            .with_boundaries(DURATION_BOUNDARIES.to_vec())
            .build();
        Ok(GenAiMeters {
            provider,
            token_usage,
            duration,
        })
    }
}

/// Finished spans waiting for the export task, and the flushes asked for.
struct Waiting {
    spans: Mutex<Vec<SpanData>>,
    flushes: Mutex<Vec<oneshot::Sender<()>>>,
    /// The most spans that wait; more are dropped.
    capacity: usize,
    /// A batch: when this many wait, the export task is woken.
    batch: usize,
    ready: Notify,
    /// The tracer is gone: export what is left, then stop.
    closed: AtomicBool,
}

/// A lock that a panic elsewhere cannot poison for good: the data is spans, still valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Clone)]
struct SpanOutcomes {
    exported: IntCounter,
    queue_full: IntCounter,
    export_failed: IntCounter,
}

/// The tracer's span processor: hands each finished span to the export task, or drops it.
struct ExportQueue {
    queue: Arc<Waiting>,
    outcomes: SpanOutcomes,
}

impl std::fmt::Debug for ExportQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportQueue")
    }
}

impl SpanProcessor for ExportQueue {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let waiting = {
            let mut spans = lock(&self.queue.spans);
            if spans.len() >= self.queue.capacity {
                drop(spans);
                self.outcomes.queue_full.inc();
                return;
            }
            spans.push(span);
            spans.len()
        };
        if waiting == self.queue.batch {
            self.queue.ready.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Flushing waits on the export task: [`Exporter::flush`] does it asynchronously.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // The export task sends what is left when the processor is dropped.
        Ok(())
    }
}

impl Drop for ExportQueue {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.ready.notify_one();
    }
}

/// The export task: wakes when a batch is full, a flush is asked for, or [`EXPORT_DELAY`]
/// has passed, and sends what waits in batches, each export bounded by `timeout`.
async fn export_spans(
    queue: Arc<Waiting>,
    exporter: opentelemetry_otlp::SpanExporter,
    outcomes: SpanOutcomes,
    timeout: Duration,
) {
    let failing = AtomicBool::new(false);
    loop {
        tokio::select! {
            () = queue.ready.notified() => {}
            () = tokio::time::sleep(EXPORT_DELAY) => {}
        }
        let closed = queue.closed.load(Ordering::Acquire);
        let flushed: Vec<_> = std::mem::take(&mut *lock(&queue.flushes));
        let mut spans =
            std::mem::replace(&mut *lock(&queue.spans), Vec::with_capacity(queue.batch));
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(queue.batch));
            let batch = std::mem::replace(&mut spans, rest);
            export(&exporter, batch, &outcomes, timeout, &failing).await;
        }
        for done in flushed {
            let _ = done.send(());
        }
        if closed {
            break;
        }
    }
}

/// One export, its spans counted as exported or failed; the first failure after a success
/// is logged, and the recovery.
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: Vec<SpanData>,
    outcomes: &SpanOutcomes,
    timeout: Duration,
    failing: &AtomicBool,
) {
    let n = batch.len() as u64;
    let started = Instant::now();
    let error = match tokio::time::timeout(timeout, exporter.export(batch)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {}ms", timeout.as_millis())),
    };
    match error {
        None => {
            outcomes.exported.inc_by(n);
            if failing.swap(false, Ordering::Relaxed) {
                tracing::info!("Trace export to the OTLP collector works again.");
            }
        }
        Some(error) => {
            outcomes.export_failed.inc_by(n);
            if !failing.swap(true, Ordering::Relaxed) {
                let waited_ms = started.elapsed().as_millis() as u64;
                tracing::warn!(spans = n, waited_ms, %error, "Trace export to the OTLP collector failed; its spans are dropped and counted until it answers again.");
            }
        }
    }
}

/// The OTLP exporters' HTTP client: hyper (with rustls for `https://` collectors), run on
/// the proxy's tokio runtime whichever thread asks (the metric reader has its own).
#[derive(Debug, Clone)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
}

impl OnRuntime {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Self {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        OnRuntime {
            runtime,
            client: opentelemetry_http::hyper::HyperClient::new(https, timeout, None),
        }
    }
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}
