//! `fleetctl hook`, the native writer the runtimes run synchronously from
//! their hooks: it never prints, always exits 0, returns in milliseconds,
//! and nothing it is given (no heartbeat file, a FIFO in its place, a
//! missing directory, garbage on stdin, stdin never closed) can block or
//! fail the runtime.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_proto::heartbeat::{self, Status};

/// Runs the hook with `payload` on stdin; returns (stdout, stderr, exit
/// code, elapsed).
fn hook(env: &[(&str, &str)], args: &[&str], payload: &[u8]) -> (Vec<u8>, Vec<u8>, i32, Duration) {
    let start = Instant::now();
    let mut c = Command::new(support::bin("fleetctl"));
    c.arg("hook")
        .args(args)
        .env_remove(heartbeat::ENV_HEARTBEAT_FILE)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // A hook may exit before reading (nothing to do): like a runtime,
    // ignore the broken pipe.
    let _ = child.stdin.take().unwrap().write_all(payload);
    let out = child.wait_with_output().unwrap();
    (
        out.stdout,
        out.stderr,
        out.status.code().unwrap(),
        start.elapsed(),
    )
}

#[test]
fn a_prompt_hook_turns_the_beat_busy_counts_the_turn_and_says_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("cc.hb");
    let file = hb.to_str().unwrap();
    let env = [(heartbeat::ENV_HEARTBEAT_FILE, file)];
    let (out, err, code, took) = hook(
        &env,
        &["claude", "SessionStart"],
        br#"{"hook_event_name":"SessionStart","model":"claude-opus-5-5"}"#,
    );
    assert_eq!(
        (out.as_slice(), err.as_slice(), code),
        (&b""[..], &b""[..], 0)
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    let b = heartbeat::read(&hb).unwrap();
    assert_eq!(
        (b.status, b.model.as_deref()),
        (Status::Idle, Some("claude-opus-5-5"))
    );
    assert!(heartbeat::native_marker_path(&hb).exists());

    let submit = br#"{"hook_event_name":"UserPromptSubmit","prompt_id":"p-1","prompt":"hi"}"#;
    let (out, _, code, _) = hook(&env, &["claude", "UserPromptSubmit"], submit);
    assert!(out.is_empty() && code == 0);
    let b = heartbeat::read(&hb).unwrap();
    assert_eq!(
        (b.status, b.turn, b.key.as_deref()),
        (Status::Busy, Some(1), Some("p-1"))
    );
    // A prompt queued behind the turn fires again with the same key.
    hook(&env, &["claude", "UserPromptSubmit"], submit);
    assert_eq!(heartbeat::read(&hb).unwrap().turn, Some(1));
    hook(&env, &["claude", "StopFailure"], b"{}");
    let b = heartbeat::read(&hb).unwrap();
    assert_eq!((b.status, b.turn), (Status::Idle, Some(1)));
    assert_eq!(
        b.model.as_deref(),
        Some("claude-opus-5-5"),
        "the model is kept"
    );
}

#[test]
fn nothing_it_is_given_makes_it_fail_print_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("a.hb");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let missing = dir.path().join("no/such/dir/a.hb");
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Env, &[u8])> = vec![
        (vec![], b"{}"),
        (
            vec![(heartbeat::ENV_HEARTBEAT_FILE, fifo.to_str().unwrap())],
            b"{}",
        ),
        (
            vec![(heartbeat::ENV_HEARTBEAT_FILE, missing.to_str().unwrap())],
            b"{}",
        ),
        (
            vec![(heartbeat::ENV_HEARTBEAT_FILE, fifo.to_str().unwrap())],
            b"\xff\xfe not json \x00",
        ),
    ];
    for (env, payload) in cases {
        for args in [
            &["claude", "UserPromptSubmit"][..],
            &["codex", "Stop"],
            &["nosuch", "Event"],
            &[],
            &["pi"],
        ] {
            let (out, err, code, took) = hook(&env, args, payload);
            assert_eq!(code, 0, "{env:?} {args:?}");
            assert!(
                out.is_empty() && err.is_empty(),
                "{env:?} {args:?}: {err:?}"
            );
            assert!(took < Duration::from_secs(2), "{env:?} {args:?}: {took:?}");
        }
    }
    // A runtime that never closes the hook's stdin costs at most the
    // bounded wait.
    let hb = dir.path().join("b.hb");
    let start = Instant::now();
    let mut child = Command::new(support::bin("fleetctl"))
        .args(["hook", "gemini", "BeforeAgent"])
        .env(heartbeat::ENV_HEARTBEAT_FILE, &hb)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _held_open = child.stdin.take();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(heartbeat::read(&hb).unwrap().status, Status::Busy);
}
