//! Logging and tracing set-up shared by every binary.

/// Installs the `tracing` subscriber: `RUST_LOG` if set, else `filter`,
/// written to stderr.
pub fn init(service: &'static str, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    tracing::debug!(service, "logging initialised");
}
