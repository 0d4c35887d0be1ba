//! `fleetctl init` and the systemd units. This machine has no systemd user
//! bus, so systemd is a stateful fake: in-process through hostd's `Runner`,
//! and as real `systemctl`/`loginctl` scripts shared with a running hostd so
//! its boot-enable flag can be seen to clear.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use fleet_hostd::systemd::Runner;
use fleetctl::init::{self, InitArgs, Places};

#[derive(Default)]
struct FakeSystemd {
    state: Mutex<(bool, bool, bool)>, // enabled, active, linger
    calls: Mutex<Vec<String>>,
    /// No user manager answers (a container, an ssh session without one).
    no_manager: bool,
}

impl Runner for FakeSystemd {
    fn run(&self, program: &str, args: &[&str]) -> (bool, String, String) {
        let line = format!("{program} {}", args.join(" "));
        self.calls.lock().unwrap().push(line.clone());
        let mut st = self.state.lock().unwrap();
        let yes = |b: bool, y: &str, n: &str| if b { y.to_owned() } else { n.to_owned() };
        match args {
            ["--user", "show-environment"] if self.no_manager => (
                false,
                String::new(),
                "Failed to connect to bus: No medium found".into(),
            ),
            ["--user", "show-environment"] => (true, "HOME=/home/acme\n".into(), String::new()),
            ["--user", "daemon-reload"] => (true, String::new(), String::new()),
            ["--user", "is-enabled", _] => {
                (st.0, yes(st.0, "enabled\n", "disabled\n"), String::new())
            }
            ["--user", "is-active", _] => {
                (st.1, yes(st.1, "active\n", "inactive\n"), String::new())
            }
            ["--user", "enable", _] => {
                st.0 = true;
                (true, String::new(), String::new())
            }
            ["--user", "start", _] => {
                st.1 = true;
                (true, String::new(), String::new())
            }
            ["show-user", _, "--property=Linger"] => (
                true,
                yes(st.2, "Linger=yes\n", "Linger=no\n"),
                String::new(),
            ),
            ["enable-linger", _] => {
                st.2 = true;
                (true, String::new(), String::new())
            }
            _ => (false, String::new(), format!("unexpected: {line}")),
        }
    }
}

impl FakeSystemd {
    fn changes(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| {
                !c.contains("is-enabled")
                    && !c.contains("is-active")
                    && !c.contains("show-user")
                    && !c.contains("show-environment")
            })
            .cloned()
            .collect()
    }
}

fn args(hostd: &Path) -> InitArgs {
    InitArgs {
        tenant: Some("acme".into()),
        host: Some("box1".into()),
        aggregators: vec![],
        link_ca: None,
        link_cert: None,
        link_key: None,
        link_server_name: None,
        hostd: Some(hostd.to_owned()),
        dry_run: false,
        force: false,
        json: false,
        systemctl: "systemctl".into(),
        loginctl: "loginctl".into(),
    }
}

fn places(dir: &Path) -> Places {
    Places {
        config_dir: dir.join("config/fleet"),
        unit_dir: dir.join("config/systemd/user"),
        user: "acme".into(),
        hostname: "box1".into(),
    }
}

