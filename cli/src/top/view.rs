//! Drawing `fleetctl top` with ratatui: the summary and connection lines,
//! the agents table (the words of `ps`), the hosts table, the events pane,
//! the selected agent's screen with its events and last receipt, the footer
//! of keys and the help screen. Everything a peer sent goes through
//! `render::printable`; colour only when the terminal wants it.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState};

use fleet_proto::v1::{AgentRow, Counts, Event, HostRow};

use super::model::{App, Conn, Input, KEYS, Screen, View, key_of};
use crate::render::{age, clock_utc as clock, printable};

/// A peer's text, one line, safe to draw.
fn safe(s: &str) -> String {
    printable(s, false).into_owned()
}

/// A style with this foreground, or none on a colourless terminal.
fn fg(app: &App, c: Color) -> Style {
    if app.colour {
        Style::default().fg(c)
    } else {
        Style::default()
    }
}

fn health_colour(w: &str) -> Color {
    match w {
        "healthy" => Color::Green,
        "stale" => Color::Red,
        _ => Color::Yellow,
    }
}

fn status_colour(w: &str) -> Option<Color> {
    match w {
        "busy" => Some(Color::Green),
        "waiting" => Some(Color::Red),
        "unknown" => Some(Color::Yellow),
        _ => None,
    }
}

fn pane_colour(w: &str) -> Color {
    match w {
        "alive" => Color::Green,
        "dead" => Color::Red,
        _ => Color::Yellow,
    }
}

pub fn draw(f: &mut Frame, app: &App, now_ms: i64) {
    let area = f.area();
    let [summary, conn, tabs, main, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(summary_line(app), summary);
    f.render_widget(
        Paragraph::new(conn_span(app, &safe(&app.server), &app.conn)),
        conn,
    );
    f.render_widget(tabs_line(app), tabs);
    match app.view {
        View::Agents => {
            let [table, detail, events] = Layout::vertical([
                Constraint::Percentage(40),
                Constraint::Min(4),
                Constraint::Length(7),
            ])
            .areas(main);
            agents_table(f, app, table, now_ms);
            let [screen, side] =
                Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)])
                    .areas(detail);
            screen_pane(f, app, screen);
            agent_pane(f, app, side);
            events_pane(f, app, events, "Events");
        }
        View::Hosts => {
            let [table, events] =
                Layout::vertical([Constraint::Min(3), Constraint::Length(9)]).areas(main);
            hosts_table(f, app, table, now_ms);
            events_pane(f, app, events, "Events");
        }
        View::Events => events_pane(f, app, main, "Events (all retained, newest last)"),
    }
    f.render_widget(footer_line(app), footer);
    if app.help {
        help(f, app, area);
    }
}

fn summary_line(app: &App) -> Paragraph<'static> {
    let mut spans = vec![Span::styled(
        "fleetctl top  ",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    match &app.summary {
        None => spans.push(Span::raw("summary: waiting")),
        Some(Err(e)) => spans.push(Span::styled(
            format!("summary: {}", safe(e)),
            fg(app, Color::Red),
        )),
        Some(Ok(s)) => {
            let c: Counts = s.total.unwrap_or_default();
            let n = |label: &str, v: u32, bad: Color| {
                let style = if v > 0 {
                    fg(app, bad)
                } else {
                    Style::default()
                };
                Span::styled(format!("{label} {v} "), style)
            };
            spans.push(Span::raw(format!("{} agents  ", c.agents)));
            spans.push(n("healthy", c.healthy, Color::Green));
            spans.push(n("stale", c.stale, Color::Red));
            spans.push(n("unknown", c.health_unknown, Color::Yellow));
            spans.push(Span::raw("| "));
            spans.push(n("idle", c.idle, Color::Reset));
            spans.push(n("busy", c.busy, Color::Green));
            spans.push(n("waiting", c.waiting, Color::Red));
            spans.push(n("unknown", c.status_unknown, Color::Yellow));
            spans.push(Span::raw("| "));
            spans.push(n("alive", c.alive, Color::Green));
            spans.push(n("dead", c.dead, Color::Red));
            spans.push(n("missing", c.missing, Color::Yellow));
            spans.push(Span::raw(format!(
                "| {} tenants {} hosts",
                s.tenants.len(),
                s.hosts.len()
            )));
        }
    }
    Paragraph::new(Line::from(spans))
}

fn conn_span(app: &App, what: &str, c: &Conn) -> Span<'static> {
    match c {
        Conn::Connecting => Span::styled(format!("{what}: Connecting"), fg(app, Color::Yellow)),
        Conn::Connected => Span::styled(format!("{what}: Connected"), fg(app, Color::Green)),
        Conn::Reconnecting {
            since,
            attempt,
            error,
        } => Span::styled(
            format!(
                "{what}: Reconnecting ({}, attempt {attempt}): {}",
                age(Some(since.elapsed().as_secs_f64())),
                safe(error)
            ),
            fg(app, Color::Red).add_modifier(Modifier::BOLD),
        ),
    }
}

