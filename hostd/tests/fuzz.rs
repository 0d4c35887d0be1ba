//! Property tests: arbitrary and mutated rosters, tmux snapshot output and
//! screens never make hostd's parsers or the verify classifier panic;
//! roster errors name file, line and key, accepted rosters obey the
//! roster rules, and the classifier keeps the invariants it documents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod screens;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use fleet_hostd::roster::{self, Format, Roster, RosterError};
use fleet_hostd::runtime::{self, BoxShape, Screen};
use fleet_hostd::screen::Snapshot;
use fleet_hostd::verify::{self, InputBox, Observed, Outcome};
use fleet_proto::heartbeat;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Modest case counts, and no `proptest-regressions/` files written into
/// the tree: a failure prints its minimal input instead.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// === roster ===

const FIXTURES: &[(&str, &str, Format)] = &[
    (
        "coding.yaml",
        include_str!("fixtures/rosters/coding.yaml"),
        Format::Yaml,
    ),
    (
        "general.yaml",
        include_str!("fixtures/rosters/general.yaml"),
        Format::Yaml,
    ),
    (
        "research.yaml",
        include_str!("fixtures/rosters/research.yaml"),
        Format::Yaml,
    ),
    (
        "coding.toml",
        include_str!("fixtures/rosters/coding.toml"),
        Format::Toml,
    ),
    (
        "roster.example.yaml",
        include_str!("../../deploy/roster.example.yaml"),
        Format::Yaml,
    ),
];

const HOME: &str = "/home/u";

fn path_for(format: Format) -> impl Strategy<Value = PathBuf> {
    let ext = match format {
        Format::Yaml => "yaml",
        Format::Toml => "toml",
    };
    prop::sample::select(vec![
        "r",
        "/home/u/.config/fleet/roster",
        "dir with spaces/roster",
        "ünïcödé/☃",
        "a:b/c",
        "./x/../roster",
    ])
    .prop_map(move |p| PathBuf::from(format!("{p}.{ext}")))
}

/// The file's lines as a YAML parser counts them: `\r\n`, a lone `\r`,
/// NEL, LS and PS all end a line.
fn line_count(text: &str) -> usize {
    let breaks = text
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count();
    breaks + 1
}

/// A roster error names the file it was handed, then a line and/or key,
/// then a message that says something.
fn check_roster_err(e: &RosterError, text: &str, path: &Path) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    let p = path.display().to_string();
    prop_assert_eq!(&e.path, path);
    prop_assert!(
        shown.starts_with(&p),
        "{:?} does not start with {:?}",
        shown,
        p
    );
    prop_assert!(shown[p.len()..].starts_with(':'), "{:?}", shown);
    prop_assert!(
        !e.message.trim().is_empty(),
        "{:?} has no message ({:?})",
        shown,
        e
    );
    prop_assert!(shown.ends_with(&e.message), "{:?}", shown);
    if let Some(l) = e.line {
        // An error at the end of the file may point at the line after its
        // last (libyaml's "could not find expected ':'" does).
        prop_assert!(
            (1..=line_count(text) + 1).contains(&l),
            "{:?}: line {} of a {}-line file",
            shown,
            l,
            line_count(text)
        );
        prop_assert!(shown.starts_with(&format!("{p}:{l}")), "{:?}", shown);
    }
    if !e.key.is_empty() {
        prop_assert!(
            shown.contains(&format!(": {}: ", e.key)),
            "{:?} lacks key {:?}",
            shown,
            e.key
        );
    }
    prop_assert!(
        e.line.is_some() || !e.key.is_empty(),
        "{:?} says neither line nor key",
        shown
    );
    Ok(())
}

fn secs_within(d: Duration, lo: f64, hi: f64) -> bool {
    d >= Duration::from_secs_f64(lo) && d <= Duration::from_secs_f64(hi)
}

