//! fleet-hostd: one per (host, uid). It owns one isolated tmux server, starts
//! and adopts the agents of a roster, keeps an always-current table of them
//! and serves it, with lifecycle events, on a local Unix socket.
#![forbid(unsafe_code)]

pub use fleet_proto::address;
pub use fleet_proto::clock;
pub mod callers;
pub mod config;
pub use fleet_proto::events;
pub mod exits;
pub mod incoming;
pub mod inputs;
pub mod link;
pub mod metrics;
pub mod native;
pub mod observe;
pub mod proc;
pub mod records;
pub mod roster;
pub mod runtime;
pub mod screen;
pub mod send;
pub mod service;
pub mod socket;
pub mod status;
pub mod supervise;
pub mod systemd;
pub mod table;
pub mod tmux;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use fleet_proto::v1::fleet_server::FleetServer;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::service::interceptor::InterceptedService;

pub use config::Config;
pub use table::Command;

/// How often hostd re-reads its certificate and CA bundle.
const TLS_RELOAD: Duration = Duration::from_secs(5);

/// Largest request hostd decodes; requests are small.
pub const MAX_DECODE: usize = 4 * 1024 * 1024;
/// Largest response hostd encodes (a full snapshot of a big host).
pub const MAX_ENCODE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HostdError {
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error("tmux: {0}")]
    Tmux(#[from] tmux::TmuxError),
    #[error("{path}: {source}")]
    RunDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another fleet-hostd{holder} already runs {what}: one hostd per run dir and tmux socket (lock {path}); stop it first"
    )]
    AlreadyRunning {
        what: String,
        holder: String,
        path: std::path::PathBuf,
    },
    #[error("{0}")]
    Tls(fleet_net::tls::TlsError),
    #[error("serving: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("{0}")]
    History(fleet_store::StoreError),
    #[error("cannot serve metrics on {addr} (metrics_listen): {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Takes `path`'s exclusive lock (`flock`, never waiting) and writes our pid
/// into it; refused with the holder's pid when another process has it.
fn exclusive(path: &std::path::Path, what: String) -> Result<std::fs::File, HostdError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| HostdError::RunDir {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io)?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut pid = String::new();
        let _ = (&f).take(32).read_to_string(&mut pid);
        let pid = pid.trim();
        return Err(HostdError::AlreadyRunning {
            what,
            holder: if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            },
            path: path.to_owned(),
        });
    }
    f.set_len(0).map_err(io)?;
    f.rewind().map_err(io)?;
    writeln!(f, "{}", std::process::id()).map_err(io)?;
    Ok(f)
}

/// What the embedding program hands to [`run`].
pub struct Options {
    /// systemd runner (the real `systemctl`, or a fake in tests).
    pub systemd: Arc<dyn systemd::Runner>,
    /// Flip to `true` to stop serving (agents keep running in tmux).
    pub shutdown: watch::Receiver<bool>,
    /// Requests for the table owner, e.g. reload on SIGHUP.
    pub commands: mpsc::Receiver<Command>,
    /// Told once the socket is bound and the table is populated.
    pub ready: Option<oneshot::Sender<()>>,
}

/// After SIGTERM, how long calls still running (a verified send) may take
/// before the server stops waiting for them; streams end at once.
const DRAIN: Duration = Duration::from_millis(800);

