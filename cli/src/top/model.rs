//! What `fleetctl top` knows and shows: the rows the server sent for the
//! current selection, hosts, events, the summary, the selected agent's
//! screen, the connection's state, and the operator's sort, filter and view
//! choices. Pure state: no I/O here, so every transition is testable.

use std::collections::VecDeque;
use std::time::Instant;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use fleet_proto::v1::{
    AgentRow, AgentStatus, Event, FleetUpdate, Health, PaneState, ScreenFrame, Selector, Summary,
};

/// How many fleet events the events pane keeps.
pub const EVENTS_KEPT: usize = 200;
/// How many events of the selected agent are kept.
pub const AGENT_EVENTS_KEPT: usize = 50;

use crate::mirror::Mirror;
pub use crate::mirror::{Key, key_of};

/// The address the server resolves (`TENANT/HOST/AGENT`).
pub fn address(k: &Key) -> String {
    format!("{}/{}/{}", k.0, k.1, k.2)
}

/// The state of one stream to the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Conn {
    /// Dialling for the first time.
    Connecting,
    /// The stream is up (its snapshot arrived).
    Connected,
    /// The stream broke; the next attempt is due after a backoff.
    Reconnecting {
        since: Instant,
        attempt: u32,
        error: String,
    },
}

/// What the main area shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Agents,
    Hosts,
    Events,
}

impl View {
    pub fn next(self) -> Self {
        match self {
            View::Agents => View::Hosts,
            View::Hosts => View::Events,
            View::Events => View::Agents,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            View::Agents => "Agents",
            View::Hosts => "Hosts",
            View::Events => "Events",
        }
    }
}

/// The column the agents table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Host,
    Health,
    Status,
    Pane,
    Idle,
}

impl SortKey {
    pub fn next(self) -> Self {
        match self {
            SortKey::Name => SortKey::Host,
            SortKey::Host => SortKey::Health,
            SortKey::Health => SortKey::Status,
            SortKey::Status => SortKey::Pane,
            SortKey::Pane => SortKey::Idle,
            SortKey::Idle => SortKey::Name,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Host => "host",
            SortKey::Health => "health",
            SortKey::Status => "status",
            SortKey::Pane => "pane",
            SortKey::Idle => "idle",
        }
    }
}

/// The operator's filter, sent to the server as a [`Selector`]. The flags
/// `top` was started with are the base; keys change names, health, status
/// and pane.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    pub base: Selector,
    pub name: Option<String>,
    pub health: Option<Health>,
    pub status: Option<AgentStatus>,
    pub pane: Option<PaneState>,
}

/// `None`, then each value in turn, then `None` again.
fn cycle<T: Copy + PartialEq>(cur: Option<T>, all: &[T]) -> Option<T> {
    match cur.and_then(|c| all.iter().position(|v| *v == c)) {
        None => all.first().copied(),
        Some(i) => all.get(i + 1).copied(),
    }
}

impl Filter {
    pub fn from_selector(s: Option<Selector>) -> Self {
        Filter {
            base: s.unwrap_or_default(),
            ..Default::default()
        }
    }

    /// The selector as sent (`None` when it admits everything).
    pub fn selector(&self) -> Option<Selector> {
        let mut s = self.base.clone();
        if let Some(n) = &self.name {
            s.names = vec![n.clone()];
        }
        if let Some(h) = self.health {
            s.health = vec![h as i32];
        }
        if let Some(st) = self.status {
            s.status = vec![st as i32];
        }
        if let Some(p) = self.pane {
            s.pane = vec![p as i32];
        }
        (s != Selector::default()).then_some(s)
    }

    pub fn cycle_health(&mut self) {
        self.health = cycle(
            self.health,
            &[Health::Healthy, Health::Stale, Health::Unknown],
        );
    }

    pub fn cycle_status(&mut self) {
        self.status = cycle(
            self.status,
            &[
                AgentStatus::Ok,
                AgentStatus::Busy,
                AgentStatus::Waiting,
                AgentStatus::Unknown,
            ],
        );
    }

    pub fn cycle_pane(&mut self) {
        self.pane = cycle(
            self.pane,
            &[PaneState::Alive, PaneState::Dead, PaneState::Missing],
        );
    }