/// An accepted roster obeys every rule `parse` enforces.
fn check_roster_ok(r: &Roster, text: &str, path: &Path) -> Result<(), TestCaseError> {
    use fleet_proto::name::check;
    prop_assert_eq!(&r.path, path);
    prop_assert!(check(&r.tmux.socket_name).is_ok(), "{:?}", r.tmux);
    prop_assert!(
        check(r.tmux.holder_session.trim_start_matches('_')).is_ok(),
        "{:?}",
        r.tmux
    );
    let reserved = [
        heartbeat::ENV_AGENT,
        heartbeat::ENV_TENANT,
        heartbeat::ENV_HEARTBEAT_FILE,
        heartbeat::ENV_HEARTBEAT_INTERVAL,
    ];
    let mut seen = std::collections::HashSet::new();
    let respawn_ok = |p: &roster::RespawnPolicy| {
        (1..=1000).contains(&p.max_deaths)
            && p.max_delay >= p.initial_delay
            && secs_within(p.window, 1.0, 86_400.0)
            && secs_within(p.initial_delay, 0.0, 3_600.0)
            && secs_within(p.max_delay, 0.0, 86_400.0)
    };
    for a in &r.agents {
        let n = a.name.as_str();
        prop_assert!(check(n).is_ok(), "{:?}", n);
        prop_assert!(seen.insert(n), "duplicate agent {:?} accepted", n);
        prop_assert!(n != r.tmux.holder_session, "{:?} is the holder", n);
        prop_assert!(!a.command.trim().is_empty(), "{}: empty command", n);
        for k in a.env.keys() {
            let ok = k
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            prop_assert!(ok, "{}: env {:?}", n, k);
            prop_assert!(!reserved.contains(&k.as_str()), "{}: env {:?}", n, k);
        }
        if let Some(d) = a.heartbeat_interval {
            prop_assert!(
                !d.is_zero() && d <= Duration::from_secs(86_400),
                "{}: {:?}",
                n,
                d
            );
        }
        prop_assert!(
            a.submit_gap <= Duration::from_secs(10),
            "{}: {:?}",
            n,
            a.submit_gap
        );
        prop_assert!(respawn_ok(&a.respawn), "{}: {:?}", n, a.respawn);
        prop_assert!(a.line <= line_count(text), "{}: line {}", n, a.line);
    }
    let s = &r.supervision;
    prop_assert!(
        s.tick >= Duration::from_millis(10) && s.tick <= Duration::from_secs(60),
        "{:?}",
        s.tick
    );
    prop_assert!(respawn_ok(&s.respawn), "{:?}", s.respawn);
    prop_assert!(secs_within(s.digest_interval, 0.1, 86_400.0));
    if let Some(p) = &s.poke {
        prop_assert!(secs_within(p.idle, 0.1, 86_400.0), "{:?}", p);
        prop_assert!(secs_within(p.cooldown, 0.1, 86_400.0), "{:?}", p);
    }
    if let Some(fm) = &s.first_mate {
        prop_assert!(r.agent(fm).is_some(), "first mate {:?} is no agent", fm);
    }
    Ok(())
}

fn check_roster(text: &str, path: &Path, format: Format) -> Result<(), TestCaseError> {
    match roster::parse(text, path, format, Path::new(HOME)) {
        Ok(r) => check_roster_ok(&r, text, path),
        Err(e) => check_roster_err(&e, text, path),
    }
}

/// One edit to a roster's text.
#[derive(Debug, Clone)]
enum RosterEdit {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceLine(usize, String),
    InsertLine(usize, String),
    Reindent(usize, usize),
    SetValue(usize, String),
    InsertChar(usize, char),
    Truncate(usize),
}

fn tricky_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "-1",
            "0",
            "-0.0",
            "0.05",
            "1e400",
            ".nan",
            ".inf",
            "nan",
            "inf",
            "86400.5",
            "10001",
            "18446744073709551616",
            "~",
            "null",
            "''",
            "\"\"",
            "[",
            "{",
            "]",
            "}",
            "../x",
            "a:b",
            "a.b",
            "_holder",
            "true",
            "maybe",
            "\"\\u0000\"",
            "*x",
            "&x y",
            "|",
            ">",
            "- a",
            "[1, 2]",
            "{a: 1}",
            "{FLEET_AGENT: x}",
            "{1BAD: x}",
            "!!binary aGk=",
            "codex",
            "cobol",
            "pi",
            "ghost",
            "orchestrator",
            "\"",
            "'",
            "#",
            "\t",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
        "\\PC{0,8}",
    ]
}

