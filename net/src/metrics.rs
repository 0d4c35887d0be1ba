//! Metrics: one `prometheus-client` registry per daemon, served as
//! OpenMetrics text on `GET /metrics` when a listen address is configured,
//! and — with `OTEL_EXPORTER_OTLP_ENDPOINT` set — pushed over OTLP from
//! the very same registry ([`otlp`]). Names follow Prometheus conventions
//! (`fleet_…`, counters end in `_total`, base units); no label takes a
//! value a prompt or a peer's free text controls.
//!
//! What both daemons count alike is here: what their event logs record
//! ([`EventMetrics`], fed as an event-log sink: deaths, respawns,
//! give-ups, sends by verdict and their time to verdict), the streaming
//! clients shed, and the expiry of every certificate they hold
//! ([`CertExpiry`]).

pub mod otlp;

use std::net::SocketAddr;
use std::sync::Arc;

use fleet_proto::v1::{Event, EventKind, Verdict};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use prometheus_client;

/// The exposition formats served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, for a scraper that asks for it.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for everyone else (curl,
    /// `promtool check metrics`, older scrapers).
    Prometheus,
}

impl Format {
    /// What a request's `Accept` header asks for.
    pub fn accepted(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The text of `registry` in `format`.
pub fn encode(registry: &Registry, format: Format) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; a collector's error ends the text
    // early, which a scraper reports.
    let _ = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry),
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        }
    };
    out
}

/// Buckets for a latency in seconds, 1 ms to about 65 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

