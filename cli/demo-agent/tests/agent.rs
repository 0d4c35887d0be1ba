//! The demo agent as a program: prompts on stdin, native beats on disk.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_proto::heartbeat::{self, Status};

fn wait_beat(path: &std::path::Path, what: &str, pred: impl Fn(&heartbeat::Beat) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(b) = heartbeat::read(path)
            && pred(&b)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no beat {what}: {:?}",
            heartbeat::read(path)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_prompt_is_a_turn_busy_then_ok() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("d.hb");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleet-demo-agent"))
        .args(["--busy-ms", "300", "--model", "m-1"])
        .env(heartbeat::ENV_HEARTBEAT_FILE, &hb)
        .env(heartbeat::ENV_HEARTBEAT_INTERVAL, "0.2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_beat(&hb, "at start", |b| {
        b.turn == Some(0) && b.status == Status::Idle
    });
    assert!(heartbeat::native_marker_path(&hb).exists());
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"do something\n").unwrap();
    stdin.flush().unwrap();
    wait_beat(&hb, "busy", |b| {
        b.turn == Some(1) && b.status == Status::Busy
    });
    wait_beat(&hb, "ok again", |b| {
        b.turn == Some(1) && b.status == Status::Idle
    });
    assert_eq!(heartbeat::read(&hb).unwrap().model.as_deref(), Some("m-1"));
    child.stdin.as_mut().unwrap().write_all(b"/quit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[turn 1] working on: do something"), "{text}");
}

#[test]
fn no_heartbeat_writes_nothing_and_bad_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("d.hb");
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-demo-agent"))
        .arg("--no-heartbeat")
        .env(heartbeat::ENV_HEARTBEAT_FILE, &hb)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!hb.exists());
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-demo-agent"))
        .arg("--frobnicate")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
}
