//! The screen observer: for agents whose runtime has screen rules, reads
//! the pane when it changed and tells the table what the screen says
//! ([`verify::observe`]). It runs beside the table's owner task, so a slow
//! or stopped tmux never holds the owner up; each capture is bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_proto::v1::PaneState;
use tokio::sync::{mpsc, watch};

use crate::roster::Roster;
use crate::runtime::BoxShape;
use crate::table::{Command, View};
use crate::tmux::Tmux;
use crate::verify::{self, Observed};

/// How often the observer looks at the table.
const PERIOD: Duration = Duration::from_millis(400);
/// A pane whose activity did not move is read again after this long (its
/// screen has not changed; this is a safety net only).
const REFRESH: Duration = Duration::from_secs(60);
/// A pane that keeps changing (a spinner) is read at most this often: a
/// capture is one tmux process (~3.5 ms), and 100 busy agents must not
/// cost a core.
const MIN_GAP: Duration = Duration::from_secs(2);
/// Bound on one capture.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Seen {
    pid: u32,
    activity: i64,
    status: i32,
    at: Instant,
    /// The capture came a whole second after the last activity began:
    /// tmux's activity has one-second resolution, so a capture within that
    /// second may have missed the rest of what was drawn in it.
    settled: bool,
    last: Option<Observed>,
}

pub async fn run(
    view: watch::Receiver<Arc<View>>,
    roster: watch::Receiver<Arc<Roster>>,
    tmux: Tmux,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let v = view.borrow().clone();
        let r = roster.borrow().clone();
        seen.retain(|name, _| v.agents.iter().any(|a| &a.name == name));
        for row in &v.agents {
            let Some(spec) = r.agent(&row.name) else {
                continue;
            };
            if matches!(spec.screen.input, BoxShape::Prefix([]))
                || row.pane != PaneState::Alive as i32
                || row.pane_id.is_empty()
            {
                seen.remove(&row.name);
                continue;
            }
            let status = row.heartbeat.as_ref().map_or(0, |h| h.status);
            let due = seen.get(&row.name).is_none_or(|s| {
                s.pid != row.pane_pid
                    || s.status != status
                    || (s.activity != row.last_activity_unix_ms || !s.settled)
                        && s.at.elapsed() >= MIN_GAP
                    || s.at.elapsed() >= REFRESH
            });
            if !due {
                continue;
            }
            // What the capture shows is at least as new as this instant.
            let began = crate::clock::now_ms();
            let snap = tokio::time::timeout(
                CAPTURE_TIMEOUT,
                crate::screen::snapshot(&tmux, &row.pane_id, false),
            )
            .await;
            let Ok(Ok(snap)) = snap else { continue };
            let obs = verify::observe(&snap, spec.screen);
            let settled = began >= row.last_activity_unix_ms + 1000;
            let entry = seen.entry(row.name.clone()).or_insert(Seen {
                pid: row.pane_pid,
                activity: row.last_activity_unix_ms,
                status,
                at: Instant::now(),
                settled,
                last: None,
            });
            entry.pid = row.pane_pid;
            entry.activity = row.last_activity_unix_ms;
            entry.status = status;
            entry.at = Instant::now();
            entry.settled = settled;
            if entry.last.as_ref() != Some(&obs) {
                entry.last = Some(obs.clone());
                let sent = commands
                    .send(Command::Observed {
                        agent: row.name.clone(),
                        pane_pid: row.pane_pid,
                        observed: obs,
                    })
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        }
    }
}
