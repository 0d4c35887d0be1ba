//! Supervision: respawn crashed agents with backoff and give up (need-human)
//! when they keep dying; poke an idle orchestrator when no worker makes
//! progress; push a change-only digest and need-human alerts to a first
//! mate. The decisions are a pure function of (state, observation, now) →
//! actions ([`Supervisor::decide`]); [`run`] carries them out and feeds the
//! outcomes back.

use fleet_proto::v1::{AgentFlag, EventKind, HostFlag, SupervisorState};
use fleet_proto::vocab::Flagged;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fleet_proto::v1::{AgentRow, AgentStatus, ControlAction, Health, PaneState, Verdict};
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::roster::{Roster, Supervision};
use crate::service::FleetService;
use crate::table::{Command, View};

/// What the supervisor wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Respawn a dead agent's pane (attempt = deaths in the window).
    Respawn { agent: String, reason: String },
    /// Too many deaths: no more respawns until an operator starts it.
    GiveUp { agent: String, reason: String },
    /// A dead pane whose identity cannot be read is never respawned blindly.
    Refuse { agent: String, reason: String },
    /// Type `text` into an idle orchestrator (verified).
    Poke { agent: String, text: String },
    /// The change-only fleet digest for the first mate (verified).
    Digest { agent: String, text: String },
    /// A need-human alert for the first mate, out of band (verified).
    Alert { agent: String, text: String },
}

/// Kept in the run directory (`.supervisor.json`): a hostd restart keeps
/// the death history, a pending respawn and a give-up.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct AgentState {
    /// Unix ms of deaths inside the window.
    deaths: VecDeque<i64>,
    dead: bool,
    /// Pane pid of the death last counted: a dead row with another pid is
    /// a new death even if no tick saw it alive in between.
    dead_pid: u32,
    respawn_at: Option<i64>,
    gave_up: bool,
    refused: bool,
}

#[derive(Debug, Default)]
struct PokeState {
    last_delivered: Option<i64>,
    in_flight: bool,
}

#[derive(Debug, Default)]
struct DigestState {
    last_sent: Option<String>,
    last_attempt: Option<i64>,
    in_flight: bool,
    alerts: VecDeque<String>,
    alert_in_flight: bool,
}

/// Everything the supervisor remembers between ticks.
#[derive(Debug, Default)]
pub struct Supervisor {
    agents: HashMap<String, AgentState>,
    pokes: HashMap<String, PokeState>,
    digest: DigestState,
    /// Agents seen waiting for a human (alerted once per wait).
    waiting: std::collections::HashSet<String>,
    /// tmux answers: a session missing while it does not is the table's
    /// to bring back with the server, not a death.
    tmux_down: bool,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn delivered(v: Verdict) -> bool {
    matches!(v, Verdict::Accepted | Verdict::Queued | Verdict::Delivered)
}

fn status(r: &AgentRow) -> AgentStatus {
    r.heartbeat
        .as_ref()
        .and_then(|h| AgentStatus::try_from(h.status).ok())
        .unwrap_or(AgentStatus::Unspecified)
}

fn healthy(r: &AgentRow) -> bool {
    r.heartbeat
        .as_ref()
        .is_some_and(|h| h.health == Health::Healthy as i32)
}

fn managed(r: &AgentRow) -> bool {
    !r.has(AgentFlag::Unmanaged) && !r.has(AgentFlag::Unreachable)
}

/// Alive and running its runtime's own program: text typed now reaches the
/// agent, not a launcher still starting it (a `drift` row), nor a pane
/// whose process has not been read yet.
/// Alive, its process read, and that process the runtime's own: not drift,
/// and not a launcher still inside its start-up grace (which `ps` does not
/// yet call drift).
fn ready(r: &AgentRow) -> bool {
    let own = r.process.as_ref().is_some_and(|p| {
        let argv0 = p
            .cmdline
            .split_whitespace()
            .next()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or("");
        r.expected_processes.is_empty()
            || r.expected_processes
                .iter()
                .any(|e| *e == p.name || *e == argv0)
    });
    r.pane == PaneState::Alive as i32 && own && !r.has(AgentFlag::Drift)
}

fn stopped(r: &AgentRow) -> bool {
    r.has(AgentFlag::Stopped)
}

fn idle_ms(r: &AgentRow, now: i64) -> i64 {
    if r.last_activity_unix_ms <= 0 {
        return i64::MAX;
    }
    now - r.last_activity_unix_ms
}

/// One line per agent that matters for a digest (fleet-proto's: the MCP
/// server's `fleet_digest` pulls the same text).
pub use fleet_proto::digest::text as digest_text;

impl Supervisor {
    /// The decisions for this tick. Pure: no I/O, no clock but `now`.
    pub fn decide<R: std::borrow::Borrow<AgentRow>>(
        &mut self,
        rows: &[R],
        roster: &Roster,
        now: i64,
    ) -> Vec<Action> {
        let rows: Vec<&AgentRow> = rows.iter().map(R::borrow).collect();
        let rows = rows.as_slice();
        let mut out = Vec::new();
        self.respawns(rows, roster, now, &mut out);
        if let Some(p) = &roster.supervision.poke {
            self.pokes(rows, roster, p, now, &mut out);
        }
        self.first_mate(rows, &roster.supervision, now, &mut out);
        out
    }

