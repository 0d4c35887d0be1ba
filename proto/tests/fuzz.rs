//! Property tests: arbitrary and near-valid input to the heartbeat parser,
//! the agent-name check and address parsing never panics, and every error
//! says what was wrong (which key, which value, which rule).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleet_proto::address::{self, Address, AddressError};
use fleet_proto::heartbeat::{self, Beat, BeatError, MAX_BYTES, MAX_KEY, Status};
use fleet_proto::name::{self, AgentName, MAX_LEN, NameError};
use fleet_proto::v1::AgentRow;
use proptest::prelude::*;
use proptest::test_runner::Config;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Modest case counts, and no `proptest-regressions/` files written into
/// the tree: a failure prints its minimal input instead.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// === heartbeat ===

/// What `format` does to a value: whitespace and control characters
/// would split it into fields.
fn word(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Idle),
        Just(Status::Busy),
        Just(Status::Waiting)
    ]
}

/// Any instant of years 0000..=9999 (what RFC 3339 can write), in any
/// offset: `format` writes it in UTC.
fn ts() -> impl Strategy<Value = OffsetDateTime> {
    (
        -62_167_219_200i64..=253_402_300_799i64,
        0u32..1_000_000_000,
        -86_399i32..=86_399,
    )
        .prop_map(|(secs, nanos, off)| {
            let utc = OffsetDateTime::from_unix_timestamp(secs)
                .unwrap()
                .replace_nanosecond(nanos)
                .unwrap();
            UtcOffset::from_whole_seconds(off)
                .ok()
                .and_then(|o| utc.checked_to_offset(o))
                .unwrap_or(utc)
        })
}

/// Model names and turn keys: ordinary words, any characters (also
/// whitespace and controls, which `format` replaces), and keys longer
/// than [`MAX_KEY`].
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._:/@=-]{0,30}",
        "(?s).{0,30}",
        "[a-z0-9-]{100,200}",
        "\\PC{0,20}",
    ]
}

