//! Heartbeat protocol v1: `<run_dir>/<agent>.hb` holds `key=value` fields
//! (`ts`, `pid`, `status`, optional `model`, `turn` and `key`); writers
//! replace it atomically; a native writer also touches `<agent>.hb.native`.
//!
//! `status` is `idle` (v1's `ok` is read as the same), `busy` or `waiting`.
//! `key` is the runtime's own key of the current turn (Claude Code's
//! `prompt_id`, Codex's `turn_id`), so a prompt steered into a running turn
//! does not count as a new one. Unknown keys are ignored.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const ENV_AGENT: &str = "FLEET_AGENT";
pub const ENV_TENANT: &str = "FLEET_TENANT";
pub const ENV_HEARTBEAT_FILE: &str = "FLEET_HEARTBEAT_FILE";
pub const ENV_HEARTBEAT_INTERVAL: &str = "FLEET_HEARTBEAT_INTERVAL";
pub const MAX_BYTES: usize = 4096;

/// What the runtime says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Ready for a prompt (`idle`; v1's `ok` reads as this).
    Idle,
    /// A turn runs.
    Busy,
    /// The runtime asks a human (permission, question, trust dialog).
    Waiting,
}
impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Busy => "busy",
            Status::Waiting => "waiting",
        }
    }
}
impl std::str::FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ok" | "idle" => Ok(Self::Idle),
            "busy" => Ok(Self::Busy),
            "waiting" => Ok(Self::Waiting),
            _ => Err(()),
        }
    }
}

/// Longest `key=` (turn key) a beat carries; longer keys are cut.
pub const MAX_KEY: usize = 128;
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub ts: OffsetDateTime,
    pub pid: u32,
    pub status: Status,
    pub model: Option<String>,
    pub turn: Option<u64>,
    /// The runtime's key of the current turn, when it has one.
    pub key: Option<String>,
}
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BeatError {
    #[error("empty file")]
    Empty,
    #[error("file is {0} bytes (limit {MAX_BYTES})")]
    TooLarge(usize),
    #[error("binary content")]
    Binary,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("bad {0} {1:?}")]
    Bad(&'static str, String),
}
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no heartbeat file")]
    Missing,
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Invalid(BeatError),
}
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Healthy,
    Stale,
    Unknown(String),
}

pub fn parse(bytes: &[u8]) -> Result<Beat, BeatError> {
    if bytes.len() > MAX_BYTES {
        return Err(BeatError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| BeatError::Binary)?;
    if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(BeatError::Binary);
    }
    if text.trim().is_empty() {
        return Err(BeatError::Empty);
    }
    let (mut ts, mut pid, mut status, mut model, mut turn, mut key) =
        (None, None, None, None, None, None);
    for field in text.split_whitespace() {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let cut = || v.chars().take(40).collect::<String>();
        match k {
            "ts" => {
                ts = Some(
                    OffsetDateTime::parse(v, &Rfc3339).map_err(|_| BeatError::Bad("ts", cut()))?,
                )
            }
            "pid" => pid = Some(v.parse().map_err(|_| BeatError::Bad("pid", cut()))?),
            "status" => status = Some(v.parse().map_err(|()| BeatError::Bad("status", cut()))?),
            "model" => model = Some(v.to_owned()),
            "turn" => turn = Some(v.parse().map_err(|_| BeatError::Bad("turn", cut()))?),
            "key" => key = Some(v.chars().take(MAX_KEY).collect()),
            _ => {}
        }
    }
    Ok(Beat {
        ts: ts.ok_or(BeatError::Missing("ts"))?,
        pid: pid.ok_or(BeatError::Missing("pid"))?,
        status: status.ok_or(BeatError::Missing("status"))?,
        model,
        turn,
        key,
    })
}

pub fn format(b: &Beat) -> String {
    let ts =
        b.ts.to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default();
    // A value never carries whitespace or control characters: they would
    // split it into fields.
    let word = |v: &str| -> String {
        v.chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    };
    let mut s = format!("ts={ts} pid={} status={}", b.pid, b.status.as_str());
    if let Some(m) = &b.model {
        s.push_str(&format!(" model={}", word(m)));
    }
    if let Some(t) = b.turn {
        s.push_str(&format!(" turn={t}"));
    }
    if let Some(k) = &b.key {
        s.push_str(&format!(" key={}", word(k)));
    }
    s.push('\n');
    s
}

/// Reads and parses a beat. Never blocks: the file is opened non-blocking
/// and without following a symlink, must be a regular file (a FIFO or a
/// device an agent put in its place is refused), and at most
/// [`MAX_BYTES`] + 1 bytes are read.
pub fn read(path: &Path) -> Result<Beat, ReadError> {
    let buf = read_bounded(path, MAX_BYTES).map_err(|e| match e {
        BoundedError::NotFound => ReadError::Missing,
        e => ReadError::Io(e.to_string()),
    })?;
    parse(&buf).map_err(ReadError::Invalid)
}

#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    #[error("not found")]
    NotFound,
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads at most `limit` + 1 bytes of a regular file without ever blocking
/// on it: `O_NONBLOCK | O_NOFOLLOW | O_NOCTTY`, then the type is checked on
/// the opened descriptor (so a swap after a `stat` cannot fool it).
pub fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, BoundedError> {
    read_bounded_with(path, limit, libc_flags())
}

