//! `fleetctl`: parse the command line and run one verb.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    fleet_proto::tls::install_crypto_provider();
    let cli = fleetctl::Cli::parse();
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
