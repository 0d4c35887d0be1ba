//! fleet-aggregator: the central service. hostds dial in over mTLS and keep
//! one `HostLink` stream each; operators call the same `fleet.v1.Fleet`
//! service hostd serves locally, answered from the merged view, with
//! commands relayed down the right stream. Its state is soft: rebuilt from
//! the hostds after a restart.
#![forbid(unsafe_code)]

pub mod audit;
pub mod authz;
pub mod config;
pub mod fleet;
pub mod link;
pub mod metrics;
pub mod route;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleet_net::transport::{self as net, Security};
use fleet_proto::v1::fleet_server::FleetServer;
use fleet_proto::v1::host_link_server::HostLinkServer;
use tokio::sync::{oneshot, watch};

pub use config::Config;

/// Largest message accepted from a hostd (a snapshot chunk) or an operator.
pub const MAX_DECODE: usize = 16 * 1024 * 1024;
/// Largest message sent (a snapshot chunk, a big ListAgents).
pub const MAX_ENCODE: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("{0}")]
    Tls(#[from] fleet_net::tls::TlsError),
    #[error("authz: {0}")]
    Authz(#[from] authz::GrantsError),
    #[error("audit log {path}: {source}")]
    Audit {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    History(fleet_store::StoreError),
    #[error("cannot serve metrics on {addr} (metrics_listen): {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
}

pub struct Options {
    /// Flip to `true` to stop serving.
    pub shutdown: watch::Receiver<bool>,
    /// Told the bound address once the port is open.
    pub ready: Option<oneshot::Sender<SocketAddr>>,
}

/// Handshakes refused from one address within this window share one audit
/// line (the first, then a count): a scanner cannot flood the audit.
const HANDSHAKE_WINDOW: Duration = Duration::from_secs(10);

/// Audits refused handshakes, coalesced per peer address and window: the
/// first refusal from an address is written at once, the rest of its window
/// as one line with the count when the window closes.
async fn audit_refusals(
    mut refused: tokio::sync::mpsc::Receiver<net::Refused>,
    audit: audit::Audit,
    window: Duration,
) {
    use std::collections::HashMap;
    // Per address: when its window opened, refusals after the first, the
    // last reason.
    let mut open: HashMap<std::net::IpAddr, (tokio::time::Instant, u64, String)> = HashMap::new();
    let mut tick = tokio::time::interval(window / 4);
    let line = |who: String, outcome: String| audit::Record {
        kind: "security",
        who,
        verb: "handshake".into(),
        outcome,
        ..Default::default()
    };
    loop {
        tokio::select! {
            r = refused.recv() => {
                let Some(r) = r else { return };
                match open.get_mut(&r.addr.ip()) {
                    Some((_, n, last)) => {
                        *n += 1;
                        *last = r.reason;
                    }
                    None => {
                        audit.write(line(r.addr.to_string(), format!("refused: {}", r.reason)));
                        open.insert(r.addr.ip(), (tokio::time::Instant::now(), 0, r.reason));
                    }
                }
            }
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                open.retain(|ip, (since, n, last)| {
                    if now.duration_since(*since) < window {
                        return true;
                    }
                    if *n > 0 {
                        audit.write(line(
                            ip.to_string(),
                            format!("refused {n} more times in {window:?} (last: {last})"),
                        ));
                    }
                    false
                });
            }
        }
    }
}

/// After SIGTERM, how long relayed calls still running may take before the
/// server stops waiting for them; streams end at once.
const DRAIN: Duration = Duration::from_millis(800);

/// Runs the aggregator until shutdown. `cfg` is already validated.
pub async fn run(cfg: Config, opts: Options) -> Result<(), AggregatorError> {
    let authz = authz::Authz::load(&cfg.authz)?;
    let audit =
        audit::Audit::open_rotating(&cfg.audit_log, cfg.audit_rotation).map_err(|source| {
            AggregatorError::Audit {
                path: cfg.audit_log.clone(),
                source,
            }
        })?;
    // The history: opened before anything is recorded or audited. Every
    // audit line is committed to it before the caller goes on (a relayed
    // command's intent before it is relayed).
    let history = match &cfg.history {
        Some(h) => {
            Some(fleet_store::Store::open(h, cfg.event_backlog).map_err(AggregatorError::History)?)
        }
        None => None,
    };
    if let Some(h) = &history {
        let store = h.store.clone();
        audit.add_sink(Arc::new(move |r: &audit::Record| {
            let row = fleet_store::AuditRow {
                ts_ms: fleet_proto::clock::now_ms(),
                kind: r.kind.to_owned(),
                who: r.who.clone(),
                verb: r.verb.clone(),
                target: r.target.clone(),
                outcome: r.outcome.clone(),
                command_id: r.command_id,
                phase: r.phase.map(str::to_owned),
                line: serde_json::to_string(r).unwrap_or_default(),
            };
            if let Err(e) = store.audit(&row) {
                tracing::error!(error = %e, "cannot commit an audit record to the history; it is in the audit file only");
            }
        }));
    }
    let audit_metrics = metrics::AuditMetrics::default();
    audit.add_sink(metrics::audit_sink(&audit_metrics));
    let mut certs = fleet_net::metrics::CertExpiry::default();
    let security = match &cfg.tls {
        Some(t) => {
            let a = audit.clone();
            let (me, trust) = fleet_net::tls::load_watched(
                &t.cert,
                &t.key,
                &t.ca,
                cfg.reload,
                move |what, e| {
                    tracing::error!(error = %e, "{what} reload refused; keeping the current one");
                    a.write(audit::Record {
                        kind: "security",
                        who: "aggregator".into(),
                        verb: "reload".into(),
                        target: what.into(),
                        outcome: format!("refused: {e}"),
                        ..Default::default()
                    });
                },
            )?;
            certs.me = Some(me.clone());
            certs.trust = Some(trust.clone());
            let server = fleet_net::tls::server_config(trust, me)?;
            Security::Mtls(Arc::new(server))
        }
        None => {
            tracing::warn!(listen = %cfg.listen, "plaintext development listener: no identities, loopback only");
            Security::DevPlaintext
        }
    };
    {
        let authz = authz.clone();
        let audit = audit.clone();
        let every = cfg.reload;
        fleet_net::reload::every(every, move || match authz.reload_if_changed() {
            Ok(true) => tracing::info!("operator grants reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "grants reload refused; keeping the current grants");
                audit.write(audit::Record {
                    kind: "security",
                    who: "aggregator".into(),
                    verb: "reload".into(),
                    target: "authz".into(),
                    outcome: format!("refused: {e}"),
                    ..Default::default()
                });
            }
        });
    }
    // One shard per core: ingest scales with them.
    let shards = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let view = view::View::start(
        &cfg.name,
        cfg.lease,
        cfg.event_backlog,
        shards,
        audit.clone(),
        history
            .as_ref()
            .map(|h| h.cursors.clone())
            .unwrap_or_default(),
    );
    let event_metrics = fleet_net::metrics::EventMetrics::new();
    let store = history.map(|opened| {
        let store = opened.store.clone();
        view.events.resume(
            opened.continue_after(),
            opened.recent,
            Some(Arc::new(move |e: &fleet_proto::v1::Event| store.record(e))),
        );
        opened.store
    });
    view.events.add_sink(event_metrics.sink());
    let otlp = fleet_net::metrics::otlp::Exporter::new("fleet-aggregator", &view.events);
    let registry = Arc::new(metrics::registry(
        view.clone(),
        &event_metrics,
        &audit_metrics,
        certs,
    ));
    let metrics_at = match cfg.metrics_listen {
        Some(addr) => Some(
            fleet_net::metrics::serve(addr, registry.clone(), opts.shutdown.clone())
                .await
                .map_err(|source| AggregatorError::Metrics { addr, source })?,
        ),
        None => None,
    };
    if let Some(x) = otlp {
        x.run(registry, opts.shutdown.clone());
    }
    {
        let view = view.clone();
        let every = cfg.stats;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let (hosts, connected, agents) = view.counts();
                let c = &view.counters;
                tracing::info!(
                    target: "fleet_aggregator::stats",
                    hosts,
                    connected,
                    agents,
                    updates_total = c.applied.load(std::sync::atomic::Ordering::Relaxed),
                    rows_total = c.applied_rows.load(std::sync::atomic::Ordering::Relaxed),
                    "stats"
                );
            }
        });
    }
    let dev = cfg.tls.is_none();
    let fleet = fleet::FleetService {
        view: view.clone(),
        authz,
        audit: audit.clone(),
        trust_domain: cfg.trust_domain.clone(),
        dev,
        shutdown: opts.shutdown.clone(),
        history: store,
    };
    let link = link::HostLinkService {
        view: view.clone(),
        audit: audit.clone(),
        trust_domain: cfg.trust_domain.clone(),
        dev,
        beat: cfg.beat,
        shutdown: opts.shutdown.clone(),
        fleet: fleet.clone(),
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<FleetServer<fleet::FleetService>>()
        .await;
    health_reporter
        .set_serving::<HostLinkServer<link::HostLinkService>>()
        .await;
    let (reflection, reflection_v1alpha) =
        fleet_proto::reflection().map_err(|e| AggregatorError::Reflection(e.to_string()))?;
    let listener = net::listen(cfg.listen).map_err(|source| AggregatorError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let local = listener
        .local_addr()
        .map_err(|source| AggregatorError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let (refused_tx, refused_rx) = tokio::sync::mpsc::channel::<net::Refused>(256);
    tokio::spawn(audit_refusals(refused_rx, audit.clone(), HANDSHAKE_WINDOW));
    let incoming = net::incoming(listener, security, Some(refused_tx));
    tracing::info!(listen = %local, name = %cfg.name, trust_domain = %cfg.trust_domain, "serving");
    if let Some(ready) = opts.ready {
        let _ = ready.send(local);
    }
    // `STATUS=serving on ADDR`: with `listen = "…:0"` this is how a
    // supervisor or a test learns the port without racing for one.
    let status = match metrics_at {
        Some(m) => format!("serving on {local}; metrics on {m}"),
        None => format!("serving on {local}"),
    };
    fleet_net::transport::notify_ready(Some(&status), opts.shutdown.clone());
    let mut shutdown = opts.shutdown.clone();
    let served = tonic::transport::Server::builder()
        .layer(audit::RefusedAtDecode {
            audit: audit.clone(),
        })
        .http2_keepalive_interval(Some(net::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(net::KEEPALIVE_TIMEOUT))
        .tcp_nodelay(true)
        .add_service(
            HostLinkServer::new(link)
                .max_decoding_message_size(MAX_DECODE)
                .max_encoding_message_size(MAX_ENCODE),
        )
        .add_service(
            FleetServer::new(fleet)
                .max_decoding_message_size(MAX_DECODE)
                .max_encoding_message_size(MAX_ENCODE),
        )
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
    fleet_net::transport::drained(served, opts.shutdown, DRAIN).await?;
    Ok(())
}