fn tricky_line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "  - name: x",
            "    runtime: pi",
            "  - name: orchestrator",
            "    runtime: mine",
            "agents: []",
            "agents:",
            "version: 2",
            "transport: ssh",
            "[[agents]]",
            "name = \"a\"",
            "runtime = \"pi\"",
            "[tmux]",
            "[supervision.respawn]",
            "max_deaths = 0",
            "supervision:",
            "  respawn:",
            "    max_deaths: 0",
            "    initial_delay_secs: 9",
            "  first_mate: ghost",
            "  poke: {}",
            "runtimes:",
            "  mine:",
            "    native: cobol",
            "    env: {FLEET_AGENT: x}",
            "- ",
            "-",
            ":",
            "---",
            "...",
            "%YAML 1.2",
            "&a [*a, *a]",
            "<<: *a",
            "? complex",
            "\t- tab",
            "# comment",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,30}",
        "(?s).{0,20}",
    ]
}

fn roster_edit() -> impl Strategy<Value = RosterEdit> {
    prop_oneof![
        any::<usize>().prop_map(RosterEdit::DeleteLine),
        any::<usize>().prop_map(RosterEdit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| RosterEdit::SwapLines(i, j)),
        (any::<usize>(), tricky_line()).prop_map(|(i, l)| RosterEdit::ReplaceLine(i, l)),
        (any::<usize>(), tricky_line()).prop_map(|(i, l)| RosterEdit::InsertLine(i, l)),
        (any::<usize>(), 0usize..9).prop_map(|(i, n)| RosterEdit::Reindent(i, n)),
        (any::<usize>(), tricky_value()).prop_map(|(i, v)| RosterEdit::SetValue(i, v)),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| RosterEdit::InsertChar(i, c)),
        any::<usize>().prop_map(RosterEdit::Truncate),
    ]
}

fn apply(text: &str, edits: &[RosterEdit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut char_edits = Vec::new();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            RosterEdit::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            RosterEdit::DuplicateLine(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            RosterEdit::SwapLines(i, j) if !lines.is_empty() => lines.swap(i % n, j % n),
            RosterEdit::ReplaceLine(i, l) if !lines.is_empty() => lines[i % n] = l.clone(),
            RosterEdit::InsertLine(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
            RosterEdit::Reindent(i, k) if !lines.is_empty() => {
                let l = &mut lines[i % n];
                *l = format!("{}{}", " ".repeat(*k), l.trim_start());
            }
            RosterEdit::SetValue(i, v) if !lines.is_empty() => {
                let l = &mut lines[i % n];
                if let Some((k, _)) = l.split_once(": ") {
                    *l = format!("{k}: {v}");
                } else if let Some((k, _)) = l.split_once(" = ") {
                    *l = format!("{k} = {v}");
                } else {
                    l.push_str(v);
                }
            }
            _ => char_edits.push(e.clone()),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    for e in char_edits {
        let bounds: Vec<usize> = out
            .char_indices()
            .map(|(i, _)| i)
            .chain([out.len()])
            .collect();
        match e {
            RosterEdit::InsertChar(i, c) => out.insert(bounds[i % bounds.len()], c),
            RosterEdit::Truncate(i) => out.truncate(bounds[i % bounds.len()]),
            _ => {}
        }
    }
    out
}

fn fixture() -> impl Strategy<Value = (&'static str, &'static str, Format)> {
    prop::sample::select(FIXTURES.to_vec())
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::Yaml), Just(Format::Toml)]
}

#[test]
fn the_fixtures_are_valid_rosters() {
    // The mutations start from rosters that load: the properties below
    // see both sides of every rule.
    for (name, text, format) in FIXTURES {
        let path = Path::new(name);
        let r = roster::parse(text, path, *format, Path::new(HOME))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!r.agents.is_empty(), "{name}");
        check_roster_ok(&r, text, path).unwrap();
    }
}