/// [`read_bounded`] that follows a symlink (a roster kept elsewhere and
/// linked into place); still never blocks and reads only regular files.
pub fn read_bounded_following(path: &Path, limit: usize) -> Result<Vec<u8>, BoundedError> {
    use rustix::fs::OFlags;
    read_bounded_with(
        path,
        limit,
        (OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32,
    )
}

fn read_bounded_with(path: &Path, limit: usize, flags: i32) -> Result<Vec<u8>, BoundedError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BoundedError::NotFound,
            _ => BoundedError::Io(e),
        })?;
    let ft = f.metadata()?.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a file"
        };
        return Err(BoundedError::NotRegular(what));
    }
    let mut buf = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

fn libc_flags() -> i32 {
    use rustix::fs::OFlags;
    (OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY).bits() as i32
}

/// Replaces the beat file atomically (temp file + rename, so a reader
/// never sees half a beat and a FIFO in its place is replaced, not opened).
/// A failed write leaves no temp file behind.
pub fn write_atomic(path: &Path, beat: &Beat) -> std::io::Result<()> {
    write_atomic_stamped(path, beat).map(drop)
}

/// [`write_atomic`], returning the mtime of the file written (what a
/// `stat` of `path` shows until someone replaces it again), so a writer
/// that knows what it wrote need not read it back.
pub fn write_atomic_stamped(path: &Path, beat: &Beat) -> std::io::Result<SystemTime> {
    replace_with(path, format(beat).as_bytes(), true)
}

/// Replaces `path` with `bytes`: a fresh 0600 temp file beside it (never
/// through a symlink), then a rename. A failed write leaves no temp file.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_with(path, bytes, false).map(drop)
}

/// `swap`: the new file is exchanged with the old one (`RENAME_EXCHANGE`),
/// which is then unlinked. Readers see the same atomic replacement, but ext4
/// does not flush a file exchanged in as it flushes one renamed over
/// another (`auto_da_alloc`): beats are rewritten every interval, and that
/// flush was most of what hostd's fallback beats cost. A beat lost in a
/// crash is written again by its writer.
fn replace_with(path: &Path, bytes: &[u8], swap: bool) -> std::io::Result<SystemTime> {
    use std::io::Write;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}.{n}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = open_private(&tmp, true)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.metadata()?.modified()
        })
        .and_then(|mtime| {
            if swap {
                swap_in(&tmp, path)?;
            } else {
                std::fs::rename(&tmp, path)?;
            }
            Ok(mtime)
        });
    written.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Puts `tmp` at `path` by exchanging the two and unlinking what `tmp`
/// then names; a plain rename when there is nothing to exchange with (or
/// the file system cannot), or when what was there is a directory (put
/// back first, so the rename fails as it always did).
fn swap_in(tmp: &Path, path: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    if renameat_with(CWD, tmp, CWD, path, RenameFlags::EXCHANGE).is_err() {
        return std::fs::rename(tmp, path);
    }
    if std::fs::remove_file(tmp).is_err() {
        renameat_with(CWD, tmp, CWD, path, RenameFlags::EXCHANGE)?;
        return std::fs::rename(tmp, path);
    }
    Ok(())
}

/// Opens `path` for writing, 0600 if created, never following a symlink and
/// never blocking (a FIFO without a reader is an error, not a hang); `new`
/// insists on creating it.
fn open_private(path: &Path, new: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(0o600).custom_flags(libc_flags());
    if new {
        o.create_new(true);
    } else {
        o.create(true).truncate(false);
    }
    o.open(path)
}

/// `<beat>.lock`: writers of one beat (a runtime's hooks, hostd's fallback
/// writer) serialise their read-modify-write on it with `flock`.
pub fn lock_path(hb: &Path) -> PathBuf {
    let mut s = hb.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Takes the beat's writer lock, waiting at most `wait` (zero: one try). A
/// lock someone holds forever costs a lost update, never a stuck writer.
pub fn lock(hb: &Path, wait: Duration) -> Option<std::fs::File> {
    let f = open_private(&lock_path(hb), false).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Some(f),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
}

pub fn native_marker_path(hb: &Path) -> PathBuf {
    let mut s = hb.as_os_str().to_owned();
    s.push(".native");
    PathBuf::from(s)
}

pub fn touch_native_marker(hb: &Path) -> std::io::Result<()> {
    let f = open_private(&native_marker_path(hb), false)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(
            "the native marker is not a regular file",
        ));
    }
    f.set_modified(SystemTime::now())
}

pub fn native_marker_fresh(hb: &Path, now: SystemTime, interval: Duration) -> bool {
    let mtime = std::fs::metadata(native_marker_path(hb)).and_then(|m| m.modified());
    native_marker_fresh_at(mtime.ok(), now, interval)
}

/// [`native_marker_fresh`] from the marker's mtime (none: no marker), for
/// a scan that has already looked at it.
pub fn native_marker_fresh_at(
    marker_mtime: Option<SystemTime>,
    now: SystemTime,
    interval: Duration,
) -> bool {
    marker_mtime.is_some_and(|t| now.duration_since(t).unwrap_or_default() <= interval * 2)
}

pub fn health(b: &Result<Beat, ReadError>, now: OffsetDateTime, interval: Duration) -> Health {
    match b {
        Err(e) => Health::Unknown(e.to_string()),
        Ok(beat) => {
            let age = now - beat.ts;
            let skew = interval.max(Duration::from_secs(5));
            if age.is_negative() && (-age).unsigned_abs() > skew {
                return Health::Unknown(format!(
                    "heartbeat is dated {}s in the future",
                    (-age).whole_seconds()
                ));
            }
            if age.is_negative() || age.unsigned_abs() <= interval * 3 {
                Health::Healthy
            } else {
                Health::Stale
            }
        }
    }
}

pub fn path_for(run_dir: &Path, agent: &crate::name::AgentName) -> PathBuf {
    run_dir.join(format!("{agent}.hb"))
}
