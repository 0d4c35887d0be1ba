//! `fleet-bench`: Fleet's benchmarks, each printing its figures side by
//! side in one run (compare them as ratios, never across runs). They drive
//! the real binaries built beside this one (`fleet-hostd`,
//! `fleet-aggregator`, `fleetctl`), so build them together:
//! `cargo build --release --workspace`.
#![forbid(unsafe_code)]

mod federation;
mod history;
mod local;
mod soak;
mod top;

use std::process::ExitCode;

use clap::Parser;

// The load generator allocates like the daemons do: the same allocator.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Fleet's benchmarks: figures printed in one run, compared as ratios.
#[derive(Debug, Parser)]
#[command(name = "fleet-bench", version)]
struct Cli {
    #[command(subcommand)]
    what: local::What,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One worker per core: simulated hosts use the machine as hostds would.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet-bench: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match rt.block_on(local::run(cli.what)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
