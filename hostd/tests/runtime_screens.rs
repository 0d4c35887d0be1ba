//! Each runtime's screen rules (`runtime.rs`) on screens recorded from the
//! real programs in tmux 3.3a, offline, 120×40 (`fixtures/screens/<rt>/`,
//! first line `cursor_x cursor_y`): the input box and what it holds, busy
//! only in the live region, queued, waiting, and the verdicts that follow.
#![allow(clippy::unwrap_used)]

mod screens;

use fleet_hostd::runtime::{self, Screen};
use fleet_hostd::screen::Snapshot;
use fleet_hostd::verify::{self, Observed, Outcome};

fn load(rt: &str, name: &str) -> Snapshot {
    screens::load(&screens::root().join(rt).join(name))
}

fn rules(rt: &str) -> &'static Screen {
    runtime::builtin(rt).unwrap().screen
}

fn observed(rt: &str, name: &str) -> Observed {
    verify::observe(&load(rt, name), rules(rt))
}

fn draft(rt: &str, name: &str) -> Option<String> {
    verify::stale_draft(&load(rt, name), rules(rt))
}

#[track_caller]
fn assert_idle(rt: &str, name: &str) {
    assert_eq!(observed(rt, name), Observed::Idle, "{rt}/{name}");
    assert_eq!(draft(rt, name), None, "{rt}/{name}: an empty box");
}

#[track_caller]
fn assert_busy(rt: &str, name: &str) {
    assert!(
        matches!(observed(rt, name), Observed::Busy(_)),
        "{rt}/{name}: {:?}",
        observed(rt, name)
    );
}

#[track_caller]
fn assert_waiting(rt: &str, name: &str, asks: &str) {
    match observed(rt, name) {
        Observed::Waiting(q) => assert!(q.contains(asks), "{rt}/{name}: {q:?}"),
        o => panic!("{rt}/{name}: {o:?}"),
    }
}

#[track_caller]
fn assert_draft(rt: &str, name: &str, holds: &str) {
    let d = draft(rt, name).unwrap_or_else(|| panic!("{rt}/{name}: no draft found"));
    assert!(d.contains(holds), "{rt}/{name}: {d:?}");
}

#[test]
fn claude_code() {
    assert_idle("claude", "idle.txt");
    assert_draft("claude", "drafted.txt", "say hello to the fleet");
    assert_busy("claude", "busy.txt");
    assert_draft("claude", "multiline-drafted.txt", "second line of two");
    assert_draft("claude", "stale-draft.txt", "please interrupt me");
    assert_draft("claude", "big-paste-drafted.txt", "[Pasted text #1");
    assert_waiting("claude", "waiting.txt", "trust this folder");
    // The queue hint sits in the box as a placeholder: no draft.
    assert_eq!(draft("claude", "queued.txt"), None);
}

#[test]
fn codex() {
    assert_idle("codex", "idle.txt");
    assert_busy("codex", "busy.txt");
    assert_busy("codex", "busy-reconnecting.txt");
    assert_draft("codex", "stale-draft.txt", "");
    assert_waiting("codex", "waiting-trust.txt", "");
}

#[test]
fn opencode() {
    assert_idle("opencode", "idle.txt");
    assert_draft("opencode", "drafted.txt", "");
    assert_busy("opencode", "busy.txt");
    assert_draft("opencode", "queued-drafted.txt", "second prompt beta");
    assert_waiting("opencode", "waiting.txt", "Permission required");
    let d = load("opencode", "queued-drafted.txt");
    assert!(verify::draft_visible(
        &d,
        &verify::needle("second prompt beta"),
        rules("opencode")
    ));
}

#[test]
fn pi() {
    assert_idle("pi", "idle.txt");
    assert_draft("pi", "drafted.txt", "Say hello in one word");
    assert_busy("pi", "busy.txt");
    assert_draft("pi", "multiline-drafted.txt", "line two of two");
    // After the turn the spinner is gone; old error lines are history.
    assert_idle("pi", "ended.txt");
    assert_idle("pi", "interrupted.txt");
}