#[test]
fn a_second_yaml_document_is_refused_with_its_line() {
    for (text, line) in [
        ("version: 1\n---\nagents: []\n", 2),
        ("  version: 1\ntransport: tmux\n", 2),
    ] {
        let e =
            roster::parse(text, Path::new("r.yaml"), Format::Yaml, Path::new(HOME)).unwrap_err();
        assert_eq!(e.line, Some(line), "{text:?}: {e}");
        assert!(e.to_string().contains("second YAML document"), "{e}");
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn roster_arbitrary_text_is_refused_with_file_line_and_key(
        text in prop_oneof![
            "(?s).{0,300}",
            "[a-z_:\\[\\]{}=\"' \n#0-9.,-]{0,200}",
            proptest::collection::vec(tricky_line(), 0..12).prop_map(|l| l.join("\n")),
        ],
        format in format(),
        path in path_for(Format::Yaml),
    ) {
        check_roster(&text, &path, format)?;
    }

    #[test]
    fn roster_mutated_fixtures_load_or_name_file_line_and_key(
        (name, text, format) in fixture(),
        edits in proptest::collection::vec(roster_edit(), 1..4),
        path in prop_oneof![path_for(Format::Yaml), path_for(Format::Toml)],
    ) {
        let text = apply(text, &edits);
        prop_assert!(!name.is_empty());
        check_roster(&text, &path, format)?;
    }

    #[test]
    fn roster_deep_nesting_is_an_error_not_a_crash(
        open in prop::sample::select(vec!["[", "{a: ", "- ", "a:\n ", "{", "[[", "x = ["]),
        depth in 1usize..2000,
        format in format(),
    ) {
        let text = format!("version: 1\nagents: {}", open.repeat(depth));
        check_roster(&text, Path::new("deep.yaml"), format)?;
        let text = format!("agents = {}", open.repeat(depth));
        check_roster(&text, Path::new("deep.toml"), format)?;
    }
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn roster_load_of_any_bytes_names_the_file(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            (fixture(), proptest::collection::vec(any::<u8>(), 0..4))
                .prop_map(|((_, t, _), tail)| [t.as_bytes(), &tail].concat()),
        ],
        ext in prop::sample::select(vec!["yaml", "yml", "toml", "txt", ""]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("roster.{ext}"));
        std::fs::write(&path, &bytes).unwrap();
        prop_assert_eq!(Format::of(&path).is_some(), ext.starts_with('y') || ext == "toml");
        match roster::load(&path, Path::new(HOME)) {
            Ok(r) => {
                let text = std::str::from_utf8(&bytes).unwrap();
                check_roster_ok(&r, text, &path)?;
            }
            Err(e) => {
                let shown = e.to_string();
                prop_assert_eq!(&e.path, &path);
                prop_assert!(shown.starts_with(&path.display().to_string()), "{}", shown);
                prop_assert!(!e.message.trim().is_empty(), "{}", shown);
            }
        }
    }
}

// === screens ===

/// Every built-in runtime's screen rules, and the generic ones.
fn screens() -> Vec<(&'static str, &'static Screen)> {
    runtime::BUILTINS
        .iter()
        .map(|b| (b.name, b.screen))
        .chain([("generic", &Screen::GENERIC)])
        .collect()
}

/// Pieces real screens are made of: every marker, prefix and placeholder
/// the rules know, borders, rules, wide and combining characters.
fn fragments() -> Vec<&'static str> {
    let mut f: Vec<&'static str> = vec![
        "│",
        "┃",
        "|",
        "╭",
        "╮",
        "╰",
        "╯",
        "─",
        "━",
        "═",
        "╌",
        "┄",
        "-",
        " ",
        "  ",
        "\t",
        "$ ",
        "> ",
        "漢字",
        "🦀",
        "e\u{301}",
        "\u{200b}",
        "\u{feff}",
        "ｗｉｄｅ",
        "\u{1b}[0m",
        "…",
    ];
    let rule: &'static str = "────────────────────────────────────────";
    f.push(rule);
    for (_, s) in screens() {
        if let BoxShape::Prefix(p) = s.input {
            f.extend_from_slice(p);
        }
        for list in [s.busy, s.queued, s.starting, s.waiting, s.placeholders] {
            f.extend_from_slice(list);
        }
    }
    f
}

fn screen_line() -> impl Strategy<Value = String> {
    let rule_char = prop::sample::select(vec!["─", "━", "═", "╌", "┄", "-", "╭", "╮", "╰", "╯"]);
    prop_oneof![
        4 => proptest::collection::vec(prop::sample::select(fragments()), 0..6)
            .prop_map(|p| p.concat()),
        2 => "\\PC{0,40}",
        1 => "(?s).{0,40}",
        2 => Just(String::new()),
        2 => (
            prop::sample::select(vec!["", "╭", "╰", " "]),
            rule_char,
            0usize..130,
            prop::sample::select(vec!["", "╮", "╯", " "]),
        )
            .prop_map(|(a, c, n, b)| format!("{a}{}{b}", c.repeat(n))),
        1 => "[\u{4e00}-\u{4e80}\u{1F300}-\u{1F5FF}\u{0300}-\u{036F}│┃| ]{0,60}",
        1 => ("[a-z ]{1,8}", 100usize..3000).prop_map(|(s, n)| s.repeat(n / s.len() + 1)),
    ]
}

