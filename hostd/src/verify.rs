//! Did the agent take the prompt? Pure decisions over screen snapshots
//! (DESIGN §5), so the rules are tested on recorded screens of real
//! programs without tmux.

use crate::screen::Snapshot;

/// Words real agent TUIs show while a turn runs.
pub const BUSY_MARKERS: &[&str] = &[
    "esc to interrupt",
    "Esc to interrupt",
    "Working",
    "Thinking",
    "Waiting for",
    "retrying",
    "Retrying",
];

/// Words agents show when they queue a prompt behind a running turn.
pub const QUEUED_MARKERS: &[&str] = &[
    "Queued follow-up",
    "queued follow-up",
    "queued messages",
    "Press up to edit queued",
    "message queued",
    "Message queued",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Heartbeat `turn` advanced: the runtime itself says it took the prompt.
    Acknowledged,
    /// Accepted, from what the screen shows.
    Screen(String),
    Queued(String),
    Draft(String),
    Unverifiable(String),
}

/// The part of `text` to look for on the input row: the tail of its last
/// non-empty line (an input box shows the end of what was typed).
pub fn needle(text: &str) -> String {
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let chars: Vec<char> = last.chars().collect();
    let start = chars.len().saturating_sub(16);
    chars[start..].iter().collect()
}

/// The draft shows at the cursor: the needle is on the cursor row (or, when
/// the cursor wrapped to column 0, on the row above).
pub fn draft_visible(s: &Snapshot, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let squash = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let n = squash(needle);
    if squash(s.cursor_row()).contains(&n) {
        return true;
    }
    s.cursor_x == 0
        && s.cursor_y > 0
        && s.lines
            .get(s.cursor_y as usize - 1)
            .is_some_and(|l| squash(l).contains(&n))
}

fn marker_in<'a>(s: &Snapshot, markers: &[&'a str]) -> Option<&'a str> {
    markers
        .iter()
        .find(|m| s.lines.iter().any(|l| l.contains(**m)))
        .copied()
}

/// How long after Enter a prompt sent to an already-busy agent is watched
/// for a queue marker before it counts as taken into the running turn
/// (Claude Code draws "queued" a few hundred ms after clearing its box).
pub const QUEUE_SETTLE: std::time::Duration = std::time::Duration::from_millis(1000);