#[test]
fn init_installs_enables_and_lingers_then_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let hostd = support::bin("fleet-hostd");
    let (a, p) = (args(&hostd), places(dir.path()));

    // --dry-run: the plan, and nothing touched.
    let fake = FakeSystemd::default();
    let steps = init::run_with(
        &InitArgs {
            dry_run: true,
            ..a.clone()
        },
        &p,
        &fake,
    )
    .unwrap();
    assert!(!p.config_dir.exists() && !p.unit_dir.exists());
    assert!(fake.changes().is_empty(), "{:?}", fake.changes());
    let planned: Vec<&str> = steps
        .iter()
        .filter(|s| s.done)
        .map(|s| s.what.as_str())
        .collect();
    assert!(
        planned.contains(&"run: systemctl --user enable fleet-hostd.service"),
        "{planned:?}"
    );

    // The real run: exactly these commands.
    let steps = init::run_with(&a, &p, &fake).unwrap();
    assert_eq!(
        fake.changes(),
        [
            "systemctl --user daemon-reload",
            "systemctl --user enable fleet-hostd.service",
            "systemctl --user start fleet-hostd.service",
            "loginctl enable-linger acme",
        ]
    );
    assert!(steps.iter().filter(|s| s.done).count() >= 7);
    let cfg = std::fs::read_to_string(p.config_dir.join("hostd.toml")).unwrap();
    assert!(
        cfg.contains("tenant = \"acme\"") && cfg.contains("host = \"box1\""),
        "{cfg}"
    );
    let unit = std::fs::read_to_string(p.unit_dir.join("fleet-hostd.service")).unwrap();
    assert!(unit.contains(&format!("ExecStart={}", hostd.display())));
    assert!(unit.contains("KillMode=process") && unit.contains("Restart=on-failure"));
    // The written config is one hostd accepts.
    let env = fleet_hostd::config::Environment {
        uid: 1000,
        home: dir.path().to_owned(),
        user: Some("acme".into()),
        hostname: "box1".into(),
        xdg_config_home: None,
        xdg_state_home: None,
        xdg_runtime_dir: None,
    };
    let c = fleet_hostd::config::load(
        &env,
        Some(&p.config_dir.join("hostd.toml")),
        &Default::default(),
    )
    .unwrap();
    assert_eq!((c.tenant.as_str(), c.host.as_str()), ("acme", "box1"));
    fleet_hostd::roster::load(&c.roster, dir.path()).unwrap();

    // Idempotent: a second run asks, and changes nothing.
    fake.calls.lock().unwrap().clear();
    let steps = init::run_with(&a, &p, &fake).unwrap();
    assert!(fake.changes().is_empty(), "{:?}", fake.changes());
    assert!(steps.iter().all(|s| !s.done), "{steps:#?}");
    // An operator's own edits to hostd.toml are kept unless --force.
    std::fs::write(p.config_dir.join("hostd.toml"), "tenant = \"acme\"\n").unwrap();
    let steps = init::run_with(&a, &p, &fake).unwrap();
    assert!(steps[0].what.starts_with("kept"), "{steps:#?}");
    assert_eq!(
        std::fs::read_to_string(p.config_dir.join("hostd.toml")).unwrap(),
        "tenant = \"acme\"\n"
    );
}

/// Writes `systemctl` and `loginctl` scripts keeping their state in `dir`.
fn fake_scripts(dir: &Path) -> (PathBuf, PathBuf) {
    let script = r#"#!/bin/bash
d="$(dirname "$0")/state"; prog=$(basename "$0")
case "$prog $*" in
  "systemctl --user show "*) echo "ActiveState=$(cat $d/active)"; echo "UnitFileState=$(cat $d/enabled)"; echo "LoadState=loaded";;
  "systemctl --user is-enabled "*) cat $d/enabled; [ "$(cat $d/enabled)" = enabled ];;
  "systemctl --user is-active "*) cat $d/active; [ "$(cat $d/active)" = active ];;
  "systemctl --user show-environment") echo "HOME=$HOME";;
  "systemctl --user daemon-reload") echo "$prog $*" >> $d/calls;;
  "systemctl --user enable "*) echo enabled > $d/enabled; echo "$prog $*" >> $d/calls;;
  "systemctl --user start "*) echo active > $d/active; echo "$prog $*" >> $d/calls;;
  "loginctl show-user "*) echo "Linger=$(cat $d/linger)";;
  "loginctl enable-linger "*) echo yes > $d/linger; echo "$prog $*" >> $d/calls;;
  *) echo "unexpected: $prog $*" >&2; exit 1;;
