//! Did the agent take the prompt? Pure decisions over screen snapshots
//! (DESIGN §5), so the rules are tested on recorded screens of real
//! programs without tmux.

use crate::runtime::{BoxShape, Screen};
use crate::screen::Snapshot;

/// The runtime's input box on one screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputBox {
    /// First and last row of the box's content.
    pub top: usize,
    pub bottom: usize,
    /// What the box holds, its rows joined by `\n`, prefix and borders
    /// removed, placeholders dropped (empty = an empty box).
    pub text: String,
}

fn is_rule(line: &str) -> bool {
    let t = line.trim();
    t.chars().count() >= 20
        && t.chars()
            .all(|c| matches!(c, '─' | '━' | '═' | '╌' | '┄' | '╭' | '╮' | '╰' | '╯' | '-'))
}

/// A row without the box's side borders.
fn inner(line: &str) -> &str {
    line.trim()
        .trim_start_matches(['│', '┃', '|'])
        .trim_end_matches(['│', '┃', '|'])
        .trim()
}

fn strip_placeholders(text: &str, r: &Screen) -> String {
    let t = text.trim();
    if r.placeholders.iter().any(|p| t.starts_with(p)) {
        String::new()
    } else {
        t.to_owned()
    }
}

/// Finds the input box: for a prefix box the prompt row nearest at or
/// above the cursor (the transcript repeats the prefix further up), down
/// to the next rule; for a ruled box the rows between the two rules
/// around the cursor.
pub fn input_box(s: &Snapshot, r: &Screen) -> Option<InputBox> {
    let rows = &s.lines;
    if rows.is_empty() {
        return None;
    }
    let cy = (s.cursor_y as usize).min(rows.len() - 1);
    match r.input {
        BoxShape::Prefix([]) => Some(InputBox {
            top: cy,
            bottom: cy,
            text: rows[cy].trim().to_owned(),
        }),
        BoxShape::Prefix(prefixes) => {
            // A prefix may itself be a border (opencode's `┃`), so look
            // for it before and after stripping the borders.
            let prefix_of = |l: &str| {
                prefixes
                    .iter()
                    .find(|p| l.trim_start().starts_with(**p) || inner(l).starts_with(**p))
                    .copied()
            };
            let starts = |i: usize| {
                prefix_of(&rows[i]).filter(|_| !r.rule_above || i > 0 && is_rule(&rows[i - 1]))
            };
            // The prompt row is the cursor's, or above it with only the
            // draft's continuation rows (blank or indented) in between:
            // an inline runtime's old prompts further up are history.
            let continuation = |l: &str| l.trim().is_empty() || l.starts_with("  ");
            let mut near = None;
            for i in (cy.saturating_sub(8)..=cy).rev() {
                if starts(i).is_some() {
                    near = Some(i);
                    break;
                }
                if !r.continued || !continuation(&rows[i]) || is_rule(&rows[i]) {
                    break;
                }
            }
            // A full-screen runtime may park the cursor elsewhere: its
            // lowest prompt row is the box.
            let top = near.or_else(|| {
                r.alternate
                    .then(|| (0..rows.len()).rev().find(|&i| starts(i).is_some()))
                    .flatten()
            })?;
            let prefix = starts(top)?;
            let mut bottom = top;
            while bottom + 1 < rows.len()
                && bottom < top + 10
                && bottom < cy
                && !is_rule(&rows[bottom + 1])
            {
                bottom += 1;
            }
            let first = rows[top].trim_start();
            let first = first.strip_prefix(prefix).unwrap_or_else(|| {
                let i = inner(first);
                i.strip_prefix(prefix).unwrap_or(i)
            });
            let mut text = inner(first).to_owned();
            // The cursor sits at the end of a draft; on the first column of
            // the text it shows a placeholder ("Resend your message…").
            if cy == top && !text.is_empty() {
                let row = &rows[top];
                let at = row.find(text.as_str()).unwrap_or(0);
                let text_col = row[..at].chars().count();
                if (s.cursor_x as usize) <= text_col {
                    text.clear();
                }
            }
            for l in &rows[top + 1..=bottom] {
                let l = inner(l);
                if !l.is_empty() {
                    text.push('\n');
                    text.push_str(l);
                }
            }
            Some(InputBox {
                top,
                bottom,
                text: strip_placeholders(&text, r),
            })
        }
        BoxShape::Ruled => {
            let rules: Vec<usize> = (0..rows.len()).filter(|&i| is_rule(&rows[i])).collect();
            let pair = rules
                .windows(2)
                .find(|w| w[0] < cy && cy < w[1])
                .or_else(|| rules.windows(2).rev().find(|w| w[1] - w[0] >= 2))
                .or_else(|| rules.windows(2).next_back())?;
            let (top, bottom) = (pair[0] + 1, pair[1].saturating_sub(1).max(pair[0] + 1));
            let text = rows[top..pair[1]]
                .iter()
                .map(|l| inner(l))
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            Some(InputBox {
                top,
                bottom,
                text: strip_placeholders(&text, r),
            })
        }
    }
}

