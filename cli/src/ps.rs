//! `fleetctl ps`: the agent table, as text or as the stable JSON shape
//! documented in the README (`fleet.ps/v1`).

use fleet_proto::v1::{HostFlag, SupervisorState};
use fleet_proto::vocab::Flagged;
use std::io::Write;

use fleet_proto::v1::{
    AgentRow, AgentStatus, Health, HeartbeatSource, HostRow, ListAgentsRequest, ListHostsRequest,
    PaneState, Selector, StatusSource, WatchFleetRequest,
};
use fleet_proto::v1::{Counts, Summary, SummaryRequest};
use serde::Serialize;

use crate::mirror::Mirror;
use crate::render::{self, Cell, Colour, Column, Format, OutputArgs, Style};
use crate::select::SelectArgs;
use crate::{Failure, client};

pub const SCHEMA: &str = "fleet.ps/v1";

/// One row of `ps --json`. Field names are part of the interface.
#[derive(Debug, Serialize, PartialEq)]
pub struct PsRow<'a> {
    pub tenant_id: &'a str,
    pub host: &'a str,
    pub name: &'a str,
    pub runtime: &'a str,
    pub class: &'a str,
    pub model: &'a str,
    pub model_source: &'a str,
    /// alive | dead | missing
    pub pane: &'static str,
    pub pane_id: &'a str,
    pub pid: Option<u32>,
    pub pane_command: &'a str,
    pub process: Option<PsProcess<'a>>,
    pub idle_seconds: Option<f64>,
    pub heartbeat: PsHeartbeat<'a>,
    pub flags: &'a [String],
    /// What hostd's supervisor is doing about the agent, as a sentence (""
    /// when nothing).
    pub supervision: &'a str,
    /// The same as a word: respawn, gave-up, not-respawned ("" when nothing).
    pub supervisor_state: &'static str,
    pub restarts: u32,
    pub last_event: &'a str,
    pub exit_status: Option<i32>,
    pub exit_signal: Option<i32>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PsProcess<'a> {
    pub pid: u32,
    pub name: &'a str,
    pub cmdline: &'a str,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PsHeartbeat<'a> {
    /// healthy | stale | unknown
    pub health: &'static str,
    pub reason: &'a str,
    /// idle | busy | waiting | unknown
    pub status: &'static str,
    /// Where `status` came from: native (the runtime's own hook) |
    /// observed (read off the screen by the runtime's rules) | fallback
    /// (only the process is known).
    pub status_source: &'static str,
    /// What a waiting runtime asks, or why the status is what it is.
    pub status_detail: &'a str,
    /// Seconds since the status last changed.
    pub status_age_seconds: Option<f64>,
    /// Who writes the beat file: native | fallback | none.
    pub source: &'static str,
    pub age_seconds: Option<f64>,
    pub pid: Option<u32>,
    pub model: &'a str,
    pub turn: Option<u64>,
    pub interval_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct PsDocument<'a> {
    pub schema: &'static str,
    pub generated_at_unix_ms: i64,
    pub agents: Vec<PsRow<'a>>,
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

pub fn health_word(h: i32) -> &'static str {
    match Health::try_from(h) {
        Ok(Health::Healthy) => "healthy",
        Ok(Health::Stale) => "stale",
        _ => "unknown",
    }
}

pub fn status_word(s: i32) -> &'static str {
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

