//! The agent table and the one task that owns it: it starts and adopts the
//! roster's agents, folds tmux notifications, pane exits, heartbeat files and
//! /proc into rows, and publishes every change as an immutable [`View`].

use fleet_proto::v1::{AgentFlag, EventKind, HostFlag};
use fleet_proto::vocab::Flagged;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fleet_proto::heartbeat::{self, Beat, ReadError};
use fleet_proto::v1::{
    AgentRow, AgentStatus, Health, HeartbeatSource, HostRow, PaneState, Process, StatusSource,
    UnitState,
};
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::config::Config;
use crate::events::EventLog;
use crate::exits::Exits;
use crate::native;
use crate::proc::{self, ProcInfo};
use crate::records;
use crate::roster::{self, AgentSpec, Roster};
use crate::status;
use crate::systemd;
use crate::tmux::{self, Control, Pane, Tmux};
use crate::verify::Observed;

/// Everything a reader needs, published after each change.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub agents: Vec<AgentRow>,
    pub host: HostRow,
}

/// Requests other tasks may make of the table's owner.
#[derive(Debug)]
pub enum Command {
    /// Re-read the roster (SIGHUP).
    Reload { why: &'static str },
    /// start / stop / restart / attach one agent; the reply is the outcome
    /// in words, or why it was refused.
    Control {
        action: fleet_proto::v1::ControlAction,
        agent: String,
        operator: String,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// What the supervisor is doing per agent (shown in `ps`).
    Supervision {
        states: std::collections::BTreeMap<String, fleet_proto::v1::Supervision>,
    },
    /// A link to an aggregator changed state.
    Uplink(fleet_proto::v1::Uplink),
    /// What the screen observer read off an agent's pane.
    Observed {
        agent: String,
        pane_pid: u32,
        observed: Observed,
    },
}

type ControlReply = tokio::sync::oneshot::Sender<Result<String, String>>;

/// A launcher's first moments (`sh -c '…; exec claude'`) are not drift.
const DRIFT_GRACE: Duration = Duration::from_secs(1);

/// Per-agent state kept between refreshes.
#[derive(Debug, Default)]
struct Agent {
    pane: Option<Pane>,
    /// The process doing the work, computed for `pane_pid`.
    process: Option<ProcInfo>,
    /// pids whose exit hostd observed itself (pidfd), even if tmux has not.
    exited: bool,
    beat: Option<CachedBeat>,
    health: Option<Health>,
    /// Why the health is not `healthy`.
    health_why: String,
    last_fallback: Option<Instant>,
    source: HeartbeatSource,
    restarts: u32,
    last_event: String,
    nudges: u32,
    /// The screen observer's last reading (for this pane pid) and since when.
    observed: Option<(u32, Observed, Instant)>,
    /// The runtime's own last status and since when it holds.
    native_status: Option<(heartbeat::Status, Instant)>,
    /// When hostd last started this agent's process.
    launched: Option<Instant>,
    launched_wall: Option<SystemTime>,
}

/// One agent's heartbeat files as the owner hands them to the scan.
#[derive(Debug)]
struct BeatJob {
    name: String,
    path: PathBuf,
    interval: Duration,
    /// The live pane's pid (none: no live pane, so no fallback beat).
    pane_pid: Option<u32>,
    /// mtime of the beat as last read (none: never read).
    known_mtime: Option<Option<SystemTime>>,
    /// pid of the beat as last read.
    known_pid: Option<u32>,
    fallback_due: bool,
    launched_wall: Option<SystemTime>,
}

/// One scan's findings: the run directory (when it had to be recreated)
/// and each agent's files.
#[derive(Debug)]
struct BeatScans {
    run_dir: Option<Result<(), String>>,
    agents: Vec<BeatScan>,
}

/// What the scan found for one agent.
#[derive(Debug)]
struct BeatScan {
    name: String,
    interval: Duration,
    /// A native writer's marker is fresh.
    native: bool,
    /// The runtime reported since it was started.
    reported: bool,
    /// The beat, when it was (re-)read.
    beat: Option<CachedBeat>,
    wrote_fallback: bool,
    /// Why the fallback beat could not be written (a full disk…).
    write_error: Option<String>,
    /// Whether the beat's pid is the pane's process or runs under it
    /// (none: nothing to compare).
    lineage_ok: Option<bool>,
}

/// Blocking: reads what changed, writes the fallback beat when due, and
/// checks the beat's pid against the pane's process tree.
fn scan_beat(job: BeatJob, now: SystemTime) -> BeatScan {
    let marker = heartbeat::native_marker_path(&job.path);
    let native = heartbeat::native_marker_fresh(&job.path, now, job.interval);
    // The runtime reported since it started (hooks report on events, so
    // the marker ages; hostd keeps ts and pid fresh).
    let reported =
        native || mtime(&marker).is_some_and(|m| job.launched_wall.is_none_or(|l| m >= l));
    let file_mtime = mtime(&job.path);
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
        write_error = write_fallback(&job.path, pid, now_odt)
            .err()
            .map(|e| format!("cannot write the fallback beat {}: {e}", job.path.display()));
        wrote_fallback = true;
        beat = Some(CachedBeat {
            mtime: mtime(&job.path),
            result: heartbeat::read(&job.path),
        });
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
fn ensure_run_dir(dir: &std::path::Path) -> Option<Result<(), String>> {
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
struct CachedBeat {
    mtime: Option<SystemTime>,
    result: Result<Beat, ReadError>,
}

/// One `list-panes` answer, read off the owner task.
#[derive(Debug)]
struct PaneRead {
    generation: u64,
    result: Result<Vec<Pane>, tmux::TmuxError>,
}

/// Pane reads run beside the owner, one at a time: a stopped tmux delays
/// only the next read, never deaths, ticks or commands.
#[derive(Debug, Default)]
struct Reads {
    in_flight: bool,
    /// Another read was asked for while one ran.
    again: bool,
    /// Number of the last read started.
    generation: u64,
    last_done: Option<Instant>,
}

/// Without an answer from tmux for this long the owner asks again.
const PROBE: Duration = Duration::from_secs(2);

pub struct Table {
    cfg: Arc<Config>,
    tmux: Tmux,
    roster: Roster,
    roster_mtime: Option<SystemTime>,
    roster_loaded_at: i64,
    control: Option<Arc<Control>>,
    reads: Reads,
    reads_tx: mpsc::UnboundedSender<PaneRead>,
    reads_rx: mpsc::UnboundedReceiver<PaneRead>,
    /// Control replies held until a pane read started after the action
    /// ends (read generation to wait past, reply, outcome).
    owed: Vec<(u64, ControlReply, Result<String, String>)>,
    /// Since when tmux has not answered within its timeout.
    unresponsive: Option<Instant>,
    beats_in_flight: bool,
    beats_tx: mpsc::UnboundedSender<BeatScans>,
    beats_rx: mpsc::UnboundedReceiver<BeatScans>,
    reloading: bool,
    reload_again: Option<&'static str>,
    reloads_tx: mpsc::UnboundedSender<(&'static str, Result<Roster, roster::RosterError>)>,
    reloads_rx: mpsc::UnboundedReceiver<(&'static str, Result<Roster, roster::RosterError>)>,
    agents: BTreeMap<String, Agent>,
    events: EventLog,
    publish: watch::Sender<Arc<View>>,
    exits: Exits,
    exits_rx: mpsc::UnboundedReceiver<u32>,
    probe: systemd::Probe,
    unit: UnitState,
    unit_checked: Option<Instant>,
    epoch: u64,
    started_at: i64,
    recheck_at: Option<tokio::time::Instant>,
    last_resync: Instant,
    tmux_down_since: Option<Instant>,
    stopped: std::collections::BTreeSet<String>,
    /// The supervisor's state per agent, for the rows.
    supervision: std::collections::BTreeMap<String, fleet_proto::v1::Supervision>,
    roster_tx: watch::Sender<Arc<Roster>>,
    /// `fleetctl`, the native status writer runtimes' hooks run.
    fleetctl: Option<PathBuf>,
    /// Each link up to an aggregator, as its task last reported it.
    uplinks: BTreeMap<String, fleet_proto::v1::Uplink>,
}

/// Ends a killed pane's whole process tree in the background (the owner
/// task never waits for it).
fn end_tree_later(pids: Vec<u32>) {
    tokio::spawn(async move {
        let n = proc::end_tree(pids, Duration::from_secs(1)).await;
        if n > 0 {
            tracing::debug!(processes = n, "ended what outlived the pane");
        }
    });
}

impl Table {
    /// Starts the tmux server if needed, adopts what runs, launches what is
    /// missing and returns the owner ready to [`run`](Self::run).
    pub async fn start(
        cfg: Arc<Config>,
        roster: Roster,
        events: EventLog,
        probe: systemd::Probe,
        epoch: u64,
    ) -> Result<
        (
            Self,
            watch::Receiver<Arc<View>>,
            watch::Receiver<Arc<Roster>>,
        ),
        tmux::TmuxError,
    > {
        let socket = cfg
            .tmux_socket
            .clone()
            .unwrap_or_else(|| roster.tmux.socket_name.clone());
        let tmux = Tmux::new(&cfg.tmux, socket).with_timeout(cfg.tmux_timeout);
        let (exits, exits_rx) = Exits::new();
        let (reads_tx, reads_rx) = mpsc::unbounded_channel();
        let (beats_tx, beats_rx) = mpsc::unbounded_channel();
        let (reloads_tx, reloads_rx) = mpsc::unbounded_channel();
        let roster_mtime = mtime(&roster.path);
        let placeholder = View {
            agents: Vec::new(),
            host: HostRow::default(),
        };
        let (publish, rx) = watch::channel(Arc::new(placeholder));
        let (roster_tx, roster_rx) = watch::channel(Arc::new(roster.clone()));
        // What the last hostd knew: agents stopped by an operator (not
        // started again) and restart counts.
        let stopped = records::read(&cfg.run_dir, records::STOPPED)
            .lines()
            .filter(|l| fleet_proto::name::check(l).is_ok())
            .map(str::to_owned)
            .collect();
        let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
        for line in records::read(&cfg.run_dir, records::RESTARTS).lines() {
            if let Some((name, n)) = line.split_once(' ')
                && roster.agent(name).is_some()
                && let Ok(n) = n.trim().parse::<u32>()
            {
                agents.entry(name.to_owned()).or_default().restarts = n;
            }
        }
        let mut table = Self {
            cfg,
            tmux,
            roster,
            roster_mtime,
            roster_loaded_at: clock::now_ms(),
            control: None,
            reads: Reads::default(),
            reads_tx,
            reads_rx,
            owed: Vec::new(),
            unresponsive: None,
            beats_in_flight: false,
            beats_tx,
            beats_rx,
            reloading: false,
            reload_again: None,
            reloads_tx,
            reloads_rx,
            agents,
            events,
            publish,
            exits,
            exits_rx,
            unit: UnitState::default(),
            probe,
            unit_checked: None,
            epoch,
            started_at: clock::now_ms(),
            recheck_at: None,
            last_resync: Instant::now(),
            tmux_down_since: None,
            stopped,
            supervision: Default::default(),
            roster_tx,
            fleetctl: native::find_fleetctl(),
            uplinks: BTreeMap::new(),
        };
        table.events.emit(
            "",
            EventKind::RosterLoaded,
            format!(
                "{} agents from {}",
                table.roster.agents.len(),
                table.roster.path.display()
            ),
            &[("path", table.roster.path.display().to_string())],
        );
        table.bring_up_tmux().await?;
        table.check_unit().await;
        table.tick().await;
        Ok((table, rx, roster_rx))
    }

    /// Owns the table until `shutdown` fires.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = async {
                match &self.control {
                    Some(c) => c.changed.notified().await,
                    None => std::future::pending().await,
                }
            };
            let exited = async {
                match &self.control {
                    Some(c) => c.exited.notified().await,
                    None => std::future::pending().await,
                }
            };
            let recheck = async {
                match self.recheck_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.tick().await,
                _ = changed => self.want_read(),
                _ = exited => self.tmux_lost().await,
                _ = recheck => {
                    self.recheck_at = None;
                    self.want_read();
                }
                Some(read) = self.reads_rx.recv() => self.on_read(read).await,
                Some(scans) = self.beats_rx.recv() => self.fold_beats(scans),
                Some((why, loaded)) = self.reloads_rx.recv() => {
                    self.apply_reload(why, loaded).await;
                    if let Some(why) = self.reload_again.take() {
                        self.reload(why);
                    }
                }
                Some(pid) = self.exits_rx.recv() => self.on_exit(pid),
                Some(cmd) = commands.recv() => match cmd {
                    Command::Reload { why } => self.reload(why),
                    Command::Control { action, agent, operator, reply } => {
                        let result = self.control(action, &agent, &operator).await;
                        // Answer after a fresh read: a `ps` right after a
                        // `stop` must not show the agent still alive.
                        if self.control.is_some() && self.unresponsive.is_none() {
                            let after = self.reads.generation;
                            self.want_read();
                            self.owed.push((after, reply, result));
                        } else {
                            self.publish();
                            let _ = reply.send(result);
                        }
                    }
                    Command::Uplink(u) => {
                        self.uplinks.insert(u.address.clone(), u);
                        self.publish();
                    }
                    Command::Supervision { states } => {
                        self.supervision = states;
                        self.publish();
                    }
                    Command::Observed { agent, pane_pid, observed } => {
                        if let Some(a) = self.agents.get_mut(&agent) {
                            let same = a
                                .observed
                                .as_ref()
                                .is_some_and(|(p, o, _)| *p == pane_pid && *o == observed);
                            if !same {
                                a.observed = Some((pane_pid, observed, Instant::now()));
                                self.publish();
                            }
                        }
                    }
                },
            }
        }
        if let Some(c) = self.control.take() {
            c.close().await;
        }
    }

    // === tmux ===

    /// Asks for a pane read beside the owner (at most one runs; a request
    /// during one runs once more after it).
    fn want_read(&mut self) {
        let Some(control) = self.control.clone() else {
            return;
        };
        if self.reads.in_flight {
            self.reads.again = true;
            return;
        }
        self.reads.in_flight = true;
        self.reads.generation += 1;
        let generation = self.reads.generation;
        let tx = self.reads_tx.clone();
        tokio::spawn(async move {
            let result = control.list_panes().await;
            let _ = tx.send(PaneRead { generation, result });
        });
    }

    async fn on_read(&mut self, read: PaneRead) {
        self.reads.in_flight = false;
        self.reads.last_done = Some(Instant::now());
        match read.result {
            Ok(panes) => {
                self.tmux_answered();
                self.apply_panes(panes, false);
                self.nudge_unreaped().await;
                self.publish();
            }
            Err(e) => {
                self.tmux_failed(&e);
                tracing::debug!(error = %e, "list-panes failed");
            }
        }
        // Replies waiting for a read that began after their action.
        let (due, later) = std::mem::take(&mut self.owed)
            .into_iter()
            .partition(|(after, _, _)| *after < read.generation);
        self.owed = later;
        for (_, reply, result) in due {
            let _ = reply.send(result);
        }
        if std::mem::take(&mut self.reads.again) {
            self.want_read();
        }
    }

    /// A tmux call timed out: flag the host once, with an event.
    fn tmux_failed(&mut self, e: &tmux::TmuxError) {
        if !matches!(e, tmux::TmuxError::Timeout { .. }) || self.unresponsive.is_some() {
            return;
        }
        self.unresponsive = Some(Instant::now());
        self.events.emit(
            "",
            EventKind::TmuxUnresponsive,
            format!(
                "tmux server on socket {} is not answering ({e}); deaths are still seen, commands fail until it answers",
                self.tmux.socket()
            ),
            &[("socket", self.tmux.socket().to_owned())],
        );
        self.publish();
    }

    fn tmux_answered(&mut self) {
        if let Some(since) = self.unresponsive.take() {
            self.events.emit(
                "",
                EventKind::TmuxResponsive,
                format!(
                    "tmux server on socket {} answers again after {:.1}s",
                    self.tmux.socket(),
                    since.elapsed().as_secs_f64()
                ),
                &[("socket", self.tmux.socket().to_owned())],
            );
        }
    }

    /// Why tmux cannot be asked to act now, if it cannot.
    fn tmux_unavailable(&self) -> Option<String> {
        if let Some(since) = self.unresponsive {
            return Some(format!(
                "tmux server on socket {} is not answering (for {:.0}s); try again when it does",
                self.tmux.socket(),
                since.elapsed().as_secs_f64()
            ));
        }
        self.control.is_none().then(|| {
            format!(
                "tmux server on socket {} is not running; hostd is bringing it back",
                self.tmux.socket()
            )
        })
    }

    async fn bring_up_tmux(&mut self) -> Result<(), tmux::TmuxError> {
        let holder = self.roster.tmux.holder_session.clone();
        if self.tmux.ensure_server(&holder).await? {
            self.events.emit(
                "",
                EventKind::TmuxServerStarted,
                format!("tmux server started on socket {}", self.tmux.socket()),
                &[("socket", self.tmux.socket().to_owned())],
            );
        }
        let control = Control::attach(&self.tmux, &holder).await?;
        let panes = control.list_panes().await?;
        self.control = Some(Arc::new(control));
        self.tmux_down_since = None;
        self.tmux_answered();
        self.apply_panes(panes, true);
        self.launch_missing().await;
        // Start-up and recovery read inline (bounded): the first view
        // already shows what was launched.
        if let Some(c) = &self.control
            && let Ok(panes) = c.list_panes().await
        {
            self.apply_panes(panes, false);
            self.publish();
        }
        Ok(())
    }

    async fn tmux_lost(&mut self) {
        if let Some(c) = self.control.take() {
            c.close().await;
        }
        self.events.emit(
            "",
            EventKind::TmuxServerLost,
            format!(
                "tmux server on socket {} is gone; recreating the roster's agents",
                self.tmux.socket()
            ),
            &[],
        );
        self.tmux_down_since = Some(Instant::now());
        for a in self.agents.values_mut() {
            a.pane = None;
            a.process = None;
        }
        self.retry_tmux().await;
        self.publish();
    }

    async fn retry_tmux(&mut self) {
        if let Err(e) = self.bring_up_tmux().await {
            tracing::warn!(error = %e, "cannot bring tmux back yet");
        }
    }

    /// Folds a `list-panes -a` result into the table.
    fn apply_panes(&mut self, panes: Vec<Pane>, initial: bool) {
        let holder = self.roster.tmux.holder_session.clone();
        // First pane of each session (lowest window, then pane index).
        let mut by_session: HashMap<String, Pane> = HashMap::new();
        for p in panes {
            if p.session_name == holder || p.watcher {
                continue;
            }
            match by_session.get(&p.session_name) {
                Some(q) if (q.window_index, q.pane_index) <= (p.window_index, p.pane_index) => {}
                _ => {
                    by_session.insert(p.session_name.clone(), p);
                }
            }
        }
        let roster_names = self.roster.names();
        for name in &roster_names {
            self.agents.entry(name.clone()).or_default();
        }
        for name in by_session.keys() {
            if !self.agents.contains_key(name) {
                self.agents.insert(name.clone(), Agent::default());
                if !roster_names.contains(name) {
                    self.events.emit(
                        name,
                        EventKind::UnmanagedFound,
                        "session on the fleet socket that the roster does not name",
                        &[],
                    );
                }
            }
        }
        let mut watch_pids = Vec::new();
        let mut gone = Vec::new();
        for (name, agent) in self.agents.iter_mut() {
            let new = by_session.remove(name);
            let old_pid = agent.pane.as_ref().map(|p| p.pane_pid);
            let managed = roster_names.contains(name);
            match (&agent.pane, &new) {
                (Some(_), None) => {
                    agent.process = None;
                    if managed {
                        agent.last_event = "session-gone".into();
                        self.events.emit(
                            name,
                            EventKind::SessionGone,
                            "tmux session disappeared",
                            &[],
                        );
                    } else {
                        gone.push(name.clone());
                    }
                }
                (None, Some(p)) if initial && managed => {
                    agent.last_event = "adopted".into();
                    self.events.emit(
                        name,
                        EventKind::Adopted,
                        format!("adopted running session (pid {})", p.pane_pid),
                        &[("pid", p.pane_pid.to_string()), ("pane", p.pane_id.clone())],
                    );
                }
                _ => {}
            }
            if let Some(p) = &new {
                if Some(p.pane_pid) != old_pid {
                    agent.exited = false;
                    agent.nudges = 0;
                    agent.process = None;
                }
                // The foreground program changed (exec, a job started or
                // ended): look at /proc again.
                if agent
                    .pane
                    .as_ref()
                    .is_some_and(|o| o.current_command != p.current_command)
                {
                    agent.process = None;
                }
                let was_dead = agent.pane.as_ref().is_some_and(|o| o.dead) || agent.exited;
                if p.dead && !was_dead && !initial {
                    announce_death(
                        &self.events,
                        name,
                        agent,
                        death_words(p.dead_status, p.dead_signal),
                    );
                } else if p.dead && agent.exited {
                    let known = agent.pane.as_ref().is_some_and(|o| o.dead);
                    if !known {
                        // tmux caught up with what the pidfd told us first.
                        agent.last_event = death_words(p.dead_status, p.dead_signal);
                    }
                }
                if !p.dead {
                    watch_pids.push(p.pane_pid);
                }
            }
            agent.pane = new;
        }
        for name in gone {
            self.agents.remove(&name);
        }
        for pid in watch_pids {
            self.exits.watch(pid);
        }
        let live: HashSet<u32> = self
            .agents
            .values()
            .filter_map(|a| a.pane.as_ref())
            .filter(|p| !p.dead)
            .map(|p| p.pane_pid)
            .collect();
        self.exits.retain(|pid| live.contains(&pid));
        self.update_processes(false);
    }

    /// Recomputes each live pane's real foreground process from /proc.
    fn update_processes(&mut self, all: bool) {
        for agent in self.agents.values_mut() {
            let Some(p) = &agent.pane else { continue };
            if p.dead || agent.exited {
                agent.process = None;
                continue;
            }
            if all || agent.process.is_none() {
                let table = proc::ProcTable::subtree(p.pane_pid);
                agent.process = proc::foreground(&table, p.pane_pid);
            }
        }
    }

    /// A pane process ended (pidfd). Mark it at once; ask tmux shortly after.
    fn on_exit(&mut self, pid: u32) {
        self.exits.forget(pid);
        let mut changed = false;
        for (name, agent) in self.agents.iter_mut() {
            let Some(p) = &agent.pane else { continue };
            if p.pane_pid == pid && !p.dead && !agent.exited {
                agent.exited = true;
                agent.process = None;
                announce_death(&self.events, name, agent, "died".to_owned());
                changed = true;
            }
        }
        if changed {
            self.publish();
            self.recheck_at = Some(tokio::time::Instant::now() + Duration::from_millis(50));
        }
    }

    /// tmux 3.3a sometimes never reaps a pane's child (the exit status never
    /// arrives and `pane-died` never fires); a SIGCHLD to the server makes it
    /// look again.
    async fn nudge_unreaped(&mut self) {
        let mut need = Vec::new();
        for (name, agent) in self.agents.iter_mut() {
            let Some(p) = &agent.pane else { continue };
            let unreaped = (p.dead && p.dead_status.is_none() && p.dead_signal.is_none())
                || (agent.exited && !p.dead && !proc::is_running(p.pane_pid));
            if unreaped && agent.nudges < 5 {
                agent.nudges += 1;
                need.push(name.clone());
            }
        }
        if need.is_empty() {
            return;
        }
        match self
            .tmux
            .server_pid()
            .await
            .inspect_err(|e| self.tmux_failed(e))
        {
            Ok(server) => {
                let sent = i32::try_from(server)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                    .map(|p| rustix::process::kill_process(p, rustix::process::Signal::CHILD));
                for name in need {
                    self.events.emit(
                        &name,
                        EventKind::SigchldNudge,
                        "pane is dead without an exit status; sent SIGCHLD to the tmux server",
                        &[("server_pid", server.to_string())],
                    );
                }
                if matches!(sent, Some(Ok(()))) {
                    self.recheck_at =
                        Some(tokio::time::Instant::now() + Duration::from_millis(100));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the tmux server pid"),
        }
    }

    // === operator control ===

    async fn control(
        &mut self,
        action: fleet_proto::v1::ControlAction,
        name: &str,
        operator: &str,
    ) -> Result<String, String> {
        use fleet_proto::v1::ControlAction as A;
        let spec = self
            .roster
            .agents
            .iter()
            .find(|a| a.name.as_str() == name)
            .cloned();
        let pane = self.agents.get(name).and_then(|a| a.pane.clone());
        // Our pidfd may know of a death tmux 3.3a has not reported yet.
        let exited = self.agents.get(name).is_some_and(|a| a.exited);
        let who = [("operator", operator.to_owned())];
        if action != A::Attach
            && let Some(why) = self.tmux_unavailable()
        {
            return Err(why);
        }
        let outcome = match action {
            A::Attach => {
                self.events.emit(
                    name,
                    EventKind::Attach,
                    format!("{operator} took the session over interactively"),
                    &who,
                );
                return Ok("attach recorded".into());
            }
            A::Stop => {
                let Some(spec) = spec else {
                    return Err(format!(
                        "{name} is not in the roster; hostd does not stop unmanaged sessions"
                    ));
                };
                self.set_stopped(name, true);
                if let Some(p) = &pane {
                    let tree = proc::ProcTable::subtree(p.pane_pid).pids();
                    let killed = self
                        .tmux
                        .run(["kill-session", "-t", &tmux::exact(spec.name.as_str())])
                        .await;
                    if let Err(e) = killed {
                        self.tmux_failed(&e);
                        return Err(e.to_string());
                    }
                    end_tree_later(tree);
                }
                "stopped; hostd will not start it until `fleetctl start`".to_owned()
            }
            A::Start | A::Restart => {
                let Some(spec) = spec else {
                    return Err(format!("{name} is not in the roster"));
                };
                self.set_stopped(name, false);
                match pane {
                    None => {
                        self.launch(&spec).await?;
                        self.count_restart(name);
                        "started".to_owned()
                    }
                    Some(p) if p.dead || exited || action == A::Restart => {
                        let tree = proc::ProcTable::subtree(p.pane_pid).pids();
                        let respawned = self.respawn(&spec, &p.pane_id).await;
                        end_tree_later(tree);
                        if let Err(e) = respawned {
                            self.tmux_failed(&e);
                            return Err(e.to_string());
                        }
                        self.count_restart(name);
                        let agent = self.agents.entry(name.to_owned()).or_default();
                        agent.last_event = "restarted".into();
                        format!("respawned in pane {}", p.pane_id)
                    }
                    Some(_) => "already running".to_owned(),
                }
            }
            A::Reset | A::Unspecified => return Err("not a table action".into()),
        };
        let kind = match action {
            A::Stop => EventKind::Stop,
            A::Start => EventKind::Start,
            _ => EventKind::Restart,
        };
        if let Some(a) = self.agents.get_mut(name) {
            a.last_event = kind.word().into();
        }
        self.events
            .emit(name, kind, format!("{outcome} (by {operator})"), &who);
        Ok(outcome)
    }

    fn set_stopped(&mut self, name: &str, stopped: bool) {
        let changed = if stopped {
            self.stopped.insert(name.to_owned())
        } else {
            self.stopped.remove(name)
        };
        if changed {
            let list: String = self.stopped.iter().map(|n| format!("{n}\n")).collect();
            records::write(&self.cfg.run_dir, records::STOPPED, &list);
        }
    }

    /// One more restart of `name`, kept across hostd restarts.
    fn count_restart(&mut self, name: &str) {
        self.agents.entry(name.to_owned()).or_default().restarts += 1;
        let list: String = self
            .agents
            .iter()
            .filter(|(_, a)| a.restarts > 0)
            .map(|(n, a)| format!("{n} {}\n", a.restarts))
            .collect();
        records::write(&self.cfg.run_dir, records::RESTARTS, &list);
    }

    /// Respawns the pane in place: same pane id, a new process, the same
    /// environment as a fresh start.
    async fn respawn(&mut self, spec: &AgentSpec, pane_id: &str) -> Result<(), tmux::TmuxError> {
        let (command, env) = self.prepare_launch(spec);
        self.tmux
            .respawn(pane_id, &spec.workdir, &env, &command)
            .await?;
        let a = self.agents.entry(spec.name.to_string()).or_default();
        a.exited = false;
        a.process = None;
        a.launched = Some(Instant::now());
        Ok(())
    }

    /// The command and environment of a fresh start: the runtime's native
    /// status mechanism wired in (or why not, as an event), and the last
    /// run's status forgotten so a new process starts without it.
    fn prepare_launch(&mut self, spec: &AgentSpec) -> (String, tmux::PaneEnv) {
        let mut env = self.pane_env(spec);
        let mut command = spec.command.clone();
        let name = spec.name.to_string();
        let a = self.agents.entry(name.clone()).or_default();
        // Reports from before this start are the last run's.
        a.launched_wall = Some(SystemTime::now());
        a.native_status = None;
        a.observed = None;
        match native::wire(&self.cfg.run_dir, spec, self.fleetctl.as_deref()) {
            Ok(Some(w)) => {
                command.push_str(&w.args);
                for (k, v) in w.env {
                    env.retain(|(ek, _)| *ek != k);
                    env.push((k, v));
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.events
                    .emit(&name, EventKind::NativeOff, e.to_string(), &[]);
            }
        }
        (command, env)
    }

    /// Starts every roster agent that has no session (and was not stopped
    /// by an operator).
    async fn launch_missing(&mut self) {
        let specs: Vec<AgentSpec> = self.roster.agents.clone();
        for spec in specs {
            let name = spec.name.to_string();
            let has = self.agents.get(&name).is_some_and(|a| a.pane.is_some());
            if has || self.stopped.contains(&name) {
                continue;
            }
            if self.unresponsive.is_some() {
                return;
            }
            // A failure is an event and the supervisor's to retry.
            let _ = self.launch(&spec).await;
        }
    }

    /// Creates the agent's session; a failure is a `start-failed` event
    /// and the error.
    async fn launch(&mut self, spec: &AgentSpec) -> Result<(), String> {
        let name = spec.name.to_string();
        let (command, env) = self.prepare_launch(spec);
        let launch = tmux::Launch {
            name: &name,
            workdir: &spec.workdir,
            env: &env,
            command: &command,
            size: self.cfg.pane_size,
        };
        match self.tmux.launch(&launch).await {
            Ok(Some(created)) => {
                let agent = self.agents.entry(name.clone()).or_default();
                agent.last_event = "started".into();
                agent.launched = Some(Instant::now());
                self.events.emit(
                    &name,
                    EventKind::Started,
                    format!("started {} (pid {})", spec.runtime, created.pane_pid),
                    &[
                        ("pid", created.pane_pid.to_string()),
                        ("pane", created.pane_id.clone()),
                        ("command", spec.command.clone()),
                    ],
                );
            }
            Ok(None) => {}
            Err(e) => {
                self.tmux_failed(&e);
                let agent = self.agents.entry(name.clone()).or_default();
                agent.last_event = "start-failed".into();
                self.events
                    .emit(&name, EventKind::StartFailed, e.to_string(), &[]);
                return Err(e.to_string());
            }
        }
        Ok(())
    }

    /// The pane's environment, set with `new-session -e` so it reaches the
    /// pane (panes inherit the tmux server's environment, not hostd's).
    fn pane_env(&self, spec: &AgentSpec) -> tmux::PaneEnv {
        let interval = spec
            .heartbeat_interval
            .unwrap_or(self.cfg.heartbeat_interval);
        let mut env: tmux::PaneEnv = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("PATH".into(), pane_path(&spec.path_prefix, &self.cfg.home)));
        env.push((heartbeat::ENV_AGENT.into(), spec.name.to_string()));
        env.push((heartbeat::ENV_TENANT.into(), self.cfg.tenant.clone()));
        env.push((
            heartbeat::ENV_HEARTBEAT_FILE.into(),
            heartbeat::path_for(&self.cfg.run_dir, &spec.name)
                .display()
                .to_string(),
        ));
        env.push((
            heartbeat::ENV_HEARTBEAT_INTERVAL.into(),
            format_secs(interval),
        ));
        env
    }

    // === roster ===

    /// Reads the roster beside the owner (a blocking worker); the result
    /// comes back to [`apply_reload`](Self::apply_reload). A reload asked
    /// for while one runs is one more after it.
    fn reload(&mut self, why: &'static str) {
        if self.reloading {
            self.reload_again = Some(why);
            return;
        }
        self.reloading = true;
        let path = self.roster.path.clone();
        self.roster_mtime = mtime(&path);
        let (home, tx) = (self.cfg.home.clone(), self.reloads_tx.clone());
        tokio::task::spawn_blocking(move || {
            let _ = tx.send((why, roster::load(&path, &home)));
        });
    }

    async fn apply_reload(&mut self, why: &str, loaded: Result<Roster, roster::RosterError>) {
        self.reloading = false;
        let path = self.roster.path.clone();
        match loaded {
            Ok(new) => {
                let old = self.roster.names();
                let now = new.names();
                let mut added: Vec<_> = now.difference(&old).cloned().collect();
                let mut removed: Vec<_> = old.difference(&now).cloned().collect();
                added.sort();
                removed.sort();
                if new.tmux != self.roster.tmux {
                    tracing::warn!(
                        "tmux settings changed in the roster; they apply at the next hostd start"
                    );
                }
                let tmux = self.roster.tmux.clone();
                self.roster = Roster { tmux, ..new };
                self.roster_tx.send_replace(Arc::new(self.roster.clone()));
                self.roster_loaded_at = clock::now_ms();
                self.events.emit(
                    "",
                    EventKind::RosterReloaded,
                    format!(
                        "roster reloaded ({why}): {} agents, added [{}], removed [{}] (removed agents keep running, unmanaged)",
                        self.roster.agents.len(),
                        added.join(", "),
                        removed.join(", ")
                    ),
                    &[("path", path.display().to_string())],
                );
                self.launch_missing().await;
                self.want_read();
            }
            Err(e) => {
                tracing::warn!(error = %e, "roster rejected; keeping the last good one");
                self.events.emit(
                    "",
                    EventKind::RosterRejected,
                    format!(
                        "{}; keeping the last good roster",
                        at_most(&e.to_string(), 1024)
                    ),
                    &[("path", path.display().to_string())],
                );
                self.publish();
            }
        }
    }

    // === periodic ===

    async fn tick(&mut self) {
        if let Some(since) = self.tmux_down_since
            && since.elapsed() >= Duration::from_secs(1)
        {
            self.tmux_down_since = Some(Instant::now());
            self.retry_tmux().await;
        }
        if mtime(&self.roster.path) != self.roster_mtime {
            self.reload("file changed");
        }
        if self.last_resync.elapsed() >= self.cfg.resync {
            self.last_resync = Instant::now();
            self.want_read();
            self.update_processes(true);
            if self.unresponsive.is_none() {
                self.sweep_watchers();
            }
        } else if self.reads.last_done.is_none_or(|t| t.elapsed() >= PROBE) {
            // Also the probe that notices a stopped tmux (and its return)
            // when nothing else asks it anything.
            self.want_read();
        }
        if self
            .unit_checked
            .is_none_or(|t| t.elapsed() >= self.cfg.systemd.recheck)
        {
            self.check_unit().await;
        }
        self.scan_beats();
        self.publish();
    }

    /// Sweeps orphaned watch sessions beside the owner.
    fn sweep_watchers(&self) {
        let (tmux, events) = (self.tmux.clone(), self.events.clone());
        tokio::spawn(async move { sweep_watchers(&tmux, &events).await });
    }

    async fn check_unit(&mut self) {
        let probe = self.probe.clone();
        self.unit_checked = Some(Instant::now());
        if let Ok(state) = tokio::task::spawn_blocking(move || probe.state()).await {
            self.unit = state;
        }
    }

    /// Hands the heartbeat files to a blocking worker (file I/O never runs
    /// on the owner task); the answer comes back as [`BeatScan`]s. One scan
    /// at a time: a slow disk delays beats, not the table.
    fn scan_beats(&mut self) {
        if self.beats_in_flight {
            return;
        }
        let specs = self.roster.by_name();
        let mut jobs = Vec::new();
        for (name, agent) in &self.agents {
            let Some(spec) = specs.get(name.as_str()) else {
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
            let dir = ensure_run_dir(&run_dir);
            let _ = tx.send(BeatScans {
                run_dir: dir,
                agents: jobs.into_iter().map(|j| scan_beat(j, now)).collect(),
            });
        });
    }

    /// Folds a beat scan into the rows: source, the runtime's own status,
    /// and health (raising health-change events). Health is `healthy` only
    /// while the pane lives and the beat comes from its process tree.
    fn fold_beats(&mut self, scans: BeatScans) {
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

    fn publish(&mut self) {
        let now = clock::now_ms();
        let boot_gap = systemd::boot_enable_gap(&self.unit);
        let specs = self.roster.by_name();
        let prev = self.publish.borrow().clone();
        let prev_rows: HashMap<&str, &AgentRow> =
            prev.agents.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut rows = Vec::with_capacity(self.agents.len());
        for (name, agent) in &self.agents {
            let spec = specs.get(name.as_str()).copied();
            let mut row = self.row(name, agent, spec, boot_gap);
            let prev_row = prev_rows.get(name.as_str()).copied();
            if let Some(hb) = row.heartbeat.as_mut() {
                // The status holds since it last changed.
                hb.status_since_unix_ms = prev_row
                    .and_then(|p| p.heartbeat.as_ref())
                    .filter(|p| p.status == hb.status)
                    .map_or(now, |p| p.status_since_unix_ms);
            }
            let same = prev_row.is_some_and(|p| {
                row.observed_at_unix_ms = p.observed_at_unix_ms;
                *p == row
            });
            if !same {
                row.observed_at_unix_ms = now;
                flag_events(&self.events, name, prev_row, &row);
                status_events(&self.events, name, prev_row, &row);
            }
            rows.push(row);
        }
        let host = self.host_row(&rows, boot_gap);
        let mut host_cmp = host.clone();
        host_cmp.last_seen_unix_ms = prev.host.last_seen_unix_ms;
        if rows == prev.agents && host_cmp == prev.host {
            return;
        }
        self.publish
            .send_replace(Arc::new(View { agents: rows, host }));
    }

    fn row(&self, name: &str, agent: &Agent, spec: Option<&AgentSpec>, boot_gap: bool) -> AgentRow {
        let mut row = AgentRow {
            tenant_id: self.cfg.tenant.clone(),
            host: self.cfg.host.clone(),
            name: name.to_owned(),
            restarts: agent.restarts,
            last_event: agent.last_event.clone(),
            supervision: self
                .supervision
                .get(name)
                .map(|s| fleet_proto::vocab::describe(s, clock::now_ms()))
                .unwrap_or_default(),
            supervisor: self.supervision.get(name).cloned(),
            ..Default::default()
        };
        if let Some(spec) = spec {
            row.runtime = spec.runtime.clone();
            row.class = spec.class.clone();
            row.expected_processes = spec.process_names.clone();
            if let Some(m) = model_flag(&spec.command) {
                // What the runtime was told to run (aider never says).
                row.model = m;
                row.model_source = "command-line".into();
            } else if let Some(hint) = &spec.model_hint {
                row.model = hint.clone();
                row.model_source = "roster-hint".into();
            }
        } else {
            row.flag(AgentFlag::Unmanaged);
        }
        row.pane = match &agent.pane {
            None => PaneState::Missing,
            Some(p) if p.dead || agent.exited => PaneState::Dead,
            Some(_) => PaneState::Alive,
        } as i32;
        if let Some(p) = &agent.pane {
            row.pane_id = p.pane_id.clone();
            row.pane_pid = p.pane_pid;
            row.pane_command = p.current_command.clone();
            row.last_activity_unix_ms = p.activity.saturating_mul(1000);
            row.exit_status = p.dead_status;
            row.exit_signal = p.dead_signal;
            if p.in_mode {
                row.flag(AgentFlag::InMode);
            }
        }
        if let Some(proc) = &agent.process {
            row.process = Some(Process {
                pid: proc.pid,
                name: proc.name.clone(),
                cmdline: proc.cmdline.clone(),
            });
            let drift = spec.is_some_and(|s| !proc::matches_runtime(proc, &s.process_names))
                && agent.launched.is_none_or(|t| t.elapsed() >= DRIFT_GRACE);
            if drift {
                row.flag(AgentFlag::Drift);
            }
        }
        if boot_gap {
            row.flag(AgentFlag::BootEnable);
        }
        if self.stopped.contains(name) {
            row.flag(AgentFlag::Stopped);
        }
        let interval = spec
            .and_then(|s| s.heartbeat_interval)
            .unwrap_or(self.cfg.heartbeat_interval);
        let mut hb = fleet_proto::v1::Heartbeat {
            source: agent.source as i32,
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            ..Default::default()
        };
        match &agent.beat {
            Some(b) if spec.is_some() => {
                let now = time::OffsetDateTime::now_utc();
                hb.health = agent.health.unwrap_or(Health::Unknown) as i32;
                if let Ok(beat) = &b.result {
                    hb.ts_unix_ms = i64::try_from(beat.ts.unix_timestamp_nanos() / 1_000_000)
                        .unwrap_or_default();
                    hb.pid = beat.pid;
                    hb.turn = beat.turn;
                    if let Some(m) = &beat.model {
                        hb.model = m.clone();
                        row.model = m.clone();
                        row.model_source = "self-reported".into();
                    }
                }
                if hb.health != Health::Healthy as i32 {
                    hb.reason = if agent.health.is_some() {
                        agent.health_why.clone()
                    } else {
                        health_reason(&b.result, now, interval)
                    };
                }
            }
            _ => {
                hb.health = Health::Unknown as i32;
                hb.reason = if spec.is_some() {
                    "not read yet".into()
                } else {
                    "unmanaged session: hostd keeps no heartbeat for it".into()
                };
            }
        }
        if let Some(spec) = spec {
            let alive = agent.pane.as_ref().is_some_and(|p| !p.dead) && !agent.exited;
            let pid = agent.pane.as_ref().map(|p| p.pane_pid);
            let got = status::resolve(status::Evidence {
                alive,
                native: agent.native_status.map(|(s, t)| (s, t.elapsed())),
                observed: agent
                    .observed
                    .as_ref()
                    .filter(|(p, _, _)| Some(*p) == pid)
                    .map(|(_, o, t)| (o, t.elapsed())),
                silent_start: spec.native
                    && !spec.native_kind.reports_turn_start()
                    && spec.native_kind != crate::runtime::Native::None,
            });
            hb.status = got.status as i32;
            hb.status_source = got.source as i32;
            hb.status_detail = got.detail;
        }
        row.heartbeat = Some(hb);
        row
    }

    fn host_row(&self, rows: &[AgentRow], boot_gap: bool) -> HostRow {
        let count = |f: &dyn Fn(&AgentRow) -> bool| {
            u32::try_from(rows.iter().filter(|r| f(r)).count()).unwrap_or(u32::MAX)
        };
        let mut row = HostRow {
            tenant_id: self.cfg.tenant.clone(),
            host: self.cfg.host.clone(),
            uid: self.cfg.uid,
            hostd_version: env!("CARGO_PKG_VERSION").to_owned(),
            boot_epoch: self.epoch,
            started_at_unix_ms: self.started_at,
            tmux_socket: self.tmux.socket().to_owned(),
            tmux_running: self.control.is_some(),
            agents_total: count(&|_| true),
            agents_alive: count(&|r| r.pane == PaneState::Alive as i32),
            agents_healthy: count(&|r| {
                r.heartbeat
                    .as_ref()
                    .is_some_and(|h| h.health == Health::Healthy as i32)
            }),
            unit: Some(self.unit.clone()),
            roster_path: self.roster.path.display().to_string(),
            roster_loaded_at_unix_ms: self.roster_loaded_at,
            last_seen_unix_ms: clock::now_ms(),
            link: "local".into(),
            via: String::new(),
            uplinks: self.uplinks.values().cloned().collect(),
            ..Default::default()
        };
        if boot_gap {
            row.flag(HostFlag::BootEnable);
        }
        if self.unresponsive.is_some() {
            row.flag(HostFlag::TmuxUnresponsive);
        }
        row
    }
}

/// The value of a `--model X`, `--model=X` or `-m X` in a command line.
fn model_flag(command: &str) -> Option<String> {
    let mut words = command.split_whitespace();
    while let Some(w) = words.next() {
        if let Some(v) = w.strip_prefix("--model=") {
            return Some(v.to_owned()).filter(|v| !v.is_empty());
        }
        if w == "--model" || w == "-m" {
            return words.next().map(str::to_owned);
        }
    }
    None
}

/// `drift` raised or cleared: both are events.
fn flag_events(events: &EventLog, name: &str, prev: Option<&AgentRow>, row: &AgentRow) {
    let had = |r: &AgentRow| r.has(AgentFlag::Drift);
    let before = prev.is_some_and(had);
    let process = row
        .process
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_default();
    if had(row) && !before {
        events.emit(
            name,
            EventKind::Drift,
            format!(
                "runs {process:?}, but runtime {} runs as one of [{}]",
                row.runtime,
                row.expected_processes.join(", ")
            ),
            &[("process", process)],
        );
    } else if before && !had(row) {
        let why = if process.is_empty() {
            "the process is gone".to_owned()
        } else {
            format!("now runs {process:?}")
        };
        events.emit(name, EventKind::DriftCleared, why, &[("process", process)]);
    }
}

/// Turn starts and ends (shown by `fleetctl events --kind`), and a runtime
/// that starts or stops asking a human (`waiting-for-human`, which reaches
/// operators and the first mate like `need-human`).
fn status_events(events: &EventLog, name: &str, prev: Option<&AgentRow>, row: &AgentRow) {
    let Some(hb) = &row.heartbeat else { return };
    let was = prev
        .and_then(|p| p.heartbeat.as_ref())
        .map(|h| (h.status, h.turn));
    let status = AgentStatus::try_from(hb.status).unwrap_or(AgentStatus::Unspecified);
    let source = StatusSource::word_of(hb.status_source).to_owned();
    let Some((was_status, was_turn)) = was else {
        return;
    };
    let was_status = AgentStatus::try_from(was_status).unwrap_or(AgentStatus::Unspecified);
    let turn = hb.turn.map(|t| t.to_string()).unwrap_or_default();
    let fields = [("source", source.clone()), ("turn", turn.clone())];
    if status == AgentStatus::Busy && (was_status != AgentStatus::Busy || hb.turn > was_turn) {
        events.emit(
            name,
            EventKind::TurnStarted,
            format!(
                "turn {} started ({source})",
                if turn.is_empty() { "?" } else { &turn }
            ),
            &fields,
        );
    }
    if was_status == AgentStatus::Busy && status != AgentStatus::Busy {
        let detail = if hb.status_detail.is_empty() {
            String::new()
        } else {
            format!(": {}", hb.status_detail)
        };
        events.emit(
            name,
            EventKind::TurnEnded,
            format!("turn ended ({source}){detail}"),
            &fields,
        );
    }
    if status == AgentStatus::Waiting && was_status != AgentStatus::Waiting {
        let what = if hb.status_detail.is_empty() {
            "the runtime asks for a human".to_owned()
        } else {
            hb.status_detail.clone()
        };
        events.emit(
            name,
            EventKind::WaitingForHuman,
            format!("waiting for a human: {what}"),
            &[("source", source), ("question", what.clone())],
        );
    } else if was_status == AgentStatus::Waiting && status != AgentStatus::Waiting {
        events.emit(
            name,
            EventKind::WaitingCleared,
            "no longer waiting for a human",
            &fields,
        );
    }
}

/// Removes read-only watch sessions nobody is attached to any more (a
/// `fleetctl watch` that was killed before it could clean up): only
/// sessions carrying [`tmux::WATCHER_OPTION`], whatever their names.
async fn sweep_watchers(tmux: &Tmux, events: &EventLog) {
    let format = format!(
        "#{{{}}}\t#{{session_attached}}\t#{{session_created}}\t#{{session_name}}",
        tmux::WATCHER_OPTION
    );
    let Ok(out) = tmux.run(["list-sessions", "-F", &format]).await else {
        return;
    };
    let now = clock::now_ms() / 1000;
    for line in out.lines() {
        let mut f = line.splitn(4, '\t');
        let (Some(mark), Some(attached), Some(created), Some(name)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let created: i64 = created.parse().unwrap_or(now);
        // A watcher is briefly unattached between creation and attach.
        if !mark.is_empty() && attached == "0" && now - created >= 5 {
            let _ = tmux.run(["kill-session", "-t", &tmux::exact(name)]).await;
            events.emit(
                "",
                EventKind::WatcherSwept,
                format!("removed orphaned watch session {name}"),
                &[],
            );
        }
    }
}

fn announce_death(events: &EventLog, name: &str, agent: &mut Agent, how: String) {
    let pid = agent.pane.as_ref().map(|p| p.pane_pid).unwrap_or_default();
    events.emit(
        name,
        EventKind::Died,
        format!("pane process {pid} ended: {how}"),
        &[("pid", pid.to_string()), ("how", how.clone())],
    );
    agent.last_event = how;
}

fn death_words(status: Option<i32>, signal: Option<i32>) -> String {
    match (status, signal) {
        (Some(s), _) => format!("died (status {s})"),
        (None, Some(sig)) => format!("died (signal {sig})"),
        (None, None) => "died".to_owned(),
    }
}

/// The fallback beat: fresh `ts` and the pane's pid; status, model, turn
/// and turn key are carried over from the file as it is now (read under
/// the beat's writer lock, so a hook's update in between is never lost; a
/// lock someone else holds skips this beat).
fn write_fallback(
    path: &std::path::Path,
    pid: u32,
    now: time::OffsetDateTime,
) -> Result<(), std::io::Error> {
    let Some(_lock) = heartbeat::lock(path, Duration::ZERO) else {
        return Ok(());
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
    heartbeat::write_atomic(path, &beat).inspect_err(|e| {
        tracing::warn!(path = %path.display(), error = %e, "cannot write fallback heartbeat");
    })
}

fn to_wire_health(h: &heartbeat::Health) -> Health {
    match h {
        heartbeat::Health::Healthy => Health::Healthy,
        heartbeat::Health::Stale => Health::Stale,
        heartbeat::Health::Unknown(_) => Health::Unknown,
    }
}

fn health_reason(
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

/// `text`, cut to at most `max` bytes (on a character boundary) with a
/// note of what was cut: an event never carries a file's worth of it.
fn at_most(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..cut], text.len() - cut)
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn format_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", d.as_secs())
    } else {
        format!("{s}")
    }
}

/// PATH for panes: the roster's prefixes, the usual user-level bin dirs
/// that exist, hostd's own directory (so bundled tools such as
/// `fleet-demo-agent` and `fleetctl` resolve), then hostd's PATH.
pub fn pane_path(prefix: &[PathBuf], home: &std::path::Path) -> String {
    let mut dirs: Vec<PathBuf> = prefix.to_vec();
    for d in [".npm-global/bin", ".local/bin", ".cargo/bin"] {
        let p = home.join(d);
        if p.is_dir() {
            dirs.push(p);
        }
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_owned());
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    std::env::join_paths(dirs)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_a_command_line_names() {
        assert_eq!(
            model_flag("aider --model gpt-4o --no-git").as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            model_flag("opencode -m anthropic/x").as_deref(),
            Some("anthropic/x")
        );
        assert_eq!(model_flag("pi --model=m1").as_deref(), Some("m1"));
        assert_eq!(model_flag("claude"), None);
    }
}