    fn respawns(&mut self, rows: &[&AgentRow], roster: &Roster, now: i64, out: &mut Vec<Action>) {
        for r in rows.iter().filter(|r| managed(r)) {
            let Some(spec) = roster.agent(&r.name) else {
                continue;
            };
            let policy = &spec.respawn;
            let st = self.agents.entry(r.name.clone()).or_default();
            // A roster agent not stopped and without a session died too
            // (`kill-session`, its last pane killed, a launch that failed).
            let missing = r.pane == PaneState::Missing as i32 && !self.tmux_down;
            let dead = r.pane == PaneState::Dead as i32 || missing;
            if stopped(r) || !dead {
                if !dead && st.dead {
                    // Back alive; after a give-up only an operator does that,
                    // which is a fresh start.
                    if st.gave_up {
                        st.deaths.clear();
                    }
                    st.gave_up = false;
                }
                st.dead = false;
                st.respawn_at = None;
                st.refused = false;
                continue;
            }
            if !st.dead || r.pane_pid != st.dead_pid {
                if st.dead && st.gave_up {
                    // Started by hand and dead again before a tick saw it.
                    st.deaths.clear();
                    st.gave_up = false;
                }
                st.dead = true;
                st.dead_pid = r.pane_pid;
                st.deaths.push_back(now);
                while st
                    .deaths
                    .front()
                    .is_some_and(|t| now - t > ms(policy.window))
                {
                    st.deaths.pop_front();
                }
                if !policy.enabled {
                    continue;
                }
                let n = u32::try_from(st.deaths.len()).unwrap_or(u32::MAX);
                if n > policy.max_deaths {
                    st.gave_up = true;
                    out.push(Action::GiveUp {
                        agent: r.name.clone(),
                        reason: format!(
                            "died {n} times within {:?} (limit {}); not respawning — start it by hand once fixed",
                            policy.window, policy.max_deaths
                        ),
                    });
                    continue;
                }
                let delay = policy.backoff.delay(n - 1);
                st.respawn_at = Some(now + ms(delay));
            }
            if st.gave_up || !policy.enabled {
                continue;
            }
            if r.pane_id.is_empty() && !missing {
                if !st.refused {
                    st.refused = true;
                    out.push(Action::Refuse {
                        agent: r.name.clone(),
                        reason: "its pane id cannot be read; not respawning blindly".into(),
                    });
                }
                continue;
            }
            if let Some(at) = st.respawn_at
                && at <= now
            {
                st.respawn_at = None;
                out.push(Action::Respawn {
                    agent: r.name.clone(),
                    reason: format!(
                        "death {} of at most {} within {:?}",
                        st.deaths.len(),
                        policy.max_deaths,
                        policy.window
                    ),
                });
            }
        }
    }