    /// Words for the status line: `name=coder-* health=stale`, or `none`.
    pub fn describe(&self) -> String {
        let s = self.selector().unwrap_or_default();
        let mut parts = Vec::new();
        let list = |v: &[String]| v.join(",");
        if !s.tenants.is_empty() {
            parts.push(format!("tenant={}", list(&s.tenants)));
        }
        if !s.hosts.is_empty() {
            parts.push(format!("host={}", list(&s.hosts)));
        }
        if !s.names.is_empty() {
            parts.push(format!("name={}", list(&s.names)));
        }
        let words = |v: &[i32], f: fn(i32) -> &'static str| {
            v.iter().map(|x| f(*x)).collect::<Vec<_>>().join(",")
        };
        if !s.health.is_empty() {
            parts.push(format!(
                "health={}",
                words(&s.health, crate::ps::health_word)
            ));
        }
        if !s.status.is_empty() {
            parts.push(format!(
                "status={}",
                words(&s.status, crate::ps::status_word)
            ));
        }
        if !s.pane.is_empty() {
            parts.push(format!("pane={}", words(&s.pane, crate::ps::pane_word)));
        }
        if !s.flags.is_empty() {
            parts.push(format!("flags={}", s.flags.len()));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }
}

/// What the keyboard is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Normal,
    /// Typing a name glob after `/`.
    Filter(String),
}

/// The selected agent's screen.
#[derive(Debug, Clone, PartialEq)]
pub enum Screen {
    None,
    Waiting,
    Frame(ScreenFrame),
    Error(String),
}

/// Everything a feed task reports to the UI.
#[derive(Debug)]
pub enum Msg {
    /// The fleet stream of generation `gen` changed state.
    Conn(u64, Conn),
    Update(u64, Box<FleetUpdate>),
    Summary(u64, Result<Summary, String>),
    /// Generation `gen` matches this many agents, more than `top` holds:
    /// no fleet stream is open for it.
    TooMany(u64, u32),
    Event(Box<Event>),
    EventsConn(Conn),
    /// A screen frame or error for the agent `key`.
    Screen(Key, Screen),
    AgentEvent(Key, Box<Event>),
    /// The selected agent's events stream (re)opened: its backlog follows.
    AgentEventsReset(Key),
}

/// The whole dashboard.
#[derive(Debug)]
pub struct App {
    pub conn: Conn,
    pub events_conn: Conn,
    /// Bumped whenever the selector changes: reports of older feeds are
    /// dropped, so no row of an old selection is ever held.
    pub generation: u64,
    /// The rows of the current selection, at most `max_rows` of them.
    pub fleet: Mirror,
    pub summary: Option<Result<Summary, String>>,
    /// The most agent rows held; a selection matching more is shown as a
    /// count (`too_many`) with no rows.
    pub max_rows: usize,
    pub too_many: Option<u32>,
    /// The first agent row laid out (kept by the view so the window moves
    /// only as the selection leaves it) and the hosts view's scroll.
    pub agent_offset: std::cell::Cell<usize>,
    pub host_offset: usize,
    pub events: VecDeque<Event>,
    pub agent_events: VecDeque<Event>,
    pub screen: Screen,
    /// The agent whose screen and events are shown.
    pub selected: Option<Key>,
    pub view: View,
    pub sort: SortKey,
    pub reverse: bool,
    pub filter: Filter,
    pub input: Input,
    pub help: bool,
    /// A one-line note for the operator (a refused filter …).
    pub note: Option<String>,
    pub colour: bool,
    pub server: String,
}

/// What the UI loop must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    None,
    Quit,
    /// The selector changed: restart the streams with it.
    Reselect,
}

impl App {
    pub fn new(filter: Filter, colour: bool, server: String, max_rows: usize) -> Self {
        App {
            conn: Conn::Connecting,
            events_conn: Conn::Connecting,
            generation: 0,
            fleet: Mirror::new(max_rows),
            summary: None,
            max_rows,
            too_many: None,
            agent_offset: std::cell::Cell::new(0),
            host_offset: 0,
            events: VecDeque::new(),
            agent_events: VecDeque::new(),
            screen: Screen::None,
            selected: None,
            view: View::Agents,
            sort: SortKey::Name,
            reverse: false,
            filter,
            input: Input::Normal,
            help: false,
            note: None,
            colour,
            server,
        }
    }