fn tabs_line(app: &App) -> Paragraph<'static> {
    let tabs = [View::Agents, View::Hosts, View::Events]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if *v == app.view {
                format!("[{} {}]", i + 1, v.title())
            } else {
                format!(" {} {} ", i + 1, v.title())
            }
        })
        .collect::<Vec<_>>()
        .join("");
    Paragraph::new(format!(
        "{tabs}  filter: {}  sort: {}{}",
        safe(&app.filter.describe()),
        app.sort.word(),
        if app.reverse { " (reversed)" } else { "" }
    ))
}

/// Column headers, their priority (higher is kept longer) and cap.
const AGENT_COLUMNS: &[(&str, u8, usize)] = &[
    ("NAME", 10, 28),
    ("HOST", 3, 24),
    ("RUNTIME", 6, 10),
    ("PANE", 9, 7),
    ("PROCESS", 5, 16),
    ("IDLE", 6, 7),
    ("HB-AGE", 8, 7),
    ("HEALTH", 9, 7),
    ("STATUS", 7, 7),
    ("SOURCE", 4, 8),
    ("FLAGS", 8, 30),
];

/// The columns kept within `width`: the least important drop first.
fn fit(widths: &[usize], priorities: &[u8], width: usize) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..widths.len()).collect();
    let total = |keep: &[usize]| keep.iter().map(|&i| widths[i] + 1).sum::<usize>();
    while total(&keep) > width && keep.len() > 1 {
        let Some(pos) = keep
            .iter()
            .enumerate()
            .min_by_key(|(p, i)| (priorities[**i], std::cmp::Reverse(*p)))
            .map(|(p, _)| p)
        else {
            break;
        };
        keep.remove(pos);
    }
    keep
}

fn agent_cells(app: &App, r: &AgentRow, now_ms: i64) -> Vec<(String, Style)> {
    let p = crate::ps::ps_row(r, now_ms);
    let plain = |s: String| (s, Style::default());
    let mut flags = p.flags.to_vec();
    if !p.supervisor_state.is_empty() {
        flags.push(p.supervisor_state.to_owned());
    }
    let flags_style = if flags.is_empty() {
        Style::default()
    } else {
        fg(app, Color::Yellow)
    };
    vec![
        plain(safe(p.name)),
        plain(safe(&format!("{}/{}", p.tenant_id, p.host))),
        plain(safe(crate::ps::or_dash_ref(p.runtime))),
        (p.pane.to_owned(), fg(app, pane_colour(p.pane))),
        plain(safe(p.process.map_or("-", |x| x.name))),
        plain(age(p.idle_seconds)),
        plain(age(p.heartbeat.age_seconds)),
        (
            p.heartbeat.health.to_owned(),
            fg(app, health_colour(p.heartbeat.health)),
        ),
        (
            p.heartbeat.status.to_owned(),
            status_colour(p.heartbeat.status).map_or_else(Style::default, |c| fg(app, c)),
        ),
        (
            p.heartbeat.status_source.to_owned(),
            Style::default().add_modifier(Modifier::DIM),
        ),
        (
            if flags.is_empty() {
                "-".into()
            } else {
                safe(&flags.join(","))
            },
            flags_style,
        ),
    ]
}

