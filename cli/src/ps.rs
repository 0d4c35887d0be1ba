//! `fleetctl ps`: the agent table, as text or as the stable JSON shape
//! documented in the README (`fleet.ps/v1`).

use fleet_proto::v1::{HostFlag, SupervisorState};
use fleet_proto::vocab::Flagged;
use std::collections::BTreeMap;
use std::io::Write;

use fleet_proto::v1::{
    AgentRow, AgentStatus, Health, HeartbeatSource, HostRow, ListAgentsRequest, ListHostsRequest,
    PaneState, StatusSource, WatchFleetRequest, fleet_update,
};
use serde::Serialize;

use crate::render::{self, Cell, Colour, Column, Style};
use crate::{Failure, client};

pub const SCHEMA: &str = "fleet.ps/v1";

/// One row of `ps --json`. Field names are part of the interface.
#[derive(Debug, Serialize, PartialEq)]
pub struct PsRow {
    pub tenant_id: String,
    pub host: String,
    pub name: String,
    pub runtime: String,
    pub class: String,
    pub model: String,
    pub model_source: String,
    /// alive | dead | missing
    pub pane: &'static str,
    pub pane_id: String,
    pub pid: Option<u32>,
    pub pane_command: String,
    pub process: Option<PsProcess>,
    pub idle_seconds: Option<f64>,
    pub heartbeat: PsHeartbeat,
    pub flags: Vec<String>,
    /// What hostd's supervisor is doing about the agent, as a sentence (""
    /// when nothing).
    pub supervision: String,
    /// The same as a word: respawn, gave-up, not-respawned ("" when nothing).
    pub supervisor_state: &'static str,
    pub restarts: u32,
    pub last_event: String,
    pub exit_status: Option<i32>,
    pub exit_signal: Option<i32>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PsProcess {
    pub pid: u32,
    pub name: String,
    pub cmdline: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PsHeartbeat {
    /// healthy | stale | unknown
    pub health: &'static str,
    pub reason: String,
    /// idle | busy | waiting | unknown
    pub status: &'static str,
    /// Where `status` came from: native (the runtime's own hook) |
    /// observed (read off the screen by the runtime's rules) | fallback
    /// (only the process is known).
    pub status_source: &'static str,
    /// What a waiting runtime asks, or why the status is what it is.
    pub status_detail: String,
    /// Seconds since the status last changed.
    pub status_age_seconds: Option<f64>,
    /// Who writes the beat file: native | fallback | none.
    pub source: &'static str,
    pub age_seconds: Option<f64>,
    pub pid: Option<u32>,
    pub model: String,
    pub turn: Option<u64>,
    pub interval_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct PsDocument {
    pub schema: &'static str,
    pub generated_at_unix_ms: i64,
    pub agents: Vec<PsRow>,
    pub hosts: Vec<serde_json::Value>,
}

pub fn pane_word(p: i32) -> &'static str {
    match PaneState::try_from(p) {
        Ok(PaneState::Alive) => "alive",
        Ok(PaneState::Dead) => "dead",
        Ok(PaneState::Missing) => "missing",
        _ => "unknown",
    }
}

fn health_word(h: i32) -> &'static str {
    match Health::try_from(h) {
        Ok(Health::Healthy) => "healthy",
        Ok(Health::Stale) => "stale",
        _ => "unknown",
    }
}

fn status_word(s: i32) -> &'static str {
    match AgentStatus::try_from(s) {
        Ok(AgentStatus::Unspecified) | Err(_) => "unknown",
        Ok(st) => st.word(),
    }
}

fn source_word(s: i32) -> &'static str {
    match HeartbeatSource::try_from(s) {
        Ok(HeartbeatSource::Native) => "native",
        Ok(HeartbeatSource::Fallback) => "fallback",
        _ => "none",
    }
}

fn secs_between(now_ms: i64, then_ms: i64) -> Option<f64> {
    (then_ms > 0).then(|| (now_ms - then_ms) as f64 / 1000.0)
}