/// Runs hostd until shutdown. The configuration and roster are already
/// validated: nothing here rejects operator input.
pub async fn run(cfg: Config, roster: roster::Roster, opts: Options) -> Result<(), HostdError> {
    let cfg = Arc::new(cfg);
    std::fs::create_dir_all(&cfg.run_dir).map_err(|source| HostdError::RunDir {
        path: cfg.run_dir.clone(),
        source,
    })?;
    // One hostd per run dir and per tmux socket, held for the process's
    // life, taken before the socket is bound (a second one must not take
    // the first one's socket or agents).
    let tmux_socket_name = cfg
        .tmux_socket
        .clone()
        .unwrap_or_else(|| roster.tmux.socket_name.clone());
    let _locks = [
        exclusive(
            &cfg.run_dir.join(".hostd.lock"),
            format!("in {}", cfg.run_dir.display()),
        )?,
        exclusive(
            &std::env::temp_dir().join(format!(
                "fleet-hostd-{}-tmux-{tmux_socket_name}.lock",
                cfg.uid
            )),
            format!("on tmux socket {tmux_socket_name:?}"),
        )?,
    ];
    let listener = socket::bind(&cfg.socket, cfg.uid).await?;
    let epoch: u64 = rand::random();
    let events = events::EventLog::new(&cfg.tenant, &cfg.host, cfg.event_backlog);
    // The history: opened before anything is recorded, so numbering goes
    // on from the last run and the backlog starts where it ended.
    let history = match &cfg.history {
        Some(h) => {
            let opened =
                fleet_store::Store::open(h, cfg.event_backlog).map_err(HostdError::History)?;
            let store = opened.store.clone();
            events.resume(
                opened.continue_after(),
                opened.recent,
                Some(Arc::new(move |e: &fleet_proto::v1::Event| store.record(e))),
            );
            Some(opened.store)
        }
        None => None,
    };
    // Counted from the first event on; served (and exported) once the
    // table's view exists.
    let event_metrics = fleet_net::metrics::EventMetrics::new();
    events.add_sink(event_metrics.sink());
    let otlp = fleet_net::metrics::otlp::Exporter::new("fleet-hostd", &events);
    let probe = systemd::Probe {
        runner: opts.systemd,
        systemctl: cfg.systemd.systemctl.clone(),
        loginctl: cfg.systemd.loginctl.clone(),
        unit: cfg.systemd.unit.clone(),
        uid: cfg.uid,
        enabled: cfg.systemd.probe,
    };
    let tmux_socket = cfg
        .tmux_socket
        .clone()
        .unwrap_or_else(|| roster.tmux.socket_name.clone());
    let (mut table, view, roster_rx) =
        table::Table::start(cfg.clone(), roster, events.clone(), probe, epoch).await?;
    table.history = history.clone();
    if let Some(h) = history.clone() {
        tokio::spawn(watch_history(h, events.clone(), opts.shutdown.clone()));
    }
    // Control requests from the service and the embedder's commands (SIGHUP)
    // share the table's one command queue.
    let (cmd_tx, cmd_rx) = mpsc::channel(32);
    let mut external = opts.commands;
    let forward_tx = cmd_tx.clone();
    tokio::spawn(async move {
        while let Some(c) = external.recv().await {
            if forward_tx.send(c).await.is_err() {
                break;
            }
        }
    });
    let owner = tokio::spawn(table.run(cmd_rx, opts.shutdown.clone()));

    let svc = service::FleetService {
        view,
        roster: roster_rx,
        events,
        epoch,
        tmux: tmux::Tmux::new(&cfg.tmux, tmux_socket).with_timeout(cfg.tmux_timeout),
        run_dir: cfg.run_dir.clone(),
        send_limit: cfg.send_limit,
        commands: cmd_tx,
        inputs: inputs::Inputs::default(),
        shutdown: opts.shutdown.clone(),
        audit: open_audit(&cfg.run_dir),
        uplinks: link::Uplinks::default(),
        history,
    };
    let fleet = FleetServer::new(svc.clone())
        .max_decoding_message_size(MAX_DECODE)
        .max_encoding_message_size(MAX_ENCODE);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<FleetServer<service::FleetService>>()
        .await;
    let (reflection, reflection_v1alpha) = fleet_proto::reflection().map_err(|e| {
        HostdError::Tmux(tmux::TmuxError::Failed {
            command: "reflection".into(),
            message: e.to_string(),
        })
    })?;
    let mut certs = fleet_net::metrics::CertExpiry::default();
    let tls = match &cfg.link.tls {
        Some(t) => {
            let (me, trust) =
                fleet_net::tls::load_watched(&t.cert, &t.key, &t.ca, TLS_RELOAD, |what, e| {
                    tracing::error!(error = %e, "{what} reload refused; keeping the current one");
                })
                .map_err(HostdError::Tls)?;
            certs.me = Some(me.clone());
            certs.trust = Some(trust.clone());
            Some(Arc::new(
                fleet_net::tls::client_config(trust, me).map_err(HostdError::Tls)?,
            ))
        }
        None => None,
    };
    let registry = Arc::new(metrics::registry(svc.view.clone(), &event_metrics, certs));
    let metrics_at = match cfg.metrics_listen {
        Some(addr) => Some(
            fleet_net::metrics::serve(addr, registry.clone(), opts.shutdown.clone())
                .await
                .map_err(|source| HostdError::Metrics { addr, source })?,
        ),
        None => None,
    };
    if let Some(x) = otlp {
        x.run(registry, opts.shutdown.clone());
    }
    for a in &cfg.link.aggregators {
        let dial = fleet_net::transport::Dial {
            address: a.clone(),
            tls: tls.clone(),
            server_name: cfg.link.server_name.clone(),
        };
        let source = link::Source {
            hello: fleet_proto::v1::Hello {
                tenant_id: cfg.tenant.clone(),
                host: cfg.host.clone(),
                uid: cfg.uid,
                hostd_version: env!("CARGO_PKG_VERSION").to_owned(),
                boot_epoch: epoch,
                protocol: link::PROTOCOL,
                max_message_bytes: MAX_DECODE as u64,
                send_limit_bytes: cfg.send_limit as u64,
            },
            view: svc.view.clone(),
            events: svc.events.clone(),
            service: Some(svc.clone()),
            report: Some(svc.commands.clone()),
            refused_retry: cfg.link.refused_retry,
            uplinks: Some(svc.uplinks.clone()),
        };
        tokio::spawn(link::run(dial, source, opts.shutdown.clone()));
    }
    tokio::spawn(observe::run(
        svc.view.clone(),
        svc.roster.clone(),
        svc.tmux.clone(),
        svc.commands.clone(),
        opts.shutdown.clone(),
    ));
    if cfg.supervise {
        tokio::spawn(supervise::run(
            svc.clone(),
            svc.commands.clone(),
            opts.shutdown.clone(),
        ));
    }
    let gate = socket::same_uid(cfg.uid);
    let connections = incoming::connection_limit(cfg.max_connections);
    if let Some(ready) = opts.ready {
        let _ = ready.send(());
    }
    tracing::info!(socket = %cfg.socket.display(), tenant = %cfg.tenant, host = %cfg.host, "serving");
    // With `metrics_listen = "…:0"` this is how a supervisor or a test
    // learns the metrics port.
    let status = metrics_at.map(|a| format!("metrics on {a}"));
    fleet_net::transport::notify_ready(status.as_deref(), opts.shutdown.clone());
    let mut shutdown = opts.shutdown.clone();
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(InterceptedService::new(fleet, gate.clone()))
        .add_service(InterceptedService::new(health, gate.clone()))
        .add_service(InterceptedService::new(reflection, gate.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, gate))
        .serve_with_incoming_shutdown(incoming::incoming(listener, connections), async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
    let served = fleet_net::transport::drained(served, opts.shutdown.clone(), DRAIN).await;
    let _ = std::fs::remove_file(&cfg.socket);
    let _ = tokio::time::timeout(DRAIN, owner).await;
    served?;
    Ok(())
}

/// What agents ask of the fleet is audited in `<run_dir>/agents-audit.jsonl`
/// (0600). A log that cannot be opened is said once; the events still
/// record every send, refusal and need-human.
fn open_audit(run_dir: &std::path::Path) -> Option<fleet_net::audit::Audit> {
    let path = run_dir.join("agents-audit.jsonl");
    match fleet_net::audit::Audit::open(&path) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the agents' audit log");
            None
        }
    }
}

/// Says when the history stops being written and when it is written again
/// (the host row carries the flag meanwhile).
async fn watch_history(
    h: fleet_store::Store,
    events: events::EventLog,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut was: Option<String> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = h.failing();
        match (&was, &now) {
            (None, Some(why)) => {
                events.emit(
                    "",
                    fleet_proto::v1::EventKind::HistoryFailing,
                    format!("{}: {why}", h.path().display()),
                    &[("path", h.path().display().to_string())],
                );
            }
            (Some(_), None) => {
                events.emit(
                    "",
                    fleet_proto::v1::EventKind::HistoryRecovered,
                    format!("{}: written again", h.path().display()),
                    &[("path", h.path().display().to_string())],
                );
            }
            _ => {}
        }
        was = now;
    }
}
