//! The tmux server's lifecycle as the owner sees it: pane reads beside the owner, one at a time, answers and timeouts, bringing the server up and noticing it gone.

use super::*;

/// One `list-panes` answer, read off the owner task; `None` when it was a
/// probe and no window had moved (so no pane was read).
#[derive(Debug)]
pub(super) struct PaneRead {
    pub(super) generation: u64,
    pub(super) result: Result<Option<Vec<Pane>>, tmux::TmuxError>,
}

/// Pane reads run beside the owner, one at a time: a stopped tmux delays
/// only the next read, never deaths, ticks or commands.
#[derive(Debug, Default)]
pub(super) struct Reads {
    pub(super) in_flight: bool,
    /// Another read was asked for while one ran.
    pub(super) again: bool,
    /// Number of the last read started.
    pub(super) generation: u64,
    pub(super) last_done: Option<Instant>,
}

/// Without an answer from tmux for this long the owner asks again.
pub(super) const PROBE: Duration = Duration::from_secs(2);

impl Table {
    /// Asks for a pane read beside the owner (at most one runs; a request
    /// during one runs once more after it).
    pub(super) fn want_read(&mut self) {
        self.read(false);
    }

    /// Asks tmux whether any window moved, and reads the panes only if one
    /// did: the periodic look that also notices a stopped tmux. Skipped
    /// while a read runs.
    pub(super) fn probe(&mut self) {
        if !self.reads.in_flight {
            self.read(true);
        }
    }

    fn read(&mut self, probe: bool) {
        let Some(control) = self.control.clone() else {
            return;
        };
        if self.reads.in_flight {
            self.reads.again = true;
            return;
        }
        self.reads.in_flight = true;
        self.reads.generation += 1;
        let generation = self.reads.generation;
        let tx = self.reads_tx.clone();
        tokio::spawn(async move {
            let result = async {
                if probe && !control.windows_moved().await? {
                    return Ok(None);
                }
                control.list_panes().await.map(Some)
            }
            .await;
            let _ = tx.send(PaneRead { generation, result });
        });
    }

    pub(super) async fn on_read(&mut self, read: PaneRead) {
        self.reads.in_flight = false;
        self.reads.last_done = Some(Instant::now());
        match read.result {
            Ok(None) => {
                // A probe: tmux answers and nothing moved; no pane was
                // read, so no reply owed for a fresh read is due yet.
                self.tmux_answered();
                if std::mem::take(&mut self.reads.again) {
                    self.want_read();
                }
                return;
            }
            Ok(Some(panes)) => {
                self.tmux_answered();
                self.apply_panes(panes, false);
                self.nudge_unreaped().await;
                self.publish();
            }
            Err(e) => {
                self.tmux_failed(&e);
                tracing::debug!(error = %e, "list-panes failed");
            }
        }
        // Replies waiting for a read that began after their action.
        let (due, later) = std::mem::take(&mut self.owed)
            .into_iter()
            .partition(|(after, _, _)| *after < read.generation);
        self.owed = later;
        for (_, reply, result) in due {
            let _ = reply.send(result);
        }
        if std::mem::take(&mut self.reads.again) {
            self.want_read();
        }
    }

    /// A tmux call timed out: flag the host once, with an event.
    pub(super) fn tmux_failed(&mut self, e: &tmux::TmuxError) {
        if !matches!(e, tmux::TmuxError::Timeout { .. }) || self.unresponsive.is_some() {
            return;
        }
        self.unresponsive = Some(Instant::now());
        self.events.emit(
            "",
            EventKind::TmuxUnresponsive,
            format!(
                "tmux server on socket {} is not answering ({e}); deaths are still seen, commands fail until it answers",
                self.tmux.socket()
            ),
            &[("socket", self.tmux.socket().to_owned())],
        );
        self.publish();
    }

    pub(super) fn tmux_answered(&mut self) {
        if let Some(since) = self.unresponsive.take() {
            self.events.emit(
                "",
                EventKind::TmuxResponsive,
                format!(
                    "tmux server on socket {} answers again after {:.1}s",
                    self.tmux.socket(),
                    since.elapsed().as_secs_f64()
                ),
                &[("socket", self.tmux.socket().to_owned())],
            );
        }
    }

    /// Why tmux cannot be asked to act now, if it cannot.
    pub(super) fn tmux_unavailable(&self) -> Option<String> {
        if let Some(since) = self.unresponsive {
            return Some(format!(
                "tmux server on socket {} is not answering (for {:.0}s); try again when it does",
                self.tmux.socket(),
                since.elapsed().as_secs_f64()
            ));
        }
        self.control.is_none().then(|| {
            format!(
                "tmux server on socket {} is not running; hostd is bringing it back",
                self.tmux.socket()
            )
        })
    }

    pub(super) async fn bring_up_tmux(&mut self) -> Result<(), tmux::TmuxError> {
        let holder = self.roster.tmux.holder_session.clone();
        if self.tmux.ensure_server(&holder).await? {
            self.events.emit(
                "",
                EventKind::TmuxServerStarted,
                format!("tmux server started on socket {}", self.tmux.socket()),
                &[("socket", self.tmux.socket().to_owned())],
            );
        }
        let control = Control::attach(&self.tmux, &holder).await?;
        let panes = control.list_panes().await?;
        self.control = Some(Arc::new(control));
        self.tmux_down_since = None;
        self.tmux_answered();
        self.apply_panes(panes, true);
        self.launch_missing().await;
        // Start-up and recovery read inline (bounded): the first view
        // already shows what was launched.
        if let Some(c) = &self.control
            && let Ok(panes) = c.list_panes().await
        {
            self.apply_panes(panes, false);
            self.publish();
        }
        Ok(())
    }

    pub(super) async fn tmux_lost(&mut self) {
        if let Some(c) = self.control.take() {
            c.close().await;
        }
        self.events.emit(
            "",
            EventKind::TmuxServerLost,
            format!(
                "tmux server on socket {} is gone; recreating the roster's agents",
                self.tmux.socket()
            ),
            &[],
        );
        self.tmux_down_since = Some(Instant::now());
        for a in self.agents.values_mut() {
            a.pane = None;
            a.process = None;
        }
        self.retry_tmux().await;
        self.publish();
    }

    pub(super) async fn retry_tmux(&mut self) {
        if let Err(e) = self.bring_up_tmux().await {
            tracing::warn!(error = %e, "cannot bring tmux back yet");
        }
    }
}