    /// Forgets every row (a new selection or a lost stream).
    fn clear_rows(&mut self) {
        self.fleet.clear();
        self.too_many = None;
    }

    /// Applies a report. Returns `Err` with a reason when the fleet stream
    /// must be restarted (a gap in its sequence).
    pub fn apply(&mut self, msg: Msg) -> Result<(), String> {
        match msg {
            Msg::Conn(g, c) if g == self.generation => {
                if !matches!(c, Conn::Connected) {
                    self.clear_rows();
                }
                self.conn = c;
            }
            Msg::Update(g, u) if g == self.generation => return self.update(*u),
            Msg::Summary(g, s) if g == self.generation => self.summary = Some(s),
            Msg::TooMany(g, n) if g == self.generation => {
                self.clear_rows();
                self.too_many = Some(n);
                self.conn = Conn::Connected;
            }
            Msg::Conn(..) | Msg::Update(..) | Msg::Summary(..) | Msg::TooMany(..) => {}
            Msg::Event(e) => {
                self.events.push_back(*e);
                while self.events.len() > EVENTS_KEPT {
                    self.events.pop_front();
                }
            }
            Msg::EventsConn(c) => {
                // A (re)opened stream sends the backlog again.
                if c == Conn::Connected {
                    self.events.clear();
                }
                self.events_conn = c;
            }
            Msg::AgentEventsReset(k) if Some(&k) == self.selected.as_ref() => {
                self.agent_events.clear();
            }
            Msg::Screen(k, s) if Some(&k) == self.selected.as_ref() => self.screen = s,
            Msg::AgentEvent(k, e) if Some(&k) == self.selected.as_ref() => {
                self.agent_events.push_back(*e);
                while self.agent_events.len() > AGENT_EVENTS_KEPT {
                    self.agent_events.pop_front();
                }
            }
            Msg::Screen(..) | Msg::AgentEvent(..) | Msg::AgentEventsReset(..) => {}
        }
        Ok(())
    }

    fn update(&mut self, u: FleetUpdate) -> Result<(), String> {
        match self.fleet.apply(u) {
            Ok(true) => {
                self.too_many = None;
                self.conn = Conn::Connected;
            }
            Ok(false) => {}
            Err(broken) => {
                self.clear_rows();
                return Err(broken.to_string());
            }
        }
        Ok(())
    }

    /// The rows in display order.
    pub fn sorted(&self, now_ms: i64) -> Vec<&AgentRow> {
        let mut v: Vec<&AgentRow> = self.fleet.rows.values().collect();
        let idle = |r: &AgentRow| {
            if r.pane == PaneState::Alive as i32 && r.last_activity_unix_ms > 0 {
                now_ms - r.last_activity_unix_ms
            } else {
                i64::MAX
            }
        };
        let hb = |r: &AgentRow| r.heartbeat.clone().unwrap_or_default();
        match self.sort {
            SortKey::Name => {}
            SortKey::Host => {
                v.sort_by(|a, b| (&a.tenant_id, &a.host).cmp(&(&b.tenant_id, &b.host)))
            }
            SortKey::Health => v.sort_by_key(|r| health_rank(hb(r).health)),
            SortKey::Status => v.sort_by_key(|r| status_rank(hb(r).status)),
            SortKey::Pane => v.sort_by_key(|r| pane_rank(r.pane)),
            SortKey::Idle => v.sort_by_key(|r| idle(r)),
        }
        if self.reverse {
            v.reverse();
        }
        v
    }

    /// Keeps the selection on a shown row: the first one when the selected
    /// row is gone (or none is selected).
    pub fn fix_selection(&mut self, now_ms: i64) {
        let rows = self.sorted(now_ms);
        let shown = self
            .selected
            .as_ref()
            .is_some_and(|k| rows.iter().any(|r| key_of(r) == *k));
        let first = rows.first().map(|r| key_of(r));
        if !shown {
            self.select(first);
        }
    }

    /// Selects `k`; its screen and events start empty.
    pub fn select(&mut self, k: Option<Key>) {
        if k != self.selected {
            self.selected = k;
            self.agent_events.clear();
            self.screen = if self.selected.is_some() {
                Screen::Waiting
            } else {
                Screen::None
            };
        }
    }