/// Labels naming a tenant and a host.
pub type HostLabels = [(&'static str, String); 2];

/// What the event log records, counted: every kind, and the ones an
/// operator alerts on with their own names.
#[derive(Debug, Clone)]
pub struct EventMetrics {
    events: Family<[(&'static str, &'static str); 1], Counter>,
    deaths: Family<HostLabels, Counter>,
    respawns: Family<HostLabels, Counter>,
    give_ups: Family<HostLabels, Counter>,
    sends: Family<[(&'static str, String); 3], Counter>,
    send_seconds: Family<[(&'static str, &'static str); 1], Histogram>,
}

fn verdict_word(e: &Event) -> &'static str {
    e.fields
        .get("verdict")
        .and_then(|v| Verdict::from_str_name(v))
        .map_or("unknown", |v| match v {
            Verdict::Unspecified => "unknown",
            Verdict::Delivered => "delivered",
            Verdict::Accepted => "accepted",
            Verdict::Draft => "draft",
            Verdict::Unverifiable => "unverifiable",
            Verdict::Queued => "queued",
        })
}

impl Default for EventMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl EventMetrics {
    pub fn new() -> Self {
        Self {
            events: Family::default(),
            deaths: Family::default(),
            respawns: Family::default(),
            give_ups: Family::default(),
            sends: Family::default(),
            send_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fleet_events",
            "Events recorded, by kind",
            self.events.clone(),
        );
        r.register(
            "fleet_agent_deaths",
            "Agent processes that ended",
            self.deaths.clone(),
        );
        r.register(
            "fleet_agent_respawns",
            "Respawns the supervisor scheduled",
            self.respawns.clone(),
        );
        r.register(
            "fleet_agent_give_ups",
            "Times the supervisor gave up on an agent (too many deaths)",
            self.give_ups.clone(),
        );
        r.register(
            "fleet_sends",
            "Texts sent to agents, by verdict",
            self.sends.clone(),
        );
        r.register_with_unit(
            "fleet_send_verdict",
            "Time from a send to its verdict",
            prometheus_client::registry::Unit::Seconds,
            self.send_seconds.clone(),
        );
        r.register_collector(Box::new(Shed));
    }

    /// Counts one recorded event (an event-log sink: it never waits).
    pub fn observe(&self, e: &Event) {
        let Some(kind) = e.kind() else { return };
        self.events.get_or_create(&[("kind", kind.word())]).inc();
        let host = || [("tenant", e.tenant_id.clone()), ("host", e.host.clone())];
        match kind {
            EventKind::Died => {
                self.deaths.get_or_create(&host()).inc();
            }
            EventKind::Respawning => {
                self.respawns.get_or_create(&host()).inc();
            }
            EventKind::NeedHuman if e.fields.get("by").is_some_and(|b| b == "supervisor") => {
                self.give_ups.get_or_create(&host()).inc();
            }
            EventKind::Sent => {
                let verdict = verdict_word(e);
                let [t, h] = host();
                self.sends
                    .get_or_create(&[t, h, ("verdict", verdict.to_owned())])
                    .inc();
                if let Some(ms) = e
                    .fields
                    .get("elapsed_ms")
                    .and_then(|m| m.parse::<f64>().ok())
                {
                    self.send_seconds
                        .get_or_create(&[("verdict", verdict)])
                        .observe(ms / 1000.0);
                }
            }
            _ => {}
        }
    }

    /// This as an event-log sink.
    pub fn sink(&self) -> fleet_proto::events::Sink {
        let me = self.clone();
        Arc::new(move |e: &Event| me.observe(e))
    }
}

/// Streaming clients shed (`fleet_proto::stream::SHED`).
#[derive(Debug)]
struct Shed;

impl prometheus_client::collector::Collector for Shed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let n = fleet_proto::stream::SHED.load(std::sync::atomic::Ordering::Relaxed);
        let m = encoder.encode_descriptor(
            "fleet_streams_shed",
            "Streaming clients cut off with RESOURCE_EXHAUSTED (too slow, or behind the broadcast)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(n).encode(m)
    }
}

/// The expiry of every certificate a daemon holds: its own (as loaded now,
/// after reloads) and each CA of its bundle.
#[derive(Debug, Clone, Default)]
pub struct CertExpiry {
    pub me: Option<Arc<crate::tls::Reloading>>,
    pub trust: Option<Arc<crate::tls::Trust>>,
}

impl prometheus_client::collector::Collector for CertExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut certs: Vec<(&'static str, String, i64)> = Vec::new();
        if let Some(me) = &self.me {
            certs.extend(
                me.not_after()
                    .into_iter()
                    .map(|(subject, t)| ("certificate", subject, t)),
            );
        }
        if let Some(trust) = &self.trust {
            certs.extend(
                trust
                    .not_after()
                    .into_iter()
                    .map(|(subject, t)| ("ca", subject, t)),
            );
        }
        if certs.is_empty() {
            return Ok(());
        }
        let now = fleet_proto::clock::now_ms() / 1000;
        let mut m = encoder.encode_descriptor(
            "fleet_certificate_expiry",
            "Seconds until a loaded certificate expires (negative: expired)",
            Some(&prometheus_client::registry::Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (role, subject, t) in &certs {
            let labels = [("role", (*role).to_owned()), ("subject", subject.clone())];
            ConstGauge::new(t - now).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Serves `GET /metrics` from `registry` on `addr` until `shutdown`;
/// returns the address bound (with port 0, the port chosen).
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    use axum::http::header::CONTENT_TYPE;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let registry = registry.clone();
            async move {
                let format = Format::accepted(
                    headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok()),
                );
                (
                    [(CONTENT_TYPE, format.content_type())],
                    encode(&registry, format),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(listen = %local, "serving metrics");
    Ok(local)
}

/// The labels of one agent row's `fleet_agents` series: tenant, host,
/// pane, health, status and where the status came from.
pub fn agent_labels(r: &fleet_proto::v1::AgentRow) -> [(&'static str, String); 6] {
    use fleet_proto::v1::{AgentStatus, Health, PaneState, StatusSource};
    let hb = r.heartbeat.as_ref();
    let pane = match PaneState::try_from(r.pane) {
        Ok(PaneState::Alive) => "alive",
        Ok(PaneState::Dead) => "dead",
        Ok(PaneState::Missing) => "missing",
        _ => "unknown",
    };
    let health = match hb.and_then(|h| Health::try_from(h.health).ok()) {
        Some(Health::Healthy) => "healthy",
        Some(Health::Stale) => "stale",
        _ => "unknown",
    };
    let status = match hb.and_then(|h| AgentStatus::try_from(h.status).ok()) {
        Some(AgentStatus::Ok) => "idle",
        Some(AgentStatus::Busy) => "busy",
        Some(AgentStatus::Waiting) => "waiting",
        _ => "unknown",
    };
    let source = match hb.and_then(|h| StatusSource::try_from(h.status_source).ok()) {
        Some(s @ (StatusSource::Native | StatusSource::Observed | StatusSource::Fallback)) => {
            s.word()
        }
        _ => "none",
    };
    [
        ("tenant", r.tenant_id.clone()),
        ("host", r.host.clone()),
        ("pane", pane.to_owned()),
        ("health", health.to_owned()),
        ("status", status.to_owned()),
        ("source", source.to_owned()),
    ]
}

/// Encodes `fleet_agents`, the agents counted by [`agent_labels`], from
/// whatever rows a daemon holds at scrape time.
pub fn encode_agents<'a>(
    encoder: &mut DescriptorEncoder,
    rows: impl IntoIterator<Item = &'a fleet_proto::v1::AgentRow>,
) -> Result<(), std::fmt::Error> {
    let mut counts: std::collections::BTreeMap<[(&'static str, String); 6], i64> =
        std::collections::BTreeMap::new();
    for r in rows {
        *counts.entry(agent_labels(r)).or_default() += 1;
    }
    let mut m = encoder.encode_descriptor(
        "fleet_agents",
        "Agents by tenant, host, pane, health, status and the status's source",
        None,
        MetricType::Gauge,
    )?;
    for (labels, n) in &counts {
        ConstGauge::new(*n).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A metrics listen address from configuration. The endpoint is plain
/// HTTP without identities, so an address off loopback is refused unless
/// `public` says the operator means it.
pub fn parse_listen(text: &str, public: bool) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|e| format!("{text:?} is not an address:port ({e})"))?;
    if !addr.ip().is_loopback() && !public {
        return Err(format!(
            "{addr} is off loopback: the metrics endpoint has no authentication; set metrics_public = true to serve it there"
        ));
    }
    Ok(addr)
}