#[test]
fn gemini_cli() {
    assert_idle("gemini", "idle.txt");
    assert_draft("gemini", "drafted.txt", "hello there");
    assert_busy("gemini", "busy.txt");
    assert_draft("gemini", "multiline-drafted.txt", "line two");
    assert_waiting("gemini", "waiting.txt", "trust");
    // The paste guard turned Enter into a newline: still a draft, though
    // the cursor sits on an empty row below it.
    let s = load("gemini", "paste-guard.txt");
    assert!(verify::draft_visible(
        &s,
        &verify::needle("guarded prompt"),
        rules("gemini")
    ));
}

#[test]
fn aider() {
    assert_idle("aider", "idle.txt");
    assert_busy("aider", "busy-spinner.txt");
    // Old retry lines above the prompt are history.
    assert_idle("aider", "ended-full-retries.txt");
    assert_draft(
        "aider",
        "stale-draft-after-interrupt.txt",
        "ECHOTEST abc more",
    );
    assert_waiting("aider", "waiting.txt", "create one");
}

#[test]
fn a_queued_prompt_is_queued_on_every_runtime_that_queues() {
    for (rt, drafted, after, text) in [
        ("claude", "drafted.txt", "queued.txt", "and a follow-up"),
        ("pi", "drafted.txt", "queued.txt", "second prompt beta"),
        (
            "gemini",
            "queued-drafted.txt",
            "queued.txt",
            "second prompt while busy",
        ),
        (
            "opencode",
            "queued-drafted.txt",
            "queued.txt",
            "second prompt beta",
        ),
    ] {
        let before = load(rt, drafted);
        let after = load(rt, after);
        let got = verify::classify(
            &before,
            Some(&before),
            &after,
            &verify::needle(text),
            rules(rt),
            true,
            false,
        );
        assert!(matches!(got, Some(Outcome::Queued(_))), "{rt}: {got:?}");
    }
}

#[test]
fn a_busy_marker_in_an_inline_runtimes_scrollback_is_not_busy() {
    // pi's and aider's old error and retry lines stay above the box.
    assert_idle("pi", "ended.txt");
}

// Screens recorded by an earlier session (Claude Code 2.1.197, Codex
// 0.169.0): the verdicts after Enter.

/// The verdict for `text` drafted on `drafted` and Enter giving `after`
/// (the draft must show on `drafted`).
fn verdict(rt: &str, drafted: &str, after: &str, text: &str, last: bool) -> Option<Outcome> {
    let d = load(rt, drafted);
    let needle = verify::needle(text);
    assert!(
        verify::draft_visible(&d, &needle, rules(rt)),
        "{rt}/{drafted}"
    );
    let a = load(rt, after);
    verify::classify(&d, Some(&d), &a, &needle, rules(rt), true, last)
}

#[test]
fn the_earlier_recordings_keep_their_verdicts() {
    let v = |rt, d, a, t| verdict(rt, d, a, t, false);
    let got = v(
        "claude",
        "v1-1-drafted.txt",
        "v1-2-after-enter.txt",
        "say hello",
    );
    assert!(matches!(got, Some(Outcome::Screen(_))), "{got:?}");
    let got = v(
        "claude",
        "v1-3-busy-drafted.txt",
        "v1-4-queued.txt",
        "second prompt",
    );
    assert!(matches!(got, Some(Outcome::Queued(_))), "{got:?}");
    let got = v(
        "codex",
        "v1-1-drafted.txt",
        "v1-2-queued-at-startup.txt",
        "say hello",
    );
    assert!(matches!(got, Some(Outcome::Queued(_))), "{got:?}");
    let got = v(
        "codex",
        "v1-3-busy-drafted.txt",
        "v1-4-steered.txt",
        "third one",
    );
    assert!(matches!(got, Some(Outcome::Screen(_))), "{got:?}");
    // A draft left in the box: no verdict yet, a draft at the deadline.
    let still = |last| {
        verdict(
            "claude",
            "v1-1-drafted.txt",
            "v1-1-drafted.txt",
            "say hello",
            last,
        )
    };
    assert_eq!(still(false), None);
    assert!(matches!(still(true), Some(Outcome::Draft(_))));
}