pub fn ps_row(r: &AgentRow, now_ms: i64) -> PsRow<'_> {
    static NO_BEAT: std::sync::LazyLock<fleet_proto::v1::Heartbeat> =
        std::sync::LazyLock::new(Default::default);
    let hb = r.heartbeat.as_ref().unwrap_or(&NO_BEAT);
    let alive = r.pane == PaneState::Alive as i32;
    PsRow {
        tenant_id: &r.tenant_id,
        host: &r.host,
        name: &r.name,
        runtime: &r.runtime,
        class: &r.class,
        model: &r.model,
        model_source: &r.model_source,
        pane: pane_word(r.pane),
        pane_id: &r.pane_id,
        pid: (r.pane_pid > 0).then_some(r.pane_pid),
        pane_command: &r.pane_command,
        process: r.process.as_ref().map(|p| PsProcess {
            pid: p.pid,
            name: &p.name,
            cmdline: &p.cmdline,
        }),
        idle_seconds: if alive {
            secs_between(now_ms, r.last_activity_unix_ms)
        } else {
            None
        },
        heartbeat: PsHeartbeat {
            health: health_word(hb.health),
            reason: &hb.reason,
            status: status_word(hb.status),
            status_source: StatusSource::word_of(hb.status_source),
            status_detail: &hb.status_detail,
            status_age_seconds: secs_between(now_ms, hb.status_since_unix_ms),
            source: source_word(hb.source),
            age_seconds: secs_between(now_ms, hb.ts_unix_ms),
            pid: (hb.pid > 0).then_some(hb.pid),
            model: &hb.model,
            turn: hb.turn,
            interval_seconds: hb.interval_ms as f64 / 1000.0,
        },
        flags: &r.flags,
        supervision: &r.supervision,
        supervisor_state: r
            .supervisor
            .as_ref()
            .and_then(|s| SupervisorState::try_from(s.state).ok())
            .map_or("", SupervisorState::word),
        restarts: r.restarts,
        last_event: &r.last_event,
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

pub fn document<'a>(agents: &'a [AgentRow], hosts: &[HostRow], now_ms: i64) -> PsDocument<'a> {
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
            let plain = |s: &str| (s.to_owned(), Colour::None);
            let owned = |s: String| (s, Colour::None);
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
                plain(or_dash_ref(r.runtime)),
                plain(or_dash_ref(r.class)),
                plain(or_dash_ref(r.model)),
                (r.pane.to_owned(), pane_colour),
                owned(r.pid.map_or_else(|| "-".into(), |p| p.to_string())),
                plain(r.process.map_or("-", |p| p.name)),
                owned(render::age(r.idle_seconds)),
                owned(render::age(r.heartbeat.age_seconds)),
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
                    let mut flags = r.flags.to_vec();
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

/// The whole view from the first snapshot of `WatchFleet`, which an
/// aggregator sends in chunks however big the fleet is.
pub async fn snapshot(
    client: &mut fleet_proto::v1::fleet_client::FleetClient<tonic::transport::Channel>,
    selector: Option<Selector>,
) -> Result<(Vec<AgentRow>, Vec<HostRow>, i64), Failure> {
    use fleet_proto::v1::{WatchFleetRequest, fleet_update::Update};
    let mut stream = client
        .watch_fleet(WatchFleetRequest { selector })
        .await?
        .into_inner();
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

/// `fleetctl ps` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Redraw on every change (streamed from the server, not polled).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Counts per tenant and host by health, status and pane instead of
    /// rows (of what the selection admits).
    #[arg(long, conflicts_with = "watch")]
    pub summary: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub conn: crate::client::Conn,
}

/// `fleetctl ps`.
pub async fn run(server: &client::Server, a: PsArgs) -> Result<(), Failure> {
    let selector = a.select.check()?;
    let format = a.output.format();
    let mut client = client::open(server).await?;
    if a.summary {
        let s = client
            .summarize(SummaryRequest { selector })
            .await?
            .into_inner();
        return print_summary(&s, &a.output);
    }
    if a.watch {
        return watch_loop(&mut client, selector, &a.output).await;
    }
    let (agents, hosts, now) = if server.is_aggregator() {
        snapshot(&mut client, selector).await?
    } else {
        // Both at once on the one connection: a round trip saved.
        let mut hosts_client = client.clone();
        let (agents, hosts) = tokio::join!(
            client.list_agents(ListAgentsRequest {
                selector: selector.clone()
            }),
            hosts_client.list_hosts(ListHostsRequest { selector })
        );
        let (agents, hosts) = (agents?.into_inner(), hosts?.into_inner());
        (agents.agents, hosts.hosts, agents.generated_at_unix_ms)
    };
    // Buffered: a big fleet's document is millions of small writes.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        Format::Json => {
            let doc = document(&agents, &hosts, now);
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
        Format::Name => {
            for r in &agents {
                let name = format!("{}/{}/{}", r.tenant_id, r.host, r.name);
                writeln!(out, "{}", render::printable(&name, false))?;
            }
        }
        Format::Table | Format::Wide => {
            out.write_all(text(&agents, now, a.output.style()).as_bytes())?;
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
    }
    out.flush()?;
    Ok(())
}

