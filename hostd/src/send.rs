//! Typing into an agent: text through a named tmux buffer (never a shell,
//! never `send-keys -l`), Enter as a separate key, and — with `verify` —
//! polling snapshots until the agent's verdict or the deadline.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleet_proto::heartbeat;
use fleet_proto::v1::{SendReceipt, Verdict};

use crate::runtime::Screen;
use crate::screen::{self, Snapshot};
use crate::tmux::{Tmux, TmuxError};
use crate::verify::{self, Observed, Outcome};

/// Everything about the target the send path needs.
#[derive(Debug, Clone)]
pub struct Target {
    pub tenant: String,
    pub host: String,
    pub name: String,
    pub pane_id: String,
    pub hb_file: Option<PathBuf>,
    /// Gap between the draft showing and Enter (paste guards).
    pub submit_gap: Duration,
    /// Whether the program uses bracketed paste (None = not known).
    pub bracketed_paste: Option<bool>,
    /// The runtime's screen rules.
    pub screen: &'static Screen,
    /// How long the runtime may take to show its input box after a start.
    pub startup: Duration,
    /// The runtime's own hooks report each accepted prompt (its turn
    /// counter advances): screen evidence waits a little for that.
    pub acknowledges: bool,
    /// The agent's status as hostd resolves it from every source (native,
    /// observed): `--when-idle` and "was it busy" go by this, not by the
    /// beat alone (a hook is silent on an interrupt).
    pub status: Option<StatusProbe>,
}

/// Reads an agent's current resolved status.
#[derive(Clone)]
pub struct StatusProbe(
    pub std::sync::Arc<dyn Fn() -> Option<fleet_proto::v1::AgentStatus> + Send + Sync>,
);

impl std::fmt::Debug for StatusProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusProbe")
    }
}

/// How long screen evidence of acceptance waits for the runtime's own
/// acknowledgement when it gives one (Codex reports its first prompt
/// ~2.9 s after Enter, opencode ~1.7 s).
pub const ACK_GRACE: Duration = Duration::from_millis(4000);

/// How long the runtime's acknowledgement is awaited at least once the
/// screen shows the prompt submitted (a loaded host draws late).
const ACK_AFTER_SCREEN: Duration = Duration::from_millis(2000);

#[derive(Debug, Clone)]
pub struct Options {
    pub verify: bool,
    pub verify_timeout: Duration,
    pub no_enter: bool,
    pub when_idle: Option<Duration>,
    pub strict: bool,
    pub trace_id: String,
    /// Clear a stale draft with the runtime's clear key instead of refusing.
    pub clear_draft: bool,
    /// Bound on waiting for a starting runtime's input box.
    pub ready_timeout: Duration,
    /// Who asked, for the `sent` event (empty: not said).
    pub who: String,
}

impl Options {
    /// A verified send with the defaults (`fleet_proto::waits`): no idle
    /// wait, a stale draft refused.
    pub fn verified(trace_id: String) -> Self {
        Self {
            verify: true,
            verify_timeout: fleet_proto::waits::VERIFY,
            no_enter: false,
            when_idle: None,
            strict: false,
            trace_id,
            clear_draft: false,
            ready_timeout: fleet_proto::waits::QUEUE,
            who: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("text is not valid UTF-8 (at byte {0})")]
    NotUtf8(usize),
    #[error("text is {size} bytes after stripping, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("nothing to send: the text is empty after stripping control bytes")]
    Empty,
    #[error(
        "multi-line text to a program that has not enabled bracketed paste would be submitted line by line; refused (--strict)"
    )]
    LineByLine,
    #[error("the pane of {0} is dead; start it first (`fleetctl start {0}`)")]
    Dead(String),
    #[error("{0} is still busy after {1:?} (--when-idle)")]
    StillBusy(String, Duration),
    #[error(
        "the input box of {agent} already holds {bytes} bytes of text (a stale draft, a restored prompt or someone's typing); refused so the texts are not merged — clear it with --clear-draft, or look first: fleetctl watch {agent}"
    )]
    StaleDraft { agent: String, bytes: usize },
    #[error(
        "{agent} is asking a human ({question}); refused so the text does not answer it — see: fleetctl watch {agent}"
    )]
    Waiting { agent: String, question: String },
    #[error("{agent} did not show its input box within {waited:?} ({why})")]
    NotReady {
        agent: String,
        waited: Duration,
        why: String,
    },
    #[error(
        "the input box of {agent} still holds {bytes} bytes after pressing its clear key; refused"
    )]
    ClearFailed { agent: String, bytes: usize },
    #[error("tmux: {0}")]
    Tmux(#[from] TmuxError),
}

