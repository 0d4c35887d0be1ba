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

mod beats;
mod control;
mod launch;
mod lifecycle;
mod panes;
mod reload;
mod rows;

pub use control::ControlError;

use beats::*;
pub use launch::pane_path;
use lifecycle::*;
use panes::*;
use rows::*;

/// Everything a reader needs, published after each change.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// In name order. A row that did not change is the previous view's
    /// own (the same `Arc`): a reader diffing two views skips it unread.
    pub agents: Vec<Arc<AgentRow>>,
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
        reply: tokio::sync::oneshot::Sender<Result<String, ControlError>>,
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

type ControlReply = tokio::sync::oneshot::Sender<Result<String, ControlError>>;

/// A launcher's first moments (`sh -c '…; exec claude'`) are not drift.
const DRIFT_GRACE: Duration = Duration::from_secs(1);

/// Per-agent state kept between refreshes.
#[derive(Debug, Default)]
struct Agent {
    pane: Option<Pane>,
    /// The process doing the work, computed for `pane_pid`.
    process: Option<ProcInfo>,
    /// A newer foreground seen once by the per-tick recheck (pid, name):
    /// taken only when the next tick sees it again, so a process caught
    /// mid-exec (a shim, `env`) is never reported.
    candidate: Option<(u32, String)>,
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
    owed: Vec<(u64, ControlReply, Result<String, ControlError>)>,
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
    /// The durable history, whose failure is a host flag.
    pub history: Option<fleet_store::Store>,
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
            history: None,
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
            // Activity and command changes, and the probe that notices a
            // stopped tmux (and its return) when nothing else asks.
            self.probe();
        }
        self.recheck_unsettled();
        if self
            .unit_checked
            .is_none_or(|t| t.elapsed() >= self.cfg.systemd.recheck)
        {
            self.check_unit().await;
        }
        // A scan's answer publishes (within a tick's work); one in flight
        // still leaves this tick's changes to publish now.
        if !self.scan_beats() {
            self.publish();
        }
    }

    /// Sweeps orphaned watch sessions beside the owner.
    fn sweep_watchers(&self) {
        let Some(control) = self.control.clone() else {
            return;
        };
        let (tmux, events) = (self.tmux.clone(), self.events.clone());
        tokio::spawn(async move { sweep_watchers(&control, &tmux, &events).await });
    }

    async fn check_unit(&mut self) {
        let probe = self.probe.clone();
        self.unit_checked = Some(Instant::now());
        if let Ok(state) = tokio::task::spawn_blocking(move || probe.state()).await {
            self.unit = state;
        }
    }
}

/// Removes read-only watch sessions nobody is attached to any more (a
/// `fleetctl watch` that was killed before it could clean up): only
/// sessions carrying [`tmux::WATCHER_OPTION`], whatever their names. The
/// list comes through the control client (a fresh tmux client every resync
/// costs the server more than the question).
async fn sweep_watchers(control: &Control, tmux: &Tmux, events: &EventLog) {
    let format = format!(
        "#{{{}}}\t#{{session_attached}}\t#{{session_created}}\t#{{session_name}}",
        tmux::WATCHER_OPTION
    );
    let Ok(lines) = control
        .command(&format!("list-sessions -F '{format}'"))
        .await
    else {
        return;
    };
    let now = clock::now_ms() / 1000;
    for line in &lines {
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