    fn pokes(
        &mut self,
        rows: &[&AgentRow],
        roster: &Roster,
        p: &crate::roster::PokePolicy,
        now: i64,
        out: &mut Vec<Action>,
    ) {
        let is_orch = |r: &AgentRow| {
            roster
                .agent(&r.name)
                .is_some_and(|s| p.classes.contains(&s.class))
        };
        let workers: Vec<&AgentRow> = rows
            .iter()
            .copied()
            .filter(|r| managed(r) && roster.agent(&r.name).is_some() && !is_orch(r))
            .collect();
        let progressing = workers.iter().any(|w| {
            w.pane == PaneState::Alive as i32
                && (status(w) == AgentStatus::Busy || idle_ms(w, now) < ms(p.idle))
        });
        for o in rows.iter().filter(|r| managed(r) && is_orch(r)) {
            let st = self.pokes.entry(o.name.clone()).or_default();
            let idle = ready(o)
                && healthy(o)
                && status(o) == AgentStatus::Ok
                && idle_ms(o, now) >= ms(p.idle);
            let cooling = st.last_delivered.is_some_and(|t| now - t < ms(p.cooldown));
            if !idle || progressing || cooling || st.in_flight {
                continue;
            }
            let snapshot: Vec<String> = workers
                .iter()
                .map(|w| {
                    let s = status(w).word();
                    let idle_s = idle_ms(w, now);
                    if w.pane == PaneState::Alive as i32 && idle_s != i64::MAX {
                        format!("{} {s}, quiet {}s", w.name, idle_s / 1000)
                    } else {
                        format!(
                            "{} {}",
                            w.name,
                            if w.pane == PaneState::Dead as i32 {
                                "dead"
                            } else {
                                "missing"
                            }
                        )
                    }
                })
                .collect();
            st.in_flight = true;
            out.push(Action::Poke {
                agent: o.name.clone(),
                text: format!(
                    "{} Workers: {}.",
                    p.text,
                    if snapshot.is_empty() {
                        "none".into()
                    } else {
                        snapshot.join("; ")
                    }
                ),
            });
        }
    }

    /// An agent asked for a human (`fleetctl mcp`'s need-human): the first
    /// mate hears it with the next alerts.
    pub fn asked(&mut self, agent: &str, text: &str) {
        self.digest
            .alerts
            .push_back(format!("[fleet NEED HUMAN] {agent} asks: {text}"));
    }

    fn first_mate(&mut self, rows: &[&AgentRow], s: &Supervision, now: i64, out: &mut Vec<Action>) {
        let Some(fm) = &s.first_mate else {
            return;
        };
        let mate_ready = rows.iter().any(|r| r.name == *fm && ready(r));
        // Alerts collected this tick go out at once, out of band.
        for a in out.iter() {
            if let Action::GiveUp { agent, reason } = a {
                self.digest
                    .alerts
                    .push_back(format!("[fleet NEED HUMAN] {agent}: {reason}"));
            }
        }
        // A runtime asking a human is a need-human too, once per wait.
        for r in rows.iter().filter(|r| r.name != *fm) {
            let waiting = status(r) == AgentStatus::Waiting;
            if waiting && self.waiting.insert(r.name.clone()) {
                let asks = r
                    .heartbeat
                    .as_ref()
                    .map(|h| h.status_detail.clone())
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "permission or a question".into());
                self.digest
                    .alerts
                    .push_back(format!("[fleet WAITING] {} asks: {asks}", r.name));
            } else if !waiting {
                self.waiting.remove(&r.name);
            }
        }
        if !mate_ready {
            return;
        }
        let d = &mut self.digest;
        if !d.alert_in_flight
            && let Some(text) = d.alerts.front()
        {
            d.alert_in_flight = true;
            out.push(Action::Alert {
                agent: fm.clone(),
                text: text.clone(),
            });
        }
        let text = digest_text(rows, fm);
        let due = d
            .last_attempt
            .is_none_or(|t| now - t >= ms(s.digest_interval));
        if d.last_sent.as_deref() != Some(&text) && due && !d.in_flight {
            d.in_flight = true;
            d.last_attempt = Some(now);
            out.push(Action::Digest {
                agent: fm.clone(),
                text,
            });
        }
    }

    /// Whether tmux is down or not answering (the table's to recover).
    pub fn set_tmux_down(&mut self, down: bool) {
        self.tmux_down = down;
    }

    /// A respawn that failed is a death too: counted at the next decision,
    /// with the same backoff, cap and give-up.
    pub fn respawn_failed(&mut self, agent: &str) {
        if let Some(st) = self.agents.get_mut(agent) {
            st.dead = false;
        }
    }

    /// The death history worth keeping across a hostd restart, as JSON.
    pub fn memory(&self) -> String {
        let kept: BTreeMap<&String, &AgentState> = self
            .agents
            .iter()
            .filter(|(_, st)| !st.deaths.is_empty() || st.gave_up || st.dead)
            .collect();
        serde_json::to_string(&kept).unwrap_or_default()
    }