/// Classifies the screen after Enter. `before` is the screen before the
/// paste, `drafted` the screen with the draft on it (None when the draft
/// never showed), `now` the newest. `settled` says [`QUEUE_SETTLE`] has
/// passed since Enter. Returns `None` to keep polling; at the deadline
/// (`last`) it always decides.
pub fn classify(
    before: &Snapshot,
    drafted: Option<&Snapshot>,
    now: &Snapshot,
    needle: &str,
    settled: bool,
    last: bool,
) -> Option<Outcome> {
    if let (Some(b), Some(n)) = (before.turn, now.turn)
        && n > b
    {
        return Some(Outcome::Acknowledged);
    }
    if before.turn.is_none() && now.turn.is_some_and(|n| n > 0) && now.busy {
        return Some(Outcome::Acknowledged);
    }
    let reference = drafted.unwrap_or(before);
    if let Some(m) = marker_in(now, QUEUED_MARKERS)
        && marker_in(reference, QUEUED_MARKERS).is_none()
    {
        return Some(Outcome::Queued(format!("the agent shows {m:?}")));
    }
    let still_draft = draft_visible(now, needle);
    // An agent busy before Enter may queue the prompt or take it into the
    // running turn; its busy markers say nothing new about this prompt.
    let was_busy = before.busy
        || marker_in(before, BUSY_MARKERS).is_some()
        || marker_in(reference, BUSY_MARKERS).is_some();
    if was_busy && !settled && !last {
        return None;
    }
    if let Some(m) = marker_in(now, BUSY_MARKERS)
        && !was_busy
    {
        if still_draft && m != "retrying" && m != "Retrying" {
            // A busy agent that kept the text in its box queued it.
            return Some(Outcome::Queued(format!(
                "busy ({m:?}) with the text still in the input box"
            )));
        }
        return Some(Outcome::Screen(format!("busy marker {m:?} appeared")));
    }
    if drafted.is_some() && !still_draft && now.lines != reference.lines {
        let how = if now.cursor_y > reference.cursor_y || now.history_size > reference.history_size
        {
            "the text left the input row and the input moved down"
        } else if now.cursor_row().trim().len() <= 4 {
            "the input row is empty again"
        } else {
            "the text left the input row"
        };
        return Some(Outcome::Screen(how.into()));
    }
    if !last {
        return None;
    }
    Some(if still_draft {
        Outcome::Draft("the text is still on the input row".into())
    } else if now.is_blank() {
        Outcome::Unverifiable("the screen is blank".into())
    } else if now.lines == before.lines {
        Outcome::Unverifiable("the screen did not change at all".into())
    } else if drafted.is_none() {
        Outcome::Unverifiable("the text never showed at the cursor (no input row found)".into())
    } else {
        Outcome::Unverifiable("the screen changed without evidence of acceptance".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(lines: &[&str], cursor: (u32, u32)) -> Snapshot {
        Snapshot {
            cursor_x: cursor.0,
            cursor_y: cursor.1,
            width: 80,
            height: lines.len() as u32,
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn needle_is_the_tail_of_the_last_line() {
        assert_eq!(needle("hello"), "hello");
        assert_eq!(needle("first\nsecond line\n\n"), "second line");
        assert_eq!(needle("abcdefghijklmnopqrstuvwxyz"), "klmnopqrstuvwxyz");
    }

    #[test]
    fn bash_prompt_moving_down_is_acceptance() {
        let before = snap(&["$ ", "", ""], (2, 0));
        let drafted = snap(&["$ echo hi", "", ""], (9, 0));
        let now = snap(&["$ echo hi", "hi", "$ "], (2, 2));
        let n = needle("echo hi");
        assert!(draft_visible(&drafted, &n));
        assert!(matches!(
            classify(&before, Some(&drafted), &now, &n, true, false),
            Some(Outcome::Screen(_))
        ));
    }

    #[test]
    fn a_turn_that_advanced_is_definitive() {
        let mut before = snap(&["demo> "], (6, 0));
        before.turn = Some(3);
        let mut now = before.clone();
        now.turn = Some(4);
        assert_eq!(
            classify(&before, None, &now, "x", true, false),
            Some(Outcome::Acknowledged)
        );
    }

    #[test]
    fn text_left_on_the_input_row_is_a_draft_only_at_the_deadline() {
        let before = snap(&["> "], (2, 0));
        let drafted = snap(&["> hello"], (7, 0));
        assert_eq!(
            classify(&before, Some(&drafted), &drafted, "hello", true, false),
            None
        );
        assert!(matches!(
            classify(&before, Some(&drafted), &drafted, "hello", true, true),
            Some(Outcome::Draft(_))
        ));
    }

    #[test]
    fn a_frozen_or_blank_screen_is_unverifiable() {
        let blank = snap(&["", ""], (0, 0));
        assert!(matches!(
            classify(&blank, None, &blank, "x", true, true),
            Some(Outcome::Unverifiable(m)) if m.contains("blank")
        ));
        let frozen = snap(&["FROZEN"], (0, 0));
        assert!(matches!(
            classify(&frozen, None, &frozen, "x", true, true),
            Some(Outcome::Unverifiable(m)) if m.contains("did not change")
        ));
    }

    #[test]
    fn queued_markers_win_over_busy_ones() {
        let before = snap(&["Working (esc to interrupt)", "› "], (2, 1));
        let drafted = snap(&["Working (esc to interrupt)", "› next"], (6, 1));
        let now = snap(
            &[
                "Working (esc to interrupt)",
                "Queued follow-up inputs",
                "› ",
            ],
            (2, 2),
        );
        assert!(matches!(
            classify(&before, Some(&drafted), &now, "next", true, false),
            Some(Outcome::Queued(_))
        ));
    }

    #[test]
    fn a_busy_agent_is_watched_for_a_queue_marker_before_acceptance() {
        let before = snap(&["Working (esc to interrupt)", "› "], (2, 1));
        let drafted = snap(&["Working (esc to interrupt)", "› next"], (6, 1));
        let cleared = snap(&["Working (esc to interrupt)", "› "], (2, 1));
        assert_eq!(
            classify(&before, Some(&drafted), &cleared, "next", false, false),
            None
        );
        assert!(matches!(
            classify(&before, Some(&drafted), &cleared, "next", true, false),
            Some(Outcome::Screen(_))
        ));
    }

    #[test]
    fn a_busy_marker_that_appears_is_acceptance() {
        let before = snap(&["> "], (2, 0));
        let drafted = snap(&["> do it"], (7, 0));
        let now = snap(&["> do it", "Thinking…", "> "], (2, 2));
        assert!(matches!(
            classify(&before, Some(&drafted), &now, "do it", true, false),
            Some(Outcome::Screen(m)) if m.contains("Thinking")
        ));
    }
}
