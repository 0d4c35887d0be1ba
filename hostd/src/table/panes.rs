//! Folding tmux's panes and the pidfd exits into the agents: deaths, adoptions, processes.

use super::*;

/// Ends a killed pane's whole process tree in the background (the owner
/// task never waits for it).
pub(super) fn end_tree_later(pids: Vec<u32>) {
    tokio::spawn(async move {
        let n = proc::end_tree(pids, Duration::from_secs(1)).await;
        if n > 0 {
            tracing::debug!(processes = n, "ended what outlived the pane");
        }
    });
}

pub(super) fn announce_death(events: &EventLog, name: &str, agent: &mut Agent, how: String) {
    let pid = agent.pane.as_ref().map(|p| p.pane_pid).unwrap_or_default();
    events.emit(
        name,
        EventKind::Died,
        format!("pane process {pid} ended: {how}"),
        &[("pid", pid.to_string()), ("how", how.clone())],
    );
    agent.last_event = how;
}

pub(super) fn death_words(status: Option<i32>, signal: Option<i32>) -> String {
    match (status, signal) {
        (Some(s), _) => format!("died (status {s})"),
        (None, Some(sig)) => format!("died (signal {sig})"),
        (None, None) => "died".to_owned(),
    }
}

impl Table {
    /// Folds a `list-panes -a` result into the table.
    pub(super) fn apply_panes(&mut self, panes: Vec<Pane>, initial: bool) {
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
    pub(super) fn update_processes(&mut self, all: bool) {
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

    /// Agents whose foreground program is not (yet) one of their runtime's
    /// — a launcher still running, or drift — are looked at again: an exec
    /// that prints nothing raises no tmux notification and moves no window,
    /// so only /proc shows it. Settled agents wait for the resync.
    pub(super) fn recheck_unsettled(&mut self) {
        for (name, agent) in self.agents.iter_mut() {
            let Some(p) = &agent.pane else { continue };
            let Some(spec) = self.roster.agent(name) else {
                continue;
            };
            if p.dead || agent.exited || spec.process_names.is_empty() {
                continue;
            }
            let settled = agent
                .process
                .as_ref()
                .is_some_and(|pr| proc::matches_runtime(pr, &spec.process_names));
            if settled {
                agent.candidate = None;
                continue;
            }
            let table = proc::ProcTable::subtree(p.pane_pid);
            let seen = proc::foreground(&table, p.pane_pid);
            let key = seen.as_ref().map(|s| (s.pid, s.name.clone()));
            let same = |pr: &Option<ProcInfo>| pr.as_ref().map(|s| (s.pid, s.name.clone())) == key;
            if same(&agent.process) {
                agent.candidate = None;
            } else if agent.candidate == key {
                agent.process = seen;
                agent.candidate = None;
            } else {
                agent.candidate = key;
            }
        }
    }

    /// A pane process ended (pidfd). Mark it at once; ask tmux shortly after.
    pub(super) fn on_exit(&mut self, pid: u32) {
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
    pub(super) async fn nudge_unreaped(&mut self) {
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
}