    /// Moves the selection by `by` rows.
    pub fn move_by(&mut self, by: isize, now_ms: i64) {
        if self.view == View::Hosts {
            // The hosts view scrolls; the view keeps the last page full.
            let total = match (&self.summary, self.fleet.hosts.len()) {
                (Some(Ok(s)), 0) => s.hosts.len(),
                (_, n) => n,
            };
            self.host_offset = self
                .host_offset
                .saturating_add_signed(by)
                .min(total.saturating_sub(1));
            return;
        }
        let rows = self.sorted(now_ms);
        let keys: Vec<Key> = rows.iter().map(|r| key_of(r)).collect();
        drop(rows);
        if keys.is_empty() {
            self.select(None);
            return;
        }
        let cur = self
            .selected
            .as_ref()
            .and_then(|k| keys.iter().position(|x| x == k))
            .unwrap_or(0);
        let last = keys.len() - 1;
        let next = cur.saturating_add_signed(by).min(last);
        self.select(keys.get(next).cloned());
    }

    /// The selector changed: forget every row of the old one.
    pub fn reselect(&mut self) {
        self.generation += 1;
        self.clear_rows();
        self.summary = None;
        self.conn = Conn::Connecting;
    }
}

/// Every key `top` knows, for the help screen (key, what it does).
pub const KEYS: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit (the terminal is restored)"),
    ("?", "this help (any key closes it)"),
    ("Tab, 1 2 3", "agents, hosts, events view"),
    (
        "Up/Down, j/k",
        "select an agent (its screen and events below); in hosts, scroll",
    ),
    ("PgUp/PgDn, g/G", "move by a page, to the first / last row"),
    (
        "/",
        "filter by a name glob (Enter applies, Esc cancels, empty clears)",
    ),
    ("h", "cycle the health filter: healthy, stale, unknown, any"),
    (
        "t",
        "cycle the status filter: idle, busy, waiting, unknown, any",
    ),
    ("p", "cycle the pane filter: alive, dead, missing, any"),
    ("c", "clear the filters set here"),
    (
        "s",
        "cycle the sort: name, host, health, status, pane, idle",
    ),
    ("r", "reverse the sort"),
];

impl App {
    /// Handles one key press.
    pub fn key(&mut self, k: KeyEvent, now_ms: i64) -> Action {
        if k.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('d'))
        {
            return Action::Quit;
        }
        if let Input::Filter(text) = &mut self.input {
            match k.code {
                KeyCode::Esc => self.input = Input::Normal,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if !c.is_control() && text.chars().count() < 200 => {
                    text.push(c);
                }
                KeyCode::Enter => {
                    let text = text.trim().to_owned();
                    self.input = Input::Normal;
                    let mut next = self.filter.clone();
                    next.name = (!text.is_empty()).then_some(text);
                    return self.refilter(next);
                }
                _ => {}
            }
            return Action::None;
        }
        if self.help {
            self.help = false;
            if k.code != KeyCode::Char('q') {
                return Action::None;
            }
        }
        self.note = None;
        let page = 10;
        match k.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab => self.view = self.view.next(),
            KeyCode::BackTab => self.view = self.view.next().next(),
            KeyCode::Char('1') => self.view = View::Agents,
            KeyCode::Char('2') => self.view = View::Hosts,
            KeyCode::Char('3') => self.view = View::Events,
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1, now_ms),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1, now_ms),
            KeyCode::PageDown => self.move_by(page, now_ms),
            KeyCode::PageUp => self.move_by(-page, now_ms),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2, now_ms),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2, now_ms),
            KeyCode::Char('/') => {
                self.input = Input::Filter(self.filter.name.clone().unwrap_or_default());
            }
            KeyCode::Char('h') => {
                let mut f = self.filter.clone();
                f.cycle_health();
                return self.refilter(f);
            }
            KeyCode::Char('t') => {
                let mut f = self.filter.clone();
                f.cycle_status();
                return self.refilter(f);
            }
            KeyCode::Char('p') => {
                let mut f = self.filter.clone();
                f.cycle_pane();
                return self.refilter(f);
            }
            KeyCode::Char('c') => {
                let f = Filter {
                    base: self.filter.base.clone(),
                    ..Default::default()
                };
                return self.refilter(f);
            }
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            _ => {}
        }
        Action::None
    }

    /// Takes `next` as the filter if the server would take it.
    fn refilter(&mut self, next: Filter) -> Action {
        if next == self.filter {
            return Action::None;
        }
        if let Err(e) = fleet_proto::select::Select::new(next.selector().as_ref()) {
            self.note = Some(format!("filter refused: {e}"));
            return Action::None;
        }
        self.filter = next;
        self.reselect();
        Action::Reselect
    }
}

