//! The streams `fleetctl top` reads, one task each: `WatchFleet` and
//! `Summarize` under the current selector, `Events` for the events pane,
//! and `WatchScreen` plus `Events` for the selected agent. Every task dials
//! on its own, reports its state, and after a broken stream or a refused
//! dial retries with a doubling backoff until the UI aborts it.

use std::time::{Duration, Instant};

use fleet_proto::v1::{
    EventsRequest, Selector, SummaryRequest, WatchFleetRequest, WatchScreenRequest,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::model::{Conn, Key, Msg, Screen, address};
use crate::client;

/// First pause after a failure, and the longest.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often the summary line is refreshed, and how long one call may take.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a selection too big to hold is counted again.
const RECOUNT_EVERY: Duration = Duration::from_secs(2);
/// Screen frames per second asked of the server.
const SCREEN_FPS: u32 = 5;

/// A doubling pause between attempts, reset by a success.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    attempt: u32,
    lost_at: Option<Instant>,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
            attempt: 0,
            lost_at: None,
        }
    }

    fn reset(&mut self) {
        *self = Backoff::new();
    }

    /// The state to show after a failure, and the pause before the next try.
    fn failed(&mut self, error: String) -> (Conn, Duration) {
        self.attempt += 1;
        let since = *self.lost_at.get_or_insert_with(Instant::now);
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        (
            Conn::Reconnecting {
                since,
                attempt: self.attempt,
                error,
            },
            pause,
        )
    }
}

/// The one line of a failure worth a status bar.
fn one_line(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().to_owned()
}

/// The running tasks, replaced as the selector or the selected agent
/// changes.
#[derive(Debug)]
pub struct Feeds {
    server: client::Server,
    tx: UnboundedSender<Msg>,
    max_rows: usize,
    fleet: Vec<JoinHandle<()>>,
    agent: Vec<JoinHandle<()>>,
    /// The agent the agent tasks follow.
    pub following: Option<Key>,
}

impl Feeds {
    pub fn new(server: client::Server, tx: UnboundedSender<Msg>, max_rows: usize) -> Self {
        Feeds {
            server,
            tx,
            max_rows,
            fleet: Vec::new(),
            agent: Vec::new(),
            following: None,
        }
    }

    /// (Re)starts the fleet, summary and events streams for `selector`,
    /// reporting under `generation`.
    pub fn reselect(&mut self, selector: Option<Selector>, generation: u64) {
        for t in self.fleet.drain(..) {
            t.abort();
        }
        let events_selector = selector.as_ref().map(|s| Selector {
            tenants: s.tenants.clone(),
            hosts: s.hosts.clone(),
            names: s.names.clone(),
            ..Default::default()
        });
        self.fleet = vec![
            tokio::spawn(fleet(
                self.server.clone(),
                selector.clone(),
                generation,
                self.max_rows,
                self.tx.clone(),
            )),
            tokio::spawn(summary(
                self.server.clone(),
                selector,
                generation,
                self.tx.clone(),
            )),
            tokio::spawn(events(
                self.server.clone(),
                events_selector,
                self.tx.clone(),
            )),
        ];
    }

    /// Follows `key`'s screen and events (nothing for `None`).
    pub fn follow(&mut self, key: Option<Key>) {
        for t in self.agent.drain(..) {
            t.abort();
        }
        self.following = key.clone();
        if let Some(k) = key {
            self.agent = vec![
                tokio::spawn(screen(self.server.clone(), k.clone(), self.tx.clone())),
                tokio::spawn(agent_events(self.server.clone(), k, self.tx.clone())),
            ];
        }
    }

    pub fn stop(&mut self) {
        for t in self.fleet.drain(..).chain(self.agent.drain(..)) {
            t.abort();
        }
    }
}