pub fn ps_row(r: &AgentRow, now_ms: i64) -> PsRow {
    let hb = r.heartbeat.clone().unwrap_or_default();
    let alive = r.pane == PaneState::Alive as i32;
    PsRow {
        tenant_id: r.tenant_id.clone(),
        host: r.host.clone(),
        name: r.name.clone(),
        runtime: r.runtime.clone(),
        class: r.class.clone(),
        model: r.model.clone(),
        model_source: r.model_source.clone(),
        pane: pane_word(r.pane),
        pane_id: r.pane_id.clone(),
        pid: (r.pane_pid > 0).then_some(r.pane_pid),
        pane_command: r.pane_command.clone(),
        process: r.process.as_ref().map(|p| PsProcess {
            pid: p.pid,
            name: p.name.clone(),
            cmdline: p.cmdline.clone(),
        }),
        idle_seconds: if alive {
            secs_between(now_ms, r.last_activity_unix_ms)
        } else {
            None
        },
        heartbeat: PsHeartbeat {
            health: health_word(hb.health),
            reason: hb.reason.clone(),
            status: status_word(hb.status),
            status_source: StatusSource::word_of(hb.status_source),
            status_detail: hb.status_detail.clone(),
            status_age_seconds: secs_between(now_ms, hb.status_since_unix_ms),
            source: source_word(hb.source),
            age_seconds: secs_between(now_ms, hb.ts_unix_ms),
            pid: (hb.pid > 0).then_some(hb.pid),
            model: hb.model.clone(),
            turn: hb.turn,
            interval_seconds: hb.interval_ms as f64 / 1000.0,
        },
        flags: r.flags.clone(),
        supervision: r.supervision.clone(),
        supervisor_state: r
            .supervisor
            .as_ref()
            .and_then(|s| SupervisorState::try_from(s.state).ok())
            .map_or("", SupervisorState::word),
        restarts: r.restarts,
        last_event: r.last_event.clone(),
        exit_status: r.exit_status,
        exit_signal: r.exit_signal,
    }
}

fn host_json(h: &HostRow) -> serde_json::Value {
    let unit = h.unit.clone().unwrap_or_default();
    serde_json::json!({
        "tenant_id": h.tenant_id,
        "host": h.host,
        "uid": h.uid,
        "hostd_version": h.hostd_version,
        "tmux_socket": h.tmux_socket,
        "tmux_running": h.tmux_running,
        "agents_total": h.agents_total,
        "agents_alive": h.agents_alive,
        "agents_healthy": h.agents_healthy,
        "unit": {
            "known": unit.known, "unit": unit.unit, "active": unit.active,
            "enabled": unit.enabled, "linger": unit.linger, "reason": unit.reason,
        },
        "flags": h.flags,
        "roster_path": h.roster_path,
        "link": h.link,
        "uplinks": h.uplinks.iter().map(|u| serde_json::json!({
            "address": u.address, "state": u.state, "error": u.error,
            "since_unix_ms": u.since_unix_ms,
        })).collect::<Vec<_>>(),
        "via": h.via,
        "last_seen_unix_ms": h.last_seen_unix_ms,
        "boot_epoch": h.boot_epoch,
    })
}

pub fn document(agents: &[AgentRow], hosts: &[HostRow], now_ms: i64) -> PsDocument {
    PsDocument {
        schema: SCHEMA,
        generated_at_unix_ms: now_ms,
        agents: agents.iter().map(|a| ps_row(a, now_ms)).collect(),
        hosts: hosts.iter().map(host_json).collect(),
    }
}

const COLUMNS: &[Column] = &[
    Column {
        header: "TENANT",
        priority: 2,
    },
    Column {
        header: "HOST",
        priority: 3,
    },
    Column {
        header: "NAME",
        priority: 10,
    },
    Column {
        header: "RUNTIME",
        priority: 7,
    },
    Column {
        header: "CLASS",
        priority: 1,
    },
    Column {
        header: "MODEL",
        priority: 2,
    },
    Column {
        header: "PANE",
        priority: 9,
    },
    Column {
        header: "PID",
        priority: 4,
    },
    Column {
        header: "PROCESS",
        priority: 5,
    },
    Column {
        header: "IDLE",
        priority: 6,
    },
    Column {
        header: "HB-AGE",
        priority: 8,
    },
    Column {
        header: "HEALTH",
        priority: 9,
    },
    Column {
        header: "STATUS",
        priority: 7,
    },
    Column {
        header: "SOURCE",
        priority: 4,
    },
    Column {
        header: "FLAGS",
        priority: 8,
    },
];

