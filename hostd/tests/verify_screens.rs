//! The verify classifier on screens recorded from real agent TUIs (Claude
//! Code 2.1.197 and Codex 0.169.0 in tmux 3.3a, offline).
#![allow(clippy::unwrap_used)]

use fleet_hostd::runtime::{CLAUDE_SCREEN, CODEX_SCREEN, Screen};
use fleet_hostd::screen::Snapshot;
use fleet_hostd::verify::{self, Outcome};

fn rules(name: &str) -> &'static Screen {
    if name.starts_with("codex") {
        &CODEX_SCREEN
    } else {
        &CLAUDE_SCREEN
    }
}

fn load(name: &str) -> Snapshot {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/screens")
        .join(name);
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let mut cursor = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|v| v.parse::<u32>().unwrap());
    let (x, y) = (cursor.next().unwrap(), cursor.next().unwrap());
    let rows: Vec<String> = lines.map(|l| l.trim_end().to_owned()).collect();
    Snapshot {
        cursor_x: x,
        cursor_y: y,
        width: 120,
        height: rows.len() as u32,
        lines: rows,
        ..Default::default()
    }
}

#[test]
fn claude_code_prompt_leaving_the_box_is_accepted() {
    let drafted = load("claude-1-drafted.txt");
    let needle = verify::needle("say hello");
    assert!(verify::draft_visible(&drafted, &needle, rules("claude")));
    let after = load("claude-2-after-enter.txt");
    let got = verify::classify(
        &drafted,
        Some(&drafted),
        &after,
        &needle,
        rules("claude"),
        true,
        false,
    );
    assert!(matches!(got, Some(Outcome::Screen(_))), "{got:?}");
}

#[test]
fn claude_code_queued_message_is_queued() {
    let drafted = load("claude-3-busy-drafted.txt");
    let needle = verify::needle("second prompt");
    assert!(verify::draft_visible(&drafted, &needle, rules("claude")));
    let after = load("claude-4-queued.txt");
    let got = verify::classify(
        &drafted,
        Some(&drafted),
        &after,
        &needle,
        rules("claude"),
        true,
        false,
    );
    assert!(matches!(got, Some(Outcome::Queued(_))), "{got:?}");
}

#[test]
fn codex_queue_at_startup_is_queued() {
    let drafted = load("codex-1-drafted.txt");
    let needle = verify::needle("say hello");
    assert!(verify::draft_visible(&drafted, &needle, rules("codex")));
    let after = load("codex-2-queued-at-startup.txt");
    let got = verify::classify(
        &drafted,
        Some(&drafted),
        &after,
        &needle,
        rules("codex"),
        true,
        false,
    );
    assert!(matches!(got, Some(Outcome::Queued(_))), "{got:?}");
}

#[test]
fn codex_steering_into_a_running_turn_is_accepted() {
    let drafted = load("codex-3-busy-drafted.txt");
    let needle = verify::needle("third one");
    assert!(verify::draft_visible(&drafted, &needle, rules("codex")));
    let after = load("codex-4-steered.txt");
    let got = verify::classify(
        &drafted,
        Some(&drafted),
        &after,
        &needle,
        rules("codex"),
        true,
        false,
    );
    assert!(matches!(got, Some(Outcome::Screen(_))), "{got:?}");
}

#[test]
fn a_draft_left_in_the_box_is_a_draft_at_the_deadline() {
    let drafted = load("claude-1-drafted.txt");
    let needle = verify::needle("say hello");
    assert_eq!(
        verify::classify(
            &drafted,
            Some(&drafted),
            &drafted,
            &needle,
            rules("claude"),
            true,
            false
        ),
        None
    );
    assert!(matches!(
        verify::classify(
            &drafted,
            Some(&drafted),
            &drafted,
            &needle,
            rules("claude"),
            true,
            true
        ),
        Some(Outcome::Draft(_))
    ));
}