/// The JSON form of a summary (`fleet.summary/v1`).
pub fn summary_json(s: &Summary) -> serde_json::Value {
    let counts = |c: &Option<Counts>| {
        let c = c.unwrap_or_default();
        serde_json::json!({
            "agents": c.agents,
            "health": {"healthy": c.healthy, "stale": c.stale, "unknown": c.health_unknown},
            "status": {"idle": c.idle, "busy": c.busy, "waiting": c.waiting, "unknown": c.status_unknown},
            "pane": {"alive": c.alive, "dead": c.dead, "missing": c.missing},
        })
    };
    serde_json::json!({
        "schema": "fleet.summary/v1",
        "generated_at_unix_ms": s.generated_at_unix_ms,
        "total": counts(&s.total),
        "tenants": s.tenants.iter().map(|t| serde_json::json!({
            "tenant_id": t.tenant_id, "hosts": t.hosts, "counts": counts(&t.counts),
        })).collect::<Vec<_>>(),
        "hosts": s.hosts.iter().map(|h| serde_json::json!({
            "tenant_id": h.tenant_id, "host": h.host, "link": h.link, "counts": counts(&h.counts),
        })).collect::<Vec<_>>(),
    })
}

fn print_summary(s: &Summary, o: &OutputArgs) -> Result<(), Failure> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match o.format() {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &summary_json(s))?;
            writeln!(out)?;
        }
        Format::Name => {
            for h in &s.hosts {
                let name = format!("{}/{}", h.tenant_id, h.host);
                writeln!(out, "{}", render::printable(&name, false))?;
            }
        }
        Format::Table | Format::Wide => {
            const HEADERS: [&str; 13] = [
                "TENANT", "HOST", "LINK", "AGENTS", "HEALTHY", "STALE", "UNKNOWN", "IDLE", "BUSY",
                "WAITING", "ALIVE", "DEAD", "MISSING",
            ];
            let cols: Vec<Column> = HEADERS
                .iter()
                .map(|h| Column {
                    header: h,
                    priority: 5,
                })
                .collect();
            let line = |tenant: &str, host: &str, link: &str, c: &Option<Counts>| {
                let c = c.unwrap_or_default();
                let n =
                    |v: u32, bad: Colour| (v.to_string(), if v > 0 { bad } else { Colour::None });
                vec![
                    (tenant.to_owned(), Colour::None),
                    (host.to_owned(), Colour::None),
                    (
                        link.to_owned(),
                        if link == "unreachable" {
                            Colour::Red
                        } else {
                            Colour::None
                        },
                    ),
                    (c.agents.to_string(), Colour::None),
                    n(c.healthy, Colour::Green),
                    n(c.stale, Colour::Red),
                    n(c.health_unknown, Colour::Yellow),
                    n(c.idle, Colour::None),
                    n(c.busy, Colour::Green),
                    n(c.waiting, Colour::Red),
                    n(c.alive, Colour::Green),
                    n(c.dead, Colour::Red),
                    n(c.missing, Colour::Yellow),
                ]
            };
            let mut rows: Vec<Vec<Cell>> = s
                .hosts
                .iter()
                .map(|h| line(&h.tenant_id, &h.host, or_dash_ref(&h.link), &h.counts))
                .collect();
            rows.push(line(
                "TOTAL",
                &format!("{} hosts", s.hosts.len()),
                "",
                &s.total,
            ));
            out.write_all(render::table(&cols, &rows, o.style()).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn or_dash_ref(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

async fn watch_loop(
    client: &mut fleet_proto::v1::fleet_client::FleetClient<tonic::transport::Channel>,
    selector: Option<Selector>,
    output: &OutputArgs,
) -> Result<(), Failure> {
    let mut stream = client
        .watch_fleet(WatchFleetRequest { selector })
        .await?
        .into_inner();
    let json = output.format() == Format::Json;
    let style = output.style();
    // `ps --watch` is a script's tool: it holds what it is asked to watch.
    let mut fleet = Mirror::new(usize::MAX);
    // Ages move with the clock: redraw once a second on a terminal even
    // when nothing changed (no server round trip).
    let mut clock = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(update) = msg? else {
                    return Err(Failure::Unavailable("the server closed the watch stream".into()));
                };
                match fleet.apply(update) {
                    Ok(true) => draw(&fleet, json, style)?,
                    Ok(false) => {}
                    Err(broken) => return Err(Failure::Unavailable(format!("{broken}; run again"))),
                }
            }
            _ = clock.tick(), if !json && style.width.is_some() && fleet.complete() => {
                draw(&fleet, json, style)?;
            }
        }
    }
}

fn draw(fleet: &Mirror, json: bool, style: Style) -> Result<(), Failure> {
    let (agents, hosts) = fleet.lists();
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