/// A table of `cells` under `columns`, fitted to `area`, with the row
/// `selected` highlighted.
fn table(
    f: &mut Frame,
    area: Rect,
    title: String,
    columns: &[(&str, u8, usize)],
    rows: Vec<Vec<(String, Style)>>,
    selected: Option<usize>,
) {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _, cap))| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.0.chars().count()))
                .chain([h.len()])
                .max()
                .unwrap_or(0)
                .min(*cap)
        })
        .collect();
    let priorities: Vec<u8> = columns.iter().map(|c| c.1).collect();
    let keep = fit(
        &widths,
        &priorities,
        usize::from(area.width).saturating_sub(4),
    );
    let header =
        Row::new(keep.iter().map(|&i| {
            Cell::from(columns[i].0).style(Style::default().add_modifier(Modifier::BOLD))
        }));
    let body: Vec<Row> = rows
        .into_iter()
        .map(|r| {
            Row::new(keep.iter().map(|&i| {
                let (text, style) = r.get(i).cloned().unwrap_or_default();
                Cell::from(text).style(style)
            }))
        })
        .collect();
    let constraints: Vec<Constraint> = keep
        .iter()
        .map(|&i| Constraint::Length(u16::try_from(widths[i]).unwrap_or(u16::MAX)))
        .collect();
    let t = Table::new(body, constraints)
        .header(header)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol(">")
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(selected);
    f.render_stateful_widget(t, area, &mut state);
}

/// How many rows a table in `area` shows: its borders and header take
/// three lines.
fn shown(area: Rect) -> usize {
    usize::from(area.height).saturating_sub(3).max(1)
}

/// The first row to lay out so that `selected` stays on screen, moving
/// the window as little as possible from `offset`.
fn scroll(offset: usize, selected: Option<usize>, total: usize, shown: usize) -> usize {
    let mut first = offset.min(total.saturating_sub(shown));
    if let Some(s) = selected {
        if s < first {
            first = s;
        } else if s >= first + shown {
            first = s + 1 - shown;
        }
    }
    first
}

/// "(N)" or, when the table scrolls, "(first–last of N)".
fn count_title(what: &str, first: usize, len: usize, total: usize) -> String {
    if len < total {
        format!("{what} ({}–{} of {total})", first + 1, first + len)
    } else {
        format!("{what} ({total})")
    }
}

fn agents_table(f: &mut Frame, app: &App, area: Rect, now_ms: i64) {
    if let Some(matched) = app.too_many {
        too_many(f, app, area, matched);
        return;
    }
    let rows = app.sorted(now_ms);
    let selected = app
        .selected
        .as_ref()
        .and_then(|k| rows.iter().position(|r| key_of(r) == *k));
    // Only the rows on screen are laid out: the others cost a sort.
    let n = shown(area);
    let first = scroll(app.agent_offset.get(), selected, rows.len(), n);
    app.agent_offset.set(first);
    let window = &rows[first..(first + n).min(rows.len())];
    let cells = window.iter().map(|r| agent_cells(app, r, now_ms)).collect();
    let title = match app.conn {
        Conn::Connected => count_title("Agents", first, window.len(), rows.len()),
        _ => "Agents (none held while not connected)".to_owned(),
    };
    table(
        f,
        area,
        title,
        AGENT_COLUMNS,
        cells,
        selected.map(|s| s - first),
    );
}

/// The selection matches more agents than `top` holds: it says how many
/// and how to narrow it, and holds none.
fn too_many(f: &mut Frame, app: &App, area: Rect, matched: u32) {
    let text = vec![
        Line::from(Span::styled(
            format!(
                "{matched} agents match this selection: more than the {} rows top holds (--max-rows).",
                app.max_rows
            ),
            fg(app, Color::Yellow),
        )),
        Line::from("The summary above counts them all; none is held here."),
        Line::from(
            "Narrow it: / a name glob, h health (stale first), t status (waiting), p pane, \
             or start with --tenant / --host.",
        ),
        Line::from("2 shows every host with its counts."),
    ];
    f.render_widget(
        Paragraph::new(text)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(Block::bordered().title("Agents (too many to hold)")),
        area,
    );
}