fn health_rank(h: i32) -> u8 {
    match Health::try_from(h) {
        Ok(Health::Stale) => 0,
        Ok(Health::Healthy) => 2,
        _ => 1,
    }
}

fn status_rank(s: i32) -> u8 {
    match AgentStatus::try_from(s) {
        Ok(AgentStatus::Waiting) => 0,
        Ok(AgentStatus::Busy) => 1,
        Ok(AgentStatus::Ok) => 2,
        _ => 3,
    }
}

fn pane_rank(p: i32) -> u8 {
    match PaneState::try_from(p) {
        Ok(PaneState::Dead) => 0,
        Ok(PaneState::Missing) => 1,
        Ok(PaneState::Alive) => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::v1::{Snapshot, fleet_update};

    fn row(name: &str) -> AgentRow {
        AgentRow {
            tenant_id: "t".into(),
            host: "h".into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn upd(seq: u64, u: fleet_update::Update) -> Msg {
        Msg::Update(
            0,
            Box::new(FleetUpdate {
                epoch: 1,
                seq,
                update: Some(u),
                generated_at_unix_ms: 0,
            }),
        )
    }

    #[test]
    fn a_view_past_the_budget_restarts_and_too_many_is_a_count_of_this_selection() {
        let mut app = App::new(Filter::default(), false, String::new(), 1);
        let snap = fleet_update::Update::Snapshot(Snapshot {
            agents: vec![row("a"), row("b")],
            hosts: vec![],
            more: false,
        });
        assert!(app.apply(upd(1, snap)).is_err(), "the stream must restart");
        assert!(app.fleet.rows.is_empty());
        app.apply(Msg::TooMany(app.generation + 1, 9)).unwrap();
        assert_eq!(app.too_many, None, "a count of another selection");
        app.apply(Msg::TooMany(app.generation, 2)).unwrap();
        assert_eq!((app.too_many, app.conn.clone()), (Some(2), Conn::Connected));
    }

    #[test]
    fn reports_of_an_old_selection_are_dropped() {
        let mut app = App::new(Filter::default(), false, String::new(), 1000);
        app.reselect();
        app.apply(upd(
            1,
            fleet_update::Update::Snapshot(Snapshot {
                agents: vec![row("old")],
                hosts: vec![],
                more: false,
            }),
        ))
        .unwrap();
        assert!(app.fleet.rows.is_empty());
    }

    #[test]
    fn filters_cycle_and_become_selectors() {
        let mut f = Filter::default();
        assert_eq!(f.selector(), None);
        f.cycle_health();
        assert_eq!(f.health, Some(Health::Healthy));
        f.cycle_health();
        f.cycle_health();
        f.cycle_health();
        assert_eq!(f.health, None);
        f.name = Some("co*".into());
        f.cycle_pane();
        let s = f.selector().unwrap();
        assert_eq!(s.names, ["co*"]);
        assert_eq!(s.pane, [PaneState::Alive as i32]);
        assert_eq!(f.describe(), "name=co* pane=alive");
    }

    #[test]
    fn selection_follows_the_key_and_moves_within_bounds() {
        let mut app = App::new(Filter::default(), false, String::new(), 1000);
        for n in ["a", "b", "c"] {
            app.fleet.rows.insert(key_of(&row(n)), row(n));
        }
        app.move_by(1, 0);
        assert_eq!(app.selected.as_ref().map(|k| k.2.as_str()), Some("b"));
        app.move_by(10, 0);
        assert_eq!(app.selected.as_ref().map(|k| k.2.as_str()), Some("c"));
        app.move_by(-10, 0);
        assert_eq!(app.selected.as_ref().map(|k| k.2.as_str()), Some("a"));
        app.reverse = true;
        let rows = app.sorted(0);
        let names: Vec<_> = rows.iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, ["c", "b", "a"]);
    }
}