fn rows() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(screen_line(), 0..45)
}

fn coord() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..50, 1 => 50u32..200, 1 => any::<u32>()]
}

fn random_snapshot() -> impl Strategy<Value = Snapshot> {
    (
        rows(),
        coord(),
        coord(),
        (any::<u32>(), any::<u32>(), any::<u64>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (proptest::option::of(0u64..4), any::<bool>()),
    )
        .prop_map(
            |(
                lines,
                cursor_x,
                cursor_y,
                (width, height, history_size),
                (a, m, d),
                (turn, busy),
            )| {
                Snapshot {
                    cursor_x,
                    cursor_y,
                    width,
                    height,
                    history_size,
                    alternate_on: a,
                    in_mode: m,
                    dead: d,
                    lines,
                    turn,
                    busy,
                }
            },
        )
}

/// The recorded screens (`fixtures/screens/<rt>/*.txt`, first line
/// `cursor_x cursor_y`).
fn recorded() -> &'static [Snapshot] {
    static SCREENS: OnceLock<Vec<Snapshot>> = OnceLock::new();
    SCREENS.get_or_init(|| {
        let root = screens::root();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| f.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        files.iter().map(|p| screens::load(p)).collect()
    })
}

#[derive(Debug, Clone)]
enum ScreenEdit {
    Replace(usize, String),
    Insert(usize, String),
    Delete(usize),
    Cursor(u32, u32),
    Truncate(usize),
}

fn screen_edit() -> impl Strategy<Value = ScreenEdit> {
    prop_oneof![
        (any::<usize>(), screen_line()).prop_map(|(i, l)| ScreenEdit::Replace(i, l)),
        (any::<usize>(), screen_line()).prop_map(|(i, l)| ScreenEdit::Insert(i, l)),
        any::<usize>().prop_map(ScreenEdit::Delete),
        (coord(), coord()).prop_map(|(x, y)| ScreenEdit::Cursor(x, y)),
        any::<usize>().prop_map(ScreenEdit::Truncate),
    ]
}

