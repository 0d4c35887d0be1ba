//! OTLP export of a daemon's metrics and lifecycle events, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (an `http://HOST:PORT` OTLP/gRPC
//! collector, as for spans).
//!
//! The metrics are the Prometheus registry's own, read through
//! `prometheus-client`'s structured encoding every
//! `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60,000) and sent as
//! cumulative sums, gauges and explicit-bucket histograms: one source,
//! two exports, no second set of instruments to drift. (The OpenTelemetry
//! SDK cannot read a `prometheus-client` registry, hence this small
//! pusher.) Lifecycle events — started, died, respawning, need-human,
//! waiting, sent with its verdict — become log records carrying the trace
//! id where the event has one, batched every `OTEL_BLRP_SCHEDULE_DELAY` ms
//! (default 1,000).
//!
//! Nothing here waits on the collector: events reach the exporter through
//! a bounded queue (full: dropped and counted), every export is bounded
//! by a timeout, and a failing collector is logged once per change.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleet_proto::v1::{Event, EventKind};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1 as m;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as prom;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

/// Events waiting for export at most.
const QUEUE: usize = 4096;
/// Log records in one export at most.
const BATCH: usize = 512;
/// One export's bound.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The collector's address, when export is asked for.
pub fn endpoint() -> Option<String> {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
}

fn env_ms(key: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(default),
    )
}

/// Whether an event is a lifecycle event an incident review wants in the
/// operator's log store.
pub fn is_lifecycle(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Started
            | EventKind::Adopted
            | EventKind::Died
            | EventKind::Respawning
            | EventKind::NeedHuman
            | EventKind::WaitingForHuman
            | EventKind::WaitingCleared
            | EventKind::Sent
            | EventKind::SendFailed
            | EventKind::StartFailed
    )
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", service)],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "fleet".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })
}

/// One event as a log record: the body is its message, the attributes its
/// tenant, host, agent, kind and fields; the trace id its `trace_id`
/// field's when that is one.
pub fn log_record(e: &Event) -> LogRecord {
    let ns = u64::try_from(e.ts_unix_ms).unwrap_or(0) * 1_000_000;
    let mut attributes = vec![
        kv("fleet.tenant", e.tenant_id.clone()),
        kv("fleet.host", e.host.clone()),
        kv("fleet.agent", e.agent.clone()),
        kv("fleet.kind", e.kind.clone()),
        kv("fleet.seq", e.seq.to_string()),
    ];
    attributes.extend(
        e.fields
            .iter()
            .filter(|(k, _)| k.as_str() != "trace_id")
            .map(|(k, v)| kv(&format!("fleet.{k}"), v.clone())),
    );
    let trace_id = e
        .fields
        .get("trace_id")
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|t| {
            (0..16)
                .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .filter(|t| t.iter().any(|b| *b != 0))
        .unwrap_or_default();
    let warn = matches!(
        e.kind(),
        Some(
            EventKind::Died | EventKind::NeedHuman | EventKind::StartFailed | EventKind::SendFailed
        )
    );
    LogRecord {
        time_unix_nano: ns,
        observed_time_unix_nano: ns,
        // SeverityNumber: INFO = 9, WARN = 13.
        severity_number: if warn { 13 } else { 9 },
        severity_text: if warn { "WARN" } else { "INFO" }.into(),
        event_name: format!("fleet.{}", e.kind),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(e.message.clone())),
        }),
        attributes,
        trace_id,
        ..Default::default()
    }
}

fn attributes(labels: &[prom::LabelPair]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|l| kv(&l.name, l.value.clone()))
        .collect()
}