pub fn text(agents: &[AgentRow], now_ms: i64, style: Style) -> String {
    let rows: Vec<Vec<Cell>> = agents
        .iter()
        .map(|a| {
            let r = ps_row(a, now_ms);
            let plain = |s: String| (s, Colour::None);
            let pane_colour = match r.pane {
                "alive" => Colour::Green,
                "dead" => Colour::Red,
                _ => Colour::Yellow,
            };
            let health_colour = match r.heartbeat.health {
                "healthy" => Colour::Green,
                "stale" => Colour::Red,
                _ => Colour::Yellow,
            };
            vec![
                plain(r.tenant_id),
                plain(r.host),
                plain(r.name),
                plain(or_dash(r.runtime)),
                plain(or_dash(r.class)),
                plain(or_dash(r.model)),
                (r.pane.to_owned(), pane_colour),
                plain(r.pid.map_or_else(|| "-".into(), |p| p.to_string())),
                plain(r.process.map_or_else(|| "-".into(), |p| p.name)),
                plain(render::age(r.idle_seconds)),
                plain(render::age(r.heartbeat.age_seconds)),
                (r.heartbeat.health.to_owned(), health_colour),
                (
                    r.heartbeat.status.to_owned(),
                    match r.heartbeat.status {
                        "busy" => Colour::Green,
                        "waiting" => Colour::Red,
                        "unknown" => Colour::Yellow,
                        _ => Colour::None,
                    },
                ),
                (r.heartbeat.status_source.to_owned(), Colour::Dim),
                {
                    // The supervisor's state joins the flags as one word
                    // (respawn, gave-up); --json has the sentence too.
                    let mut flags = r.flags.clone();
                    if !r.supervisor_state.is_empty() {
                        flags.push(r.supervisor_state.to_owned());
                    }
                    let colour = if r.supervisor_state == SupervisorState::GaveUp.word() {
                        Colour::Red
                    } else if flags.is_empty() {
                        Colour::None
                    } else {
                        Colour::Yellow
                    };
                    (
                        if flags.is_empty() {
                            "-".into()
                        } else {
                            flags.join(",")
                        },
                        colour,
                    )
                },
            ]
        })
        .collect();
    render::table(COLUMNS, &rows, style)
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// The whole view from the first snapshot of `WatchFleet`, which an
/// aggregator sends in chunks however big the fleet is.
pub async fn snapshot(
    client: &mut fleet_proto::v1::fleet_client::FleetClient<tonic::transport::Channel>,
) -> Result<(Vec<AgentRow>, Vec<HostRow>, i64), Failure> {
    use fleet_proto::v1::{WatchFleetRequest, fleet_update::Update};
    let mut stream = client.watch_fleet(WatchFleetRequest {}).await?.into_inner();
    let (mut agents, mut hosts) = (Vec::new(), Vec::new());
    while let Some(u) = stream.message().await? {
        let Some(Update::Snapshot(s)) = u.update else {
            return Err(Failure::Other(
                "the server sent a delta before its snapshot".into(),
            ));
        };
        agents.extend(s.agents);
        hosts.extend(s.hosts);
        if !s.more {
            return Ok((agents, hosts, u.generated_at_unix_ms));
        }
    }
    Err(Failure::Other(
        "the server ended the stream inside its snapshot".into(),
    ))
}

/// `fleetctl ps [--json] [--watch]`.
pub async fn run(server: &client::Server, json: bool, watch: bool) -> Result<(), Failure> {
    let mut client = client::open(server).await?;
    if !watch {
        let (agents, hosts, now) = if server.is_aggregator() {
            snapshot(&mut client).await?
        } else {
            // Both at once on the one connection: a round trip saved.
            let mut hosts_client = client.clone();
            let (agents, hosts) = tokio::join!(
                client.list_agents(ListAgentsRequest {}),
                hosts_client.list_hosts(ListHostsRequest {})
            );
            let (agents, hosts) = (agents?.into_inner(), hosts?.into_inner());
            (agents.agents, hosts.hosts, agents.generated_at_unix_ms)
        };
        // Buffered: a big fleet's document is millions of small writes.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        if json {
            let doc = document(&agents, &hosts, now);
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        } else {
            out.write_all(text(&agents, now, Style::for_stdout()).as_bytes())?;
            for h in &hosts {
                if h.has(HostFlag::BootEnable) {
                    writeln!(
                        out,
                        "warning: {} is active but would not start at boot (enabled: {}, linger: {}); run `fleetctl init`",
                        h.unit.as_ref().map(|u| u.unit.as_str()).unwrap_or("hostd"),
                        h.unit.as_ref().map(|u| u.enabled.as_str()).unwrap_or("?"),
                        h.unit.as_ref().is_some_and(|u| u.linger),
                    )?;
                }
            }
        }
        out.flush()?;
        return Ok(());
    }
    watch_loop(&mut client, json).await
}