fn recorded_snapshot() -> impl Strategy<Value = Snapshot> {
    (
        0..recorded().len(),
        proptest::collection::vec(screen_edit(), 0..4),
        (proptest::option::of(0u64..4), any::<bool>()),
    )
        .prop_map(|(i, edits, (turn, busy))| {
            let mut s = recorded()[i].clone();
            for e in edits {
                let n = s.lines.len().max(1);
                match e {
                    ScreenEdit::Replace(i, l) if !s.lines.is_empty() => s.lines[i % n] = l,
                    ScreenEdit::Insert(i, l) => s.lines.insert(i % (s.lines.len() + 1), l),
                    ScreenEdit::Delete(i) if !s.lines.is_empty() => {
                        s.lines.remove(i % n);
                    }
                    ScreenEdit::Cursor(x, y) => (s.cursor_x, s.cursor_y) = (x, y),
                    ScreenEdit::Truncate(i) => s.lines.truncate(i % (s.lines.len() + 1)),
                    _ => {}
                }
            }
            s.turn = turn;
            s.busy = busy;
            s
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    prop_oneof![random_snapshot(), recorded_snapshot()]
}

fn knows_its_box(r: &Screen) -> bool {
    !matches!(r.input, BoxShape::Prefix([]))
}

/// The input box lies within the screen, holds only text from its own
/// rows, trimmed, placeholders dropped.
fn check_box(s: &Snapshot, rt: &str, r: &Screen) -> Result<Option<InputBox>, TestCaseError> {
    let b = verify::input_box(s, r);
    if s.lines.is_empty() {
        prop_assert_eq!(&b, &None, "{}: a box on an empty screen", rt);
    }
    if !knows_its_box(r) && !s.lines.is_empty() {
        // The cursor's row is the box.
        let cy = (s.cursor_y as usize).min(s.lines.len() - 1);
        let want = InputBox {
            top: cy,
            bottom: cy,
            text: s.lines[cy].trim().to_owned(),
        };
        prop_assert_eq!(&b, &Some(want), "{}", rt);
    }
    if let Some(b) = &b {
        prop_assert!(
            b.top <= b.bottom && b.bottom < s.lines.len(),
            "{}: {:?} outside {} rows",
            rt,
            b,
            s.lines.len()
        );
        prop_assert_eq!(b.text.trim(), b.text.as_str(), "{}: untrimmed", rt);
        if knows_its_box(r) {
            for p in r.placeholders {
                prop_assert!(!b.text.starts_with(p), "{}: placeholder kept: {:?}", rt, b);
            }
        }
        let own = &s.lines[b.top..=b.bottom];
        for l in b.text.split('\n') {
            prop_assert!(
                own.iter().any(|row| row.contains(l)),
                "{}: {:?} is not on rows {}..={}",
                rt,
                l,
                b.top,
                b.bottom
            );
        }
    }
    Ok(b)
}

fn check_screen(s: &Snapshot, rt: &str, r: &Screen) -> Result<(), TestCaseError> {
    let b = check_box(s, rt, r)?;

    let live = verify::live_region(s, r);
    prop_assert!(live.len() <= s.lines.len());
    for l in &live {
        prop_assert!(
            s.lines.iter().any(|x| std::ptr::eq(x.as_str(), *l)),
            "{}: {:?} is not a row of the screen",
            rt,
            l
        );
    }
    if b.is_none() || !knows_its_box(r) {
        prop_assert!(live.len() <= 4 && live.iter().all(|l| !l.trim().is_empty()));
    }

    match verify::observe(s, r) {
        Observed::Unknown(m) => {
            prop_assert!(!m.trim().is_empty(), "{}: an empty reason", rt);
            if s.is_blank() {
                prop_assert!(m.contains("blank"), "{}: {}", rt, m);
            }
        }
        o if s.is_blank() => {
            return Err(TestCaseError::fail(format!(
                "{rt}: a blank screen read as {o:?}"
            )));
        }
        Observed::Idle => {
            prop_assert!(
                knows_its_box(r) && b.is_some(),
                "{}: idle without a box",
                rt
            );
        }
        Observed::Busy(m) => {
            let marker = r.busy.iter().find(|x| m == format!("{x:?} on screen"));
            prop_assert!(marker.is_some(), "{}: busy for {:?}", rt, m);
            let marker = marker.unwrap();
            prop_assert!(
                live.iter().any(|l| l.contains(marker)),
                "{}: {:?} not in the live region",
                rt,
                marker
            );
        }
        Observed::Waiting(q) => {
            prop_assert!(!q.is_empty() && q.chars().count() <= 200, "{}: {:?}", rt, q);
            prop_assert!(
                r.waiting
                    .iter()
                    .any(|m| s.lines.iter().any(|l| l.contains(m))),
                "{}: waiting without a question marker",
                rt
            );
            prop_assert!(
                r.waiting.contains(&q.as_str()) || s.lines.iter().any(|l| l.contains(&q)),
                "{}: {:?} is not on the screen",
                rt,
                q
            );
        }
    }

    let draft = verify::stale_draft(s, r);
    if knows_its_box(r) {
        let want = b
            .as_ref()
            .map(|b| b.text.clone())
            .filter(|t| !t.trim().is_empty());
        prop_assert_eq!(&draft, &want, "{}", rt);
    } else {
        prop_assert_eq!(&draft, &None, "{}: a draft without a known box", rt);
    }

    prop_assert!(!verify::draft_visible(s, "", r), "{}: empty needle", rt);
    // What the box (or, without a known box, the cursor row) holds is
    // visible as a draft.
    let held = if knows_its_box(r) {
        b.map(|b| b.text)
    } else {
        Some(s.cursor_row().to_owned())
    };
    if let Some(t) = held.filter(|t| !t.trim().is_empty()) {
        let n = verify::needle(&t);
        prop_assert!(
            verify::draft_visible(s, &n, r),
            "{}: {:?} (needle {:?}) held but not visible",
            rt,
            t,
            n
        );
    }
    Ok(())
}

fn check_needle(text: &str) -> Result<(), TestCaseError> {
    let n = verify::needle(text);
    prop_assert!(n.chars().count() <= 16, "{:?}", n);
    prop_assert!(!n.contains('\n'), "{:?}", n);
    let last = text.lines().rev().map(str::trim).find(|l| !l.is_empty());
    match last {
        None => prop_assert_eq!(n, ""),
        Some(l) => {
            prop_assert!(!n.is_empty());
            prop_assert!(l.ends_with(&n), "{:?} is not the tail of {:?}", n, l);
        }
    }
    Ok(())
}

fn needle_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "(?s).{0,40}",
        "\\PC{0,30}",
        proptest::collection::vec(prop::sample::select(fragments()), 0..4).prop_map(|p| p.concat()),
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_classifier_reads_any_screen_by_every_runtimes_rules(s in snapshot()) {
        for (rt, r) in screens() {
            check_screen(&s, rt, r)?;
        }
    }

    #[test]
    fn needles_are_the_short_tail_of_the_last_line(text in needle_text()) {
        check_needle(&text)?;
    }

    #[test]
    fn classify_decides_at_the_deadline_and_never_panics(
        before in snapshot(),
        drafted in proptest::option::of(snapshot()),
        now in snapshot(),
        text in needle_text(),
        settled in any::<bool>(),
        last in any::<bool>(),
    ) {
        let n = verify::needle(&text);
        for (rt, r) in screens() {
            if verify::draft_visible(&now, &n, r) {
                prop_assert!(verify::draft_shown(&before, &now, &n, r), "{}", rt);
            }
            let got = verify::classify(&before, drafted.as_ref(), &now, &n, r, settled, last);
            if let (Some(b), Some(t)) = (before.turn, now.turn) && t > b {
                prop_assert_eq!(&got, &Some(Outcome::Acknowledged), "{}: turn {} -> {}", rt, b, t);
            }
            if before.turn.is_none() && now.turn.is_some_and(|t| t > 0) && now.busy {
                prop_assert_eq!(&got, &Some(Outcome::Acknowledged), "{}", rt);
            }
            match &got {
                None => prop_assert!(!last, "{}: undecided at the deadline", rt),
                Some(Outcome::Acknowledged) => {}
                Some(
                    Outcome::Screen(m)
                    | Outcome::Queued(m)
                    | Outcome::Draft(m)
                    | Outcome::Unverifiable(m),
                ) => prop_assert!(!m.trim().is_empty(), "{}: {:?} without a reason", rt, got),
            }
        }
    }

    #[test]
    fn snapshot_parse_takes_any_tmux_output(
        out in prop_oneof![
            "(?s).{0,120}",
            ("S(\t[0-9 -]{0,6}){0,10}", "(?s).{0,80}").prop_map(|(h, b)| format!("{h}\n{b}")),
        ]
    ) {
        if let Some(s) = Snapshot::parse(&out) {
            prop_assert!(out.starts_with("S\t"));
            prop_assert!(s.lines.len() <= s.height as usize, "{:?}", s);
            for l in &s.lines {
                prop_assert_eq!(l.trim_end(), l.as_str());
            }
            prop_assert_eq!((s.turn, s.busy), (None, false));
        }
    }

    #[test]
    fn snapshot_parse_reads_what_tmux_prints(
        (x, y, w, h, hist) in (any::<u32>(), any::<u32>(), any::<u32>(), 0u32..60, any::<u64>()),
        (a, m, d) in (0u8..3, 0u8..3, 0u8..3),
        rows in proptest::collection::vec("[^\n]{0,30}", 0..50),
    ) {
        let out = format!("S\t{x}\t{y}\t{w}\t{h}\t{hist}\t{a}\t{m}\t{d}\n{}", rows.join("\n"));
        let s = Snapshot::parse(&out).expect("a well-formed header");
        prop_assert_eq!(
            (s.cursor_x, s.cursor_y, s.width, s.height, s.history_size),
            (x, y, w, h, hist)
        );
        prop_assert_eq!((s.alternate_on, s.in_mode, s.dead), (a == 1, m == 1, d == 1));
        let mut want: Vec<String> = if rows.is_empty() {
            vec![String::new()]
        } else {
            rows.iter().map(|r| r.trim_end().to_owned()).collect()
        };
        want.truncate(h as usize);
        prop_assert_eq!(s.lines, want);
    }
}
