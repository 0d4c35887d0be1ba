//! Heartbeat files: the blocking scan beside the owner (read what changed, write the fallback beat, check the beat's pid lineage) and folding its findings into the agents.

use super::*;

/// One agent's heartbeat files as the owner hands them to the scan.
#[derive(Debug)]
pub(super) struct BeatJob {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) interval: Duration,
    /// The live pane's pid (none: no live pane, so no fallback beat).
    pub(super) pane_pid: Option<u32>,
    /// mtime of the beat as last read (none: never read).
    pub(super) known_mtime: Option<Option<SystemTime>>,
    /// pid of the beat as last read.
    pub(super) known_pid: Option<u32>,
    pub(super) fallback_due: bool,
    pub(super) launched_wall: Option<SystemTime>,
}

/// One scan's findings: the run directory (when it had to be recreated)
/// and each agent's files.
#[derive(Debug)]
pub(super) struct BeatScans {
    pub(super) run_dir: Option<Result<(), String>>,
    pub(super) agents: Vec<BeatScan>,
}

/// What the scan found for one agent.
#[derive(Debug)]
pub(super) struct BeatScan {
    pub(super) name: String,
    pub(super) interval: Duration,
    /// A native writer's marker is fresh.
    pub(super) native: bool,
    /// The runtime reported since it was started.
    pub(super) reported: bool,
    /// The beat, when it was (re-)read.
    pub(super) beat: Option<CachedBeat>,
    pub(super) wrote_fallback: bool,
    /// Why the fallback beat could not be written (a full disk…).
    pub(super) write_error: Option<String>,
    /// Whether the beat's pid is the pane's process or runs under it
    /// (none: nothing to compare).
    pub(super) lineage_ok: Option<bool>,
}

/// The run directory, opened once per scan: each agent's files are looked
/// up from it (one path component each, not the whole path again).
pub(super) struct RunDir(Option<rustix::fd::OwnedFd>);

impl RunDir {
    pub(super) fn open(dir: &std::path::Path) -> Self {
        use rustix::fs::{CWD, Mode, OFlags};
        // O_PATH: never reads the directory, so it cannot block on it.
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Self(rustix::fs::openat(CWD, dir, flags, Mode::empty()).ok())
    }

    /// `mtime(path)` for a file in this directory, followed like
    /// `std::fs::metadata` (the whole path when the directory could not be
    /// opened).
    fn mtime(&self, path: &std::path::Path) -> Option<SystemTime> {
        let (Some(fd), Some(name)) = (&self.0, path.file_name()) else {
            return mtime(path);
        };
        let st = rustix::fs::statat(fd, name, rustix::fs::AtFlags::empty()).ok()?;
        let nanos = u32::try_from(st.st_mtime_nsec).ok()?;
        let secs = st.st_mtime;
        if secs >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
        } else {
            SystemTime::UNIX_EPOCH
                .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
                .checked_add(Duration::from_nanos(u64::from(nanos)))
        }
    }
}

/// Blocking: reads what changed, writes the fallback beat when due, and
/// checks the beat's pid against the pane's process tree. `dir` is the
/// run directory, where the beat and its marker are.
pub(super) fn scan_beat(job: BeatJob, dir: &RunDir, now: SystemTime) -> BeatScan {
    let marker_mtime = dir.mtime(&heartbeat::native_marker_path(&job.path));
    let native = heartbeat::native_marker_fresh_at(marker_mtime, now, job.interval);
    // The runtime reported since it started (hooks report on events, so
    // the marker ages; hostd keeps ts and pid fresh).
    let reported = native || marker_mtime.is_some_and(|m| job.launched_wall.is_none_or(|l| m >= l));
    let file_mtime = dir.mtime(&job.path);
    let mut beat = (job.known_mtime != Some(file_mtime)).then(|| CachedBeat {
        mtime: file_mtime,
        result: heartbeat::read(&job.path),
    });
    let mut wrote_fallback = false;
    let mut write_error = None;
    if !native
        && job.fallback_due
        && let Some(pid) = job.pane_pid
    {
        let now_odt = time::OffsetDateTime::from(now);
        let written = write_fallback(&job.path, pid, now_odt);
        wrote_fallback = true;
        beat = Some(match written {
            // What was written is known: no need to read it back.
            Ok(Some((mtime, text))) => CachedBeat {
                mtime: Some(mtime),
                result: heartbeat::parse(text.as_bytes()).map_err(ReadError::Invalid),
            },
            written => {
                write_error = written
                    .err()
                    .map(|e| format!("cannot write the fallback beat {}: {e}", job.path.display()));
                CachedBeat {
                    mtime: dir.mtime(&job.path),
                    result: heartbeat::read(&job.path),
                }
            }
        });
    }
    // A file read this scan (a changed one) that is no beat is counted once.
    if beat
        .as_ref()
        .is_some_and(|b| matches!(b.result, Err(ReadError::Invalid(_))))
    {
        crate::metrics::BEATS_INVALID.inc();
    }
    let beat_pid = match &beat {
        Some(b) => b.result.as_ref().ok().map(|b| b.pid),
        None => job.known_pid,
    };
    let lineage_ok = match (beat_pid, job.pane_pid) {
        (Some(pid), Some(pane)) => Some(pid == pane || proc::runs_under(pid, pane)),
        _ => None,
    };
    BeatScan {
        name: job.name,
        interval: job.interval,
        native,
        reported,
        beat,
        wrote_fallback,
        write_error,
        lineage_ok,
    }
}

