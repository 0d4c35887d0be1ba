//! hostd's metrics (`fleet_net::metrics` serves and exports them): the
//! agents of its table by state, what its event log records, tmux call
//! latency and timeouts, heartbeat files that do not parse, the streams it
//! shed and its certificates' expiry.
//!
//! The counters deep in tmux and the heartbeat scan are process-wide
//! statics ([`TMUX`], [`BEATS_INVALID`]), so nothing has to be threaded
//! through to count a call; everything else is read from the table's
//! published view at scrape time.

use std::sync::{Arc, LazyLock};

use fleet_net::metrics::prometheus_client::encoding::DescriptorEncoder;
use fleet_net::metrics::prometheus_client::metrics::counter::Counter;
use fleet_net::metrics::prometheus_client::metrics::family::Family;
use fleet_net::metrics::prometheus_client::metrics::histogram::Histogram;
use fleet_net::metrics::prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::table::View;

/// Which way hostd asked tmux: a one-shot client or its control client.
pub type Client = [(&'static str, &'static str); 1];

/// tmux calls: their latency and the ones that timed out.
#[derive(Debug)]
pub struct TmuxCalls {
    seconds: Family<Client, Histogram>,
    timeouts: Family<Client, Counter>,
}

impl TmuxCalls {
    /// One call by `client` (`oneshot` or `control`) that took `secs`.
    pub fn observe(&self, client: &'static str, secs: f64) {
        self.seconds
            .get_or_create(&[("client", client)])
            .observe(secs);
    }

    /// One call by `client` that tmux did not answer in time.
    pub fn timed_out(&self, client: &'static str) {
        self.timeouts.get_or_create(&[("client", client)]).inc();
    }
}

pub static TMUX: LazyLock<TmuxCalls> = LazyLock::new(|| TmuxCalls {
    seconds: Family::new_with_constructor(|| Histogram::new(fleet_net::metrics::latency_buckets())),
    timeouts: Family::default(),
});

/// Heartbeat files read that were not a valid beat.
pub static BEATS_INVALID: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The table's agents at scrape time.
#[derive(Debug)]
struct Agents(watch::Receiver<Arc<View>>);

impl fleet_net::metrics::prometheus_client::collector::Collector for Agents {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = self.0.borrow().clone();
        fleet_net::metrics::encode_agents(&mut encoder, view.agents.iter().map(AsRef::as_ref))
    }
}

/// hostd's whole registry.
pub fn registry(
    view: watch::Receiver<Arc<View>>,
    events: &fleet_net::metrics::EventMetrics,
    certs: fleet_net::metrics::CertExpiry,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Agents(view)));
    events.register(&mut r);
    r.register_with_unit(
        "fleet_tmux_call",
        "Time tmux took to answer a call",
        Unit::Seconds,
        TMUX.seconds.clone(),
    );
    r.register(
        "fleet_tmux_timeouts",
        "tmux calls not answered in time",
        TMUX.timeouts.clone(),
    );
    r.register(
        "fleet_heartbeat_parse_failures",
        "Heartbeat files read that were not a valid beat",
        BEATS_INVALID.clone(),
    );
    r.register_collector(Box::new(certs));
    r
}
