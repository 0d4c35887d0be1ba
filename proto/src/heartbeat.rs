//! Heartbeat protocol v1: `<run_dir>/<agent>.hb` holds `key=value` fields
//! (`ts`, `pid`, `status`, optional `model` and `turn`); writers replace it
//! atomically; a native writer also touches `<agent>.hb.native`.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const ENV_AGENT: &str = "FLEET_AGENT";
pub const ENV_TENANT: &str = "FLEET_TENANT";
pub const ENV_HEARTBEAT_FILE: &str = "FLEET_HEARTBEAT_FILE";
pub const ENV_HEARTBEAT_INTERVAL: &str = "FLEET_HEARTBEAT_INTERVAL";
pub const MAX_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Busy,
}
impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Busy => "busy",
        }
    }
}
impl std::str::FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ok" => Ok(Self::Ok),
            "busy" => Ok(Self::Busy),
            _ => Err(()),
        }
    }
}
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub ts: OffsetDateTime,
    pub pid: u32,
    pub status: Status,
    pub model: Option<String>,
    pub turn: Option<u64>,
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
    let (mut ts, mut pid, mut status, mut model, mut turn) = (None, None, None, None, None);
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
            _ => {}
        }
    }
    Ok(Beat {
        ts: ts.ok_or(BeatError::Missing("ts"))?,
        pid: pid.ok_or(BeatError::Missing("pid"))?,
        status: status.ok_or(BeatError::Missing("status"))?,
        model,
        turn,
    })
}

pub fn format(b: &Beat) -> String {
    let ts =
        b.ts.to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default();
    let mut s = format!("ts={ts} pid={} status={}", b.pid, b.status.as_str());
    if let Some(m) = &b.model {
        s.push_str(&format!(" model={m}"));
    }
    if let Some(t) = b.turn {
        s.push_str(&format!(" turn={t}"));
    }
    s.push('\n');
    s
}

pub fn read(path: &Path) -> Result<Beat, ReadError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadError::Missing
        } else {
            ReadError::Io(e.to_string())
        }
    })?;
    let mut buf = Vec::new();
    f.take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ReadError::Io(e.to_string()))?;
    parse(&buf).map_err(ReadError::Invalid)
}

pub fn write_atomic(path: &Path, beat: &Beat) -> std::io::Result<()> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("hb.tmp.{}.{n}", std::process::id()));
    std::fs::write(&tmp, format(beat))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

pub fn native_marker_path(hb: &Path) -> PathBuf {
    let mut s = hb.as_os_str().to_owned();
    s.push(".native");
    PathBuf::from(s)
}

pub fn touch_native_marker(hb: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(native_marker_path(hb))?;
    f.set_modified(SystemTime::now())
}

pub fn native_marker_fresh(hb: &Path, now: SystemTime, interval: Duration) -> bool {
    std::fs::metadata(native_marker_path(hb))
        .and_then(|m| m.modified())
        .is_ok_and(|t| now.duration_since(t).unwrap_or_default() <= interval * 2)
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