/// Recreates a deleted run directory (0700); says what happened, if
/// anything did.
pub(super) fn ensure_run_dir(dir: &std::path::Path) -> Option<Result<(), String>> {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::symlink_metadata(dir).is_ok() {
        return None;
    }
    Some(
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot recreate the run directory {}: {e}", dir.display())),
    )
}

#[derive(Debug)]
pub(super) struct CachedBeat {
    pub(super) mtime: Option<SystemTime>,
    pub(super) result: Result<Beat, ReadError>,
}

/// The fallback beat: fresh `ts` and the pane's pid; status, model, turn
/// and turn key are carried over from the file as it is now (read under
/// the beat's writer lock, so a hook's update in between is never lost; a
/// lock someone else holds skips this beat).
///
/// Returns the mtime and text of the beat written (none: the lock was held).
pub(super) fn write_fallback(
    path: &std::path::Path,
    pid: u32,
    now: time::OffsetDateTime,
) -> Result<Option<(SystemTime, String)>, std::io::Error> {
    let Some(_lock) = heartbeat::lock(path, Duration::ZERO) else {
        return Ok(None);
    };
    let prev = heartbeat::read(path).ok();
    let prev = prev.as_ref();
    let beat = Beat {
        ts: now,
        pid,
        status: prev.map_or(heartbeat::Status::Idle, |b| b.status),
        model: prev.and_then(|b| b.model.clone()),
        turn: prev.and_then(|b| b.turn),
        key: prev.and_then(|b| b.key.clone()),
    };
    heartbeat::write_atomic_stamped(path, &beat)
        .map(|mtime| Some((mtime, heartbeat::format(&beat))))
        .inspect_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "cannot write fallback heartbeat");
        })
}

pub(super) fn to_wire_health(h: &heartbeat::Health) -> Health {
    match h {
        heartbeat::Health::Healthy => Health::Healthy,
        heartbeat::Health::Stale => Health::Stale,
        heartbeat::Health::Unknown(_) => Health::Unknown,
    }
}

pub(super) fn health_reason(
    r: &Result<Beat, ReadError>,
    now: time::OffsetDateTime,
    interval: Duration,
) -> String {
    match heartbeat::health(r, now, interval) {
        heartbeat::Health::Unknown(reason) => reason,
        heartbeat::Health::Stale => "older than 3 x interval".into(),
        heartbeat::Health::Healthy => String::new(),
    }
}

pub(super) fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

pub(super) fn format_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", d.as_secs())
    } else {
        format!("{s}")
    }
}