/// The rows that show what the runtime does now: from a little above the
/// input box to the bottom. Old lines in an inline runtime's scrollback
/// (aider's `Waiting for`, pi's `Working...`) are not in it. Without an
/// input box, the last few non-blank rows.
pub fn live_region<'a>(s: &'a Snapshot, r: &Screen) -> Vec<&'a str> {
    match input_box(s, r) {
        Some(b) if !matches!(r.input, BoxShape::Prefix([])) => {
            let from = b.top.saturating_sub(r.live_above);
            s.lines[from..].iter().map(String::as_str).collect()
        }
        _ => {
            let mut rows: Vec<&str> = s
                .lines
                .iter()
                .rev()
                .filter(|l| !l.trim().is_empty())
                .take(4)
                .map(String::as_str)
                .collect();
            rows.reverse();
            rows
        }
    }
}

/// The first of `markers` shown in the live region.
pub fn live_marker<'a>(s: &Snapshot, r: &Screen, markers: &[&'a str]) -> Option<&'a str> {
    let live = live_region(s, r);
    markers
        .iter()
        .find(|m| live.iter().any(|l| l.contains(**m)))
        .copied()
}

/// What the screen says the runtime does, by its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A busy marker in the live region.
    Busy(String),
    /// A question for a human; the text is what it asks.
    Waiting(String),
    /// The input box is up and nothing runs.
    Idle,
    /// Nothing to go on (blank screen, no input box).
    Unknown(String),
}

/// Reads the runtime's state off one screen.
pub fn observe(s: &Snapshot, r: &Screen) -> Observed {
    if s.is_blank() {
        return Observed::Unknown("the screen is blank".into());
    }
    let live = live_region(s, r);
    // A dialog can fill the screen: look for questions everywhere on a
    // full-screen runtime, in an inline one's last rows (not scrollback).
    let rows: Vec<&str> = if r.alternate {
        s.lines.iter().map(String::as_str).collect()
    } else {
        let mut rows: Vec<&str> = s
            .lines
            .iter()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(r.ask_rows)
            .map(String::as_str)
            .collect();
        rows.reverse();
        rows
    };
    if let Some((m, l)) = r
        .waiting
        .iter()
        .find_map(|m| rows.iter().find(|l| l.contains(*m)).map(|l| (m, l)))
    {
        let question: String = inner(l).chars().take(200).collect();
        return Observed::Waiting(if question.is_empty() {
            (*m).to_owned()
        } else {
            question
        });
    }
    if let Some(m) = r
        .starting
        .iter()
        .find(|m| live.iter().any(|l| l.contains(**m)))
    {
        return Observed::Unknown(format!("still starting ({m:?} on screen)"));
    }
    if let Some(m) = r.busy.iter().find(|m| live.iter().any(|l| l.contains(**m))) {
        return Observed::Busy(format!("{m:?} on screen"));
    }
    match input_box(s, r) {
        Some(_) if !matches!(r.input, BoxShape::Prefix([])) => Observed::Idle,
        _ => Observed::Unknown("no input box on screen".into()),
    }
}

/// Text already in the input box (a stale draft), if any.
pub fn stale_draft(s: &Snapshot, r: &Screen) -> Option<String> {
    if matches!(r.input, BoxShape::Prefix([])) {
        return None;
    }
    input_box(s, r)
        .map(|b| b.text)
        .filter(|t| !t.trim().is_empty())
}

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

/// The draft shows: the needle is in the input box (all of its rows, so a
/// draft that a paste guard split over two rows still counts), or on the
/// cursor row (or the row above it when the cursor wrapped to column 0).
pub fn draft_visible(s: &Snapshot, needle: &str, r: &Screen) -> bool {
    if needle.is_empty() {
        return false;
    }
    let squash = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let n = squash(needle);
    // A runtime whose box Fleet knows: the draft is in the box or nowhere
    // (its transcript or a question may repeat the text).
    if !matches!(r.input, BoxShape::Prefix([])) {
        return input_box(s, r).is_some_and(|b| squash(&b.text.replace('\n', " ")).contains(&n));
    }
    if squash(s.cursor_row()).contains(&n) {
        return true;
    }
    s.cursor_x == 0
        && s.cursor_y > 0
        && s.lines
            .get(s.cursor_y as usize - 1)
            .is_some_and(|l| squash(l).contains(&n))
}

/// The paste shows in the box even if not verbatim: a large paste the
/// runtime collapsed into a placeholder (`[Pasted text #1]`, `(~15 KB
/// hidden)`): the box was empty before and holds something now.
pub fn draft_shown(before: &Snapshot, now: &Snapshot, needle: &str, r: &Screen) -> bool {
    if draft_visible(now, needle, r) {
        return true;
    }
    if matches!(r.input, BoxShape::Prefix([])) {
        return false;
    }
    stale_draft(before, r).is_none() && stale_draft(now, r).is_some()
}

fn box_text(s: &Snapshot, r: &Screen) -> Option<String> {
    stale_draft(s, r)
}