const HOST_COLUMNS: &[(&str, u8, usize)] = &[
    ("TENANT", 8, 20),
    ("HOST", 10, 28),
    ("LINK", 9, 12),
    ("SEEN", 7, 7),
    ("VERSION", 4, 12),
    ("AGENTS", 8, 6),
    ("ALIVE", 8, 6),
    ("HEALTHY", 8, 7),
    ("FLAGS", 7, 30),
    ("UPLINKS", 5, 40),
];

fn host_cells(app: &App, h: &HostRow, now_ms: i64) -> Vec<(String, Style)> {
    let plain = |s: String| (s, Style::default());
    let link = if h.link.is_empty() {
        "-".to_owned()
    } else {
        safe(&h.link)
    };
    let link_style = match h.link.as_str() {
        "unreachable" => fg(app, Color::Red),
        "connected" | "local" => fg(app, Color::Green),
        _ => Style::default(),
    };
    let seen = (h.last_seen_unix_ms > 0).then(|| (now_ms - h.last_seen_unix_ms) as f64 / 1000.0);
    let uplinks = h
        .uplinks
        .iter()
        .map(|u| format!("{} {}", u.address, u.state))
        .collect::<Vec<_>>()
        .join(", ");
    let count = |n: u32, of: u32| {
        (
            n.to_string(),
            if n < of {
                fg(app, Color::Yellow)
            } else {
                Style::default()
            },
        )
    };
    vec![
        plain(safe(&h.tenant_id)),
        plain(safe(&h.host)),
        (link, link_style),
        plain(age(seen)),
        plain(safe(&h.hostd_version)),
        plain(h.agents_total.to_string()),
        count(h.agents_alive, h.agents_total),
        count(h.agents_healthy, h.agents_total),
        (
            if h.flags.is_empty() {
                "-".into()
            } else {
                safe(&h.flags.join(","))
            },
            if h.flags.is_empty() {
                Style::default()
            } else {
                fg(app, Color::Yellow)
            },
        ),
        plain(if uplinks.is_empty() {
            "-".into()
        } else {
            safe(&uplinks)
        }),
    ]
}

fn hosts_table(f: &mut Frame, app: &App, area: Rect, now_ms: i64) {
    let n = shown(area);
    if app.fleet.hosts.is_empty()
        && let Some(Ok(s)) = &app.summary
        && !s.hosts.is_empty()
    {
        // No fleet stream (the selection is too big to hold): the
        // summary's per-host counts instead.
        let first = scroll(app.host_offset, None, s.hosts.len(), n);
        let window = &s.hosts[first..(first + n).min(s.hosts.len())];
        let cells = window.iter().map(|h| host_summary_cells(app, h)).collect();
        let title = count_title(
            "Hosts, from the summary",
            first,
            window.len(),
            s.hosts.len(),
        );
        table(f, area, title, HOST_SUMMARY_COLUMNS, cells, None);
        return;
    }
    let first = scroll(app.host_offset, None, app.fleet.hosts.len(), n);
    let cells = app
        .fleet
        .hosts
        .values()
        .skip(first)
        .take(n)
        .map(|h| host_cells(app, h, now_ms))
        .collect::<Vec<_>>();
    let title = count_title("Hosts", first, cells.len(), app.fleet.hosts.len());
    table(f, area, title, HOST_COLUMNS, cells, None);
}

const HOST_SUMMARY_COLUMNS: &[(&str, u8, usize)] = &[
    ("TENANT", 8, 20),
    ("HOST", 10, 28),
    ("LINK", 9, 12),
    ("AGENTS", 8, 7),
    ("HEALTHY", 8, 7),
    ("STALE", 8, 7),
    ("WAITING", 8, 7),
    ("DEAD", 8, 7),
];

fn host_summary_cells(app: &App, h: &fleet_proto::v1::HostSummary) -> Vec<(String, Style)> {
    let plain = |s: String| (s, Style::default());
    let c = h.counts.unwrap_or_default();
    let alarm = |n: u32| {
        (
            n.to_string(),
            if n > 0 {
                fg(app, Color::Red)
            } else {
                Style::default()
            },
        )
    };
    vec![
        plain(safe(&h.tenant_id)),
        plain(safe(&h.host)),
        plain(if h.link.is_empty() {
            "-".into()
        } else {
            safe(&h.link)
        }),
        plain(c.agents.to_string()),
        plain(c.healthy.to_string()),
        alarm(c.stale),
        alarm(c.waiting),
        alarm(c.dead),
    ]
}

