//! Where the local hostd socket lives, agreed by hostd and fleetctl:
//! `$XDG_RUNTIME_DIR/fleet/hostd.sock`, else `/tmp/fleet-<uid>/hostd.sock`.

use std::path::{Path, PathBuf};

/// Directory of per-uid runtime files (the socket).
pub fn runtime_dir(uid: u32, xdg_runtime_dir: Option<&Path>) -> PathBuf {
    match xdg_runtime_dir.filter(|d| d.is_absolute()) {
        Some(d) => d.join("fleet"),
        None => PathBuf::from(format!("/tmp/fleet-{uid}")),
    }
}

/// The default hostd socket for `uid`.
pub fn default_socket(uid: u32, xdg_runtime_dir: Option<&Path>) -> PathBuf {
    runtime_dir(uid, xdg_runtime_dir).join("hostd.sock")
}

/// The default socket for the calling process, from its environment.
pub fn current_default_socket() -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    default_socket(rustix::process::getuid().as_raw(), dir.as_deref())
}