/// Text after sanitising: control bytes other than `\n` and `\t` removed,
/// CRLF folded to LF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clean {
    pub text: String,
    pub stripped: u32,
}

pub fn sanitize(raw: &[u8], limit: usize) -> Result<Clean, SendError> {
    let text = std::str::from_utf8(raw).map_err(|e| SendError::NotUtf8(e.valid_up_to()))?;
    let text = text.replace("\r\n", "\n");
    let mut stripped = 0u32;
    let clean: String = text
        .chars()
        .filter(|c| {
            let keep = !c.is_control() || *c == '\n' || *c == '\t';
            if !keep {
                stripped += 1;
            }
            keep
        })
        .collect();
    if clean.len() > limit {
        return Err(SendError::TooLarge {
            size: clean.len(),
            limit,
        });
    }
    if clean.trim().is_empty() {
        return Err(SendError::Empty);
    }
    Ok(Clean {
        text: clean,
        stripped,
    })
}

/// Polling a screen: from 8 ms doubling to 100 ms, exact.
const POLL: fleet_net::backoff::Backoff =
    fleet_net::backoff::Backoff::fixed(Duration::from_millis(8), Duration::from_millis(100), 0.0);

/// Poll waits that start short and back off (tens of ms).
struct Backoff(u32);

impl Backoff {
    fn new() -> Self {
        Self(0)
    }
    async fn wait(&mut self) {
        tokio::time::sleep(POLL.delay(self.0)).await;
        self.0 = self.0.saturating_add(1);
    }
}

async fn snap(tmux: &Tmux, t: &Target) -> Result<Snapshot, TmuxError> {
    let mut s = screen::snapshot(tmux, &t.pane_id, false).await?;
    if let Some(f) = &t.hb_file
        && let Ok(b) = heartbeat::read(f)
    {
        s.turn = b.turn;
        s.busy = b.status == heartbeat::Status::Busy;
    }
    if let Some(status) = t.status.as_ref().and_then(|probe| (probe.0)()) {
        s.busy = status == fleet_proto::v1::AgentStatus::Busy;
    }
    Ok(s)
}

