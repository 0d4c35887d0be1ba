//! The stop request every long-running Fleet process honours: SIGTERM (a
//! service manager) or SIGINT (Ctrl-C).

use tokio::signal::unix::{SignalKind, signal};

/// Returns at the first SIGTERM or SIGINT; `Err` at once when the handlers
/// cannot be installed (the caller decides what that means for it).
pub async fn stop_requested() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
