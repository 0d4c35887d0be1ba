//! The README is the front door: its two commands are the ones CI and this
//! test run, and the demo command really brings up a fleet.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The shell commands of the README's "Two commands" section, in order.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("## Two commands")
        .nth(1)
        .expect("a 'Two commands' section")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().trim().to_owned())
        .collect()
}

#[test]
fn ci_runs_the_readme_test_command() {
    let cmds = readme_commands();
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == format!("bash {}", cmds[1])),
        "CI must call `{}`",
        cmds[1]
    );
}

#[test]
fn the_readme_demo_command_brings_up_a_truthful_fleet() {
    let cmds = readme_commands();
    let demo = &cmds[0];
    let dir = tempfile::tempdir().unwrap();
    let tmux_socket = format!("fleet-demotest-{}", std::process::id());
    let home = dir.path().to_owned();
    let env = move |c: &mut Command| {
        c.current_dir(root())
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("FLEET_DEMO_TMUX_SOCKET", &tmux_socket)
            .env("FLEET_HOSTD_SYSTEMD__PROBE", "false")
            .env(
                "CARGO_HOME",
                std::env::var("CARGO_HOME")
                    .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap())),
            )
            .env(
                "RUSTUP_HOME",
                std::env::var("RUSTUP_HOME")
                    .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap())),
            )
            .env_remove("FLEET_SOCKET");
    };
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    let mut c = Command::new("bash");
    c.arg("-c").arg(demo);
    env(&mut c);
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Always stop the demo, even when an assertion below fails.
    struct Stop(Box<dyn Fn()>);
    impl Drop for Stop {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let stop_env = env.clone();
    let _stop = Stop(Box::new(move || {
        let mut c = Command::new(support::bin("fleetctl"));
        c.args(["demo", "--stop"]);
        stop_env(&mut c);
        let _ = c.output();
    }));
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("TENANT"))
        .collect();
    assert!(!table.is_empty(), "no table:\n{stdout}");
    let line = |name: &str| {
        table
            .iter()
            .find(|l| l.split_whitespace().nth(2) == Some(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{stdout}"))
            .to_string()
    };
    for name in ["orchestrator", "coder0", "coder1"] {
        let l = line(name);
        assert!(
            l.contains("alive") && l.contains("healthy") && l.contains("native"),
            "{l}"
        );
    }
    let shell = line("shell0");
    assert!(
        shell.contains("alive") && shell.contains("fallback"),
        "{shell}"
    );
    let canary = line("canary-pi");
    assert!(canary.contains("drift"), "{canary}");
    assert!(table.len() >= 6, "header + 5 agents:\n{stdout}");
}

/// `systemctl --user` and `loginctl` as a user manager would answer, for a
/// machine without one: `start` runs the unit's ExecStart in the background
/// (its pid kept in `state/hostd.pid`).
const FAKE_SYSTEMD: &str = r#"#!/bin/bash
d="$(dirname "$0")/state"; prog=$(basename "$0"); mkdir -p "$d"
case "$prog $*" in
  "systemctl --user show-environment") echo "HOME=$HOME";;
  "systemctl --user daemon-reload") ;;
  "systemctl --user is-enabled "*) cat "$d/enabled" 2>/dev/null || { echo disabled; exit 1; };;
  "systemctl --user is-active "*) [ -f "$d/hostd.pid" ] && kill -0 "$(cat "$d/hostd.pid")" && echo active || { echo inactive; exit 3; };;
  "systemctl --user enable "*) echo enabled > "$d/enabled";;
  "systemctl --user start "*)
     exec_start=$(sed -n 's/^ExecStart=//p' "$HOME/.config/systemd/user/$3")
     setsid $exec_start > "$d/hostd.log" 2>&1 < /dev/null & echo $! > "$d/hostd.pid";;
  "loginctl show-user "*) echo "Linger=no";;
  "loginctl enable-linger "*) ;;
  *) echo "unexpected: $prog $*" >&2; exit 1;;
esac
"#;

#[test]
fn the_readme_multi_host_steps_work_top_to_bottom_on_one_machine() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("<!-- multi-host:begin -->")
        .nth(1)
        .and_then(|s| s.split("<!-- multi-host:end -->").next())
        .expect("the multi-host block")
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap()
        .to_owned();
    // A port no other test uses (each try a different one: a port in use
    // fails the aggregator's bind, and the next try takes another).
    let mut last = String::new();
    for attempt in 0..5u32 {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let work = dir.path().join("work");
        let fake = dir.path().join("fakebin");
        for d in [&home, &work, &fake] {
            std::fs::create_dir_all(d).unwrap();
        }
        for name in ["systemctl", "loginctl"] {
            use std::os::unix::fs::PermissionsExt;
            let p = fake.join(name);
            std::fs::write(&p, FAKE_SYSTEMD).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let port = 20_000 + (std::process::id() * 7 + attempt * 7919) % 20_000;
        let script = format!(
            // The block's background jobs (the aggregator) end with the
            // script, whatever its outcome.
            "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n{}",
            block.replace("7443", &port.to_string())
        );
        let path = format!(
            "{}:{}:{}",
            fake.display(),
            support::bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let tmux_socket = format!("fleet-readme-{}-{attempt}", std::process::id());
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{script}\nfor i in $(seq 1 300); do \
                   fleetctl hosts -o name 2>/dev/null | grep -qx acme/box1 && \
                   fleetctl hosts --json | grep -q '\"link\": \"connected\"' && break; \
                   sleep 0.1; done\n\
                 fleetctl hosts --json\nfleetctl contexts --json"
            ))
            .current_dir(&work)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("FLEET_HOSTD_TMUX_SOCKET", &tmux_socket)
            .env("FLEET_HOSTD_RUN_DIR", home.join("run/fleet"))
            .env("FLEET_HOSTD_SYSTEMD__PROBE", "false")
            .output()
            .unwrap();
        let stop = |pidfile: &std::path::Path| {
            if let Ok(pid) = std::fs::read_to_string(pidfile) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        };
        stop(&fake.join("state/hostd.pid"));
        let _ = Command::new("tmux")
            .args(["-L", &tmux_socket, "kill-server"])
            .status();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let agg_log = std::fs::read_to_string(work.join("aggregator.log")).unwrap_or_default();
        if agg_log.contains("in use") {
            last = agg_log;
            continue;
        }
        assert!(
            out.status.success(),
            "{stdout}\n{}\naggregator: {agg_log}\nhostd: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(fake.join("state/hostd.log")).unwrap_or_default()
        );
        // The host linked by IP with --link-server-name, and the operator
        // reached the aggregator through a context naming it.
        assert!(
            stdout.contains("\"link\": \"connected\"") && stdout.contains("\"host\": \"box1\""),
            "{stdout}\nhostd: {}",
            std::fs::read_to_string(fake.join("state/hostd.log")).unwrap_or_default()
        );
        assert!(
            stdout.contains("\"current\": true") && stdout.contains("\"lab\""),
            "{stdout}"
        );
        assert!(stdout.contains("TOTAL"), "ps --summary: {stdout}");
        let cfg = std::fs::read_to_string(home.join(".config/fleet/hostd.toml")).unwrap();
        assert!(
            cfg.contains(&format!("{}/pki/ca.pem", work.display())),
            "{cfg}"
        );
        return;
    }
    panic!("no free port in 5 tries: {last}");
}
