//! Fleet's words: every event kind, flag and supervisor state, each named
//! once here with its word and its meaning. The wire carries the enum (for
//! programs) beside the word (for old readers and people); help texts and
//! the README are checked against these tables. A sentence for people is
//! rendered from a state, never parsed back.

use crate::v1::{
    AgentFlag, AgentRow, Event, EventKind, HostFlag, HostRow, Supervision, SupervisorState,
};

/// Declares, for a generated enum, its word and meaning per value, `ALL`,
/// and the conversions.
macro_rules! words {
    ($ty:ident { $($v:ident => $word:literal, $meaning:literal;)* }) => {
        impl $ty {
            /// Every value but `Unspecified`, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$v),*];

            /// The stable kebab-case word (what `flags`/`kind` carry).
            pub fn word(self) -> &'static str {
                match self {
                    $($ty::$v => $word,)*
                    $ty::Unspecified => "",
                }
            }

            /// What it means, in a sentence.
            pub fn meaning(self) -> &'static str {
                match self {
                    $($ty::$v => $meaning,)*
                    $ty::Unspecified => "",
                }
            }

            /// The value a word names.
            pub fn from_word(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($ty::$v),)*
                    _ => None,
                }
            }
        }
    };
}

words!(EventKind {
    Started => "started", "hostd started the agent's session";
    Adopted => "adopted", "hostd found the agent's session running (after its own restart) and kept it";
    Died => "died", "the agent's process ended (exit status or signal in the fields)";
    SessionGone => "session-gone", "the agent's tmux session disappeared";
    StartFailed => "start-failed", "hostd could not start the agent";
    Stop => "stop", "an operator stopped the agent";
    Start => "start", "an operator started the agent";
    Restart => "restart", "an operator restarted the agent";
    Reset => "reset", "an operator cleared the agent's input and context";
    Attach => "attach", "an operator attached to the agent's pane";
    UnmanagedFound => "unmanaged-found", "a session on hostd's tmux socket is in no roster";
    WatcherSwept => "watcher-swept", "a `fleetctl watch` session left behind was removed";
    SigchldNudge => "sigchld-nudge", "a child's exit made hostd re-read tmux at once";
    HeartbeatHealthy => "heartbeat-healthy", "the heartbeat is fresh again";
    HeartbeatStale => "heartbeat-stale", "no heartbeat for more than 3 intervals";
    HeartbeatUnknown => "heartbeat-unknown", "no readable heartbeat (the message says why)";
    Drift => "drift", "the pane runs a process that is not the roster runtime's";
    DriftCleared => "drift-cleared", "the pane runs the runtime's own process again";
    NativeOff => "native-off", "the runtime's hooks could not be wired in; its status is observed or fallback";
    TurnStarted => "turn-started", "the runtime accepted a prompt (shown with --kind)";
    TurnEnded => "turn-ended", "the runtime's turn ended (shown with --kind)";
    WaitingForHuman => "waiting-for-human", "the runtime asks a human: a permission, a question, a trust dialog";
    WaitingCleared => "waiting-cleared", "the runtime no longer asks";
    Respawning => "respawning", "the supervisor will respawn the dead agent after a backoff";
    RespawnFailed => "respawn-failed", "a respawn failed (counted as one more death)";
    RespawnRefused => "respawn-refused", "the supervisor did not respawn: it could not tell the agent's pane";
    NeedHuman => "need-human", "too many deaths, or an agent asked: a human must look";
    Poke => "poke", "the supervisor nudged an idle agent";
    Digest => "digest", "the supervisor sent the first mate a digest of what changed";
    Alert => "alert", "the supervisor alerted the first mate";
    Sent => "sent", "text was sent to the agent (the verdict in the fields)";
    SendFailed => "send-failed", "a send failed before it could be judged";
    SendAbandoned => "send-abandoned", "a send's caller went away; it was stopped";
    RosterLoaded => "roster-loaded", "hostd loaded its roster at start";
    RosterReloaded => "roster-reloaded", "hostd applied a changed roster";
    RosterRejected => "roster-rejected", "a changed roster was refused; the last good one stays";
    RunDirMissing => "run-dir-missing", "the run directory is gone or unusable";
    RunDirRecreated => "run-dir-recreated", "hostd made its run directory again";
    TmuxServerStarted => "tmux-server-started", "hostd started its tmux server";
    TmuxServerLost => "tmux-server-lost", "hostd's tmux server went away";
    TmuxUnresponsive => "tmux-unresponsive", "the tmux server stopped answering within its bound";
    TmuxResponsive => "tmux-responsive", "the tmux server answers again";
    UplinkRefused => "uplink-refused", "an aggregator refused this hostd (certificate or grant)";
    UplinkRecovered => "uplink-recovered", "an aggregator accepts this hostd again";
    HostConnected => "host-connected", "a hostd linked to the aggregator";
    HostUnreachable => "host-unreachable", "the aggregator lost a host's stream or its lease expired";
    DuplicateIdentity => "duplicate-identity", "a second hostd with a live host's identity was refused";
    AgentRefused => "agent-refused", "an agent asked for something its grants do not allow (who, what, target)";
    McpOff => "mcp-off", "Fleet's MCP server could not be wired into the agent's runtime (the message says why)";
    HistoryFailing => "history-failing", "events are not being written to the durable history (disk full or gone); live watchers still get them";
    HistoryRecovered => "history-recovered", "events are written to the durable history again";
});