fn event_line(app: &App, e: &Event, with_agent: bool) -> Line<'static> {
    let who = if !with_agent {
        String::new()
    } else if e.agent.is_empty() {
        format!("{}/{} ", e.tenant_id, e.host)
    } else {
        format!("{}/{}/{} ", e.tenant_id, e.host, e.agent)
    };
    let kind_style = match e.kind.as_str() {
        "died" | "session-gone" | "start-failed" | "heartbeat-stale" | "respawn-failed"
        | "respawn-refused" | "need-human" | "waiting-for-human" | "alert" | "send-failed"
        | "send-abandoned" | "roster-rejected" | "tmux-server-lost" | "tmux-unresponsive"
        | "host-unreachable" | "duplicate-identity" | "uplink-refused" => fg(app, Color::Red),
        "started" | "adopted" | "heartbeat-healthy" | "sent" | "host-connected"
        | "uplink-recovered" | "tmux-responsive" => fg(app, Color::Green),
        "drift" | "heartbeat-unknown" | "respawning" | "unmanaged-found" => fg(app, Color::Yellow),
        _ => Style::default(),
    };
    Line::from(vec![
        Span::raw(format!("{} ", clock(e.ts_unix_ms))),
        Span::raw(safe(&who)),
        Span::styled(format!("{} ", safe(&e.kind)), kind_style),
        Span::raw(safe(&e.message)),
    ])
}

/// The newest lines that fit `area` inside a border.
fn tail<T>(items: &[T], area: Rect) -> &[T] {
    let room = usize::from(area.height.saturating_sub(2));
    &items[items.len().saturating_sub(room)..]
}

fn events_pane(f: &mut Frame, app: &App, area: Rect, title: &str) {
    let all: Vec<&Event> = app.events.iter().collect();
    let lines: Vec<Line> = tail(&all, area)
        .iter()
        .map(|e| event_line(app, e, true))
        .collect();
    let title = match &app.events_conn {
        Conn::Connected => title.to_owned(),
        other => format!("{title} — {}", conn_span(app, "events", other).content),
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn screen_pane(f: &mut Frame, app: &App, area: Rect) {
    let Some(k) = &app.selected else {
        f.render_widget(
            Paragraph::new("no agent selected").block(Block::bordered().title("Screen")),
            area,
        );
        return;
    };
    let name = safe(&format!("{}/{}/{}", k.0, k.1, k.2));
    let (title, lines): (String, Vec<Line>) = match &app.screen {
        Screen::None | Screen::Waiting => (
            format!("Screen {name} (read-only)"),
            vec![Line::raw("waiting for the first frame")],
        ),
        Screen::Error(e) => (
            format!("Screen {name} (read-only)"),
            vec![Line::styled(
                format!("no screen: {}", safe(e)),
                fg(app, Color::Red),
            )],
        ),
        Screen::Frame(fr) => {
            // The last rows with text that fit: a runtime's prompt sits
            // at the bottom of what it drew.
            let used = fr
                .lines
                .iter()
                .rposition(|l| !l.trim().is_empty())
                .map_or(0, |i| i + 1);
            let shown = tail(&fr.lines[..used], area);
            (
                format!(
                    "Screen {name} (read-only, {}x{}{}{})",
                    fr.width,
                    fr.height,
                    if fr.dead { ", dead" } else { "" },
                    if fr.alternate_screen {
                        ", alternate"
                    } else {
                        ""
                    }
                ),
                shown.iter().map(|l| Line::raw(safe(l))).collect(),
            )
        }
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

/// The newest `sent` event's verdict, as a line.
fn last_receipt(app: &App) -> Line<'static> {
    let Some(e) = app.agent_events.iter().rev().find(|e| e.kind == "sent") else {
        return Line::raw("last receipt: none seen");
    };
    let field = |k: &str| e.fields.get(k).map_or("?".to_owned(), |v| safe(v));
    let verdict = field("verdict");
    let word = verdict
        .strip_prefix("VERDICT_")
        .unwrap_or(&verdict)
        .to_ascii_lowercase();
    let style = if word == "accepted" || word == "delivered" {
        fg(app, Color::Green)
    } else {
        fg(app, Color::Red)
    };
    Line::from(vec![
        Span::raw(format!("last receipt {}: ", clock(e.ts_unix_ms))),
        Span::styled(word, style),
        Span::raw(format!(
            " ({} bytes, {} ms)",
            field("bytes"),
            field("elapsed_ms")
        )),
    ])
}

fn agent_pane(f: &mut Frame, app: &App, area: Rect) {
    let mut lines = vec![last_receipt(app)];
    let evs: Vec<&Event> = app.agent_events.iter().collect();
    let room = Rect {
        height: area.height.saturating_sub(1),
        ..area
    };
    lines.extend(tail(&evs, room).iter().map(|e| event_line(app, e, false)));
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("Agent events")),
        area,
    );
}

fn footer_line(app: &App) -> Paragraph<'static> {
    if let Input::Filter(text) = &app.input {
        return Paragraph::new(Line::from(vec![
            Span::styled("name glob: ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{}_", safe(text))),
            Span::raw("   Enter apply  Esc cancel  (empty clears)"),
        ]));
    }
    if let Some(note) = &app.note {
        return Paragraph::new(Span::styled(safe(note), fg(app, Color::Red)));
    }
    Paragraph::new(
        "q quit  ? help  Tab view  j/k select  / name  h health  t status  p pane  c clear  s sort  r reverse",
    )
    .style(Style::default().add_modifier(Modifier::DIM))
}