/// The registry's families as OTLP metrics: counters as monotonic
/// cumulative sums (named without `_total`), gauges as gauges, histograms
/// with their buckets (OTLP's counts per bucket, not cumulative).
pub fn otlp_metrics(families: &[prom::MetricFamily], start_ns: u64, now_ns: u64) -> Vec<m::Metric> {
    let point = |labels: &[prom::LabelPair], v: f64| m::NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(m::number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    families
        .iter()
        .filter_map(|f| {
            let data = match prom::MetricType::try_from(f.r#type).ok()? {
                prom::MetricType::Counter => m::metric::Data::Sum(m::Sum {
                    data_points: f
                        .metric
                        .iter()
                        .map(|x| point(&x.label, x.counter.as_ref().map_or(0.0, |c| c.value)))
                        .collect(),
                    aggregation_temporality: m::AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                prom::MetricType::Gauge => m::metric::Data::Gauge(m::Gauge {
                    data_points: f
                        .metric
                        .iter()
                        .map(|x| point(&x.label, x.gauge.as_ref().map_or(0.0, |g| g.value)))
                        .collect(),
                }),
                prom::MetricType::Histogram => m::metric::Data::Histogram(m::Histogram {
                    data_points: f
                        .metric
                        .iter()
                        .filter_map(|x| {
                            let h = x.histogram.as_ref()?;
                            let finite: Vec<&prom::Bucket> = h
                                .bucket
                                .iter()
                                .filter(|b| b.upper_bound.is_finite())
                                .collect();
                            let mut counts = Vec::with_capacity(finite.len() + 1);
                            let mut below = 0;
                            for b in &finite {
                                counts.push(b.cumulative_count.saturating_sub(below));
                                below = b.cumulative_count;
                            }
                            counts.push(h.sample_count.saturating_sub(below));
                            Some(m::HistogramDataPoint {
                                attributes: attributes(&x.label),
                                start_time_unix_nano: start_ns,
                                time_unix_nano: now_ns,
                                count: h.sample_count,
                                sum: Some(h.sample_sum),
                                bucket_counts: counts,
                                explicit_bounds: finite.iter().map(|b| b.upper_bound).collect(),
                                ..Default::default()
                            })
                        })
                        .collect(),
                    aggregation_temporality: m::AggregationTemporality::Cumulative as i32,
                }),
                _ => return None,
            };
            Some(m::Metric {
                name: f.name.strip_suffix("_total").unwrap_or(&f.name).to_owned(),
                description: f.help.clone(),
                unit: match f.unit.as_str() {
                    "seconds" => "s".into(),
                    "bytes" => "By".into(),
                    u => u.to_owned(),
                },
                data: Some(data),
                ..Default::default()
            })
        })
        .collect()
}

/// Events the export queue had no room for.
#[derive(Debug, Default)]
pub struct Dropped(AtomicU64);

impl Dropped {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The exporter between being made (its event queue open from the first
/// event) and being run (once the registry exists).
pub struct Exporter {
    service: &'static str,
    channel: tonic::transport::Channel,
    rx: mpsc::Receiver<LogRecord>,
    pub dropped: Arc<Dropped>,
}

impl Exporter {
    /// When [`endpoint`] is set: an exporter whose queue takes `events`'
    /// lifecycle events from now on. `None` when export is off.
    pub fn new(service: &'static str, events: &fleet_proto::events::EventLog) -> Option<Self> {
        let endpoint = endpoint()?;
        let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(2))
                .timeout(EXPORT_TIMEOUT)
                .connect_lazy(),
            Err(e) => {
                tracing::error!(endpoint, error = %e, "OTLP endpoint refused; metrics and logs are not exported");
                return None;
            }
        };
        let dropped = Arc::new(Dropped::default());
        let (tx, rx) = mpsc::channel::<LogRecord>(QUEUE);
        {
            let dropped = dropped.clone();
            events.add_sink(Arc::new(move |e: &Event| {
                if e.kind().is_some_and(is_lifecycle) && tx.try_send(log_record(e)).is_err() {
                    dropped.0.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tracing::info!(
            endpoint,
            service,
            "exporting metrics and lifecycle events over OTLP"
        );
        Some(Self {
            service,
            channel,
            rx,
            dropped,
        })
    }

    /// Exports `registry` every metric interval and the queued events as
    /// they come, until `shutdown` (then once more, bounded).
    pub fn run(self, registry: Arc<Registry>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let Self {
            service,
            channel,
            rx,
            ..
        } = self;
        let mut rx = rx;
        let mut shutdown = shutdown;
        let metrics_every = env_ms("OTEL_METRIC_EXPORT_INTERVAL", 60_000);
        let logs_every = env_ms("OTEL_BLRP_SCHEDULE_DELAY", 1_000);
        let start_ns = now_ns();
        tokio::spawn(async move {
            let mut metrics = MetricsServiceClient::new(channel.clone());
            let mut logs = LogsServiceClient::new(channel);
            let mut metric_tick = tokio::time::interval(metrics_every);
            let mut log_tick = tokio::time::interval(logs_every);
            let mut pending: Vec<LogRecord> = Vec::new();
            let mut failing = false;
            let mut report = |what: &str, r: Result<(), String>| match r {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(what, "OTLP export works again");
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(what, error = %e, "OTLP export failed");
                    }
                    failing = true;
                }
            };
            loop {
                let (flush, stop) = tokio::select! {
                    _ = metric_tick.tick() => {
                        let req = metrics_request(service, &registry, start_ns);
                        report("metrics", push_metrics(&mut metrics, req).await);
                        (false, false)
                    }
                    _ = log_tick.tick() => (true, false),
                    got = rx.recv_many(&mut pending, BATCH), if pending.len() < BATCH => {
                        (pending.len() >= BATCH, got == 0)
                    }
                    () = async { let _ = shutdown.wait_for(|s| *s).await; } => (true, true),
                };
                // Sent when the delay is up, the batch is full, and at stop.
                if (flush || stop) && !pending.is_empty() {
                    let batch = std::mem::take(&mut pending);
                    report("logs", push_logs(&mut logs, service, batch).await);
                }
                if stop {
                    let req = metrics_request(service, &registry, start_ns);
                    report("metrics", push_metrics(&mut metrics, req).await);
                    return;
                }
            }
        });
    }
}

fn now_ns() -> u64 {
    u64::try_from(fleet_proto::clock::now_ms()).unwrap_or(0) * 1_000_000
}

/// The registry as one OTLP export (read now, before any await).
fn metrics_request(
    service: &str,
    registry: &Registry,
    start_ns: u64,
) -> Result<ExportMetricsServiceRequest, String> {
    let families = prometheus_client::encoding::prometheus_protobuf::encode(registry)
        .map_err(|e| e.to_string())?;
    Ok(ExportMetricsServiceRequest {
        resource_metrics: vec![m::ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![m::ScopeMetrics {
                scope: scope(),
                metrics: otlp_metrics(&families, start_ns, now_ns()),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

async fn push_metrics(
    client: &mut MetricsServiceClient<tonic::transport::Channel>,
    req: Result<ExportMetricsServiceRequest, String>,
) -> Result<(), String> {
    tokio::time::timeout(EXPORT_TIMEOUT, client.export(req?))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map(|_| ())
        .map_err(|e| e.message().to_owned())
}

async fn push_logs(
    client: &mut LogsServiceClient<tonic::transport::Channel>,
    service: &str,
    records: Vec<LogRecord>,
) -> Result<(), String> {
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    tokio::time::timeout(EXPORT_TIMEOUT, client.export(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map(|_| ())
        .map_err(|e| e.message().to_owned())
}