impl Drop for Feeds {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn fleet(
    server: client::Server,
    selector: Option<Selector>,
    generation: u64,
    max_rows: usize,
    tx: UnboundedSender<Msg>,
) {
    let mut backoff = Backoff::new();
    loop {
        let error = match count(&server, selector.clone()).await {
            // More than top holds: say how many, hold none, count again.
            Ok(n) if n as usize > max_rows => {
                backoff.reset();
                if tx.send(Msg::TooMany(generation, n)).is_err() {
                    return;
                }
                tokio::time::sleep(RECOUNT_EVERY).await;
                continue;
            }
            Ok(_) => {
                match watch_fleet(&server, selector.clone(), generation, &tx, &mut backoff).await {
                    Ok(()) => "the server closed the watch stream".to_owned(),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        let (conn, pause) = backoff.failed(error);
        if tx.send(Msg::Conn(generation, conn)).is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}

/// How many agents `selector` matches (a summary, not the rows).
async fn count(server: &client::Server, selector: Option<Selector>) -> Result<u32, String> {
    let mut c = tokio::time::timeout(CALL_TIMEOUT, client::open(server))
        .await
        .map_err(|_| "no connection in time".to_owned())?
        .map_err(one_line)?;
    let s = tokio::time::timeout(CALL_TIMEOUT, c.summarize(SummaryRequest { selector }))
        .await
        .map_err(|_| "no summary in time".to_owned())?
        .map_err(|s| one_line(crate::Failure::Status(s)))?
        .into_inner();
    Ok(s.total.unwrap_or_default().agents)
}

async fn watch_fleet(
    server: &client::Server,
    selector: Option<Selector>,
    generation: u64,
    tx: &UnboundedSender<Msg>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let mut c = client::open(server).await.map_err(one_line)?;
    let mut stream = c
        .watch_fleet(WatchFleetRequest { selector })
        .await
        .map_err(|s| one_line(crate::Failure::Status(s)))?
        .into_inner();
    while let Some(u) = stream
        .message()
        .await
        .map_err(|s| one_line(crate::Failure::Status(s)))?
    {
        backoff.reset();
        if tx.send(Msg::Update(generation, Box::new(u))).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

async fn summary(
    server: client::Server,
    selector: Option<Selector>,
    generation: u64,
    tx: UnboundedSender<Msg>,
) {
    let mut conn = None;
    let mut tick = tokio::time::interval(SUMMARY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if conn.is_none() {
            conn = match tokio::time::timeout(CALL_TIMEOUT, client::open(&server)).await {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    let _ = tx.send(Msg::Summary(generation, Err(one_line(e))));
                    continue;
                }
                Err(_) => continue,
            };
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let req = SummaryRequest {
            selector: selector.clone(),
        };
        let answer = match tokio::time::timeout(CALL_TIMEOUT, c.summarize(req)).await {
            Ok(Ok(s)) => Ok(s.into_inner()),
            Ok(Err(s)) => Err(one_line(crate::Failure::Status(s))),
            Err(_) => Err("no summary in time".to_owned()),
        };
        if answer.is_err() {
            conn = None;
        }
        if tx.send(Msg::Summary(generation, answer)).is_err() {
            return;
        }
    }
}

async fn events(server: client::Server, selector: Option<Selector>, tx: UnboundedSender<Msg>) {
    let mut backoff = Backoff::new();
    loop {
        let req = EventsRequest {
            follow: true,
            selector: selector.clone(),
            ..Default::default()
        };
        let r = follow_events(
            &server,
            req,
            &mut backoff,
            &tx,
            |e| Msg::Event(Box::new(e)),
            || Msg::EventsConn(Conn::Connected),
        )
        .await;
        let error = match r {
            Ok(()) => "the server closed the events stream".to_owned(),
            Err(e) => e,
        };
        let (conn, pause) = backoff.failed(error);
        if tx.send(Msg::EventsConn(conn)).is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}

/// Reads one `Events` stream until it ends; `connected` is sent once it
/// is open (the receiver then drops what an older stream sent: the
/// backlog comes again).
async fn follow_events(
    server: &client::Server,
    req: EventsRequest,
    backoff: &mut Backoff,
    tx: &UnboundedSender<Msg>,
    wrap: impl Fn(fleet_proto::v1::Event) -> Msg,
    connected: impl Fn() -> Msg,
) -> Result<(), String> {
    let mut c = client::open(server).await.map_err(one_line)?;
    let mut stream = c
        .events(req)
        .await
        .map_err(|s| one_line(crate::Failure::Status(s)))?
        .into_inner();
    backoff.reset();
    if tx.send(connected()).is_err() {
        return Ok(());
    }
    while let Some(e) = stream
        .message()
        .await
        .map_err(|s| one_line(crate::Failure::Status(s)))?
    {
        if crate::events::QUIET_KINDS.contains(&e.kind.as_str()) {
            continue;
        }
        if tx.send(wrap(e)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

async fn agent_events(server: client::Server, key: Key, tx: UnboundedSender<Msg>) {
    let mut backoff = Backoff::new();
    loop {
        let req = EventsRequest {
            follow: true,
            agent: address(&key),
            ..Default::default()
        };
        let k = key.clone();
        let k2 = key.clone();
        let r = follow_events(
            &server,
            req,
            &mut backoff,
            &tx,
            move |e| Msg::AgentEvent(k.clone(), Box::new(e)),
            move || Msg::AgentEventsReset(k2.clone()),
        )
        .await;
        if r.is_ok() && tx.is_closed() {
            return;
        }
        let (_, pause) = backoff.failed(r.err().unwrap_or_default());
        tokio::time::sleep(pause).await;
    }
}

async fn screen(server: client::Server, key: Key, tx: UnboundedSender<Msg>) {
    let mut backoff = Backoff::new();
    loop {
        let error = match watch_screen(&server, &key, &tx, &mut backoff).await {
            Ok(()) => "the screen stream ended".to_owned(),
            Err(e) => e,
        };
        if tx
            .send(Msg::Screen(key.clone(), Screen::Error(error.clone())))
            .is_err()
        {
            return;
        }
        let (_, pause) = backoff.failed(error);
        tokio::time::sleep(pause).await;
    }
}

async fn watch_screen(
    server: &client::Server,
    key: &Key,
    tx: &UnboundedSender<Msg>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let mut c = client::open(server).await.map_err(one_line)?;
    let mut stream = c
        .watch_screen(WatchScreenRequest {
            agent: address(key),
            max_fps: SCREEN_FPS,
            colours: false,
            once: false,
        })
        .await
        .map_err(|s| one_line(crate::Failure::Status(s)))?
        .into_inner();
    while let Some(f) = stream
        .message()
        .await
        .map_err(|s| one_line(crate::Failure::Status(s)))?
    {
        backoff.reset();
        if tx.send(Msg::Screen(key.clone(), Screen::Frame(f))).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_bound_and_keeps_when_the_link_was_lost() {
        let mut b = Backoff::new();
        let (c1, p1) = b.failed("x".into());
        let (_, p2) = b.failed("y".into());
        for _ in 0..10 {
            b.failed("z".into());
        }
        let (c3, p3) = b.failed("w".into());
        assert_eq!(p1, BACKOFF_START);
        assert_eq!(p2, BACKOFF_START * 2);
        assert_eq!(p3, BACKOFF_MAX);
        let since = |c: &Conn| match c {
            Conn::Reconnecting { since, .. } => Some(*since),
            _ => None,
        };
        assert_eq!(since(&c1), since(&c3));
        b.reset();
        assert_eq!(b.failed("again".into()).1, BACKOFF_START);
    }
}