    /// A supervisor that remembers what [`memory`](Self::memory) wrote
    /// (garbage is forgotten, with a warning).
    pub fn remembering(memory: &str) -> Self {
        let agents = if memory.trim().is_empty() {
            HashMap::new()
        } else {
            serde_json::from_str::<HashMap<String, AgentState>>(memory).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "supervisor memory unreadable; starting afresh");
                HashMap::new()
            })
        };
        let agents = agents
            .into_iter()
            .filter(|(name, _)| fleet_proto::name::check(name).is_ok())
            .collect();
        Self {
            agents,
            ..Self::default()
        }
    }

    /// Feeds back how a send action ended (`None`: it failed outright).
    pub fn outcome(&mut self, action: &Action, verdict: Option<Verdict>, now: i64) {
        let ok = verdict.is_some_and(delivered);
        match action {
            Action::Poke { agent, .. } => {
                let st = self.pokes.entry(agent.clone()).or_default();
                st.in_flight = false;
                if ok {
                    st.last_delivered = Some(now);
                }
            }
            Action::Digest { text, .. } => {
                self.digest.in_flight = false;
                if ok {
                    self.digest.last_sent = Some(text.clone());
                }
            }
            Action::Alert { .. } => {
                self.digest.alert_in_flight = false;
                if ok {
                    self.digest.alerts.pop_front();
                }
            }
            _ => {}
        }
    }

    /// A word or two for `ps` about what supervision is doing with `agent`.
    pub fn state_of(&self, agent: &str) -> Option<fleet_proto::v1::Supervision> {
        let st = self.agents.get(agent)?;
        let deaths = u32::try_from(st.deaths.len()).unwrap_or(u32::MAX);
        let (state, next) = if st.gave_up {
            (SupervisorState::GaveUp, 0)
        } else if let Some(at) = st.respawn_at {
            (SupervisorState::RespawnPending, at)
        } else if st.refused {
            (SupervisorState::Refused, 0)
        } else {
            return None;
        };
        Some(fleet_proto::v1::Supervision {
            state: state as i32,
            deaths,
            next_attempt_unix_ms: next,
        })
    }
}

