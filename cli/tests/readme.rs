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
