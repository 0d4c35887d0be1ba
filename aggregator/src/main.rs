//! `fleet-aggregator`: parse flags, load and validate the configuration
//! before binding anything, then run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fleet_aggregator::config::{self, FileConfig};

/// sysexits EX_CONFIG: the configuration is invalid.
const EX_CONFIG: u8 = 78;

/// Fleet aggregator: hostds on every host stream their agent tables here
/// over mTLS; operators run `fleetctl` against it to see and command the
/// whole fleet (tenants × hosts × agents).
///
/// Settings come from built-in defaults, then the config file, then
/// FLEET_AGGREGATOR_* variables (`__` nests: FLEET_AGGREGATOR_TLS__CA=…),
/// then these flags. Operator grants live in the `authz` file, reloaded
/// when it changes; nobody has any grant by default.
#[derive(Debug, Parser)]
#[command(name = "fleet-aggregator", version)]
struct Args {
    /// Config file (TOML), e.g. /etc/fleet/aggregator.toml.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (IP:PORT).
    #[arg(long)]
    listen: Option<String>,
    /// Operator grants file (TOML).
    #[arg(long, value_name = "FILE")]
    authz: Option<PathBuf>,
    /// JSON-lines audit log.
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Log filter (RUST_LOG syntax).
    #[arg(long)]
    log: Option<String>,
    /// Validate the configuration and exit.
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
    let flags = FileConfig {
        listen: args.listen,
        authz: args.authz,
        audit_log: args.audit_log,
        log: args.log,
        ..Default::default()
    };
    let cfg = match config::load(args.config.as_deref(), &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet-aggregator: invalid configuration: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Err(e) = fleet_aggregator::authz::Grants::load(&cfg.authz) {
        eprintln!("fleet-aggregator: invalid grants: {e}");
        return ExitCode::from(EX_CONFIG);
    }
    if args.check_config {
        println!(
            "configuration ok: listen {} trust domain {} authz {}",
            cfg.listen,
            cfg.trust_domain,
            cfg.authz.display()
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleet-aggregator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let result = runtime.block_on(async move {
        let telemetry = fleet_proto::telemetry::init("fleet-aggregator", Some(&cfg.log));
        tokio::spawn(async move {
            if let Err(e) = fleet_net::signal::stop_requested().await {
                tracing::error!(error = %e, "cannot install signal handlers");
            }
            let _ = stop_tx.send(true);
        });
        let result = fleet_aggregator::run(
            cfg,
            fleet_aggregator::Options {
                shutdown: stop_rx,
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
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(fleet_aggregator::AggregatorError::History(e)) if e.is_config() => {
            eprintln!("fleet-aggregator: {e} (history_db in the configuration)");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("fleet-aggregator: {e}");
            ExitCode::FAILURE
        }
    }
}