words!(AgentFlag {
    Drift => "drift", "the process is not what the roster's runtime runs as";
    Unmanaged => "unmanaged", "a session on hostd's socket that no roster names";
    InMode => "in-mode", "the pane is in copy or view mode: input would not reach the program";
    BootEnable => "boot-enable", "the agent will not come back after a reboot (unit not enabled, or no linger)";
    Stopped => "stopped", "an operator stopped it; the supervisor leaves it down";
    Unreachable => "unreachable", "the aggregator lost its host; the values are the last ones known";
});

words!(HostFlag {
    BootEnable => "boot-enable", "hostd will not come back after a reboot (unit not enabled, or no linger)";
    TmuxUnresponsive => "tmux-unresponsive", "the tmux server does not answer within its bound";
    Unreachable => "unreachable", "the aggregator lost this host's stream; values are the last known";
    DuplicateIdentity => "duplicate-identity", "a second hostd with this identity tried to link";
    HistoryFailing => "history-failing", "the durable event history cannot be written (the message of its event says why)";
});

words!(SupervisorState {
    Watching => "watching", "nothing to do: the agent runs, or an operator stopped it";
    RespawnPending => "respawn", "it died; a respawn is due after the backoff";
    GaveUp => "gave-up", "too many deaths in the window: a human is needed";
    Refused => "not-respawned", "hostd could not tell which pane is the agent's";
});

/// Rows that carry a flag both as a word and as an enum.
pub trait Flagged {
    type Flag: Copy;
    fn has(&self, flag: Self::Flag) -> bool;
    /// Sets `flag` (once).
    fn flag(&mut self, flag: Self::Flag);
    fn unflag(&mut self, flag: Self::Flag);
}

macro_rules! flagged {
    ($row:ty, $flag:ty) => {
        impl Flagged for $row {
            type Flag = $flag;

            fn has(&self, flag: $flag) -> bool {
                // A peer that predates the enums sends the words only.
                self.flag_codes.contains(&(flag as i32))
                    || self.flags.iter().any(|f| f == flag.word())
            }

            fn flag(&mut self, flag: $flag) {
                if !self.flag_codes.contains(&(flag as i32)) {
                    self.flag_codes.push(flag as i32);
                }
                if !self.flags.iter().any(|f| f == flag.word()) {
                    self.flags.push(flag.word().to_owned());
                }
            }

            fn unflag(&mut self, flag: $flag) {
                self.flag_codes.retain(|f| *f != flag as i32);
                self.flags.retain(|f| f != flag.word());
            }
        }
    };
}

flagged!(AgentRow, AgentFlag);
flagged!(HostRow, HostFlag);

