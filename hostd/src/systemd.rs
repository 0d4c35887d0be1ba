//! systemd state of hostd's own unit (for the `boot-enable` warning), read
//! through an injected runner: the real `systemctl --user show` and
//! `loginctl show-user` in production, a recorded fake in tests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use fleet_proto::v1::UnitState;

/// Runs one external command and returns (success, stdout, stderr).
pub trait Runner: Send + Sync {
    fn run(&self, program: &str, args: &[&str]) -> (bool, String, String);
}

/// Runs the real programs.
#[derive(Debug, Clone)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    // systemctl and loginctl, never tmux.
    #[allow(clippy::disallowed_methods)]
    fn run(&self, program: &str, args: &[&str]) -> (bool, String, String) {
        match std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(out) => (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ),
            Err(e) => (false, String::new(), format!("cannot run {program}: {e}")),
        }
    }
}

#[derive(Clone)]
pub struct Probe {
    pub runner: Arc<dyn Runner>,
    pub systemctl: PathBuf,
    pub loginctl: PathBuf,
    pub unit: String,
    pub uid: u32,
    pub enabled: bool,
}

impl Probe {
    /// Asks systemd; never fails — an unanswerable question is `known=false`
    /// with the reason, and raises no flag.
    pub fn state(&self) -> UnitState {
        let mut state = UnitState {
            unit: self.unit.clone(),
            ..Default::default()
        };
        if !self.enabled {
            state.reason = "systemd probe disabled in config".into();
            return state;
        }
        let systemctl = self.systemctl.to_string_lossy();
        let (ok, out, err) = self.runner.run(
            &systemctl,
            &[
                "--user",
                "show",
                &self.unit,
                "--property=ActiveState,UnitFileState,LoadState",
            ],
        );
        if !ok {
            state.reason = first_line(&err, "systemctl --user show failed");
            return state;
        }
        let props = parse_properties(&out);
        if props.get("LoadState").map(String::as_str) == Some("not-found") {
            state.reason = format!("unit {} is not installed", self.unit);
        }
        state.active = props.get("ActiveState").cloned().unwrap_or_default();
        state.enabled = props.get("UnitFileState").cloned().unwrap_or_default();
        let uid = self.uid.to_string();
        let (ok, out, err) = self.runner.run(
            &self.loginctl.to_string_lossy(),
            &["show-user", &uid, "--property=Linger"],
        );
        if !ok {
            state.reason = first_line(&err, "loginctl show-user failed");
            return state;
        }
        state.linger = parse_properties(&out).get("Linger").map(String::as_str) == Some("yes");
        state.known = state.reason.is_empty();
        state
    }
}

/// The boot-enable warning: the unit runs now but would not come back after
/// a reboot (not enabled, or the user has no linger).
pub fn boot_enable_gap(state: &UnitState) -> bool {
    state.known
        && state.active == "active"
        && (!matches!(
            state.enabled.as_str(),
            "enabled" | "enabled-runtime" | "static"
        ) || !state.linger)
}

/// `Key=Value` lines as printed by `systemctl show` / `loginctl show-user`.
pub fn parse_properties(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn first_line(text: &str, fallback: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(fallback)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers from a recorded table and remembers what it was asked.
    struct Recorded {
        answers: Vec<(&'static str, (bool, &'static str, &'static str))>,
        calls: Mutex<Vec<String>>,
    }

    impl Runner for Recorded {
        fn run(&self, program: &str, args: &[&str]) -> (bool, String, String) {
            let line = format!("{program} {}", args.join(" "));
            self.calls.lock().unwrap().push(line.clone());
            for (prefix, (ok, out, err)) in &self.answers {
                if line.starts_with(prefix) {
                    return (*ok, (*out).into(), (*err).into());
                }
            }
            (false, String::new(), "unexpected call".into())
        }
    }

    fn probe(
        answers: Vec<(&'static str, (bool, &'static str, &'static str))>,
    ) -> (Probe, Arc<Recorded>) {
        let rec = Arc::new(Recorded {
            answers,
            calls: Mutex::new(Vec::new()),
        });
        (
            Probe {
                runner: rec.clone(),
                systemctl: "systemctl".into(),
                loginctl: "loginctl".into(),
                unit: "fleet-hostd.service".into(),
                uid: 1000,
                enabled: true,
            },
            rec,
        )
    }

    #[test]
    fn active_but_disabled_raises_boot_enable() {
        let (p, rec) = probe(vec![
            (
                "systemctl --user show",
                (
                    true,
                    "ActiveState=active\nUnitFileState=disabled\nLoadState=loaded\n",
                    "",
                ),
            ),
            ("loginctl show-user", (true, "Linger=yes\n", "")),
        ]);
        let s = p.state();
        assert!(s.known);
        assert!(boot_enable_gap(&s));
        assert_eq!(
            rec.calls.lock().unwrap().as_slice(),
            [
                "systemctl --user show fleet-hostd.service --property=ActiveState,UnitFileState,LoadState",
                "loginctl show-user 1000 --property=Linger"
            ]
        );
    }

    #[test]
    fn enabled_with_linger_is_fine_and_no_linger_is_not() {
        let show = (
            true,
            "ActiveState=active\nUnitFileState=enabled\nLoadState=loaded\n",
            "",
        );
        let (p, _) = probe(vec![
            ("systemctl --user show", show),
            ("loginctl show-user", (true, "Linger=yes\n", "")),
        ]);
        assert!(!boot_enable_gap(&p.state()));
        let (p, _) = probe(vec![
            ("systemctl --user show", show),
            ("loginctl show-user", (true, "Linger=no\n", "")),
        ]);
        assert!(boot_enable_gap(&p.state()));
    }

    #[test]
    fn no_user_bus_is_unknown_not_a_warning() {
        let (p, _) = probe(vec![(
            "systemctl --user show",
            (false, "", "Failed to connect to bus: No medium found\n"),
        )]);
        let s = p.state();
        assert!(!s.known);
        assert_eq!(s.reason, "Failed to connect to bus: No medium found");
        assert!(!boot_enable_gap(&s));
    }
}