fn beat() -> impl Strategy<Value = Beat> {
    (
        ts(),
        any::<u32>(),
        status(),
        proptest::option::of(value()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(value()),
    )
        .prop_map(|(ts, pid, status, model, turn, key)| Beat {
            ts,
            pid,
            status,
            model,
            turn,
            key,
        })
}

/// Whether `v` is a value the parser takes for `key` (None: a key whose
/// values are never refused).
fn value_ok(key: &str, v: &str) -> Option<bool> {
    match key {
        "ts" => Some(OffsetDateTime::parse(v, &Rfc3339).is_ok()),
        "pid" => Some(v.parse::<u32>().is_ok()),
        "status" => Some(v.parse::<Status>().is_ok()),
        "turn" => Some(v.parse::<u64>().is_ok()),
        _ => None,
    }
}

/// The `key=value` fields of a beat file, in order.
fn fields(text: &str) -> Vec<(&str, &str)> {
    text.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

fn last<'a>(fields: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
}

/// The outcome of `parse(bytes)` is the one the protocol prescribes, and
/// an error names what was wrong.
fn check_beat(bytes: &[u8]) -> Result<(), TestCaseError> {
    let got = heartbeat::parse(bytes);
    let Err(e) = &got else {
        let b = got.unwrap();
        prop_assert!(bytes.len() <= MAX_BYTES);
        let text = std::str::from_utf8(bytes).unwrap();
        let f = fields(text);
        let ts = last(&f, "ts").expect("a beat without ts= was accepted");
        prop_assert_eq!(b.ts, OffsetDateTime::parse(ts, &Rfc3339).unwrap());
        prop_assert_eq!(Some(b.pid), last(&f, "pid").and_then(|v| v.parse().ok()));
        prop_assert_eq!(
            Some(b.status),
            last(&f, "status").and_then(|v| v.parse().ok())
        );
        prop_assert_eq!(b.turn, last(&f, "turn").map(|v| v.parse().unwrap()));
        prop_assert_eq!(b.model.as_deref(), last(&f, "model"));
        prop_assert_eq!(
            b.key,
            last(&f, "key").map(|v| v.chars().take(MAX_KEY).collect::<String>())
        );
        return Ok(());
    };
    let shown = e.to_string();
    prop_assert!(!shown.trim().is_empty(), "{:?} displays as nothing", e);
    if bytes.len() > MAX_BYTES {
        prop_assert_eq!(e, &BeatError::TooLarge(bytes.len()));
    }
    match e {
        BeatError::TooLarge(n) => {
            prop_assert_eq!(*n, bytes.len());
            prop_assert!(*n > MAX_BYTES);
            prop_assert!(shown.contains(&n.to_string()), "{}", shown);
            prop_assert!(shown.contains(&MAX_BYTES.to_string()), "{}", shown);
        }
        BeatError::Binary => {
            let binary = std::str::from_utf8(bytes).map_or(true, |t| {
                t.chars().any(|c| c.is_control() && !c.is_whitespace())
            });
            prop_assert!(binary, "{:?} called binary", String::from_utf8_lossy(bytes));
            prop_assert!(shown.contains("binary"), "{}", shown);
        }
        BeatError::Empty => {
            let text = std::str::from_utf8(bytes).unwrap();
            prop_assert!(text.trim().is_empty(), "{:?} called empty", text);
            prop_assert!(shown.contains("empty"), "{}", shown);
        }
        BeatError::Bad(key, v) => {
            let text = std::str::from_utf8(bytes).unwrap();
            // The first refused field is the one named, its value quoted
            // (at most 40 characters of it).
            let first_bad = fields(text)
                .into_iter()
                .find(|(k, v)| value_ok(k, v) == Some(false));
            let Some((k, full)) = first_bad else {
                return Err(TestCaseError::fail(format!(
                    "{shown:?} but every field of {text:?} is valid"
                )));
            };
            prop_assert_eq!(*key, k);
            prop_assert_eq!(v, &full.chars().take(40).collect::<String>());
            prop_assert!(shown.contains(key), "{} does not name {}", shown, key);
            prop_assert!(
                shown.contains(&format!("{v:?}")),
                "{} does not quote {:?}",
                shown,
                v
            );
        }
        BeatError::Missing(key) => {
            let text = std::str::from_utf8(bytes).unwrap();
            let f = fields(text);
            prop_assert!(
                f.iter().all(|(k, v)| value_ok(k, v) != Some(false)),
                "{} while {:?} has a bad field",
                shown,
                text
            );
            // The first of ts, pid, status that is absent.
            let absent = ["ts", "pid", "status"]
                .into_iter()
                .find(|k| last(&f, k).is_none());
            prop_assert_eq!(Some(*key), absent);
            prop_assert!(shown.contains(key), "{} does not name {}", shown, key);
        }
    }
    Ok(())
}

/// One edit to a well-formed beat file.
#[derive(Debug, Clone)]
enum Edit {
    DropField(usize),
    SetValue(usize, String),
    SetKey(usize, String),
    Insert(usize, String),
    Duplicate(usize),
    Separator(&'static str),
    InsertChar(usize, char),
    Truncate(usize),
    FlipByte(usize, u8),
    Pad(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let garbage = prop_oneof![
        "(?s).{0,12}",
        "[0-9:TZ+.-]{0,30}",
        Just("-1".to_owned()),
        Just("4294967296".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("ok".to_owned()),
        Just("sleepy".to_owned()),
        Just("2026-11-24T10:00:00".to_owned()),
        Just("2026-02-30T10:00:00Z".to_owned()),
        Just("2026-11-24T10:00:60Z".to_owned()),
        Just("".to_owned()),
    ];
    let key = prop_oneof![
        Just("ts".to_owned()),
        Just("pid".to_owned()),
        Just("status".to_owned()),
        Just("turn".to_owned()),
        Just("model".to_owned()),
        Just("key".to_owned()),
        "[a-z_]{0,8}",
    ];
    let token = (key.clone(), garbage.clone()).prop_map(|(k, v)| format!("{k}={v}"));
    prop_oneof![
        any::<usize>().prop_map(Edit::DropField),
        (any::<usize>(), garbage).prop_map(|(i, v)| Edit::SetValue(i, v)),
        (any::<usize>(), key).prop_map(|(i, k)| Edit::SetKey(i, k)),
        (any::<usize>(), prop_oneof![token, "\\PC{0,10}"]).prop_map(|(i, t)| Edit::Insert(i, t)),
        any::<usize>().prop_map(Edit::Duplicate),
        prop::sample::select(vec![
            " ", "\n", "\t", "\r\n", "  \n\n", "\u{a0}", "\u{2028}", "\u{85}", "\u{0}", "\u{7f}",
            ",", ""
        ])
        .prop_map(Edit::Separator),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Edit::InsertChar(i, c)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::FlipByte(i, b)),
        (MAX_BYTES - 64..MAX_BYTES + 64).prop_map(Edit::Pad),
    ]
}

/// Applies `edits` to `beat`'s file, as bytes (an edit may break UTF-8).
fn mutate(beat: &Beat, edits: &[Edit]) -> Vec<u8> {
    let formatted = heartbeat::format(beat);
    let mut toks: Vec<String> = formatted.split_whitespace().map(str::to_owned).collect();
    let mut sep = " ";
    let mut byte_edits = Vec::new();
    for e in edits {
        let n = toks.len().max(1);
        match e {
            Edit::DropField(i) if !toks.is_empty() => {
                toks.remove(i % n);
            }
            Edit::SetValue(i, v) if !toks.is_empty() => {
                let t = &mut toks[i % n];
                let k = t.split_once('=').map_or(t.as_str(), |(k, _)| k).to_owned();
                *t = format!("{k}={v}");
            }
            Edit::SetKey(i, k) if !toks.is_empty() => {
                let t = &mut toks[i % n];
                let v = t.split_once('=').map_or("", |(_, v)| v).to_owned();
                *t = format!("{k}={v}");
            }
            Edit::Insert(i, t) => toks.insert(i % (toks.len() + 1), t.clone()),
            Edit::Duplicate(i) if !toks.is_empty() => {
                let t = toks[i % n].clone();
                toks.insert(i % n, t);
            }
            Edit::Separator(s) => sep = s,
            _ => byte_edits.push(e.clone()),
        }
    }
    let mut bytes = toks.join(sep).into_bytes();
    bytes.push(b'\n');
    for e in byte_edits {
        let n = bytes.len() + 1;
        match e {
            Edit::InsertChar(i, c) => {
                let at = i % n;
                let mut buf = [0; 4];
                bytes.splice(at..at, c.encode_utf8(&mut buf).bytes());
            }
            Edit::Truncate(i) => bytes.truncate(i % n),
            Edit::FlipByte(i, b) if !bytes.is_empty() => {
                let at = i % bytes.len();
                bytes[at] = b;
            }
            Edit::Pad(len) => bytes.resize(len.max(bytes.len()), b' '),
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn heartbeat_arbitrary_bytes_never_panic_and_errors_say_why(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::collection::vec(any::<u8>(), MAX_BYTES - 8..MAX_BYTES + 64),
        ]
    ) {
        check_beat(&bytes)?;
    }

    #[test]
    fn heartbeat_arbitrary_text_never_panics_and_errors_say_why(
        text in prop_oneof![
            "(?s).{0,200}",
            "((ts|pid|status|turn|model|key|x)=[ -~]{0,12}[ \t\n]){0,10}",
        ]
    ) {
        check_beat(text.as_bytes())?;
    }

    #[test]
    fn heartbeat_near_valid_beats_parse_or_name_the_broken_field(
        b in beat(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        check_beat(&mutate(&b, &edits))?;
    }

    #[test]
    fn heartbeat_format_then_parse_round_trips(b in beat()) {
        let text = heartbeat::format(&b);
        prop_assert!(text.ends_with('\n'));
        // One field per value, none carrying whitespace or a control.
        let n = 3 + usize::from(b.model.is_some())
            + usize::from(b.turn.is_some())
            + usize::from(b.key.is_some());
        prop_assert_eq!(text.split_whitespace().count(), n, "{:?}", text);
        prop_assert!(
            !text.trim_end_matches('\n').chars().any(char::is_control),
            "{:?}",
            text
        );
        let want = Beat {
            model: b.model.as_deref().map(word),
            key: b.key.as_deref().map(|k| word(k).chars().take(MAX_KEY).collect()),
            ..b.clone()
        };
        prop_assert_eq!(heartbeat::parse(text.as_bytes()), Ok(want));
    }
}

// === agent names ===

/// The documented grammar, `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.
fn grammatical(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9][A-Za-z0-9_-]{0,63}",
        "[A-Za-z0-9_./: -]{0,70}",
        "(?s).{0,70}",
        "[a-z]{60,70}",
        "[A-Za-z0-9][A-Za-z0-9_-]{0,10}[^A-Za-z0-9_-][A-Za-z0-9_-]{0,10}",
        prop::sample::select(vec![
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a:b",
            "a.b",
            "-x",
            "_x",
            "a b",
            "a\nb",
            "a\tb",
            "ä",
            "a\u{0}",
            "a\u{7f}",
            "a\u{200b}",
            "\u{ff21}",
        ])
        .prop_map(str::to_owned),
    ]
}

fn check_name(n: &str) -> Result<(), TestCaseError> {
    let got = name::check(n);
    prop_assert_eq!(got.is_ok(), grammatical(n), "{:?}: {:?}", n, got);
    // AgentName agrees with the check and keeps the name as given.
    match (AgentName::new(n), &got) {
        (Ok(a), Ok(())) => {
            prop_assert_eq!(a.as_str(), n);
            prop_assert_eq!(a.to_string(), n);
            prop_assert_eq!(AgentName::try_from(n.to_owned()), Ok(a));
        }
        (Err(e), Err(want)) => {
            prop_assert_eq!(&e, want);
            prop_assert_eq!(AgentName::try_from(n.to_owned()), Err(e));
        }
        (a, _) => {
            return Err(TestCaseError::fail(format!(
                "AgentName::new({n:?}) = {a:?} but check = {got:?}"
            )));
        }
    }
    match got {
        Ok(()) => {
            // What the grammar is for: safe in a path, a tmux target, a flag.
            prop_assert!(!n.is_empty() && n.len() <= MAX_LEN);
            prop_assert!(!n.starts_with('-') && !n.starts_with('_'));
            prop_assert!(n != "." && n != "..");
            for bad in ['/', '.', ':', '\\', '$', '%', '@', ';', '='] {
                prop_assert!(!n.contains(bad), "{:?} holds {:?}", n, bad);
            }
            prop_assert!(n.is_ascii(), "{:?}", n);
            prop_assert!(
                !n.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{:?}",
                n
            );
        }
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(shown.starts_with("agent name"), "{}", shown);
            match e {
                NameError::Empty => prop_assert!(n.is_empty()),
                NameError::TooLong(start, len) => {
                    prop_assert!(n.len() > MAX_LEN);
                    // Never echoed whole: its start and its length.
                    prop_assert!(n.starts_with(&start) && start.len() <= MAX_LEN);
                    prop_assert_eq!(len, n.len());
                    prop_assert!(shown.len() < MAX_LEN * 8 + 100, "{}", shown);
                    prop_assert!(shown.contains(&MAX_LEN.to_string()), "{}", shown);
                }
                NameError::Invalid(s) => {
                    prop_assert!(!n.is_empty() && n.len() <= MAX_LEN);
                    prop_assert_eq!(s, n);
                    prop_assert!(shown.contains("letters, digits"), "{}", shown);
                }
            }
            if !n.is_empty() && n.len() <= MAX_LEN {
                prop_assert!(
                    shown.contains(&format!("{n:?}")),
                    "{} does not quote {:?}",
                    shown,
                    n
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn names_follow_the_documented_grammar(n in name_like()) {
        check_name(&n)?;
    }

    #[test]
    fn every_grammatical_name_is_accepted(n in "[A-Za-z0-9][A-Za-z0-9_-]{0,63}") {
        prop_assert!(name::check(&n).is_ok(), "{:?}", n);
    }
}

// === addresses ===

fn label_ok(l: &str) -> bool {
    l.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn address_like() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[A-Za-z0-9][A-Za-z0-9_.-]{0,12}",
        "[A-Za-z0-9_./: -]{0,10}",
        "\\PC{0,6}",
        Just(String::new()),
        Just("..".to_owned()),
    ];
    prop_oneof![
        proptest::collection::vec(part, 1..6).prop_map(|p| p.join("/")),
        "(?s).{0,40}",
        "[a-z/]{0,12}",
    ]
}

fn check_address(s: &str) -> Result<(), TestCaseError> {
    let parts: Vec<&str> = s.split('/').collect();
    match Address::parse(s) {
        Ok(a) => {
            prop_assert!(parts.len() <= 3, "{:?}", s);
            prop_assert!(name::check(&a.agent).is_ok(), "{:?}", a);
            prop_assert!(a.tenant.is_none() || a.host.is_some(), "{:?}", a);
            for l in a.tenant.iter().chain(&a.host) {
                prop_assert!(label_ok(l), "{:?} in {:?}", l, s);
            }
            let back: Vec<&str> = a
                .tenant
                .iter()
                .chain(&a.host)
                .map(String::as_str)
                .chain([a.agent.as_str()])
                .collect();
            prop_assert_eq!(back.join("/"), s);
        }
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(!shown.trim().is_empty());
            match &e {
                AddressError::Syntax(x) => {
                    prop_assert_eq!(x, s);
                    prop_assert!(shown.contains(&format!("{s:?}")), "{}", shown);
                    prop_assert!(shown.contains("TENANT/HOST/AGENT"), "{}", shown);
                    // Too many parts, or a bad tenant/host label.
                    prop_assert!(
                        parts.len() > 3
                            || (name::check(parts[parts.len() - 1]).is_ok()
                                && !parts[..parts.len() - 1].iter().all(|l| label_ok(l))),
                        "{:?}",
                        s
                    );
                }
                AddressError::Name(n) => {
                    prop_assert!(parts.len() <= 3, "{:?}", s);
                    prop_assert_eq!(Err(n.clone()), name::check(parts[parts.len() - 1]));
                    prop_assert_eq!(shown, n.to_string());
                }
                other => {
                    return Err(TestCaseError::fail(format!(
                        "parse({s:?}) looked something up: {other:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

fn row() -> impl Strategy<Value = AgentRow> {
    (
        prop::sample::select(vec!["acme", "globex"]),
        prop::sample::select(vec!["a", "b", "c.example"]),
        prop::sample::select(vec!["coder0", "coder1", "reviewer"]),
        any::<bool>(),
    )
        .prop_map(|(t, h, n, unmanaged)| AgentRow {
            tenant_id: t.into(),
            host: h.into(),
            name: n.into(),
            flags: if unmanaged {
                vec!["unmanaged".into()]
            } else {
                vec![]
            },
            ..Default::default()
        })
}

fn full(r: &AgentRow) -> String {
    format!("{}/{}/{}", r.tenant_id, r.host, r.name)
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn addresses_parse_or_say_which_rule_they_break(s in address_like()) {
        check_address(&s)?;
    }

    #[test]
    fn well_formed_addresses_parse_into_their_parts(
        t in proptest::option::of("[A-Za-z0-9][A-Za-z0-9_.-]{0,12}"),
        h in "[A-Za-z0-9][A-Za-z0-9_.-]{0,12}",
        a in "[A-Za-z0-9][A-Za-z0-9_-]{0,20}",
        with_host in any::<bool>(),
    ) {
        let (tenant, host) = if with_host { (t, Some(h)) } else { (None, None) };
        let s: Vec<&str> = tenant.iter().chain(&host).map(String::as_str).chain([a.as_str()]).collect();
        let s = s.join("/");
        prop_assert_eq!(
            Address::parse(&s),
            Ok(Address { tenant, host, agent: a })
        );
    }

    #[test]
    fn resolve_picks_the_one_match_or_lists_candidates(
        rows in proptest::collection::vec(row(), 0..6),
        addr in prop_oneof![
            prop::sample::select(vec![
                "coder0", "coder1", "reviewer", "ghost", "a/coder0", "b/coder1",
                "c.example/reviewer", "acme/a/coder0", "globex/b/coder0", "x/y/z",
                "acme/c.example/reviewer", "a:b", "../x", "",
            ]).prop_map(str::to_owned),
            address_like(),
        ],
    ) {
        match address::resolve(&rows, &addr) {
            Ok(r) => {
                let a = Address::parse(&addr).unwrap();
                prop_assert_eq!(&r.name, &a.agent);
                prop_assert!(a.host.as_ref().is_none_or(|h| *h == r.host));
                prop_assert!(a.tenant.as_ref().is_none_or(|t| *t == r.tenant_id));
                let hits = rows.iter().filter(|x| {
                    x.name == a.agent
                        && a.host.as_ref().is_none_or(|h| *h == x.host)
                        && a.tenant.as_ref().is_none_or(|t| *t == x.tenant_id)
                }).count();
                prop_assert_eq!(hits, 1, "{:?} matched more than one row", addr);
            }
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(!shown.trim().is_empty());
                match &e {
                    AddressError::Syntax(_) | AddressError::Name(_) => {
                        prop_assert!(Address::parse(&addr).is_err());
                    }
                    AddressError::NotFound { address, candidates } => {
                        prop_assert_eq!(address, &addr);
                        prop_assert!(shown.starts_with(&format!("no agent {addr}")), "{}", shown);
                        if candidates.is_empty() {
                            prop_assert!(shown.contains("there are no agents"), "{}", shown);
                        }
                        for c in candidates {
                            prop_assert!(shown.contains(c.as_str()), "{} lacks {}", shown, c);
                            // Unmanaged sessions are never offered.
                            prop_assert!(rows.iter().any(|r| {
                                !r.flags.iter().any(|f| f == "unmanaged")
                                    && (r.name == *c || full(r) == *c)
                            }), "{} is not a managed row", c);
                        }
                    }
                    AddressError::Ambiguous { address, candidates } => {
                        prop_assert_eq!(address, &addr);
                        prop_assert!(candidates.len() >= 2, "{:?}", candidates);
                        prop_assert!(shown.contains("ambiguous"), "{}", shown);
                        for c in candidates {
                            prop_assert!(shown.contains(c.as_str()), "{} lacks {}", shown, c);
                            prop_assert!(rows.iter().any(|r| full(r) == *c), "{}", c);
                        }
                    }
                }
            }
        }
    }
}