esac
"#;
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(bin.join("state")).unwrap();
    // hostd runs now but would not survive a reboot.
    std::fs::write(bin.join("state/active"), "active\n").unwrap();
    std::fs::write(bin.join("state/enabled"), "disabled\n").unwrap();
    std::fs::write(bin.join("state/linger"), "no\n").unwrap();
    for name in ["systemctl", "loginctl"] {
        use std::os::unix::fs::PermissionsExt;
        let p = bin.join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin.join("systemctl"), bin.join("loginctl"))
}

#[test]
fn without_a_user_manager_init_writes_nothing_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let hostd = support::bin("fleet-hostd");
    let (a, p) = (args(&hostd), places(dir.path()));
    let fake = FakeSystemd {
        no_manager: true,
        ..Default::default()
    };
    let e = init::run_with(&a, &p, &fake).unwrap_err().to_string();
    assert!(
        !p.config_dir.exists() && !p.unit_dir.exists(),
        "half-installed"
    );
    assert!(fake.changes().is_empty(), "{:?}", fake.changes());
    assert!(
        e.contains("No medium found") && e.contains("nothing was written"),
        "{e}"
    );
    assert!(
        e.contains("enable-linger acme") && e.contains("fleet-hostd --config"),
        "{e}"
    );
}

#[test]
fn init_link_writes_absolute_paths_and_the_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let hostd = support::bin("fleet-hostd");
    let p = places(dir.path());
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for f in ["ca.pem", "host.pem", "host.key"] {
        std::fs::write(certs.join(f), "x").unwrap();
    }
    // Relative to where init runs: the unit runs elsewhere.
    std::env::set_current_dir(dir.path()).unwrap();
    let a = InitArgs {
        aggregators: vec!["127.0.0.1:7443".into()],
        link_ca: Some("certs/ca.pem".into()),
        link_cert: Some("certs/host.pem".into()),
        link_key: Some("certs/host.key".into()),
        link_server_name: Some("aggregator.fleet".into()),
        ..args(&hostd)
    };
    init::run_with(&a, &p, &FakeSystemd::default()).unwrap();
    let cfg = std::fs::read_to_string(p.config_dir.join("hostd.toml")).unwrap();
    let t: toml::Value = toml::from_str(&cfg).unwrap();
    let tls = &t["tls"];
    for (k, f) in [("ca", "ca.pem"), ("cert", "host.pem"), ("key", "host.key")] {
        let v = std::path::PathBuf::from(tls[k].as_str().unwrap());
        assert!(v.is_absolute() && v.ends_with(f) && v.is_file(), "{cfg}");
    }
    assert_eq!(
        tls["server_name"].as_str(),
        Some("aggregator.fleet"),
        "{cfg}"
    );
    // A missing file is refused before anything is written.
    let other = places(&dir.path().join("other"));
    let e = init::run_with(
        &InitArgs {
            link_key: Some("certs/nope.key".into()),
            ..a
        },
        &other,
        &FakeSystemd::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--link-key") && e.contains("nope.key"), "{e}");
    assert!(!other.config_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_boot_enable_flag_clears_after_init() {
    let dir = tempfile::tempdir().unwrap();
    let (systemctl, loginctl) = fake_scripts(dir.path());
    let mut f = support::Fleet::new(
        "version: 1\nagents:\n  - name: a\n    runtime: demo\n    command: fleet-demo-agent\n",
        &format!(
            "[systemd]\nprobe = true\nrecheck_secs = 0.1\nsystemctl = \"{}\"\nloginctl = \"{}\"\n",
            systemctl.display(),
            loginctl.display()
        ),
    );
    f.start().await;
    let hosts = |f: &support::Fleet| -> serde_json::Value {
        let out = f.fleetctl(&["hosts", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let flagged = |v: &serde_json::Value| {
        v["hosts"][0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "boot-enable")
    };
    support::eventually(
        "the boot-enable flag",
        Duration::from_secs(10),
        async || {
            let h = hosts(&f);
            flagged(&h).then_some(()).ok_or_else(|| format!("{h:#}"))
        },
    )
    .await;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // `fleetctl init` as user acme, with the scripted systemctl/loginctl.
    let init = |extra: &[&str]| {
        support::run_ok(
            std::process::Command::new(support::bin("fleetctl"))
                .arg("init")
                .args(extra)
                .args(["--tenant", "acme", "--host", "box1"])
                .arg("--systemctl")
                .arg(&systemctl)
                .arg("--loginctl")
                .arg(&loginctl)
                .env("HOME", &home)
                .env_remove("XDG_CONFIG_HOME")
                .env("USER", "acme"),
        )
    };
    let out = init(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("done  run: ")
            && l.ends_with("systemctl --user enable fleet-hostd.service")),
        "{text}"
    );
    assert!(
        text.contains("ok    fleet-hostd.service is running"),
        "{text}"
    );
    let calls = std::fs::read_to_string(dir.path().join("fakebin/state/calls")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "systemctl --user daemon-reload",
            "systemctl --user enable fleet-hostd.service",
            "loginctl enable-linger acme"
        ]
    );
    assert!(
        home.join(".config/systemd/user/fleet-hostd.service")
            .is_file()
    );
    // Run again, for a machine: nothing left to change, said as JSON.
    let out = init(&["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "fleet.init/v1");
    assert_eq!(doc["changed"], false, "{doc:#}");
    let steps = doc["steps"].as_array().unwrap();
    assert!(steps.len() >= 4, "{doc:#}");
    assert!(steps.iter().all(|s| s["changed"] == false), "{doc:#}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fakebin/state/calls"))
            .unwrap()
            .lines()
            .count(),
        3,
        "the second run changed something"
    );
    support::eventually(
        "boot-enable to clear",
        Duration::from_secs(10),
        async || {
            let h = hosts(&f);
            (!flagged(&h)).then_some(()).ok_or_else(|| format!("{h:#}"))
        },
    )
    .await;
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-analyze is missing: deploy/test.sh installs it (ensure_systemd_analyze)");
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    for (unit, bin) in [
        ("fleet-hostd.service", "fleet-hostd"),
        ("fleet-aggregator.service", "fleet-aggregator"),
    ] {
        // The units name the installed path; verify against the built one.
        let text = std::fs::read_to_string(root.join(unit)).unwrap().replace(
            &format!("/usr/local/bin/{bin}"),
            &support::bin(bin).display().to_string(),
        );
        std::fs::write(dir.path().join(unit), text).unwrap();
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(dir.path().join(unit))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{unit}: {err}"
        );
    }
    // And what `fleetctl init` writes is the same unit.
    let written = init::unit_text(&support::bin("fleet-hostd"));
    std::fs::write(dir.path().join("fleet-hostd.service"), &written).unwrap();
    support::run_ok(
        std::process::Command::new(analyze)
            .arg("verify")
            .arg(dir.path().join("fleet-hostd.service")),
    );
}

#[test]
fn the_release_tarball_holds_the_binaries_units_and_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let run = support::run_ok(
        std::process::Command::new("bash")
            .arg(root.join("deploy/package.sh"))
            // The binaries under test are already built.
            .args(["--profile", "dev", "--no-build", "--out"])
            .arg(out.path())
            .env("FLEET_GZIP_LEVEL", "1"),
    );
    let tarball = PathBuf::from(
        String::from_utf8_lossy(&run.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    );
    let x = tempfile::tempdir().unwrap();
    let untar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(x.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let top = std::fs::read_dir(x.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in [
        "bin/fleet-hostd",
        "bin/fleet-aggregator",
        "bin/fleetctl",
        "systemd/fleet-hostd.service",
        "systemd/fleet-aggregator.service",
        "examples/aggregator.example.toml",
        "examples/authz.example.toml",
        "examples/hostd.example.toml",
        "examples/roster.example.yaml",
        "README.md",
    ] {
        assert!(
            top.join(f).is_file(),
            "{f} missing from {}",
            tarball.display()
        );
    }
    let v = std::process::Command::new(top.join("bin/fleetctl"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("fleetctl "));
}