/// The sentence `ps` and `--json` show for a supervisor state at `now_ms`:
/// "respawn in 2.0s (death 2)", "gave-up (6 deaths): need human".
pub fn describe(s: &Supervision, now_ms: i64) -> String {
    match SupervisorState::try_from(s.state).unwrap_or(SupervisorState::Unspecified) {
        SupervisorState::RespawnPending => format!(
            "respawn in {:.1}s (death {})",
            (s.next_attempt_unix_ms - now_ms).max(0) as f64 / 1000.0,
            s.deaths
        ),
        SupervisorState::GaveUp => format!("gave-up ({} deaths): need human", s.deaths),
        SupervisorState::Refused => "not respawned: pane id unreadable".into(),
        SupervisorState::Watching | SupervisorState::Unspecified => String::new(),
    }
}

impl Event {
    /// The event's kind: the enum, or the word from a peer that predates it.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::try_from(self.kind_code)
            .ok()
            .filter(|k| *k != EventKind::Unspecified)
            .or_else(|| EventKind::from_word(&self.kind))
    }

    /// Fills the enum from the word (an event from an older peer).
    pub fn with_kind_code(mut self) -> Self {
        if self.kind_code == 0
            && let Some(k) = EventKind::from_word(&self.kind)
        {
            self.kind_code = k as i32;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_kebab_case_unique_and_round_trips() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            word: fn(T) -> &'static str,
            meaning: fn(T) -> &'static str,
            back: fn(&str) -> Option<T>,
        ) {
            let mut seen = std::collections::BTreeSet::new();
            for v in all {
                let w = word(*v);
                assert!(
                    !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                    "{v:?}: {w:?}"
                );
                assert!(seen.insert(w), "{w} named twice");
                assert!(!meaning(*v).is_empty(), "{v:?} has no meaning");
                assert_eq!(back(w), Some(*v));
            }
        }
        check(
            EventKind::ALL,
            EventKind::word,
            EventKind::meaning,
            EventKind::from_word,
        );
        check(
            AgentFlag::ALL,
            AgentFlag::word,
            AgentFlag::meaning,
            AgentFlag::from_word,
        );
        check(
            HostFlag::ALL,
            HostFlag::word,
            HostFlag::meaning,
            HostFlag::from_word,
        );
        check(
            SupervisorState::ALL,
            SupervisorState::word,
            SupervisorState::meaning,
            SupervisorState::from_word,
        );
    }

    #[test]
    fn flags_are_set_once_as_word_and_enum_and_read_from_either() {
        let mut r = AgentRow::default();
        r.flag(AgentFlag::Drift);
        r.flag(AgentFlag::Drift);
        assert_eq!(r.flags, ["drift"]);
        assert_eq!(r.flag_codes, [AgentFlag::Drift as i32]);
        r.unflag(AgentFlag::Drift);
        assert!(r.flags.is_empty() && r.flag_codes.is_empty());
        // An old peer's row: the word alone still counts.
        let old = HostRow {
            flags: vec!["unreachable".into()],
            ..Default::default()
        };
        assert!(old.has(HostFlag::Unreachable));
        assert!(!old.has(HostFlag::BootEnable));
        let ev = Event {
            kind: "need-human".into(),
            ..Default::default()
        }
        .with_kind_code();
        assert_eq!(ev.kind(), Some(EventKind::NeedHuman));
    }

    #[test]
    fn the_proto_declares_exactly_the_named_values() {
        // Every enum value in fleet.proto has a word here (ALL is complete).
        let proto = include_str!("../fleet/v1/fleet.proto");
        let count = |prefix: &str| {
            proto
                .lines()
                .filter(|l| l.trim_start().starts_with(prefix) && !l.contains("UNSPECIFIED"))
                .count()
        };
        assert_eq!(count("EVENT_KIND_"), EventKind::ALL.len());
        assert_eq!(count("AGENT_FLAG_"), AgentFlag::ALL.len());
        assert_eq!(count("HOST_FLAG_"), HostFlag::ALL.len());
        assert_eq!(count("SUPERVISOR_STATE_"), SupervisorState::ALL.len());
    }
}
