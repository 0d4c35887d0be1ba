//! `fleetctl top` as a person uses it: the real binary in a real tmux pane
//! (a throw-away tmux server of its own) over a real fleet-hostd, driven
//! with `tmux send-keys` and read with `tmux capture-pane`. Every wait
//! polls the screen with a deadline.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_proto::v1::PaneState;
use support::{Fleet, eventually, row};

const ROSTER: &str = "\
version: 1
transport: tmux
defaults:
  heartbeat_interval_secs: 0.5
agents:
  - name: alpha0
    runtime: demo
    command: fleet-demo-agent --busy-ms 200
  - name: beta0
    runtime: shell
    command: bash --norc --noprofile
";

const WAIT: Duration = Duration::from_secs(20);

/// A tmux server of the test's own, with one pane running a plain shell
/// where `fleetctl top` is typed.
struct Ui {
    socket: String,
    dir: tempfile::TempDir,
}

impl Ui {
    fn new(f: &Fleet, env: &[(&str, &str)]) -> Self {
        Self::over(f, env, &format!("--socket {}", f.socket.display()))
    }

    /// `top` reaching its server with `server` (connection flags).
    fn over(f: &Fleet, env: &[(&str, &str)], server: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let socket = format!("{}-ui{n}", f.tmux_socket);
        let dir = tempfile::tempdir().unwrap();
        let mut c = Command::new("tmux");
        c.args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "160", "-y", "48", "-s", "ui"]);
        for (k, v) in env {
            c.arg("-e").arg(format!("{k}={v}"));
        }
        c.arg("bash --norc --noprofile");
        support::run_ok(&mut c);
        let ui = Ui { socket, dir };
        let fleetctl = support::bin("fleetctl");
        // The command line `top` is run with, kept in a file so the test
        // can type one short word.
        let script = ui.dir.path().join("top.sh");
        std::fs::write(
            &script,
            format!("exec {} {server} top \"$@\"\n", fleetctl.display(),),
        )
        .unwrap();
        ui
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `line` into the pane and presses Enter.
    fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "ui", "-l", line]);
        self.tmux(&["send-keys", "-t", "ui", "Enter"]);
    }

    /// Presses keys (tmux key names: `q`, `Enter`, `C-c` …).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "ui"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "ui"])
    }

    fn alternate(&self) -> bool {
        self.tmux(&["display-message", "-p", "-t", "ui", "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// Presses `q` and waits until top has left the alternate screen.
    async fn quit(&self) {
        self.keys(&["q"]);
        eventually("top gone", WAIT, async || {
            if self.alternate() {
                Err(self.screen())
            } else {
                Ok(())
            }
        })
        .await;
    }

    /// Starts top in the pane with `args`.
    fn top(&self, args: &str) {
        let script = self.dir.path().join("top.sh");
        self.type_line(&format!("bash {} {args}", script.display()));
    }

    /// Waits until the screen satisfies `pred`; returns the screen.
    async fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        eventually(what, WAIT, async || {
            let s = self.screen();
            if pred(&s) { Ok(s) } else { Err(s) }
        })
        .await
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

/// The table row of agent `name` on a captured screen (a row starts with
/// the name after the border and the selection mark), if shown.
fn table_row(screen: &str, name: &str) -> Option<String> {
    screen
        .lines()
        .find(|l| {
            let inner = l.trim_start_matches('│');
            let inner = inner.strip_prefix('>').or_else(|| inner.strip_prefix(' '));
            inner.is_some_and(|i| i.starts_with(&format!("{name} ")))
        })
        .map(str::to_owned)
}

fn has_row(screen: &str, name: &str, word: &str) -> bool {
    table_row(screen, name).is_some_and(|r| r.split_whitespace().any(|w| w == word))
}

async fn fleet() -> Fleet {
    let mut f = Fleet::new(ROSTER, "");
    f.start().await;
    f.wait_for("both alive", WAIT, |a| {
        a.len() == 2
            && a.iter()
                .all(|r| r.pane == PaneState::Alive as i32 && r.process.is_some())
    })
    .await;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_appear_with_a_summary_and_a_killed_one_turns_dead() {
    let f = fleet().await;
    let ui = Ui::new(&f, &[]);
    ui.top("");
    let s = ui
        .wait("both rows alive and a summary", |s| {
            has_row(s, "alpha0", "alive")
                && has_row(s, "beta0", "alive")
                && s.contains("2 agents")
                && s.contains("Connected")
        })
        .await;
    assert!(ui.alternate(), "top draws on the alternate screen:\n{s}");
    assert!(s.contains("q quit"), "the keys are on screen:\n{s}");
    // `?` shows the keys over the dashboard; any key closes them.
    ui.keys(&["?"]);
    ui.wait("the help", |s| {
        s.contains("Keys (any key closes)") && s.contains("cycle the health filter")
    })
    .await;
    ui.keys(&["x"]);
    ui.wait("the help gone", |s| !s.contains("Keys (any key closes)"))
        .await;
    // `r` reverses the order (by name: beta0 first).
    let above = |s: &str, first: &str, second: &str| {
        let at = |name: &str| {
            let row = table_row(s, name)?;
            s.lines().position(|l| l == row)
        };
        matches!((at(first), at(second)), (Some(a), Some(b)) if a < b)
    };
    ui.keys(&["r"]);
    ui.wait("beta0 above alpha0", |s| {
        s.contains("(reversed)") && above(s, "beta0", "alpha0")
    })
    .await;
    ui.keys(&["r"]);
    ui.wait("alpha0 above beta0", |s| {
        !s.contains("(reversed)") && above(s, "alpha0", "beta0")
    })
    .await;
    let pid = row(&f.agents().await, "alpha0").pane_pid;
    support::kill(pid, rustix::process::Signal::KILL);
    ui.wait("alpha0 dead, beta0 still alive", |s| {
        has_row(s, "alpha0", "dead") && has_row(s, "beta0", "alive") && s.contains("dead 1")
    })
    .await;
    ui.wait("the death in the events pane", |s| {
        s.lines()
            .any(|l| l.contains("acme/box1/alpha0") && l.contains("died"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_hides_rows_and_clearing_it_brings_them_back() {
    let f = fleet().await;
    let ui = Ui::new(&f, &[]);
    ui.top("");
    ui.wait("both rows", |s| {
        table_row(s, "alpha0").is_some() && table_row(s, "beta0").is_some()
    })
    .await;
    ui.keys(&["/"]);
    ui.wait("the filter prompt", |s| s.contains("name glob:"))
        .await;
    ui.keys(&["-l", "bet*"]);
    ui.keys(&["Enter"]);
    let s = ui
        .wait("only beta0, filtered by the server", |s| {
            table_row(s, "beta0").is_some()
                && table_row(s, "alpha0").is_none()
                && s.contains("filter: name=bet*")
                && s.contains("Agents (1)")
                && s.contains("1 agents")
        })
        .await;
    assert!(!s.contains("2 agents"), "the summary is filtered too:\n{s}");
    // A pane filter nothing matches leaves no row at all.
    ui.keys(&["p", "p"]);
    ui.wait("no row with pane=dead", |s| {
        s.contains("pane=dead") && table_row(s, "beta0").is_none() && s.contains("Agents (0)")
    })
    .await;
    ui.keys(&["c"]);
    ui.wait("both rows again", |s| {
        table_row(s, "alpha0").is_some()
            && table_row(s, "beta0").is_some()
            && s.contains("filter: none")
    })
    .await;
    // A started filter comes from the command line too.
    ui.quit().await;
    ui.top("'alpha*'");
    ui.wait("only alpha0 from NAME-GLOB", |s| {
        table_row(s, "alpha0").is_some() && table_row(s, "beta0").is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_view_shows_the_selected_agents_text() {
    let f = fleet().await;
    let ui = Ui::new(&f, &[]);
    ui.top("");
    ui.wait("alpha0 selected", |s| {
        table_row(s, "alpha0").is_some_and(|r| r.starts_with("│>"))
            && s.contains("Screen acme/box1/alpha0")
    })
    .await;
    ui.keys(&["j"]);
    ui.wait("beta0 selected", |s| {
        table_row(s, "beta0").is_some_and(|r| r.starts_with("│>"))
            && s.contains("Screen acme/box1/beta0")
    })
    .await;
    // Something only this agent's shell can print.
    f.tmux(&[
        "send-keys",
        "-t",
        "=beta0:",
        "-l",
        "echo TOPMARK-$((6*7)) $'\\e]0;evil\\a'",
    ]);
    f.tmux(&["send-keys", "-t", "=beta0:", "Enter"]);
    let s = ui
        .wait("the agent's output in the screen pane", |s| {
            s.contains("TOPMARK-42")
        })
        .await;
    assert!(!s.contains("evil\u{7}"), "{s}");
    // A send is an event of the agent's, with its verdict: the last receipt.
    let out = f.fleetctl(&["send", "beta0", "echo RECEIPT-$((2+3))"]);
    assert!(out.status.success(), "{out:?}");
    ui.wait("the receipt and the sent text", |s| {
        s.contains("RECEIPT-5")
            && s.lines().any(|l| {
                l.contains("last receipt") && l.contains("bytes") && !l.contains("none seen")
            })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_and_ctrl_c_leave_the_terminal_as_it_was() {
    let f = fleet().await;
    let ui = Ui::new(&f, &[]);
    let before = ui.dir.path().join("before");
    let after = ui.dir.path().join("after");
    ui.type_line(&format!("echo BEFORE-TOP; stty -g > {}", before.display()));
    ui.wait("the shell ran", |s| s.contains("BEFORE-TOP")).await;
    for key in ["q", "C-c"] {
        ui.top("");
        ui.wait("top is up", |s| table_row(s, "alpha0").is_some())
            .await;
        assert!(ui.alternate());
        ui.keys(&[key]);
        let s = ui
            .wait("the shell's screen back", |s| {
                s.contains("BEFORE-TOP") && table_row(s, "alpha0").is_none()
            })
            .await;
        assert!(
            !ui.alternate(),
            "{key}: still on the alternate screen:\n{s}"
        );
        let _ = std::fs::remove_file(&after);
        ui.type_line(&format!("stty -g > {}", after.display()));
        eventually("the shell's tty state", WAIT, async || {
            let a = std::fs::read_to_string(&after).map_err(|e| e.to_string())?;
            let b = std::fs::read_to_string(&before).unwrap();
            if a.trim().is_empty() {
                return Err("not written yet".into());
            }
            assert_eq!(a, b, "{key}: the terminal's modes changed");
            Ok(())
        })
        .await;
        let cursor = ui
            .tmux(&["display-message", "-p", "-t", "ui", "#{cursor_flag}"])
            .trim()
            .to_owned();
        assert_eq!(cursor, "1", "{key}: the cursor is hidden");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostd_restart_shows_reconnecting_then_the_rows_again() {
    let mut f = fleet().await;
    let ui = Ui::new(&f, &[]);
    ui.top("");
    ui.wait("connected with rows", |s| {
        s.contains("Connected") && has_row(s, "alpha0", "alive")
    })
    .await;
    f.kill_hostd();
    let s = ui
        .wait("reconnecting with the dial's error, no rows held", |s| {
            s.lines()
                .any(|l| l.contains("Reconnecting") && l.contains("cannot connect to fleet-hostd"))
                && table_row(s, "alpha0").is_none()
        })
        .await;
    assert!(s.contains("Agents (none held"), "{s}");
    f.start().await;
    ui.wait("connected again with the rows", |s| {
        s.contains("Connected")
            && !s.contains("Reconnecting")
            && has_row(s, "alpha0", "alive")
            && has_row(s, "beta0", "alive")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_follows_no_color_and_the_hosts_view_shows_the_host() {
    let f = fleet().await;
    let coloured = Ui::new(&f, &[]);
    coloured.top("");
    eventually("colour on a colour terminal", WAIT, async || {
        let s = coloured.tmux(&["capture-pane", "-p", "-e", "-t", "ui"]);
        if s.contains("alpha0") && coloured_sgr(&s) {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    coloured.keys(&["2"]);
    coloured
        .wait("the host row", |s| {
            s.contains("Hosts (1)") && s.lines().any(|l| l.contains("acme") && l.contains("box1"))
        })
        .await;
    drop(coloured);
    let plain = Ui::new(&f, &[("NO_COLOR", "1")]);
    plain.top("");
    plain
        .wait("rows without colour", |s| table_row(s, "alpha0").is_some())
        .await;
    let s = plain.tmux(&["capture-pane", "-p", "-e", "-t", "ui"]);
    assert!(!coloured_sgr(&s), "colour under NO_COLOR:\n{s:?}");
}

/// Whether `s` holds an SGR sequence that sets a colour (foreground or
/// background; attributes such as bold or reverse are not colours).
fn coloured_sgr(s: &str) -> bool {
    s.split("\x1b[").skip(1).any(|seq| {
        let Some(end) = seq.find(|c: char| !(c.is_ascii_digit() || c == ';')) else {
            return false;
        };
        seq[end..].starts_with('m')
            && seq[..end].split(';').any(|p| {
                matches!(
                    p.parse::<u32>(),
                    Ok(30..=38 | 40..=48 | 90..=97 | 100..=107)
                )
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_it_is_a_usage_error() {
    let f = fleet().await;
    let out = f.fleetctl(&["top"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(out.stdout.is_empty(), "nothing drawn: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_aggregator_too_many_rows_are_a_count_and_a_restart_reconnects() {
    let mut one = support::fed::one_linked_host(&["read"], ROSTER, &[]).await;
    let (cert, key) = one.pki.pair("operator-alice");
    let server = format!(
        "--aggregator {} --ca {} --cert {} --key {}",
        one.agg.address(),
        one.pki.ca().display(),
        cert.display(),
        key.display()
    );
    let ui = Ui::over(&one.host, &[], &server);
    // Two agents match, one may be held: a count, no rows, and the hosts
    // from the summary.
    ui.top("--max-rows 1");
    let s = ui
        .wait("the count instead of rows", |s| {
            s.contains("2 agents match this selection") && s.contains("aggregator 127.0.0.1")
        })
        .await;
    assert!(table_row(&s, "alpha0").is_none(), "{s}");
    ui.keys(&["2"]);
    ui.wait("the summary's host", |s| {
        s.contains("Hosts, from the summary")
            && s.lines()
                .any(|l| l.contains("acme") && l.contains("box1") && l.contains("connected"))
    })
    .await;
    // Narrowed to one: its row streams in.
    ui.keys(&["1", "/"]);
    ui.tmux(&["send-keys", "-t", "ui", "-l", "alpha*"]);
    ui.keys(&["Enter"]);
    let s = ui
        .wait("alpha0 alone", |s| has_row(s, "alpha0", "alive"))
        .await;
    assert!(table_row(&s, "beta0").is_none(), "{s}");
    // The aggregator goes and comes back: reconnecting, then the row.
    one.agg.kill();
    ui.wait("reconnecting, no rows held", |s| {
        s.contains("Reconnecting") && table_row(s, "alpha0").is_none()
    })
    .await;
    one.agg.start();
    ui.wait("the row again", |s| {
        !s.contains("Reconnecting") && has_row(s, "alpha0", "alive")
    })
    .await;
    ui.quit().await;
}
