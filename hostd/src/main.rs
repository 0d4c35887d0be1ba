//! `fleet-hostd`: parse flags, load and validate the configuration and the
//! roster before binding anything, then run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use fleet_hostd::config::{self, Environment, FileConfig};
use fleet_hostd::{Command, Options, roster, systemd};

/// sysexits EX_CONFIG: the configuration or the roster is invalid.
const EX_CONFIG: u8 = 78;
/// sysexits EX_TEMPFAIL: another hostd runs this fleet; try again once it
/// has stopped.
const EX_TEMPFAIL: u8 = 75;

/// Fleet host daemon: runs the agents of a roster in an isolated tmux server
/// and serves their live table on a local Unix socket (same uid only).
///
/// Settings come from built-in defaults, then the config file
/// (~/.config/fleet/hostd.toml), then FLEET_HOSTD_* variables (`__` nests:
/// FLEET_HOSTD_SYSTEMD__PROBE=false), then these flags.
#[derive(Debug, Parser)]
#[command(name = "fleet-hostd", version)]
struct Args {
    /// Config file (TOML). Default: $XDG_CONFIG_HOME/fleet/hostd.toml if present.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Roster file (YAML or TOML). Default: $XDG_CONFIG_HOME/fleet/roster.yaml.
    #[arg(long, value_name = "FILE")]
    roster: Option<PathBuf>,
    /// Tenant id to publish as (default: your login name).
    #[arg(long)]
    tenant: Option<String>,
    /// Host name to publish as (default: the hostname).
    #[arg(long)]
    host: Option<String>,
    /// Unix socket to serve on.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Directory of the <agent>.hb heartbeat files.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Use this tmux socket name instead of the roster's.
    #[arg(long, value_name = "NAME")]
    tmux_socket: Option<String>,
    /// Default heartbeat interval in seconds.
    #[arg(long, value_name = "SECS")]
    heartbeat_interval: Option<f64>,
    /// Stream the table to this fleet-aggregator (HOST:PORT; repeatable).
    /// Needs [tls] ca, cert and key in the config file.
    #[arg(long = "aggregator", value_name = "HOST:PORT")]
    aggregators: Vec<String>,
    /// Log filter (RUST_LOG syntax), e.g. `info,fleet_hostd=debug`.
    #[arg(long)]
    log: Option<String>,
    /// Validate the configuration and the roster, print what would run, exit.
    #[arg(long)]
    check_config: bool,
}

// Many small allocations across threads (rows, messages, TLS records):
// jemalloc keeps them fast and the heap compact where glibc's arenas
// fragment (measured: `fleet-bench federation`, see README).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    fleet_net::tls::install_crypto_provider();
    let args = Args::parse();
    let env = Environment::current();
    let flags = FileConfig {
        tenant: args.tenant,
        host: args.host,
        roster: args.roster,
        run_dir: args.run_dir,
        socket: args.socket,
        heartbeat_interval_secs: args.heartbeat_interval,
        tmux_socket: args.tmux_socket,
        log: args.log,
        aggregators: (!args.aggregators.is_empty()).then_some(args.aggregators),
        ..Default::default()
    };
    let cfg = match config::load(&env, args.config.as_deref(), &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet-hostd: invalid configuration: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let roster = match roster::load(&cfg.roster, &cfg.home) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleet-hostd: {e}");
            if !cfg.roster.exists() {
                eprintln!(
                    "hint: write a roster (see deploy/roster.example.yaml) or pass --roster FILE; `fleetctl demo` runs a demo fleet"
                );
            }
            return ExitCode::from(EX_CONFIG);
        }
    };
    if args.check_config {
        println!("config ok: tenant {} host {}", cfg.tenant, cfg.host);
        println!(
            "  roster  {} ({} agents)",
            roster.path.display(),
            roster.agents.len()
        );
        println!("  socket  {}", cfg.socket.display());
        println!("  run_dir {}", cfg.run_dir.display());
        println!(
            "  tmux    -L {}",
            cfg.tmux_socket
                .as_deref()
                .unwrap_or(&roster.tmux.socket_name)
        );
        for a in &roster.agents {
            println!("  agent   {} ({}) : {}", a.name, a.runtime, a.command);
        }
        return ExitCode::SUCCESS;
    }

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet-hostd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let telemetry = fleet_proto::telemetry::init("fleet-hostd", Some(&cfg.log));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(signals(stop_tx, cmd_tx));
        let result = fleet_hostd::run(
            cfg,
            roster,
            Options {
                systemd: Arc::new(systemd::SystemRunner),
                shutdown: stop_rx,
                commands: cmd_rx,
                ready: None,
            },
        )
        .await;
        // Flushing telemetry to a collector that does not answer must not
        // hold the exit.
        let flush = tokio::task::spawn_blocking(move || telemetry.shutdown());
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), flush).await;
        result
    });
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ fleet_hostd::HostdError::AlreadyRunning { .. }) => {
            eprintln!("fleet-hostd: {e}");
            ExitCode::from(EX_TEMPFAIL)
        }
        Err(fleet_hostd::HostdError::History(e)) if e.is_config() => {
            eprintln!("fleet-hostd: {e} (history_db in hostd.toml)");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("fleet-hostd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM/SIGINT stop serving (agents keep running); SIGHUP reloads the roster.
async fn signals(
    stop: tokio::sync::watch::Sender<bool>,
    commands: tokio::sync::mpsc::Sender<Command>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    // A burst of SIGHUPs (a deploy script in a loop) is one reload: each
    // waits out a short quiet spell first.
    const QUIET: std::time::Duration = std::time::Duration::from_millis(200);
    'signals: loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {}
        }
        loop {
            tokio::select! {
                _ = term.recv() => break 'signals,
                _ = int.recv() => break 'signals,
                _ = hup.recv() => {}
                () = tokio::time::sleep(QUIET) => break,
            }
        }
        let _ = commands.send(Command::Reload { why: "SIGHUP" }).await;
    }
    let _ = stop.send(true);
}