impl Table {
    /// Hands the heartbeat files to a blocking worker (file I/O never runs
    /// on the owner task); the answer comes back as [`BeatScan`]s. One scan
    /// at a time: a slow disk delays beats, not the table. Says whether a
    /// scan started (its answer publishes the view).
    pub(super) fn scan_beats(&mut self) -> bool {
        if self.beats_in_flight {
            return false;
        }
        let mut jobs = Vec::with_capacity(self.agents.len());
        for (name, agent) in &self.agents {
            let Some(spec) = self.roster.agent(name) else {
                continue;
            };
            let interval = spec
                .heartbeat_interval
                .unwrap_or(self.cfg.heartbeat_interval);
            // The pidfd reports exits, so no /proc read is needed per tick.
            let pane_pid = agent
                .pane
                .as_ref()
                .filter(|p| !p.dead && !agent.exited)
                .map(|p| p.pane_pid);
            jobs.push(BeatJob {
                name: name.clone(),
                path: heartbeat::path_for(&self.cfg.run_dir, &spec.name),
                interval,
                pane_pid,
                known_mtime: agent.beat.as_ref().map(|b| b.mtime),
                known_pid: agent
                    .beat
                    .as_ref()
                    .and_then(|b| b.result.as_ref().ok())
                    .map(|b| b.pid),
                fallback_due: agent.last_fallback.is_none_or(|t| t.elapsed() >= interval),
                launched_wall: agent.launched_wall,
            });
        }
        self.beats_in_flight = true;
        let tx = self.beats_tx.clone();
        let run_dir = self.cfg.run_dir.clone();
        tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            let recreated = ensure_run_dir(&run_dir);
            let dir = RunDir::open(&run_dir);
            let _ = tx.send(BeatScans {
                run_dir: recreated,
                agents: jobs.into_iter().map(|j| scan_beat(j, &dir, now)).collect(),
            });
        });
        true
    }

    /// Folds a beat scan into the rows: source, the runtime's own status,
    /// and health (raising health-change events). Health is `healthy` only
    /// while the pane lives and the beat comes from its process tree.
    pub(super) fn fold_beats(&mut self, scans: BeatScans) {
        self.beats_in_flight = false;
        match scans.run_dir {
            Some(Ok(())) => {
                self.events.emit(
                    "",
                    EventKind::RunDirRecreated,
                    format!(
                        "the run directory {} was gone; recreated it",
                        self.cfg.run_dir.display()
                    ),
                    &[],
                );
            }
            Some(Err(e)) => {
                self.events.emit("", EventKind::RunDirMissing, e, &[]);
            }
            None => {}
        }
        let now_odt = time::OffsetDateTime::now_utc();
        for scan in scans.agents {
            let Some(agent) = self.agents.get_mut(&scan.name) else {
                continue;
            };
            if let Some(beat) = scan.beat {
                agent.beat = Some(beat);
            }
            if scan.wrote_fallback {
                agent.last_fallback = Some(Instant::now());
            }
            let alive = agent
                .pane
                .as_ref()
                .is_some_and(|p| !p.dead && !agent.exited);
            agent.source = if scan.native {
                agent.last_fallback = None;
                HeartbeatSource::Native
            } else if alive {
                HeartbeatSource::Fallback
            } else {
                agent.last_fallback = None;
                HeartbeatSource::None
            };
            let reported_status = agent
                .beat
                .as_ref()
                .and_then(|b| b.result.as_ref().ok())
                .filter(|_| scan.reported)
                .map(|b| b.status);
            match reported_status {
                None => agent.native_status = None,
                Some(st) if agent.native_status.is_none_or(|(s, _)| s != st) => {
                    agent.native_status = Some((st, Instant::now()));
                }
                Some(_) => {}
            }
            let Some(beat) = &agent.beat else { continue };
            let file = heartbeat::health(&beat.result, now_odt, scan.interval);
            let (health, why) = match (&agent.pane, &beat.result) {
                _ if self.stopped.contains(&scan.name) => (
                    Health::Unknown,
                    "stopped by an operator: no process to vouch for".to_owned(),
                ),
                (None, _) => (
                    Health::Unknown,
                    "no tmux session: no process to vouch for".to_owned(),
                ),
                _ if !alive => (Health::Unknown, "the pane's process has ended".to_owned()),
                _ if scan.write_error.is_some() && file != heartbeat::Health::Healthy => (
                    Health::Unknown,
                    scan.write_error.clone().unwrap_or_default(),
                ),
                (Some(p), Ok(b))
                    if scan.lineage_ok == Some(false) && file == heartbeat::Health::Healthy =>
                {
                    (
                        Health::Unknown,
                        format!(
                            "beat pid {} is not the pane's process ({}) nor one of its descendants",
                            b.pid, p.pane_pid
                        ),
                    )
                }
                _ => (
                    to_wire_health(&file),
                    health_reason(&beat.result, now_odt, scan.interval),
                ),
            };
            if let Some(prev) = agent.health
                && prev != health
            {
                let (kind, msg) = match health {
                    Health::Healthy => (
                        EventKind::HeartbeatHealthy,
                        "heartbeat is fresh again".to_owned(),
                    ),
                    Health::Stale => (
                        EventKind::HeartbeatStale,
                        format!(
                            "no heartbeat for more than 3 x {}",
                            format_secs(scan.interval)
                        ),
                    ),
                    _ => (EventKind::HeartbeatUnknown, why.clone()),
                };
                agent.last_event = kind.word().into();
                self.events.emit(&scan.name, kind, msg, &[]);
            }
            agent.health = Some(health);
            agent.health_why = why;
        }
        self.publish();
    }

    // === publishing ===
}
