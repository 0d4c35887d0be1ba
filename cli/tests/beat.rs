//! `fleetctl beat`, the native writer for runtimes with hooks.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use fleet_proto::heartbeat::{self, Status};

fn beat(args: &[&str], file: Option<&std::path::Path>) -> std::process::Output {
    let mut c = Command::new(support::bin("fleetctl"));
    c.arg("beat")
        .args(args)
        .env_remove(heartbeat::ENV_HEARTBEAT_FILE);
    if let Some(f) = file {
        c.env(heartbeat::ENV_HEARTBEAT_FILE, f);
    }
    c.output().unwrap()
}

#[test]
fn hooks_flip_busy_and_ok_and_count_turns() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("coder0.hb");
    let out = beat(
        &["--status", "busy", "--turn", "--model", "gpt-x"],
        Some(&hb),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = heartbeat::read(&hb).unwrap();
    assert_eq!(b.status, Status::Busy);
    assert_eq!(b.turn, Some(1));
    assert_eq!(b.model.as_deref(), Some("gpt-x"));
    assert!(
        heartbeat::native_marker_path(&hb).exists(),
        "marks the writer native"
    );

    assert!(beat(&["--status", "ok"], Some(&hb)).status.success());
    let b = heartbeat::read(&hb).unwrap();
    assert_eq!(b.status, Status::Idle);
    assert_eq!(b.turn, Some(1), "turn and model carry over");
    assert_eq!(b.model.as_deref(), Some("gpt-x"));

    assert!(
        beat(&["--status", "busy", "--turn"], Some(&hb))
            .status
            .success()
    );
    assert_eq!(heartbeat::read(&hb).unwrap().turn, Some(2));
    // --file wins over the environment.
    let other = dir.path().join("other.hb");
    assert!(
        beat(
            &["--status", "ok", "--file", other.to_str().unwrap()],
            Some(&hb)
        )
        .status
        .success()
    );
    assert!(other.exists());
}

#[test]
fn usage_errors_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("a.hb");
    let out = beat(&["--status", "ok"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLEET_HEARTBEAT_FILE"));
    assert_eq!(
        beat(&["--status", "sleepy"], Some(&hb)).status.code(),
        Some(2)
    );
    assert_eq!(
        beat(&["--status", "ok", "--model", "has space"], Some(&hb))
            .status
            .code(),
        Some(2)
    );
    assert!(!hb.exists());
}

/// `bin verb --help`, which must succeed; its text.
fn help(bin: &str, verb: &str) -> String {
    let out = Command::new(support::bin(bin))
        .args([verb, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{bin} {verb} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_verb_has_help_that_teaches() {
    for verb in ["ps", "events", "hosts", "beat", "demo"] {
        let text = help("fleetctl", verb);
        assert!(text.contains("Usage: fleetctl"), "{verb}: {text}");
    }
    // The benchmarks are their own binary and teach the same way.
    for what in ["ps", "send", "soak", "federation"] {
        let text = help("fleet-bench", what);
        assert!(text.contains("Usage: fleet-bench"), "{what}: {text}");
    }
    let out = Command::new(support::bin("fleetctl"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exit codes"), "{text}");
    let out = Command::new(support::bin("fleetctl"))
        .arg("ps")
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_lists_every_flag_and_event_kind_with_its_meaning() {
    use fleet_proto::v1::{AgentFlag, EventKind, HostFlag};
    let (ps, hosts, events) = (
        help("fleetctl", "ps"),
        help("fleetctl", "hosts"),
        help("fleetctl", "events"),
    );
    for f in AgentFlag::ALL {
        assert!(
            ps.contains(f.word()) && ps.contains(f.meaning()),
            "ps: {f:?}"
        );
    }
    for f in HostFlag::ALL {
        assert!(
            hosts.contains(f.word()) && hosts.contains(f.meaning()),
            "hosts: {f:?}"
        );
    }
    for k in EventKind::ALL {
        assert!(events.contains(k.word()), "events: {k:?}");
    }
}
