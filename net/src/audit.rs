//! The audit log: one JSON line per command and per security event, with
//! who, what, which target and the outcome. The aggregator writes one for
//! operators and hosts; hostd one for what its agents ask (`fleetctl mcp`).
//!
//! The file is for log shippers and is rotated by size (`FILE.1` is the
//! newest old one, up to [`Rotation::keep`] are kept). Sinks added with
//! [`Audit::add_sink`] get every record first, synchronously — the
//! aggregator's durable history is one, so a relayed command's intent is
//! committed before it is relayed — and the metrics count denials there.

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

/// Where every record also goes, before the file; it must not wait long.
pub type Sink = Arc<dyn Fn(&Record) + Send + Sync>;

/// When the file is rotated: past `max_bytes`, keeping `keep` old files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            keep: 5,
        }
    }
}

struct File {
    file: std::fs::File,
    size: u64,
}

#[derive(Clone)]
pub struct Audit {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    rotation: Rotation,
    sinks: Arc<std::sync::RwLock<Vec<Sink>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

/// Opens the log file for appending, 0600, never blocking on what is
/// there instead (a FIFO, a device or a link is refused).
fn open_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(
            rustix::fs::OFlags::NONBLOCK.bits() as i32 | rustix::fs::OFlags::NOFOLLOW.bits() as i32,
        )
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    Ok(File {
        file,
        size: meta.len(),
    })
}

impl Audit {
    /// Opens (appends to) the log, creating its directory, rotated by
    /// [`Rotation::default`].
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::open_rotating(path, Rotation::default())
    }

    /// Opens (appends to) the log, creating its directory; the file is
    /// 0600 and is rotated by `rotation`.
    pub fn open_rotating(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_file(path)?;
        // Command ids stay unique across restarts: they start at the clock.
        let start = u64::try_from(fleet_proto::clock::now_ms()).unwrap_or(0) * 1000;
        Ok(Self {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
            rotation,
            sinks: Arc::default(),
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(start)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record from now on also goes to `sink`, before the file.
    pub fn add_sink(&self, sink: Sink) {
        self.sinks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(sink);
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
        for sink in self.sinks.read().unwrap_or_else(|p| p.into_inner()).iter() {
            sink(&r);
        }
        let Ok(mut line) = serde_json::to_vec(&r) else {
            return;
        };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.file.write_all(&line) {
            tracing::error!(error = %e, path = %self.path.display(), "audit log write failed");
            return;
        }
        f.size += line.len() as u64;
        if f.size >= self.rotation.max_bytes {
            match self.rotate() {
                Ok(fresh) => *f = fresh,
                Err(e) => {
                    tracing::error!(error = %e, path = %self.path.display(), "audit log rotation failed; still appending");
                    // Tried again after as much again.
                    f.size = 0;
                }
            }
        }
    }

    /// Moves `FILE.k` to `FILE.k+1` (the oldest beyond `keep` goes), the
    /// file to `FILE.1`, and opens a new one.
    fn rotate(&self) -> std::io::Result<File> {
        let old = |k: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{k}"));
            PathBuf::from(p)
        };
        let keep = self.rotation.keep.max(1);
        let _ = std::fs::remove_file(old(keep));
        for k in (1..keep).rev() {
            match std::fs::rename(old(k), old(k + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::rename(&self.path, old(1))?;
        open_file(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_rotates_by_size_keeping_so_many_and_sinks_see_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let a = Audit::open_rotating(
            &path,
            Rotation {
                max_bytes: 1000,
                keep: 2,
            },
        )
        .unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s = seen.clone();
        a.add_sink(Arc::new(move |_| {
            s.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
        for i in 0..100 {
            a.write(Record {
                kind: "command",
                who: format!("op{i}"),
                verb: "send".into(),
                outcome: "ok".into(),
                ..Default::default()
            });
        }
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 100);
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len());
        let one = PathBuf::from(format!("{}.1", path.display()));
        let two = PathBuf::from(format!("{}.2", path.display()));
        let three = PathBuf::from(format!("{}.3", path.display()));
        assert!(size(&path).unwrap() < 1000);
        assert!(size(&one).unwrap() >= 1000, "the newest old file is .1");
        assert!(size(&two).unwrap() >= 1000);
        assert!(!three.exists(), "only two old files are kept");
        // Oldest to newest: .2, .1, the file — in order, ending at the
        // last record, none repeated.
        let all: Vec<u32> = [&two, &one, &path]
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        v["who"].as_str().unwrap()[2..].parse().unwrap()
                    })
                    .collect::<Vec<u32>>()
            })
            .collect();
        assert_eq!(all.last(), Some(&99));
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    }
}