/// Carries out the decisions every `supervision.tick` until shutdown.
pub async fn run(
    svc: FleetService,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let run_dir = svc.run_dir.clone();
    let mut sup =
        Supervisor::remembering(&crate::records::read(&run_dir, crate::records::SUPERVISOR));
    let mut remembered = sup.memory();
    let (done_tx, mut done_rx) = mpsc::channel::<(Action, Option<Verdict>)>(64);
    let mut shown: BTreeMap<String, fleet_proto::v1::Supervision> = BTreeMap::new();
    // Need-human raised by agents (their events carry `who`).
    let (_, mut raised) = svc.events.subscribe(u64::MAX);
    loop {
        let roster: Arc<Roster> = svc.roster.borrow().clone();
        let tick = roster.supervision.tick;
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        loop {
            match raised.try_recv() {
                Ok(e) if e.kind() == Some(EventKind::NeedHuman) && e.fields.contains_key("who") => {
                    let mate = roster.supervision.first_mate.as_deref();
                    if mate.is_some_and(|m| m != e.agent) {
                        sup.asked(&e.agent, e.fields.get("text").map_or("", String::as_str));
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        while let Ok((a, v)) = done_rx.try_recv() {
            sup.outcome(&a, v, clock::now_ms());
        }
        let view: Arc<View> = svc.view.borrow().clone();
        let now = clock::now_ms();
        sup.set_tmux_down(!view.host.tmux_running || view.host.has(HostFlag::TmuxUnresponsive));
        for action in sup.decide(&view.agents, &roster, now) {
            tracing::debug!(?action, "supervisor decided");
            if let Some(failed) = carry_out(&svc, &commands, action, &done_tx).await {
                sup.respawn_failed(&failed);
            }
        }
        // Kept for the next hostd, written only when it changed.
        let memory = sup.memory();
        if memory != remembered {
            remembered = memory.clone();
            let dir = run_dir.clone();
            let _ = tokio::task::spawn_blocking(move || {
                crate::records::write(&dir, crate::records::SUPERVISOR, &memory);
            })
            .await;
        }
        // What `ps` shows, republished only when it changed.
        let states: BTreeMap<String, fleet_proto::v1::Supervision> = view
            .agents
            .iter()
            .filter_map(|r| Some((r.name.clone(), sup.state_of(&r.name)?)))
            .collect();
        if states != shown {
            shown = states.clone();
            let _ = commands.send(Command::Supervision { states }).await;
        }
    }
}

/// Carries out one action; returns the agent whose respawn failed.
async fn carry_out(
    svc: &FleetService,
    commands: &mpsc::Sender<Command>,
    action: Action,
    done: &mpsc::Sender<(Action, Option<Verdict>)>,
) -> Option<String> {
    match &action {
        Action::Respawn { agent, reason } => {
            svc.events.emit(
                agent,
                EventKind::Respawning,
                format!("respawning: {reason}"),
                &[("by", "supervisor".into())],
            );
            let (reply, rx) = tokio::sync::oneshot::channel();
            let sent = commands
                .send(Command::Control {
                    action: ControlAction::Start,
                    agent: agent.clone(),
                    operator: "supervisor".into(),
                    reply,
                })
                .await;
            let outcome = match sent {
                Ok(()) => rx.await.map_err(|_| "hostd is shutting down".to_owned()),
                Err(_) => Err("hostd is shutting down".to_owned()),
            }
            .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = outcome {
                svc.events.emit(agent, EventKind::RespawnFailed, e, &[]);
                return Some(agent.clone());
            }
        }
        Action::GiveUp { agent, reason } => {
            svc.events.emit(
                agent,
                EventKind::NeedHuman,
                reason.clone(),
                &[("by", "supervisor".into())],
            );
        }
        Action::Refuse { agent, reason } => {
            svc.events
                .emit(agent, EventKind::RespawnRefused, reason.clone(), &[]);
        }
        Action::Poke { agent, text }
        | Action::Digest { agent, text }
        | Action::Alert { agent, text } => {
            let kind = match &action {
                Action::Poke { .. } => EventKind::Poke,
                Action::Digest { .. } => EventKind::Digest,
                _ => EventKind::Alert,
            };
            let (svc, agent, text, done) = (svc.clone(), agent.clone(), text.clone(), done.clone());
            // The event is written when the send ends; say when it was decided.
            let decided = clock::now_ms();
            tokio::spawn(async move {
                let verdict = match svc.deliver_to(&agent, text.as_bytes()).await {
                    Ok(r) => {
                        let v = Verdict::try_from(r.verdict).unwrap_or(Verdict::Unspecified);
                        svc.events.emit(
                            &agent,
                            kind,
                            format!("{} {}: {}", kind.word(), v.word(), r.detail),
                            &[
                                ("verdict", v.word().into()),
                                ("trace_id", r.trace_id.clone()),
                                ("text", text.clone()),
                                ("decided_unix_ms", decided.to_string()),
                            ],
                        );
                        Some(v)
                    }
                    Err(s) => {
                        svc.events.emit(
                            &agent,
                            kind,
                            format!("{} failed: {}", kind.word(), s.message()),
                            &[],
                        );
                        None
                    }
                };
                let _ = done.send((action, verdict)).await;
            });
        }
    }
    None
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use fleet_proto::v1::Heartbeat;

    pub fn roster(extra: &str) -> Roster {
        let text = format!(
            "version: 1\nagents:\n  - name: boss\n    runtime: demo\n    class: orchestrator\n  - name: w1\n    runtime: demo\n  - name: w2\n    runtime: demo\n  - name: mate\n    runtime: demo\n    class: first-mate\n{extra}"
        );
        crate::roster::parse(
            &text,
            std::path::Path::new("r.yaml"),
            crate::roster::Format::Yaml,
            std::path::Path::new("/tmp"),
        )
        .unwrap()
    }

    pub fn row(name: &str, pane: PaneState, status: AgentStatus, active_at: i64) -> AgentRow {
        AgentRow {
            name: name.into(),
            pane: pane as i32,
            pane_id: "%1".into(),
            last_activity_unix_ms: active_at,
            process: Some(fleet_proto::v1::Process {
                pid: 4242,
                name: "fleet-demo-agent".into(),
                ..Default::default()
            }),
            heartbeat: Some(Heartbeat {
                health: Health::Healthy as i32,
                status: status as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn alive(name: &str) -> AgentRow {
        row(name, PaneState::Alive, AgentStatus::Ok, 0)
    }

    pub fn dead(name: &str) -> AgentRow {
        row(name, PaneState::Dead, AgentStatus::Ok, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    const RESPAWN: &str = "supervision:\n  respawn:\n    max_deaths: 3\n    initial_delay_secs: 1\n    max_delay_secs: 10\n";

    fn respawns(a: &[Action]) -> Vec<&str> {
        a.iter()
            .filter_map(|a| match a {
                Action::Respawn { agent, .. } => Some(agent.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn deaths_are_respawned_with_growing_delays_then_escalated() {
        let r = roster(RESPAWN);
        let mut s = Supervisor::default();
        let mut at = |rows: &[AgentRow], t: i64| s.decide(rows, &r, t);
        // Death 1 at t=0: respawn after 1 s.
        assert!(respawns(&at(&[dead("w1")], 0)).is_empty());
        assert!(respawns(&at(&[dead("w1")], 999)).is_empty());
        assert_eq!(respawns(&at(&[dead("w1")], 1000)), ["w1"]);
        assert!(
            respawns(&at(&[dead("w1")], 1500)).is_empty(),
            "one respawn per death"
        );
        at(&[alive("w1")], 1600);
        // Death 2: 2 s; death 3: 4 s.
        at(&[dead("w1")], 2000);
        assert!(respawns(&at(&[dead("w1")], 3999)).is_empty());
        assert_eq!(respawns(&at(&[dead("w1")], 4000)), ["w1"]);
        at(&[alive("w1")], 4100);
        at(&[dead("w1")], 5000);
        assert!(respawns(&at(&[dead("w1")], 8999)).is_empty());
        assert_eq!(respawns(&at(&[dead("w1")], 9000)), ["w1"]);
        at(&[alive("w1")], 9100);
        // Death 4 > 3 in the window: give up, never respawn.
        let a = at(&[dead("w1")], 10_000);
        assert!(
            matches!(&a[..], [Action::GiveUp { agent, reason }] if agent == "w1" && reason.contains("4 times"))
        );
        for t in [11_000, 20_000, 100_000] {
            assert!(respawns(&at(&[dead("w1")], t)).is_empty());
        }
        let gave_up = s.state_of("w1").unwrap();
        assert_eq!(gave_up.state, SupervisorState::GaveUp as i32);
        assert!(fleet_proto::vocab::describe(&gave_up, 100_000).starts_with("gave-up (4 deaths)"));
        // An operator starts it by hand: a fresh start, death 1 again.
        s.decide(&[alive("w1")], &r, 200_000);
        s.decide(&[dead("w1")], &r, 201_000);
        assert_eq!(respawns(&s.decide(&[dead("w1")], &r, 202_000)), ["w1"]);
    }

    #[test]
    fn a_missing_session_is_a_death_and_a_failed_respawn_another() {
        let r = roster(RESPAWN);
        let mut s = Supervisor::default();
        let mut missing = row("w1", PaneState::Missing, AgentStatus::Ok, 0);
        missing.pane_id.clear();
        missing.pane_pid = 0;
        let m = std::slice::from_ref(&missing);
        assert!(respawns(&s.decide(m, &r, 0)).is_empty());
        assert_eq!(
            respawns(&s.decide(m, &r, 1000)),
            ["w1"],
            "no pane id needed"
        );
        // The respawn failed: death 2, retried after 2 s.
        s.respawn_failed("w1");
        assert!(respawns(&s.decide(m, &r, 1100)).is_empty());
        assert!(respawns(&s.decide(m, &r, 3099)).is_empty());
        assert_eq!(respawns(&s.decide(m, &r, 3100)), ["w1"]);
        s.respawn_failed("w1");
        s.decide(m, &r, 3200);
        assert_eq!(respawns(&s.decide(m, &r, 7200)), ["w1"]);
        s.respawn_failed("w1");
        assert!(
            matches!(&s.decide(m, &r, 7300)[..], [Action::GiveUp { agent, .. }] if agent == "w1"),
            "failed respawns count towards the give-up"
        );
        // While tmux is down the table brings sessions back, not deaths.
        let mut s = Supervisor::default();
        s.set_tmux_down(true);
        assert!(s.decide(m, &r, 0).is_empty());
        assert!(s.decide(m, &r, 60_000).is_empty());
    }

    #[test]
    fn the_window_forgets_old_deaths() {
        let r = roster(
            "supervision:\n  respawn:\n    max_deaths: 1\n    window_secs: 10\n    initial_delay_secs: 0\n",
        );
        let mut s = Supervisor::default();
        assert_eq!(respawns(&s.decide(&[dead("w1")], &r, 0)), ["w1"]);
        s.decide(&[alive("w1")], &r, 1);
        assert!(matches!(
            s.decide(&[dead("w1")], &r, 5_000)[..],
            [Action::GiveUp { .. }]
        ));
        let mut s = Supervisor::default();
        s.decide(&[dead("w1")], &r, 0);
        s.decide(&[alive("w1")], &r, 1);
        assert_eq!(
            respawns(&s.decide(&[dead("w1")], &r, 11_000)),
            ["w1"],
            "the first death left the window"
        );
    }

    #[test]
    fn stopped_unreadable_and_disabled_agents_are_not_respawned() {
        let r = roster("supervision:\n  respawn:\n    initial_delay_secs: 0\n");
        let mut s = Supervisor::default();
        let mut stopped = row("w1", PaneState::Missing, AgentStatus::Ok, 0);
        stopped.flag(AgentFlag::Stopped);
        let mut no_id = dead("w2");
        no_id.pane_id.clear();
        let a = s.decide(&[stopped.clone(), no_id.clone()], &r, 0);
        assert!(respawns(&a).is_empty());
        assert!(matches!(&a[..], [Action::Refuse { agent, .. }] if agent == "w2"));
        assert!(
            s.decide(&[stopped, no_id], &r, 10_000).is_empty(),
            "refused once, never respawned"
        );
        let r = roster("supervision:\n  respawn:\n    enabled: false\n");
        let mut s = Supervisor::default();
        assert!(s.decide(&[dead("w1")], &r, 0).is_empty());
        assert!(s.decide(&[dead("w1")], &r, 100_000).is_empty());
    }

    const POKE: &str = "supervision:\n  poke:\n    idle_secs: 60\n    cooldown_secs: 300\n";

    fn pokes(a: &[Action]) -> Vec<&str> {
        a.iter()
            .filter_map(|a| match a {
                Action::Poke { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_idle_orchestrator_with_stuck_workers_is_poked_once_per_cooldown() {
        let r = roster(POKE);
        let mut s = Supervisor::default();
        let t = 1_000_000;
        let quiet = t - 120_000;
        let rows = [
            row("boss", PaneState::Alive, AgentStatus::Ok, quiet),
            row("w1", PaneState::Alive, AgentStatus::Ok, quiet),
            dead("w2"),
        ];
        let a = s.decide(&rows, &r, t);
        let p = pokes(&a);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("w1 idle, quiet 120s") && p[0].contains("w2 dead"),
            "{}",
            p[0]
        );
        let poke = a
            .iter()
            .find(|a| matches!(a, Action::Poke { .. }))
            .unwrap()
            .clone();
        assert!(
            pokes(&s.decide(&rows, &r, t + 1000)).is_empty(),
            "one poke in flight at a time"
        );
        // A draft is not a delivery: tried again next tick.
        s.outcome(&poke, Some(Verdict::Draft), t + 2000);
        assert_eq!(pokes(&s.decide(&rows, &r, t + 3000)).len(), 1);
        s.outcome(&poke, Some(Verdict::Accepted), t + 4000);
        assert!(
            pokes(&s.decide(&rows, &r, t + 5000)).is_empty(),
            "cooling down"
        );
        assert!(pokes(&s.decide(&rows, &r, t + 4000 + 299_000)).is_empty());
        assert_eq!(pokes(&s.decide(&rows, &r, t + 4000 + 300_000)).len(), 1);
    }

    #[test]
    fn no_poke_while_a_worker_progresses_or_the_orchestrator_streams() {
        let r = roster(POKE);
        let t = 1_000_000;
        let quiet = t - 120_000;
        let cases = [
            // A busy worker.
            [
                row("boss", PaneState::Alive, AgentStatus::Ok, quiet),
                row("w1", PaneState::Alive, AgentStatus::Busy, quiet),
            ],
            // A worker whose screen just changed.
            [
                row("boss", PaneState::Alive, AgentStatus::Ok, quiet),
                row("w1", PaneState::Alive, AgentStatus::Ok, t - 5_000),
            ],
            // The orchestrator is streaming output.
            [
                row("boss", PaneState::Alive, AgentStatus::Ok, t - 1_000),
                row("w1", PaneState::Alive, AgentStatus::Ok, quiet),
            ],
            // The orchestrator is busy.
            [
                row("boss", PaneState::Alive, AgentStatus::Busy, quiet),
                row("w1", PaneState::Alive, AgentStatus::Ok, quiet),
            ],
        ];
        for rows in cases {
            let mut s = Supervisor::default();
            assert!(pokes(&s.decide(&rows, &r, t)).is_empty(), "{rows:?}");
        }
        // A stale orchestrator is not poked either (respawn or a human handles it).
        let mut stale = row("boss", PaneState::Alive, AgentStatus::Ok, quiet);
        stale.heartbeat.as_mut().unwrap().health = Health::Stale as i32;
        let mut s = Supervisor::default();
        assert!(
            pokes(&s.decide(
                &[stale, row("w1", PaneState::Alive, AgentStatus::Ok, quiet)],
                &r,
                t
            ))
            .is_empty()
        );
    }

    #[test]
    fn the_digest_goes_on_change_only_and_is_resent_after_a_failed_delivery() {
        let r = roster(
            "supervision:\n  first_mate: mate\n  digest_interval_secs: 10\n  respawn:\n    max_deaths: 1\n    initial_delay_secs: 0\n",
        );
        let mut s = Supervisor::default();
        let digests = |a: &[Action]| -> Vec<Action> {
            a.iter()
                .filter(|a| matches!(a, Action::Digest { .. }))
                .cloned()
                .collect()
        };
        let rows = vec![alive("mate"), alive("w1")];
        let d = digests(&s.decide(&rows, &r, 0));
        assert_eq!(d.len(), 1);
        let Action::Digest { text, .. } = &d[0] else {
            unreachable!()
        };
        assert_eq!(text, "[fleet digest] w1 alive idle healthy restarts=0");
        s.outcome(&d[0], Some(Verdict::Draft), 100);
        assert!(
            digests(&s.decide(&rows, &r, 5_000)).is_empty(),
            "retried at the interval, not every tick"
        );
        let again = digests(&s.decide(&rows, &r, 10_000));
        assert_eq!(again, d, "the same digest is sent again after a draft");
        s.outcome(&again[0], Some(Verdict::Accepted), 10_100);
        assert!(
            digests(&s.decide(&rows, &r, 30_000)).is_empty(),
            "unchanged: not sent"
        );
        // A change, and a death that escalates: the alert goes at once.
        let rows = vec![alive("mate"), dead("w1")];
        let a = s.decide(&rows, &r, 40_000);
        assert_eq!(digests(&a).len(), 1);
        s.decide(&[alive("mate"), alive("w1")], &r, 40_001);
        let a = s.decide(&rows, &r, 40_002);
        let alert = a
            .iter()
            .find(|a| matches!(a, Action::Alert { .. }))
            .expect("need-human alert");
        let Action::Alert { agent, text } = alert else {
            unreachable!()
        };
        assert_eq!(agent, "mate");
        assert!(text.starts_with("[fleet NEED HUMAN] w1:"), "{text}");
        // Undelivered alerts stay queued and are retried.
        s.outcome(alert, None, 40_003);
        assert!(
            s.decide(&rows, &r, 40_004)
                .iter()
                .any(|a| matches!(a, Action::Alert { .. }))
        );
    }

    #[test]
    fn nothing_is_typed_into_a_first_mate_or_orchestrator_not_running_its_program() {
        let r = roster(
            "supervision:\n  first_mate: mate\n  poke:\n    idle_secs: 1\n    cooldown_secs: 60\n",
        );
        let mut s = Supervisor::default();
        let drifting = |name: &str| {
            let mut row = alive(name);
            row.flags.push("drift".into());
            row
        };
        // A launcher (a pyenv shim, a wrapper script) still starting the
        // runtime: the pane is alive but the text would go to the launcher.
        let rows = vec![drifting("mate"), drifting("boss"), alive("w1")];
        assert!(s.decide(&rows, &r, 60_000).is_empty());
        // Nor before its process has been read.
        let unread = |name: &str| AgentRow {
            process: None,
            ..alive(name)
        };
        let rows = vec![unread("mate"), unread("boss"), alive("w1")];
        assert!(s.decide(&rows, &r, 60_500).is_empty());
        let rows = vec![alive("mate"), alive("boss"), alive("w1")];
        let a = s.decide(&rows, &r, 61_000);
        assert!(
            a.iter().any(|a| matches!(a, Action::Digest { .. })),
            "{a:?}"
        );
        assert!(a.iter().any(|a| matches!(a, Action::Poke { .. })), "{a:?}");
    }
}

#[cfg(test)]
mod fast_deaths {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn a_death_no_tick_saw_alive_still_counts() {
        let r = roster("supervision:\n  respawn:\n    initial_delay_secs: 1\n");
        let mut s = Supervisor::default();
        let mut d1 = dead("w1");
        d1.pane_pid = 100;
        s.decide(std::slice::from_ref(&d1), &r, 0);
        assert_eq!(s.decide(std::slice::from_ref(&d1), &r, 1000).len(), 1);
        let mut d2 = dead("w1");
        d2.pane_pid = 101;
        assert!(s.decide(std::slice::from_ref(&d2), &r, 1010).is_empty());
        let pending = s.state_of("w1").unwrap();
        assert_eq!(pending.state, SupervisorState::RespawnPending as i32);
        assert_eq!(
            fleet_proto::vocab::describe(&pending, 1010),
            "respawn in 2.0s (death 2)"
        );
        assert_eq!(s.decide(std::slice::from_ref(&d2), &r, 3010).len(), 1);
    }
}
