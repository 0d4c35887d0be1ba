//! The audit log: one JSON line per command and per security event, with
//! who, what, which target and the outcome. The aggregator writes one for
//! operators and hosts; hostd one for what its agents ask (`fleetctl mcp`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    /// RFC 3339 UTC.
    pub ts: String,
    /// `command` or `security`.
    pub kind: &'static str,
    /// The peer's SPIFFE identity, or its address when it has none.
    pub who: String,
    /// read, watch, send, control, attach, hello, handshake, reload …
    pub verb: String,
    /// TENANT/HOST/AGENT, a host, or "" for fleet-wide reads.
    pub target: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    /// ok, denied, refused, failed: <why>, or the send verdict.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// Links a relayed command's two lines: `intent` (written before it is
    /// relayed) and `done` (its outcome, whatever happened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<u64>,
    /// `intent` or `done`; absent on single-line records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
}

#[derive(Clone)]
pub struct Audit {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl Audit {
    /// Opens (appends to) the log, creating its directory; the file is 0600.
    /// Never blocks on what is there instead: a FIFO, a device or a link is
    /// refused.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(
                rustix::fs::OFlags::NONBLOCK.bits() as i32
                    | rustix::fs::OFlags::NOFOLLOW.bits() as i32,
            )
            .open(path)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other(format!(
                "{}: not a regular file",
                path.display()
            )));
        }
        // Command ids stay unique across restarts: they start at the clock.
        let start = u64::try_from(fleet_proto::clock::now_ms()).unwrap_or(0) * 1000;
        Ok(Self {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(start)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `intent` line of a command about to be relayed; the id goes into
    /// its [`finish`](Self::finish) line.
    pub fn begin(&self, r: Record) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.write(Record {
            command_id: Some(id),
            phase: Some("intent"),
            outcome: "relaying".into(),
            ..r
        });
        id
    }

    /// The `done` line of command `id`: its outcome.
    pub fn finish(&self, id: u64, r: Record) {
        self.write(Record {
            command_id: Some(id),
            phase: Some("done"),
            ..r
        });
    }

    /// Appends one line. A write failure is logged, never fatal to the
    /// command being audited.
    pub fn write(&self, mut r: Record) {
        if r.ts.is_empty() {
            r.ts = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
        }
        let Ok(mut line) = serde_json::to_vec(&r) else {
            return;
        };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line) {
            tracing::error!(error = %e, path = %self.path.display(), "audit log write failed");
        }
    }
}
