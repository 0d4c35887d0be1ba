//! The small files hostd keeps in its run directory so a restart forgets
//! nothing: agents an operator stopped, restart counts, the supervisor's
//! memory of deaths and give-ups. The run directory is the tenant's, so
//! each is read bounded and never blocking (a FIFO or a device put there
//! is refused, not waited on) and written by replacing it.

use std::path::{Path, PathBuf};

/// Agents an operator stopped (one name per line).
pub const STOPPED: &str = ".stopped";
/// `name count` per line: how often hostd restarted each agent.
pub const RESTARTS: &str = ".restarts";
/// The supervisor's state per agent, JSON.
pub const SUPERVISOR: &str = ".supervisor.json";

/// Largest record hostd reads back.
const LIMIT: usize = 4 * 1024 * 1024;

pub fn path(run_dir: &Path, record: &str) -> PathBuf {
    run_dir.join(record)
}

/// The record's text; empty when it does not exist or cannot be used (with
/// a warning saying why).
pub fn read(run_dir: &Path, record: &str) -> String {
    let p = path(run_dir, record);
    match fleet_proto::heartbeat::read_bounded(&p, LIMIT) {
        Ok(b) if b.len() <= LIMIT => String::from_utf8_lossy(&b).into_owned(),
        Ok(_) => {
            tracing::warn!(path = %p.display(), "record larger than {LIMIT} bytes; ignored");
            String::new()
        }
        Err(fleet_proto::heartbeat::BoundedError::NotFound) => String::new(),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "record unreadable; ignored");
            String::new()
        }
    }
}

/// Replaces the record with `text`.
pub fn write(run_dir: &Path, record: &str, text: &str) {
    let p = path(run_dir, record);
    if let Err(e) = fleet_proto::heartbeat::replace_file(&p, text.as_bytes()) {
        tracing::warn!(path = %p.display(), error = %e, "cannot keep a record");
    }
}
