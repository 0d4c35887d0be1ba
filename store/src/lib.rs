//! `fleet-store`: the durable event history of one hostd or one aggregator,
//! in SQLite (rusqlite, the library bundled: nothing to install) in WAL
//! mode in the daemon's state directory. Events are written by one thread
//! that takes them from a bounded queue and commits them in batches, so
//! recording never waits on the disk; a failing disk (full, gone) is a
//! state the daemon shows (`failing`), while live watchers keep getting
//! every event from memory. Reads open their own connection. Retention by
//! age and by size runs on the writer between batches. A lock file keeps a
//! second daemon off the same database; a file that is not a database, or
//! fails SQLite's quick check, is refused at open with what to do.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_proto::v1::Event;
use prost::Message;
use rusqlite::{Connection, OpenFlags, params};

/// Events waiting for the writer at most; past it they reach live
/// watchers only, and are counted as dropped.
const QUEUE: usize = 8192;
/// Events committed in one transaction at most.
const BATCH: usize = 1024;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(30);
/// A query returns at most this many events.
pub const QUERY_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    /// Events older than this are deleted.
    pub max_age: Duration,
    /// The database is kept under this size (oldest events go first).
    pub max_bytes: u64,
}

impl Config {
    /// The history a daemon's configuration asks for, from its keys
    /// (`history`, `history_db`, `history_max_age_days`,
    /// `history_max_mb`): `None` when it is off. A bad value is the key
    /// and what is wrong with it.
    pub fn from_keys(
        enabled: Option<bool>,
        db: Option<PathBuf>,
        max_age_days: Option<f64>,
        max_mb: Option<u64>,
        default_db: PathBuf,
    ) -> Result<Option<Config>, (&'static str, String)> {
        if !enabled.unwrap_or(true) {
            return Ok(None);
        }
        let days = max_age_days.unwrap_or(30.0);
        if !(days.is_finite() && (0.001..=3650.0).contains(&days)) {
            return Err((
                "history_max_age_days",
                format!("{days} is outside 0.001..=3650"),
            ));
        }
        let mb = max_mb.unwrap_or(256);
        if !(1..=1_048_576).contains(&mb) {
            return Err(("history_max_mb", format!("{mb} is outside 1..=1048576")));
        }
        Ok(Some(Config {
            path: db.unwrap_or(default_db),
            max_age: Duration::from_secs_f64(days * 86_400.0),
            max_bytes: mb << 20,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot open the history database: {message}")]
    Open { path: PathBuf, message: String },
    #[error(
        "{path}: the history database is damaged ({message}); move it aside (a new one is made) or restore it from a backup"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: the history database is in use by another process (lock {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("{path}: {message}")]
    Query { path: PathBuf, message: String },
}

impl StoreError {
    /// A misconfigured path (not a state the disk is in): the daemons exit
    /// 78 for it.
    pub fn is_config(&self) -> bool {
        matches!(self, StoreError::Open { .. })
    }
}

/// The history an `Events` request needs before `first`, the oldest
/// event memory holds: `None` when memory covers what it asks (no `since`
/// or `after_seq` older than `first`).
pub fn older_than_memory(
    req: &fleet_proto::v1::EventsRequest,
    first: Option<&Event>,
) -> Option<Query> {
    let first = first?;
    let asks_older = (req.since_unix_ms > 0 || req.after_seq > 0)
        && first.seq > req.after_seq.saturating_add(1)
        && (req.since_unix_ms <= 0 || first.ts_unix_ms > req.since_unix_ms);
    asks_older.then(|| Query {
        after_seq: req.after_seq,
        before_seq: first.seq,
        since_ms: req.since_unix_ms,
        until_ms: req.until_unix_ms,
        agent: None,
        kinds: req.kinds.clone(),
        limit: 0,
    })
}

/// Puts in front of `backlog` (what memory holds, oldest first) the older
/// events `req` asks for from `history`, read on a blocking thread: one
/// stream, oldest first, each once. Nothing is read when memory covers
/// the request or there is no history.
pub async fn prepend_older(
    history: Option<&Store>,
    req: &fleet_proto::v1::EventsRequest,
    backlog: &mut Vec<Event>,
) -> Result<(), StoreError> {
    let (Some(h), Some(q)) = (history, older_than_memory(req, backlog.first())) else {
        return Ok(());
    };
    let older = h.query_blocking(q).await?;
    backlog.splice(0..0, older);
    Ok(())
}

/// What a read asks for; every bound is optional.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub after_seq: u64,
    /// Only events before this sequence number (0: no bound).
    pub before_seq: u64,
    pub since_ms: i64,
    /// 0: no bound.
    pub until_ms: i64,
    pub agent: Option<String>,
    pub kinds: Vec<String>,
    /// 0: [`QUERY_MAX`].
    pub limit: usize,
}

/// The writer's state, for flags and numbers.
#[derive(Debug, Default)]
struct Health {
    failing: Option<String>,
    written: u64,
    dropped: u64,
}

/// What a daemon starts from: the sequence to continue and the newest
/// events for its in-memory backlog.
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    /// The newest sequence number committed.
    pub last_seq: u64,
    pub recent: Vec<Event>,
    /// The database was made by this open (no earlier run).
    pub created: bool,
    /// Per host, the newest forwarded event recorded (an aggregator's).
    pub cursors: Vec<Cursor>,
}

impl Opened {
    /// Where the numbering goes on: past every number the last run may
    /// have given out without committing it (a crash loses at most the
    /// queue and one batch), so a number a watcher saw is never reused.
    pub fn continue_after(&self) -> u64 {
        if self.created {
            0
        } else {
            self.last_seq + (QUEUE + BATCH) as u64
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    tx: SyncSender<Event>,
    health: Arc<Mutex<Health>>,
    /// Audit records are committed one by one on their own connection
    /// (opened at first use), before the caller goes on.
    audit: Arc<Mutex<Option<Connection>>>,
    /// Held for the store's life: the lock file.
    _lock: Arc<std::fs::File>,
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(path, e))?;
    c.busy_timeout(Duration::from_secs(2))
        .map_err(|e| open_error(path, e))?;
    Ok(c)
}

const SCHEMA: &str = "
PRAGMA auto_vacuum = INCREMENTAL;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    host TEXT NOT NULL,
    agent TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_agent ON events(agent, seq);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    who TEXT NOT NULL,
    verb TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    command_id INTEGER,
    phase TEXT,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE TABLE IF NOT EXISTS host_cursors (
    tenant TEXT NOT NULL,
    host TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, host)
);
";

/// The field of a forwarded event naming its sequence number on its host.
pub const HOST_SEQ: &str = "host_seq";
/// The field of a forwarded event naming its host's boot epoch (hex).
pub const HOST_EPOCH: &str = "host_epoch";

/// The newest event of one host's boot epoch the history holds (from the
/// [`HOST_SEQ`] and [`HOST_EPOCH`] fields of forwarded events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub tenant: String,
    pub host: String,
    pub epoch: u64,
    pub seq: u64,
}

fn cursor_of(e: &Event) -> Option<(u64, u64)> {
    let seq = e.fields.get(HOST_SEQ)?.parse().ok()?;
    let epoch = u64::from_str_radix(e.fields.get(HOST_EPOCH)?, 16).ok()?;
    Some((epoch, seq))
}

/// One audit record as the history keeps it: the fields a review filters
/// on, and the whole JSON line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRow {
    pub ts_ms: i64,
    pub kind: String,
    pub who: String,
    pub verb: String,
    pub target: String,
    pub outcome: String,
    pub command_id: Option<u64>,
    pub phase: Option<String>,
    pub line: String,
}

impl Store {
    /// Opens (or creates) the database at `cfg.path`, checks it, and
    /// starts its writer.
    pub fn open(cfg: &Config, recent: usize) -> Result<Opened, StoreError> {
        let path = cfg.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(dir, e))?;
        }
        if path.exists() && !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Err(open_error(&path, "not a regular file"));
        }
        let created = !path.exists();
        let lock_path = path.with_extension("db.lock");
        // Never blocks on what is there instead (a FIFO, a device): opened
        // without waiting and without following a link, then checked.
        let lock = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(
                    (rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits() as i32,
                )
                .open(&lock_path)
                .map_err(|e| open_error(&lock_path, e))?
        };
        if !lock.metadata().is_ok_and(|m| m.is_file()) {
            return Err(open_error(&lock_path, "not a regular file"));
        }
        match rustix::fs::flock(
            lock.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StoreError::Locked {
                    path,
                    lock: lock_path,
                });
            }
            Err(e) => return Err(open_error(&lock_path, e)),
        }
        let conn = connect(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        let corrupt = |e: rusqlite::Error| {
            if is_corrupt(&e) {
                StoreError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                }
            } else {
                open_error(&path, e)
            }
        };
        conn.execute_batch(SCHEMA).map_err(corrupt)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(corrupt)?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path: path.clone(),
                message: check,
            });
        }
        let last_seq: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(corrupt)?;
        let mut recent_events = read(
            &conn,
            "SELECT body FROM events ORDER BY seq DESC LIMIT ?1",
            params![i64::try_from(recent).unwrap_or(i64::MAX)],
        )
        .map_err(corrupt)?;
        recent_events.reverse();
        let cursors = {
            let mut stmt = conn
                .prepare("SELECT tenant, host, epoch, seq FROM host_cursors")
                .map_err(corrupt)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Cursor {
                        tenant: r.get(0)?,
                        host: r.get(1)?,
                        epoch: r.get::<_, i64>(2)?.cast_unsigned(),
                        seq: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    })
                })
                .map_err(corrupt)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(corrupt)?
        };
        let (tx, rx) = sync_channel(QUEUE);
        let health = Arc::new(Mutex::new(Health::default()));
        let writer = Writer {
            conn,
            cfg: cfg.clone(),
            health: health.clone(),
        };
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_error(&path, e))?;
        Ok(Opened {
            store: Store {
                path,
                tx,
                health,
                audit: Arc::default(),
                _lock: Arc::new(lock),
            },
            last_seq: u64::try_from(last_seq).unwrap_or(0),
            recent: recent_events,
            created,
            cursors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `e` for the writer; never waits. A full queue drops it from
    /// the history (it reached live watchers) and counts it.
    pub fn record(&self, e: &Event) {
        match self.tx.try_send(e.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                h.dropped += 1;
                h.failing
                    .get_or_insert_with(|| "the history writer is behind; events dropped".into());
            }
            Err(TrySendError::Disconnected(_)) => {
                let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                h.dropped += 1;
                h.failing = Some("the history writer stopped".into());
            }
        }
    }

    /// Commits one audit record before returning (blocking, bounded by
    /// SQLite's busy timeout): a relayed command's intent is durable
    /// before it is relayed.
    pub fn audit(&self, r: &AuditRow) -> Result<(), StoreError> {
        let err = |e: rusqlite::Error| StoreError::Query {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let mut conn = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_none() {
            *conn = Some(connect(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE)?);
        }
        let Some(c) = conn.as_ref() else {
            return Ok(());
        };
        c.prepare_cached(
            "INSERT INTO audit (ts, kind, who, verb, target, outcome, command_id, phase, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                r.ts_ms,
                r.kind,
                r.who,
                r.verb,
                r.target,
                r.outcome,
                r.command_id.and_then(|i| i64::try_from(i).ok()),
                r.phase,
                r.line
            ])
        })
        .map(|_| ())
        .map_err(err)
    }

    /// The newest `limit` audit records since `since_ms`, oldest first
    /// (blocking).
    pub fn audit_since(&self, since_ms: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let err = |e: rusqlite::Error| StoreError::Query {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let conn = connect(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut stmt = conn
            .prepare(
                "SELECT ts, kind, who, verb, target, outcome, command_id, phase, line FROM audit WHERE ts >= ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(
                params![since_ms, i64::try_from(limit.min(QUERY_MAX)).unwrap_or(0)],
                |r| {
                    Ok(AuditRow {
                        ts_ms: r.get(0)?,
                        kind: r.get(1)?,
                        who: r.get(2)?,
                        verb: r.get(3)?,
                        target: r.get(4)?,
                        outcome: r.get(5)?,
                        command_id: r
                            .get::<_, Option<i64>>(6)?
                            .and_then(|i| u64::try_from(i).ok()),
                        phase: r.get(7)?,
                        line: r.get(8)?,
                    })
                },
            )
            .map_err(err)?;
        let mut out = rows.collect::<Result<Vec<_>, _>>().map_err(err)?;
        out.reverse();
        Ok(out)
    }

    /// Why the history is not being written, if it is not.
    pub fn failing(&self) -> Option<String> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failing
            .clone()
    }

    /// Events written and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        let h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        (h.written, h.dropped)
    }

    /// [`query`](Self::query) on a blocking thread, for async callers.
    pub async fn query_blocking(&self, q: Query) -> Result<Vec<Event>, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.query(&q))
            .await
            .map_err(|e| StoreError::Query {
                path: self.path.clone(),
                message: e.to_string(),
            })?
    }

    /// The events `q` selects, oldest first, on a connection of its own
    /// (blocking: call it from a blocking task).
    pub fn query(&self, q: &Query) -> Result<Vec<Event>, StoreError> {
        let conn = connect(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut sql = String::from("SELECT body FROM events WHERE seq > ?1 AND ts >= ?2");
        if q.before_seq > 0 {
            sql.push_str(" AND seq < ?3");
        } else {
            sql.push_str(" AND ?3 = ?3");
        }
        if q.until_ms > 0 {
            sql.push_str(" AND ts <= ?4");
        } else {
            sql.push_str(" AND ?4 = ?4");
        }
        if q.agent.is_some() {
            sql.push_str(" AND agent = ?5");
        } else {
            sql.push_str(" AND ?5 = ?5");
        }
        if !q.kinds.is_empty() {
            let marks: Vec<String> = (0..q.kinds.len()).map(|i| format!("?{}", i + 7)).collect();
            sql.push_str(&format!(" AND kind IN ({})", marks.join(",")));
        }
        sql.push_str(" ORDER BY seq LIMIT ?6");
        let limit = if q.limit == 0 {
            QUERY_MAX
        } else {
            q.limit.min(QUERY_MAX)
        };
        let mut values: Vec<rusqlite::types::Value> = vec![
            i64::try_from(q.after_seq).unwrap_or(i64::MAX).into(),
            q.since_ms.into(),
            i64::try_from(q.before_seq).unwrap_or(i64::MAX).into(),
            q.until_ms.into(),
            q.agent.clone().unwrap_or_default().into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ];
        values.extend(q.kinds.iter().map(|k| k.clone().into()));
        read(&conn, &sql, rusqlite::params_from_iter(values)).map_err(|e| StoreError::Query {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

fn read(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Event>, rusqlite::Error> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for body in rows {
        // A row that does not decode is skipped, not fatal: it came from
        // this program, so it is a damaged page at worst.
        if let Ok(e) = Event::decode(body?.as_slice()) {
            out.push(e);
        }
    }
    Ok(out)
}

struct Writer {
    conn: Connection,
    cfg: Config,
    health: Arc<Mutex<Health>>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Event>) {
        let mut retention_due = Instant::now();
        loop {
            let first = match rx.recv_timeout(RETENTION_EVERY) {
                Ok(e) => Some(e),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch: Vec<Event> = first.into_iter().collect();
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                let result = self.write(&batch);
                let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(()) => {
                        h.written += batch.len() as u64;
                        if h.failing.take().is_some() {
                            tracing::info!(path = %self.cfg.path.display(), "the history is written again");
                        }
                    }
                    Err(e) => {
                        h.dropped += batch.len() as u64;
                        if h.failing.is_none() {
                            tracing::error!(path = %self.cfg.path.display(), error = %e, "cannot write the history");
                        }
                        h.failing = Some(e.to_string());
                    }
                }
            }
            if Instant::now() >= retention_due {
                retention_due = Instant::now() + RETENTION_EVERY;
                if let Err(e) = self.retain() {
                    tracing::warn!(path = %self.cfg.path.display(), error = %e, "history retention failed");
                }
            }
        }
    }

    fn write(&mut self, batch: &[Event]) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO events (seq, ts, tenant, host, agent, kind, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for e in batch {
                stmt.execute(params![
                    i64::try_from(e.seq).unwrap_or(i64::MAX),
                    e.ts_unix_ms,
                    e.tenant_id,
                    e.host,
                    e.agent,
                    e.kind,
                    e.encode_to_vec()
                ])?;
            }
            let mut cursor = tx.prepare_cached(
                "INSERT OR REPLACE INTO host_cursors (tenant, host, epoch, seq) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for e in batch {
                if let Some((epoch, seq)) = cursor_of(e) {
                    cursor.execute(params![
                        e.tenant_id,
                        e.host,
                        epoch.cast_signed(),
                        i64::try_from(seq).unwrap_or(i64::MAX)
                    ])?;
                }
            }
        }
        tx.commit()
    }

    /// Deletes what is older than `max_age`, then the oldest tenth while
    /// the file is over `max_bytes`.
    fn retain(&mut self) -> Result<(), rusqlite::Error> {
        let cutoff = fleet_proto::clock::now_ms()
            .saturating_sub(i64::try_from(self.cfg.max_age.as_millis()).unwrap_or(i64::MAX));
        self.conn
            .execute("DELETE FROM events WHERE ts < ?1", params![cutoff])?;
        self.conn
            .execute("DELETE FROM audit WHERE ts < ?1", params![cutoff])?;
        for _ in 0..10 {
            if self.size()? <= self.cfg.max_bytes {
                break;
            }
            self.conn.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT MAX(1, (SELECT COUNT(*) FROM events) / 10))",
                [],
            )?;
            self.conn.execute_batch("PRAGMA incremental_vacuum")?;
        }
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok(())
    }

    fn size(&self) -> Result<u64, rusqlite::Error> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(u64::try_from((pages - free) * size).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::v1::EventKind;

    fn ev(seq: u64, ts: i64, agent: &str, kind: EventKind) -> Event {
        Event {
            seq,
            ts_unix_ms: ts,
            tenant_id: "t".into(),
            host: "h".into(),
            agent: agent.into(),
            kind: kind.word().into(),
            message: format!("event {seq}"),
            kind_code: kind as i32,
            ..Default::default()
        }
    }

    fn cfg(dir: &Path) -> Config {
        Config {
            path: dir.join("history.db"),
            max_age: Duration::from_secs(3600),
            max_bytes: 64 << 20,
        }
    }

    /// Waits (bounded) until the writer has written `n` events.
    fn written(s: &Store, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.counts().0 < n {
            assert!(Instant::now() < deadline, "written: {:?}", s.counts());
            std::thread::yield_now();
        }
    }

    #[test]
    fn events_survive_a_reopen_and_the_sequence_continues() {
        let dir = tempfile::tempdir().unwrap();
        let o = Store::open(&cfg(dir.path()), 10).unwrap();
        assert_eq!(
            (o.last_seq, o.continue_after()),
            (0, 0),
            "a new history starts at 1"
        );
        let now = fleet_proto::clock::now_ms();
        for i in 1..=25 {
            o.store
                .record(&ev(i, now + i as i64, "a", EventKind::Started));
        }
        written(&o.store, 25);
        drop(o);
        let o = Store::open(&cfg(dir.path()), 10).unwrap();
        assert_eq!(o.last_seq, 25);
        assert!(
            o.continue_after() >= 25 + QUEUE as u64,
            "past whatever the last run may have numbered and not committed"
        );
        let seqs: Vec<u64> = o.recent.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (16..=25).collect::<Vec<_>>());
        assert_eq!(o.recent[0].message, "event 16");
    }

    #[test]
    fn queries_bound_by_time_sequence_agent_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let o = Store::open(&cfg(dir.path()), 0).unwrap();
        let now = fleet_proto::clock::now_ms();
        for i in 1..=10u64 {
            let (agent, kind) = if i % 2 == 0 {
                ("a", EventKind::Died)
            } else {
                ("b", EventKind::Started)
            };
            o.store
                .record(&ev(i, now - 10_000 + i as i64 * 1000, agent, kind));
        }
        written(&o.store, 10);
        let q =
            |q: Query| -> Vec<u64> { o.store.query(&q).unwrap().iter().map(|e| e.seq).collect() };
        assert_eq!(q(Query::default()).len(), 10);
        assert_eq!(
            q(Query {
                agent: Some("a".into()),
                ..Default::default()
            }),
            [2, 4, 6, 8, 10]
        );
        assert_eq!(
            q(Query {
                kinds: vec!["started".into()],
                after_seq: 5,
                ..Default::default()
            }),
            [7, 9]
        );
        assert_eq!(
            q(Query {
                since_ms: now - 4500,
                ..Default::default()
            }),
            [6, 7, 8, 9, 10]
        );
        assert_eq!(
            q(Query {
                until_ms: now - 8500,
                ..Default::default()
            }),
            [1]
        );
        assert_eq!(
            q(Query {
                before_seq: 3,
                ..Default::default()
            }),
            [1, 2]
        );
        assert_eq!(
            q(Query {
                limit: 2,
                ..Default::default()
            }),
            [1, 2]
        );
    }

    #[test]
    fn a_second_opener_a_damaged_file_a_fifo_lock_and_a_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let o = Store::open(&cfg(dir.path()), 0).unwrap();
        assert!(matches!(
            Store::open(&cfg(dir.path()), 0),
            Err(StoreError::Locked { .. })
        ));
        drop(o);
        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join("history.db"), vec![7u8; 8192]).unwrap();
        let e = Store::open(&cfg(bad.path()), 0).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(!e.is_config());
        let fifo = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            fifo.path().join("history.db.lock"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Refused at once (a FIFO with no reader), never waited on.
        let e = Store::open(&cfg(fifo.path()), 0).unwrap_err();
        assert!(e.to_string().contains("history.db.lock"), "{e}");
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("history.db")).unwrap();
        let e = Store::open(&cfg(d.path()), 0).unwrap_err();
        assert!(e.is_config(), "{e}");
    }

    #[test]
    fn retention_removes_what_is_too_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.max_age = Duration::from_secs(60);
        let o = Store::open(&c, 0).unwrap();
        let now = fleet_proto::clock::now_ms();
        o.store
            .record(&ev(1, now - 3_600_000, "a", EventKind::Started));
        o.store.record(&ev(2, now, "a", EventKind::Started));
        written(&o.store, 2);
        let conn = connect(&c.path, OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
        let mut w = Writer {
            conn,
            cfg: c.clone(),
            health: Arc::default(),
        };
        w.retain().unwrap();
        let left: Vec<u64> = o
            .store
            .query(&Query::default())
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, [2]);
    }

    #[test]
    fn audit_rows_are_committed_at_once_and_host_cursors_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let o = Store::open(&c, 10).unwrap();
        assert!(o.cursors.is_empty());
        let now = fleet_proto::clock::now_ms();
        let row = AuditRow {
            ts_ms: now,
            kind: "command".into(),
            who: "spiffe://t/operator/alice".into(),
            verb: "send".into(),
            target: "acme/box1/w".into(),
            outcome: "relaying".into(),
            command_id: Some(7),
            phase: Some("intent".into()),
            line: "{}".into(),
        };
        o.store.audit(&row).unwrap();
        // Committed before audit() returned: another connection sees it.
        assert_eq!(
            o.store.audit_since(0, 10).unwrap(),
            std::slice::from_ref(&row)
        );
        let mut e = ev(1, now, "w", EventKind::Sent);
        e.fields.insert(HOST_SEQ.into(), "41".into());
        e.fields.insert(HOST_EPOCH.into(), "beef".into());
        let mut later = ev(2, now, "w", EventKind::Died);
        later.fields.insert(HOST_SEQ.into(), "42".into());
        later.fields.insert(HOST_EPOCH.into(), "beef".into());
        o.store.record(&e);
        o.store.record(&later);
        written(&o.store, 2);
        drop(o);
        let o = Store::open(&c, 10).unwrap();
        assert_eq!(
            o.cursors,
            [Cursor {
                tenant: "t".into(),
                host: "h".into(),
                epoch: 0xbeef,
                seq: 42
            }]
        );
        assert_eq!(o.store.audit_since(now + 1, 10).unwrap(), []);
        assert_eq!(o.store.audit_since(0, 10).unwrap().len(), 1);
    }
}
