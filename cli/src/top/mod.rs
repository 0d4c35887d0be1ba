//! `fleetctl top`: the full-screen terminal dashboard over `WatchFleet`:
//! agents, hosts, events and the selected agent's screen, live and
//! read-only. This file owns the terminal (raw mode and the alternate
//! screen, restored on every way out, a panic included) and the UI loop;
//! `model` holds the state, `feed` the streams, `view` the drawing.

mod feed;
mod model;
mod view;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, event, execute, terminal};
use tokio::sync::mpsc;

use crate::select::SelectArgs;
use crate::{Failure, client};
use model::{Action, App, Filter, Msg};

/// A full-screen, read-only dashboard of the fleet.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// The most agent rows held. A selection matching more is shown as a
    /// count with the hosts summary and no rows (it is counted again every
    /// 2 s, and its rows stream in once it fits): narrow it with a filter.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub max_rows: usize,
}

/// How often ages are redrawn when nothing else happens.
const TICK: Duration = Duration::from_secs(1);
/// How long the key reader waits before it checks whether to stop.
const KEY_POLL: Duration = Duration::from_millis(100);
/// Reports applied before one redraw (a burst is drawn once).
const BATCH: usize = 256;

/// Whether the terminal is in raw mode on the alternate screen (the panic
/// hook restores it only then).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Leaves the alternate screen, shows the cursor and ends raw mode. Safe to
/// call twice.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
        let _ = terminal::disable_raw_mode();
    }
}

/// The terminal while `top` owns it; dropping it gives it back as it was.
struct Screen {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
}

impl Screen {
    fn enter() -> Result<Self, Failure> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on any error drops `guard`, which restores.
        let guard = Restore;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        std::mem::forget(guard);
        Ok(Screen { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Restores the terminal when dropped (for the set-up's error paths).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

/// Whether to colour: a terminal that is not `dumb`, and no `NO_COLOR`.
fn colour_wanted() -> bool {
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    !no_colour && !dumb
}

fn describe(server: &client::Server) -> String {
    match server {
        client::Server::Local(p) => format!("hostd {}", p.display()),
        client::Server::Aggregator(r) => {
            format!("aggregator {}", r.aggregator.as_deref().unwrap_or("?"))
        }
    }
}

/// Reads the keyboard on its own thread (crossterm's reader blocks) until
/// `stop` is set or the UI is gone.
/// How long the UI waits for the key reader to stop before leaving it.
const READER_STOP: Duration = Duration::from_millis(500);

fn read_keys(tx: mpsc::UnboundedSender<event::Event>, stop: std::sync::Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match event::poll(KEY_POLL) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(ev) = event::read() else {
            return;
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

pub async fn run(server: &client::Server, args: TopArgs) -> Result<(), Failure> {
    let selector = args.select.check()?;
    if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        return Err(Failure::Usage(
            "fleetctl top needs a terminal (stdin and stdout); from a script use \
             `fleetctl ps --watch`, `fleetctl ps --summary` or `fleetctl events`"
                .into(),
        ));
    }
    let mut app = App::new(
        Filter::from_selector(selector),
        colour_wanted(),
        describe(server),
        args.max_rows,
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut feeds = feed::Feeds::new(server.clone(), tx, args.max_rows);
    feeds.reselect(app.filter.selector(), app.generation);

    let mut screen = Screen::enter()?;
    let (key_tx, mut keys) = mpsc::unbounded_channel();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("top-keys".into())
            .spawn(move || read_keys(key_tx, stop))?
    };
    let result = ui(&mut screen, &mut app, &mut feeds, &mut rx, &mut keys).await;
    stop.store(true, Ordering::SeqCst);
    feeds.stop();
    // The reader notices `stop` within one poll. It is waited for before
    // the terminal is given back: a poll reads what is typed, and what is
    // typed once the shell's screen is back is the shell's.
    // Bounded: on a terminal that is gone (its pane or ssh session closed)
    // crossterm's reader may never return, and the process must still end.
    let deadline = tokio::time::Instant::now() + READER_STOP;
    while !reader.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(KEY_POLL / 4).await;
    }
    drop(screen);
    result
}

async fn ui(
    screen: &mut Screen,
    app: &mut App,
    feeds: &mut feed::Feeds,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    keys: &mut mpsc::UnboundedReceiver<event::Event>,
) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = fleet_proto::clock::now_ms();
        app.fix_selection(now);
        if app.selected != feeds.following {
            feeds.follow(app.selected.clone());
        }
        screen.terminal.draw(|f| view::draw(f, app, now))?;
        tokio::select! {
            k = keys.recv() => {
                let Some(k) = k else {
                    return Err(Failure::Other("the keyboard reader stopped".into()));
                };
                if let event::Event::Key(k) = k
                    && k.kind != event::KeyEventKind::Release
                {
                    match app.key(k, now) {
                        Action::Quit => return Ok(()),
                        Action::Reselect => feeds.reselect(app.filter.selector(), app.generation),
                        Action::None => {}
                    }
                }
            }
            m = rx.recv() => {
                let Some(m) = m else {
                    return Err(Failure::Other("every stream stopped".into()));
                };
                let mut next = Some(m);
                let mut n = 0;
                while let Some(m) = next {
                    if let Err(why) = app.apply(m) {
                        // A gap: start over with a fresh stream.
                        app.note = Some(why);
                        app.reselect();
                        feeds.reselect(app.filter.selector(), app.generation);
                    }
                    n += 1;
                    next = if n < BATCH { rx.try_recv().ok() } else { None };
                }
            }
            _ = tick.tick() => {}
            _ = term.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
    }
}