async fn watch_loop(
    client: &mut fleet_proto::v1::fleet_client::FleetClient<tonic::transport::Channel>,
    json: bool,
) -> Result<(), Failure> {
    let mut stream = client.watch_fleet(WatchFleetRequest {}).await?.into_inner();
    let style = Style::for_stdout();
    // Keyed by tenant, host and name: one view may span many hosts.
    type Key = (String, String, String);
    let key = |t: &str, h: &str, n: &str| -> Key { (t.to_owned(), h.to_owned(), n.to_owned()) };
    let mut rows: BTreeMap<Key, AgentRow> = BTreeMap::new();
    let mut hosts: BTreeMap<(String, String), HostRow> = BTreeMap::new();
    // A snapshot sent in chunks is applied once its last chunk is in.
    let mut partial: Option<(Vec<AgentRow>, Vec<HostRow>)> = None;
    let mut last_seq: Option<(u64, u64)> = None;
    // Ages move with the clock: redraw once a second on a terminal even
    // when nothing changed (no server round trip).
    let mut clock = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(update) = msg? else {
                    return Err(Failure::Unavailable("the server closed the watch stream".into()));
                };
                if let Some((epoch, seq)) = last_seq
                    && (epoch != update.epoch || seq + 1 != update.seq)
                    && !matches!(update.update, Some(fleet_update::Update::Snapshot(_)))
                {
                    return Err(Failure::Unavailable("watch stream skipped updates; run again".into()));
                }
                last_seq = Some((update.epoch, update.seq));
                match update.update {
                    Some(fleet_update::Update::Snapshot(s)) => {
                        let (mut a, mut h) = partial.take().unwrap_or_default();
                        a.extend(s.agents);
                        h.extend(s.hosts);
                        if s.more {
                            partial = Some((a, h));
                            continue;
                        }
                        rows = a.into_iter().map(|r| (key(&r.tenant_id, &r.host, &r.name), r)).collect();
                        hosts = h.into_iter().map(|r| ((r.tenant_id.clone(), r.host.clone()), r)).collect();
                    }
                    Some(fleet_update::Update::Delta(d)) => {
                        for a in d.upserts {
                            rows.insert(key(&a.tenant_id, &a.host, &a.name), a);
                        }
                        for k in d.removals {
                            rows.remove(&key(&k.tenant_id, &k.host, &k.name));
                        }
                        for h in d.hosts {
                            hosts.insert((h.tenant_id.clone(), h.host.clone()), h);
                        }
                    }
                    None => continue,
                }
                draw(&rows, &hosts, json, style)?;
            }
            _ = clock.tick(), if !json && style.width.is_some() => {
                draw(&rows, &hosts, json, style)?;
            }
        }
    }
}

fn draw<K: Ord, H: Ord>(
    rows: &BTreeMap<K, AgentRow>,
    hosts: &BTreeMap<H, HostRow>,
    json: bool,
    style: Style,
) -> Result<(), Failure> {
    let agents: Vec<AgentRow> = rows.values().cloned().collect();
    let hosts: Vec<HostRow> = hosts.values().cloned().collect();
    let now = fleet_proto::clock::now_ms();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        // One JSON document per line, per change.
        serde_json::to_writer(&mut out, &document(&agents, &hosts, now))?;
        writeln!(out)?;
    } else {
        if style.width.is_some() {
            out.write_all(b"\x1b[H\x1b[2J")?;
        } else {
            writeln!(out)?;
        }
        out.write_all(text(&agents, now, style).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