/// How long after Enter a prompt sent to an already-busy agent is watched
/// for a queue marker before it counts as taken into the running turn
/// (Claude Code draws "queued" a few hundred ms after clearing its box).
pub const QUEUE_SETTLE: std::time::Duration = std::time::Duration::from_millis(1000);

/// Classifies the screen after Enter by the runtime's rules `r`. `before`
/// is the screen before the paste, `drafted` the screen with the draft on
/// it (None when the draft never showed), `now` the newest. `settled` says
/// [`QUEUE_SETTLE`] has passed since Enter. Returns `None` to keep
/// polling; at the deadline (`last`) it always decides.
pub fn classify(
    before: &Snapshot,
    drafted: Option<&Snapshot>,
    now: &Snapshot,
    needle: &str,
    r: &Screen,
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
    let queued_now = live_marker(now, r, r.queued).or_else(|| marker_anywhere(now, r.queued));
    if let Some(m) = queued_now
        && marker_anywhere(reference, r.queued).is_none()
    {
        return Some(Outcome::Queued(format!("the agent shows {m:?}")));
    }
    // An agent busy before Enter may queue the prompt or take it into the
    // running turn; its busy markers say nothing new about this prompt.
    let was_busy = before.busy
        || live_marker(before, r, r.busy).is_some()
        || live_marker(reference, r, r.busy).is_some();
    if was_busy && !r.reads_while_busy {
        return Some(Outcome::Queued(
            "the runtime does not read its input while a turn runs: the text is only the terminal's type-ahead (run after the turn, or lost on Ctrl-C)".into(),
        ));
    }
    // The draft is still there: the needle in the box, or the box holds
    // exactly what it held with the draft in it (a collapsed paste).
    let still_draft = draft_visible(now, needle, r)
        || drafted.is_some_and(|d| box_text(d, r).is_some() && box_text(d, r) == box_text(now, r));
    if was_busy && !settled && !last {
        return None;
    }
    if let Some(m) = live_marker(now, r, r.busy)
        && !was_busy
    {
        if still_draft && !m.contains("etry") {
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
            "the text left the input box and the input moved down"
        } else if box_text(now, r).is_none() || now.cursor_row().trim().len() <= 4 {
            "the input box is empty again"
        } else {
            "the text left the input box"
        };
        return Some(Outcome::Screen(how.into()));
    }
    if !last {
        return None;
    }
    Some(if still_draft {
        Outcome::Draft("the text is still in the input box".into())
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

fn marker_anywhere<'a>(s: &Snapshot, markers: &[&'a str]) -> Option<&'a str> {
    markers
        .iter()
        .find(|m| s.lines.iter().any(|l| l.contains(**m)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Screen = Screen::GENERIC;

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
        assert!(draft_visible(&drafted, &n, &G));
        assert!(matches!(
            classify(&before, Some(&drafted), &now, &n, &G, true, false),
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
            classify(&before, None, &now, "x", &G, true, false),
            Some(Outcome::Acknowledged)
        );
    }

    #[test]
    fn text_left_on_the_input_row_is_a_draft_only_at_the_deadline() {
        let before = snap(&["> "], (2, 0));
        let drafted = snap(&["> hello"], (7, 0));
        assert_eq!(
            classify(&before, Some(&drafted), &drafted, "hello", &G, true, false),
            None
        );
        assert!(matches!(
            classify(&before, Some(&drafted), &drafted, "hello", &G, true, true),
            Some(Outcome::Draft(_))
        ));
    }

    #[test]
    fn a_frozen_or_blank_screen_is_unverifiable() {
        let blank = snap(&["", ""], (0, 0));
        assert!(matches!(
            classify(&blank, None, &blank, "x", &G, true, true),
            Some(Outcome::Unverifiable(m)) if m.contains("blank")
        ));
        let frozen = snap(&["FROZEN"], (0, 0));
        assert!(matches!(
            classify(&frozen, None, &frozen, "x", &G, true, true),
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
            classify(&before, Some(&drafted), &now, "next", &G, true, false),
            Some(Outcome::Queued(_))
        ));
    }

    #[test]
    fn a_busy_agent_is_watched_for_a_queue_marker_before_acceptance() {
        let before = snap(&["Working (esc to interrupt)", "› "], (2, 1));
        let drafted = snap(&["Working (esc to interrupt)", "› next"], (6, 1));
        let cleared = snap(&["Working (esc to interrupt)", "› "], (2, 1));
        assert_eq!(
            classify(&before, Some(&drafted), &cleared, "next", &G, false, false),
            None
        );
        assert!(matches!(
            classify(&before, Some(&drafted), &cleared, "next", &G, true, false),
            Some(Outcome::Screen(_))
        ));
    }

    #[test]
    fn a_busy_marker_that_appears_is_acceptance() {
        let before = snap(&["> "], (2, 0));
        let drafted = snap(&["> do it"], (7, 0));
        let now = snap(&["> do it", "Thinking…", "> "], (2, 2));
        assert!(matches!(
            classify(&before, Some(&drafted), &now, "do it", &G, true, false),
            Some(Outcome::Screen(m)) if m.contains("Thinking")
        ));
    }
}