/// Sends `clean` to the agent and, with `verify`, decides what happened.
pub async fn send(
    tmux: &Tmux,
    t: &Target,
    clean: &Clean,
    o: &Options,
) -> Result<SendReceipt, SendError> {
    let start = Instant::now();
    let multiline = clean.text.trim_end_matches('\n').contains('\n');
    let line_by_line = multiline && t.bracketed_paste != Some(true);
    if line_by_line && o.strict {
        return Err(SendError::LineByLine);
    }
    let mut receipt = SendReceipt {
        tenant_id: t.tenant.clone(),
        host: t.host.clone(),
        agent: t.name.clone(),
        trace_id: o.trace_id.clone(),
        bytes: clean.text.len() as u64,
        stripped: clean.stripped,
        bracketed_paste: match t.bracketed_paste {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        }
        .into(),
        line_by_line: line_by_line && t.bracketed_paste == Some(false),
        ..Default::default()
    };
    if clean.stripped > 0 {
        receipt
            .notes
            .push(format!("{} control bytes were stripped", clean.stripped));
    }
    if multiline && t.bracketed_paste.is_none() {
        receipt.notes.push(
            "multi-line text to a program not known to use bracketed paste: it may have been submitted line by line".into(),
        );
    } else if receipt.line_by_line {
        receipt.notes.push(
            "multi-line text without bracketed paste: each line was submitted on its own".into(),
        );
    }

    if let Some(bound) = o.when_idle {
        let deadline = Instant::now() + bound;
        let mut b = Backoff::new();
        loop {
            let s = snap(tmux, t).await?;
            if !s.busy && verify::live_marker(&s, t.screen, t.screen.busy).is_none() {
                break;
            }
            if Instant::now() > deadline {
                return Err(SendError::StillBusy(t.name.clone(), bound));
            }
            b.wait().await;
        }
    }

    let mut before = ready(tmux, t, o, &mut receipt, start).await?;
    if before.in_mode {
        // A pane in copy mode swallows keys.
        tmux.run(["copy-mode", "-q", "-t", &t.pane_id]).await?;
        receipt.left_copy_mode = true;
        before = snap(tmux, t).await?;
    }
    if verify::stale_draft(&before, t.screen).is_some() {
        // A runtime mid-redraw can show a moment's leftovers: a stale
        // draft is one that is still there a beat later.
        tokio::time::sleep(Duration::from_millis(150)).await;
        before = snap(tmux, t).await?;
    }
    if let Some(stale) = verify::stale_draft(&before, t.screen) {
        if !o.clear_draft || t.screen.clear_keys.is_empty() {
            return Err(SendError::StaleDraft {
                agent: t.name.clone(),
                bytes: stale.len(),
            });
        }
        before = clear(tmux, t, &stale).await?;
        receipt.cleared_draft_bytes = stale.len() as u64;
        receipt.notes.push(format!(
            "cleared a stale draft of {} bytes with {}",
            stale.len(),
            t.screen.clear_keys.join(" ")
        ));
    }

    let buffer = format!(
        "fleet-send-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    tmux.run_with_stdin(["load-buffer", "-b", &buffer, "-"], clean.text.as_bytes())
        .await?;
    // -p: bracketed-paste markers only if the program asked for them;
    // -d: delete the buffer afterwards.
    tmux.run(["paste-buffer", "-p", "-d", "-b", &buffer, "-t", &t.pane_id])
        .await?;

    let needle = verify::needle(&clean.text);
    // A runtime that reads nothing while a turn runs never draws the
    // paste in its box: it sits in the tty's buffer (type-ahead).
    let type_ahead = !t.screen.reads_while_busy
        && (before.busy || verify::live_marker(&before, t.screen, t.screen.busy).is_some());
    let draft_deadline = Instant::now() + o.verify_timeout.min(Duration::from_millis(1500));
    let mut drafted = None;
    let mut b = Backoff::new();
    loop {
        if type_ahead {
            break;
        }
        let s = snap(tmux, t).await?;
        if verify::draft_shown(&before, &s, &needle, t.screen) {
            drafted = Some(s);
            break;
        }
        if Instant::now() > draft_deadline
            || !o.verify && Instant::now() > start + Duration::from_millis(300)
        {
            break;
        }
        b.wait().await;
    }
    if o.no_enter {
        receipt.verdict = Verdict::Delivered as i32;
        receipt.detail = if drafted.is_some() {
            "pasted; the text waits on the input row (no Enter)".into()
        } else {
            "pasted (no Enter); the text did not show at the cursor".into()
        };
        receipt.elapsed_ms = start.elapsed().as_millis() as u64;
        return Ok(receipt);
    }
    // The gap is the runtime's paste guard, not a wait for readiness.
    tokio::time::sleep(t.submit_gap).await;
    tmux.run(["send-keys", "-t", &t.pane_id, "Enter"]).await?;
    receipt.enter_presses = 1;
    if !o.verify {
        receipt.verdict = Verdict::Delivered as i32;
        receipt.detail = "pasted and Enter pressed (not verified)".into();
        receipt.elapsed_ms = start.elapsed().as_millis() as u64;
        return Ok(receipt);
    }

    let enter_at = Instant::now();
    let deadline = enter_at + o.verify_timeout;
    let retry_after = Duration::from_millis(500).max(t.submit_gap * 3);
    // The runtime's word follows the Enter that submitted and the screen
    // that showed it: both move the wait on, never past the deadline.
    let mut ack_by = (enter_at + ACK_GRACE).min(deadline);
    let mut screen_says: Option<Outcome> = None;
    let mut b = Backoff::new();
    let outcome = loop {
        let now = snap(tmux, t).await?;
        let last = Instant::now() >= deadline;
        let settled = enter_at.elapsed() >= verify::QUEUE_SETTLE;
        if let Some(o) = verify::classify(
            &before,
            drafted.as_ref(),
            &now,
            &needle,
            t.screen,
            settled,
            last,
        ) {
            if matches!(o, Outcome::Screen(_)) && receipt.enter_to_screen_ms == 0 {
                receipt.enter_to_screen_ms = (enter_at.elapsed().as_millis() as u64).max(1);
                ack_by = ack_by.max(Instant::now() + ACK_AFTER_SCREEN).min(deadline);
            }
            if o == Outcome::Acknowledged {
                receipt.enter_to_ack_ms = (enter_at.elapsed().as_millis() as u64).max(1);
            }
            match o {
                // The runtime will say so itself: wait for its word.
                // (A busy runtime reports no new turn for a queued or
                // steered prompt.)
                Outcome::Screen(_)
                    if t.acknowledges && !before.busy && !last && Instant::now() < ack_by =>
                {
                    screen_says.get_or_insert(o);
                }
                o => break o,
            }
        } else if let Some(o) = screen_says.take_if(|_| last || Instant::now() >= ack_by) {
            break o;
        }
        if screen_says.is_some() && Instant::now() >= ack_by {
            break screen_says
                .take()
                .unwrap_or(Outcome::Unverifiable("no verdict".into()));
        }
        if receipt.enter_presses == 1
            && drafted.is_some()
            && enter_at.elapsed() >= retry_after
            && verify::draft_visible(&now, &needle, t.screen)
        {
            tmux.run(["send-keys", "-t", &t.pane_id, "Enter"]).await?;
            receipt.enter_presses = 2;
            ack_by = ack_by.max(Instant::now() + ACK_GRACE).min(deadline);
            receipt
                .notes
                .push("the draft was still on the input row: pressed Enter once more".into());
        }
        b.wait().await;
    };
    let (verdict, evidence, detail) = match outcome {
        Outcome::Acknowledged => (
            Verdict::Accepted,
            "acknowledged",
            "the runtime's heartbeat turn advanced".to_owned(),
        ),
        Outcome::Screen(d) => (Verdict::Accepted, "screen", d),
        Outcome::Queued(d) => (Verdict::Queued, "screen", d),
        Outcome::Draft(d) => (Verdict::Draft, "screen", d),
        Outcome::Unverifiable(d) => (Verdict::Unverifiable, "screen", d),
    };
    receipt.verdict = verdict as i32;
    receipt.evidence = evidence.into();
    receipt.detail = detail;
    receipt.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(receipt)
}

/// Waits, bounded, until the runtime shows its input box (a send during
/// start-up would land on a blank screen and stay there as a stale
/// draft); refuses a dead pane and a runtime that asks a human.
async fn ready(
    tmux: &Tmux,
    t: &Target,
    o: &Options,
    receipt: &mut SendReceipt,
    start: Instant,
) -> Result<Snapshot, SendError> {
    let bound = o.ready_timeout.min(t.startup);
    let deadline = Instant::now() + bound;
    let mut b = Backoff::new();
    loop {
        let s = snap(tmux, t).await?;
        if s.dead {
            return Err(SendError::Dead(t.name.clone()));
        }
        let why = match verify::observe(&s, t.screen) {
            Observed::Waiting(question) => {
                return Err(SendError::Waiting {
                    agent: t.name.clone(),
                    question,
                });
            }
            Observed::Unknown(why)
                if !matches!(t.screen.input, crate::runtime::BoxShape::Prefix([])) =>
            {
                why
            }
            _ => {
                let waited = start.elapsed();
                if waited >= Duration::from_millis(200) {
                    receipt.queued_ms += waited.as_millis() as u64;
                    receipt.notes.push(format!(
                        "waited {} ms for the runtime to show its input box",
                        waited.as_millis()
                    ));
                }
                return Ok(s);
            }
        };
        if Instant::now() >= deadline {
            return Err(SendError::NotReady {
                agent: t.name.clone(),
                waited: bound,
                why,
            });
        }
        b.wait().await;
    }
}

/// Empties the input box with the runtime's clear key(s) and checks it
/// worked. Keys harmless on an empty box are pressed again while text is
/// left (C-u takes a line at a time); the others only once.
async fn clear(tmux: &Tmux, t: &Target, stale: &str) -> Result<Snapshot, SendError> {
    let rows = stale.lines().count().max(1);
    let presses = if t.screen.clear_repeat {
        (2 * rows + 2).min(40)
    } else {
        1
    };
    let mut left = stale.len();
    for _ in 0..presses {
        let mut args = vec!["send-keys", "-t", t.pane_id.as_str()];
        args.extend(t.screen.clear_keys.iter().copied());
        tmux.run(args).await?;
        let deadline = Instant::now() + Duration::from_millis(if presses > 1 { 300 } else { 1500 });
        let mut b = Backoff::new();
        loop {
            let s = snap(tmux, t).await?;
            match verify::stale_draft(&s, t.screen) {
                None => return Ok(s),
                Some(now) if now.len() < left || Instant::now() >= deadline => {
                    left = now.len();
                    break;
                }
                Some(_) => b.wait().await,
            }
        }
    }
    Err(SendError::ClearFailed {
        agent: t.name.clone(),
        bytes: left,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_controls_but_keeps_newlines_and_tabs() {
        let c = sanitize(b"a\x03b\r\nc\td\x1b[31m", 100).unwrap();
        assert_eq!(c.text, "ab\nc\td[31m");
        assert_eq!(c.stripped, 2);
    }

    #[test]
    fn sanitize_refuses_bad_input() {
        assert!(matches!(
            sanitize(b"\xff\xfe", 100),
            Err(SendError::NotUtf8(0))
        ));
        assert!(matches!(
            sanitize(&[b'a'; 101], 100),
            Err(SendError::TooLarge { size: 101, .. })
        ));
        assert!(matches!(sanitize(b"\x03\x04", 100), Err(SendError::Empty)));
    }

    #[test]
    fn sanitize_keeps_shell_specials_byte_exact() {
        let t = "-x; $(rm -rf /) `id` 'q' \"d\" ünï ✓";
        assert_eq!(sanitize(t.as_bytes(), 1000).unwrap().text, t);
    }
}
