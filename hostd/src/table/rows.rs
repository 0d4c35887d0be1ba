//! Projecting the agents into rows and publishing the view, with the events a changed row implies.

use super::*;

/// The value of a `--model X`, `--model=X` or `-m X` in a command line.
pub(super) fn model_flag(command: &str) -> Option<String> {
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
pub(super) fn flag_events(events: &EventLog, name: &str, prev: Option<&AgentRow>, row: &AgentRow) {
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
pub(super) fn status_events(
    events: &EventLog,
    name: &str,
    prev: Option<&AgentRow>,
    row: &AgentRow,
) {
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

/// `text`, cut to at most `max` bytes (on a character boundary) with a
/// note of what was cut: an event never carries a file's worth of it.
pub(super) fn at_most(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..cut], text.len() - cut)
}

impl Table {
    pub(super) fn publish(&mut self) {
        let now = clock::now_ms();
        let boot_gap = systemd::boot_enable_gap(&self.unit);
        let prev = self.publish.borrow().clone();
        // Both are in name order (the agents are a BTreeMap, and every view
        // is made here): walk them together.
        let mut prev_rows = prev.agents.iter().peekable();
        let mut changed = prev.agents.len() != self.agents.len();
        let mut rows = Vec::with_capacity(self.agents.len());
        for (name, agent) in &self.agents {
            let spec = self.roster.agent(name);
            let mut row = self.row(name, agent, spec, boot_gap);
            while prev_rows.next_if(|p| p.name < *name).is_some() {}
            let prev_row = prev_rows.next_if(|p| p.name == *name);
            if let Some(hb) = row.heartbeat.as_mut() {
                // The status holds since it last changed.
                hb.status_since_unix_ms = prev_row
                    .and_then(|p| p.heartbeat.as_ref())
                    .filter(|p| p.status == hb.status)
                    .map_or(now, |p| p.status_since_unix_ms);
            }
            let same = prev_row.filter(|p| {
                row.observed_at_unix_ms = p.observed_at_unix_ms;
                ***p == row
            });
            match same {
                Some(p) => rows.push(p.clone()),
                None => {
                    changed = true;
                    row.observed_at_unix_ms = now;
                    let prev_row = prev_row.map(|p| &**p);
                    flag_events(&self.events, name, prev_row, &row);
                    status_events(&self.events, name, prev_row, &row);
                    rows.push(Arc::new(row));
                }
            }
        }
        let host = self.host_row(&rows, boot_gap);
        let mut host_cmp = host.clone();
        host_cmp.last_seen_unix_ms = prev.host.last_seen_unix_ms;
        if !changed && host_cmp == prev.host {
            return;
        }
        self.publish
            .send_replace(Arc::new(View { agents: rows, host }));
    }

    pub(super) fn row(
        &self,
        name: &str,
        agent: &Agent,
        spec: Option<&AgentSpec>,
        boot_gap: bool,
    ) -> AgentRow {
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

    pub(super) fn host_row(&self, rows: &[Arc<AgentRow>], boot_gap: bool) -> HostRow {
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
        if self.history.as_ref().is_some_and(|h| h.failing().is_some()) {
            row.flag(HostFlag::HistoryFailing);
        }
        row
    }
}