fn help(f: &mut Frame, app: &App, area: Rect) {
    let width = area.width.saturating_sub(4).min(80);
    let height = area
        .height
        .saturating_sub(2)
        .min(u16::try_from(KEYS.len() + 4).unwrap_or(u16::MAX));
    let popup = Rect {
        x: area.x + (area.width.saturating_sub(width)) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height,
    };
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<16}"),
                    fg(app, Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::raw(
        "Filters are applied by the server; colours follow NO_COLOR and TERM.",
    ));
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("Keys (any key closes)")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::top::model::Filter;
    use ratatui::backend::TestBackend;

    fn screen(app: &App, width: u16, height: u16) -> String {
        let mut t = ratatui::Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| draw(f, app, 0)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_window_follows_the_selection_and_moves_as_little_as_it_can() {
        assert_eq!(scroll(0, Some(3), 100, 10), 0);
        assert_eq!(scroll(0, Some(12), 100, 10), 3);
        assert_eq!(scroll(3, Some(5), 100, 10), 3, "inside: no move");
        assert_eq!(scroll(3, Some(1), 100, 10), 1);
        assert_eq!(scroll(95, None, 100, 10), 90, "the last page stays full");
        assert_eq!(scroll(5, None, 4, 10), 0);
    }

    #[test]
    fn only_the_rows_on_screen_are_laid_out_and_the_title_says_which() {
        let mut app = App::new(Filter::default(), false, String::new(), 100_000);
        app.conn = Conn::Connected;
        for i in 0..50_000 {
            let r = AgentRow {
                tenant_id: "t".into(),
                host: "h".into(),
                name: format!("a{i:05}"),
                ..Default::default()
            };
            app.fleet.rows.insert(key_of(&r), r);
        }
        app.move_by(30_000, 0);
        let text = screen(&app, 120, 40);
        assert!(text.contains("a30000"), "{text}");
        assert!(!text.contains("a00000"), "{text}");
        assert!(text.contains(" of 50000)"), "{text}");
    }

    #[test]
    fn too_many_to_hold_is_a_count_and_the_way_to_narrow_it() {
        let mut app = App::new(Filter::default(), false, String::new(), 10);
        app.too_many = Some(500_000);
        let text = screen(&app, 140, 40);
        assert!(text.contains("500000 agents match"), "{text}");
        assert!(text.contains("--max-rows"), "{text}");
    }

    #[test]
    fn narrow_tables_drop_the_least_important_columns() {
        let keep = fit(&[10, 5, 8], &[9, 1, 5], 20);
        assert_eq!(keep, [0, 2]);
        assert_eq!(fit(&[10, 5, 8], &[9, 1, 5], 3), [0]);
    }
}
