//! `fleetctl`: parse the command line and run one verb.

use std::process::ExitCode;

fn main() -> ExitCode {
    fleet_net::tls::install_crypto_provider();
    // A runtime's hook must never fail or print: take the fast path before
    // clap could reject anything, and before any runtime or telemetry.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("hook") {
        if let (Some(rt), Some(ev)) = (args.get(2), args.get(3)) {
            fleetctl::hook::run(rt, ev);
        }
        return ExitCode::SUCCESS;
    }
    let cli = fleetctl::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetctl: cannot start the runtime: {e}");
            return ExitCode::from(fleetctl::exit::ERROR);
        }
    };
    rt.block_on(fleetctl::main(cli))
}
