//! What an agent is doing, from the best evidence there is (DESIGN §3,
//! §13): the runtime's own report (`native`), the screen read by the
//! runtime's rules (`observed`), or nothing but the process (`fallback`,
//! status `unknown`). Pure, so every rule is a unit test.

use std::time::Duration;

use fleet_proto::heartbeat::Status;
use fleet_proto::v1::{AgentStatus, StatusSource};

use crate::verify::Observed;

/// How long the screen must contradict a native `busy` (or `waiting`)
/// before it wins: hooks are silent on an interrupt (Claude Code's Esc),
/// on a turn that dies on an API error (Codex) and after a permission
/// prompt was answered, but a turn's first frames can look idle too.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// The evidence about one agent.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The pane's process runs.
    pub alive: bool,
    /// The runtime's own last report and how long it has held.
    pub native: Option<(Status, Duration)>,
    /// What the screen showed last and how long it has shown it.
    pub observed: Option<(&'a Observed, Duration)>,
    /// The runtime reports the end of a turn but not its start (aider):
    /// a busy screen wins over its idle report.
    pub silent_start: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub status: AgentStatus,
    pub source: StatusSource,
    /// What a waiting runtime asks, or why the status is what it is when
    /// it is not the runtime's own word.
    pub detail: String,
}

fn r(status: AgentStatus, source: StatusSource, detail: impl Into<String>) -> Resolved {
    Resolved {
        status,
        source,
        detail: detail.into(),
    }
}

fn from_screen(o: &Observed) -> Resolved {
    match o {
        Observed::Busy(m) => r(AgentStatus::Busy, StatusSource::Observed, m.clone()),
        Observed::Waiting(q) => r(AgentStatus::Waiting, StatusSource::Observed, q.clone()),
        Observed::Idle => r(
            AgentStatus::Ok,
            StatusSource::Observed,
            "the input box is up and no busy marker shows",
        ),
        Observed::Unknown(why) => r(AgentStatus::Unknown, StatusSource::Observed, why.clone()),
    }
}

pub fn resolve(e: Evidence<'_>) -> Resolved {
    use AgentStatus as A;
    use StatusSource as S;
    if !e.alive {
        return r(A::Unknown, S::Fallback, "the pane's process is not running");
    }
    let settled = |d: Duration| d >= SETTLE;
    match (e.native, e.observed) {
        (None, None) => r(
            A::Unknown,
            S::Fallback,
            "only the process is known: no report from the runtime and no screen rules",
        ),
        (None, Some((o, _))) => from_screen(o),
        (Some((native, since)), obs) => {
            // A question on screen is a question, whatever the hooks said.
            if let Some((Observed::Waiting(q), _)) = obs {
                let source = if native == Status::Waiting {
                    S::Native
                } else {
                    S::Observed
                };
                return r(A::Waiting, source, q.clone());
            }
            match (native, obs) {
                (Status::Busy | Status::Waiting, Some((o @ Observed::Idle, seen)))
                    if settled(since) && settled(seen) =>
                {
                    let mut got = from_screen(o);
                    got.detail = "the turn ended without a report from the runtime (an interrupt or an error): the input box is back and no busy marker shows".into();
                    got
                }
                (Status::Waiting, Some((o @ Observed::Busy(_), seen)))
                    if settled(since) && settled(seen) =>
                {
                    from_screen(o)
                }
                (Status::Idle, Some((o @ Observed::Busy(_), _))) if e.silent_start => {
                    from_screen(o)
                }
                (Status::Busy, _) => r(A::Busy, S::Native, ""),
                (Status::Waiting, _) => r(
                    A::Waiting,
                    S::Native,
                    "the runtime asks for a human (permission or question)",
                ),
                (Status::Idle, _) => r(A::Ok, S::Native, ""),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(100);

    fn ev<'a>(
        native: Option<(Status, Duration)>,
        observed: Option<(&'a Observed, Duration)>,
    ) -> Evidence<'a> {
        Evidence {
            alive: true,
            native,
            observed,
            silent_start: false,
        }
    }

    #[test]
    fn the_runtimes_own_word_stands_unless_the_screen_settles_against_it() {
        let idle = Observed::Idle;
        // An interrupt the hooks never reported: busy, but the box is back.
        let got = resolve(ev(Some((Status::Busy, LONG)), Some((&idle, LONG))));
        assert_eq!(
            (got.status, got.source),
            (AgentStatus::Ok, StatusSource::Observed)
        );
        assert!(got.detail.contains("without a report"));
        // A turn's first frames: not yet settled, the hook wins.
        let got = resolve(ev(Some((Status::Busy, SHORT)), Some((&idle, LONG))));
        assert_eq!(
            (got.status, got.source),
            (AgentStatus::Busy, StatusSource::Native)
        );
        let got = resolve(ev(Some((Status::Busy, LONG)), Some((&idle, SHORT))));
        assert_eq!(got.status, AgentStatus::Busy);
    }

    #[test]
    fn a_question_on_screen_is_waiting_with_what_it_asks() {
        let q = Observed::Waiting("Do you want to proceed?".into());
        let got = resolve(ev(Some((Status::Busy, SHORT)), Some((&q, SHORT))));
        assert_eq!(
            (got.status, got.source, got.detail.as_str()),
            (
                AgentStatus::Waiting,
                StatusSource::Observed,
                "Do you want to proceed?"
            )
        );
        let got = resolve(ev(Some((Status::Waiting, SHORT)), Some((&q, SHORT))));
        assert_eq!(got.source, StatusSource::Native);
    }

    #[test]
    fn aiders_silent_start_is_read_off_the_screen() {
        let busy = Observed::Busy("\"Waiting for\" on screen".into());
        let mut e = ev(Some((Status::Idle, LONG)), Some((&busy, SHORT)));
        assert_eq!(resolve(e).status, AgentStatus::Ok);
        e.silent_start = true;
        let got = resolve(e);
        assert_eq!(
            (got.status, got.source),
            (AgentStatus::Busy, StatusSource::Observed)
        );
    }

    #[test]
    fn without_evidence_the_status_is_unknown_and_says_why() {
        let got = resolve(ev(None, None));
        assert_eq!(
            (got.status, got.source),
            (AgentStatus::Unknown, StatusSource::Fallback)
        );
        assert!(got.detail.contains("only the process"));
        let mut dead = ev(Some((Status::Busy, LONG)), None);
        dead.alive = false;
        assert_eq!(resolve(dead).status, AgentStatus::Unknown);
    }
}
