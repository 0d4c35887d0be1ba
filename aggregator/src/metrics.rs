//! The aggregator's metrics (`fleet_net::metrics` serves and exports
//! them): the merged view's agents and hosts at scrape time, its link and
//! lease counters, updates applied, what its event log records (the
//! hosts' forwarded events included), denials by verb and relay latency —
//! both read off the audit, which sees every one — the streams it shed
//! and its certificates' expiry.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fleet_net::audit::Record;
use fleet_net::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use fleet_net::metrics::prometheus_client::metrics::MetricType;
use fleet_net::metrics::prometheus_client::metrics::counter::{ConstCounter, Counter};
use fleet_net::metrics::prometheus_client::metrics::family::Family;
use fleet_net::metrics::prometheus_client::metrics::gauge::ConstGauge;
use fleet_net::metrics::prometheus_client::metrics::histogram::Histogram;
use fleet_net::metrics::prometheus_client::registry::{Registry, Unit};

use crate::view::View;

type Verb = [(&'static str, String); 1];

/// What the audit shows: denials and relayed commands' latency.
#[derive(Debug, Clone)]
pub struct AuditMetrics {
    denials: Family<Verb, Counter>,
    relay_seconds: Family<Verb, Histogram>,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self {
            denials: Family::default(),
            relay_seconds: Family::new_with_constructor(|| {
                Histogram::new(fleet_net::metrics::latency_buckets())
            }),
        }
    }
}

impl AuditMetrics {
    /// Counts one audit record (an audit sink).
    pub fn observe(&self, r: &Record) {
        // Verbs are this program's own words, never a peer's.
        let verb = [("verb", r.verb.clone())];
        if r.outcome.starts_with("denied") || r.outcome.starts_with("refused") {
            self.denials.get_or_create(&verb).inc();
        }
        if r.phase == Some("done")
            && let Some(ms) = r.elapsed_ms
        {
            self.relay_seconds
                .get_or_create(&verb)
                .observe(ms as f64 / 1000.0);
        }
    }
}

/// The view and its counters at scrape time.
struct Merged(View);

impl std::fmt::Debug for Merged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merged")
            .field("name", &self.0.name)
            .finish()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

impl fleet_net::metrics::prometheus_client::collector::Collector for Merged {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.0.snapshot();
        let all = |_: &str| true;
        let (mut connected, mut unreachable) = (0i64, 0i64);
        let mut rows = 0i64;
        for h in snap.hosts(&all) {
            if h.route.is_some() {
                connected += 1;
            } else {
                unreachable += 1;
            }
            rows += i64::try_from(h.agents.len()).unwrap_or(i64::MAX);
        }
        fleet_net::metrics::encode_agents(
            &mut encoder,
            snap.hosts(&all)
                .flat_map(|h| h.agents.values().map(AsRef::as_ref)),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "fleet_aggregator_hosts",
                "Hosts in the view: their link up (connected) or not (unreachable)",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in [("connected", connected), ("unreachable", unreachable)] {
                ConstGauge::new(n).encode(m.encode_family(&[("state", state)])?)?;
            }
        }
        ConstGauge::new(rows).encode(encoder.encode_descriptor(
            "fleet_aggregator_rows",
            "Agent rows the merged view holds",
            None,
            MetricType::Gauge,
        )?)?;
        let c = &self.0.counters;
        counter(
            &mut encoder,
            "fleet_aggregator_links_up",
            "Host streams taken (a hostd linked)",
            c.links_up.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "fleet_aggregator_links_down",
            "Host streams that ended",
            c.links_lost.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "fleet_aggregator_leases_expired",
            "Hosts silent past their lease",
            c.leases_expired.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "fleet_aggregator_updates_applied",
            "Updates (snapshot chunks and deltas) applied to the view",
            c.applied.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "fleet_aggregator_rows_applied",
            "Agent rows in the updates applied",
            c.applied_rows.load(Ordering::Relaxed),
        )
    }
}

/// The aggregator's whole registry.
pub fn registry(
    view: View,
    events: &fleet_net::metrics::EventMetrics,
    audit: &AuditMetrics,
    certs: fleet_net::metrics::CertExpiry,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Merged(view)));
    events.register(&mut r);
    r.register(
        "fleet_aggregator_denials",
        "Calls and streams refused, by verb (each one audited)",
        audit.denials.clone(),
    );
    r.register_with_unit(
        "fleet_aggregator_relay",
        "Time a relayed command took, from intent to outcome, by verb",
        Unit::Seconds,
        audit.relay_seconds.clone(),
    );
    r.register_collector(Box::new(certs));
    r
}

/// `AuditMetrics` as an audit sink.
pub fn audit_sink(m: &AuditMetrics) -> fleet_net::audit::Sink {
    let m = m.clone();
    Arc::new(move |r: &Record| m.observe(r))
}
