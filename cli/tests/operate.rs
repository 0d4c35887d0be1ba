//! Operating agents: `send --verify` against real programs in real tmux,
//! `watch`, `attach`, and start/stop/restart/reset.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleet_proto::v1::PaneState;
use support::{Fleet, find, row};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn roster() -> String {
    format!(
        "\
version: 1
transport: tmux
runtimes:
  demo:
    reset_command: /new
  python:
    command: python3 -q
    process_names: [python3]
  busy:
    command: python3 {ignores}
    process_names: [python3]
  frozen:
    command: python3 {frozen}
    process_names: [python3]
agents:
  - name: demo0
    runtime: demo
    command: fleet-demo-agent --busy-ms 300
    heartbeat_interval_secs: 1
  - name: sh0
    runtime: shell
    command: bash --norc --noprofile
  - name: py0
    runtime: python
  - name: busy0
    runtime: busy
  - name: frozen0
    runtime: frozen
",
        ignores = fixture("ignores_enter.py").display(),
        frozen = fixture("frozen_alt.py").display(),
    )
}

async fn fleet() -> Fleet {
    let mut f = Fleet::new(&roster(), "send_limit_bytes = 200000\n");
    f.start().await;
    f.wait_for("all alive with a screen", Duration::from_secs(20), |a| {
        a.len() == 5
            && a.iter()
                .all(|r| r.pane == PaneState::Alive as i32 && r.process.is_some())
    })
    .await;
    // Programs draw their first screen a little after they start.
    for name in ["demo0", "sh0", "py0", "busy0", "frozen0"] {
        wait_screen(&f, name, |s| !s.trim().is_empty()).await;
    }
    f
}

fn screen(f: &Fleet, name: &str) -> String {
    String::from_utf8_lossy(
        &f.tmux(&["capture-pane", "-p", "-t", &format!("={name}:")])
            .stdout,
    )
    .into_owned()
}

async fn wait_screen(f: &Fleet, name: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = screen(f, name);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name} screen never matched:\n{s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn send(f: &Fleet, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["send"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = f.fleetctl(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap(), json, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_sends_to_real_programs() {
    let f = fleet().await;

    // The demo agent counts turns in its native heartbeat: definitive.
    let (code, r, err) = send(&f, &["demo0", "hello demo", "--verify"]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["verdict"], "accepted");
    assert_eq!(r["evidence"], "acknowledged");
    assert_eq!(r["tenant_id"], "acme");
    assert_eq!(r["trace_id"].as_str().unwrap().len(), 32);
    wait_screen(&f, "demo0", |s| s.contains("working on: hello demo")).await;

    // A shell and a REPL: accepted from the screen.
    let (code, r, err) = send(&f, &["sh0", "echo fleet-$((6*7))", "--verify"]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["evidence"], "screen");
    wait_screen(&f, "sh0", |s| s.contains("fleet-42")).await;
    let (code, r, err) = send(&f, &["py0", "print(6 * 7)", "--verify"]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["verdict"], "accepted");
    wait_screen(&f, "py0", |s| s.lines().any(|l| l.trim() == "42")).await;

    // Reads the line but ignores Enter: the text stays a draft.
    let (code, r, _) = send(
        &f,
        &["busy0", "please run", "--verify", "--verify-timeout", "1s"],
    );
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["verdict"], "draft");
    assert_eq!(r["enter_presses"], 2, "one Enter retry: {r}");

    // An alternate screen that never redraws: no evidence either way.
    let (code, r, _) = send(
        &f,
        &[
            "frozen0",
            "anyone there",
            "--verify",
            "--verify-timeout",
            "1s",
        ],
    );
    assert_eq!(code, 4, "{r}");
    assert_eq!(r["verdict"], "unverifiable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_mode_is_left_first_and_dead_or_unknown_agents_are_refused() {
    let f = fleet().await;
    assert!(f.tmux(&["copy-mode", "-t", "=sh0:"]).status.success());
    let agents = f
        .wait_for("in-mode flag", Duration::from_secs(5), |a| {
            find(a, "sh0").is_some_and(|r| r.flags.contains(&"in-mode".to_owned()))
        })
        .await;
    assert!(row(&agents, "sh0").flags.contains(&"in-mode".to_owned()));
    let (code, r, err) = send(&f, &["sh0", "echo out-of-copy-mode", "--verify"]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["left_copy_mode"], true);
    wait_screen(&f, "sh0", |s| s.contains("\nout-of-copy-mode")).await;

    let (code, _, err) = send(&f, &["nosuch", "hi"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no agent nosuch") && err.contains("demo0") && err.contains("sh0"),
        "{err}"
    );
    let (code, _, err) = send(&f, &["../x", "hi"]);
    assert_eq!(code, 1, "{err}");

    let pid = row(&f.agents().await, "py0").pane_pid;
    support::kill(pid, rustix::process::Signal::KILL);
    f.wait_for("py0 dead", Duration::from_secs(5), |a| {
        find(a, "py0").is_some_and(|r| r.pane == PaneState::Dead as i32)
    })
    .await;
    let (code, _, err) = send(&f, &["py0", "print(1)", "--verify"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("dead") && err.contains("fleetctl start py0"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_arrives_byte_exact_and_bad_text_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got.bin");
    let roster = format!(
        "version: 1\ntransport: tmux\nruntimes:\n  recv:\n    command: python3 {} {}\n    process_names: [python3]\nagents:\n  - name: r0\n    runtime: recv\n",
        fixture("receiver.py").display(),
        got.display()
    );
    let mut f = Fleet::new(&roster, "send_limit_bytes = 200000\n");
    f.start().await;
    wait_screen(&f, "r0", |s| s.contains("ready>")).await;
    // 100 KB of UTF-8 with everything a shell or tmux would mangle.
    let unit = "-leading; $(echo no) `id` 'single' \"double\" \\back ünïcødé ✓ #{pane_id} ";
    let mut text = String::new();
    while text.len() < 100_000 {
        text.push_str(unit);
    }
    let file = dir.path().join("prompt.txt");
    std::fs::write(&file, &text).unwrap();
    let out = f.fleetctl(&["send", "r0", "--file", file.to_str().unwrap(), "--no-enter"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !screen(&f, "r0").contains("got ") {
        assert!(Instant::now() < deadline, "{}", screen(&f, "r0"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read(&got).unwrap(), text.as_bytes(), "byte-exact");

    // Over the limit, invalid UTF-8, control bytes.
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "x".repeat(300_000)).unwrap();
    let out = f.fleetctl(&["send", "r0", "--file", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("over the limit"));
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"ok \xff\xfe").unwrap();
    let out = f.fleetctl(&["send", "r0", "--file", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UTF-8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_bytes_are_stripped_and_reported() {
    let f = fleet().await;
    let (code, r, err) = send(&f, &["sh0", "echo a\u{3}b\u{1b}c", "--verify"]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["stripped"], 2);
    assert!(r["notes"][0].as_str().unwrap().contains("2 control bytes"));
    wait_screen(&f, "sh0", |s| s.contains("\nabc")).await;
    // The shell survived: ^C never reached it.
    assert_eq!(row(&f.agents().await, "sh0").pane, PaneState::Alive as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_restart_and_reset() {
    let mut f = fleet().await;
    let before = row(&f.agents().await, "demo0").clone();

    let out = f.fleetctl(&["restart", "demo0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = f
        .wait_for("respawned", Duration::from_secs(10), |a| {
            find(a, "demo0").is_some_and(|r| {
                r.pane == PaneState::Alive as i32
                    && r.pane_pid != before.pane_pid
                    && r.process.is_some()
            })
        })
        .await;
    let r = row(&after, "demo0");
    assert_eq!(r.pane_id, before.pane_id, "restart keeps the tmux identity");
    assert_eq!(r.restarts, 1);

    // reset sends the roster's reset_command through the verified path.
    wait_screen(&f, "demo0", |s| s.contains("demo>")).await;
    let out = f.fleetctl(&["reset", "demo0", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["receipt"]["verdict"], "accepted");
    wait_screen(&f, "demo0", |s| s.contains("working on: /new")).await;

    let events = f.events().await;
    for kind in ["restart", "reset"] {
        let e = events
            .iter()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} event: {events:#?}"));
        assert!(e.message.contains("(by "), "who: {e:?}");
    }

    let out = f.fleetctl(&["stop", "sh0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.wait_event("stop", |e| e.kind == "stop" && e.agent == "sh0")
        .await;
    f.wait_for("sh0 stopped", Duration::from_secs(5), |a| {
        find(a, "sh0").is_some_and(|r| {
            r.pane == PaneState::Missing as i32 && r.flags.contains(&"stopped".to_owned())
        })
    })
    .await;
    // Not started again, not even by a hostd restart.
    f.kill_hostd();
    f.start().await;
    let a = f
        .wait_for("table back", Duration::from_secs(10), |a| a.len() == 5)
        .await;
    assert_eq!(row(&a, "sh0").pane, PaneState::Missing as i32);
    let (code, _, err) = send(&f, &["sh0", "echo hi"]);
    assert_eq!(code, 1);
    assert!(err.contains("stopped"), "{err}");

    let out = f.fleetctl(&["start", "sh0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.wait_for("sh0 back", Duration::from_secs(10), |a| {
        find(a, "sh0").is_some_and(|r| {
            r.pane == PaneState::Alive as i32 && !r.flags.contains(&"stopped".to_owned())
        })
    })
    .await;
    // (hostd was restarted above: its event log starts afresh.)
    let events = f.events().await;
    assert!(
        events.iter().any(|e| e.kind == "start" && e.agent == "sh0"),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_once_prints_the_screen_and_attach_needs_a_terminal() {
    let f = fleet().await;
    let (code, _, _) = send(&f, &["sh0", "echo watched-$((2+3))", "--verify"]);
    assert_eq!(code, 0);
    let out = f.fleetctl(&["watch", "sh0", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("watched-5"));
    let out = f.fleetctl(&["watch", "sh0", "--once", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agent"], "sh0");
    assert_eq!(v["host"], "box1");
    assert!(
        v["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("watched-5"))
    );

    let out = f.fleetctl(&["attach", "sh0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a terminal"));
    // On a terminal, attach first records the takeover, then hands over the
    // real session.
    let r = f
        .client()
        .await
        .control(fleet_proto::v1::ControlRequest {
            agent: "sh0".into(),
            action: fleet_proto::v1::ControlAction::Attach as i32,
            traceparent: String::new(),
            operator: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.tmux_socket, f.tmux_socket);
    assert_eq!(r.tmux_target, "=sh0:");
    // On the local socket the caller is its uid, whatever it claims.
    let uid = format!("uid {}", rustix::process::getuid().as_raw());
    f.wait_event("attach", |e| {
        e.kind == "attach"
            && e.agent == "sh0"
            && e.message.contains(&uid)
            && !e.message.contains("alice")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_cannot_type_and_does_not_shrink_the_agent() {
    let f = fleet().await;
    let size = |f: &Fleet| {
        String::from_utf8_lossy(
            &f.tmux(&[
                "display-message",
                "-p",
                "-t",
                "=sh0:",
                "#{window_width}x#{window_height}",
            ])
            .stdout,
        )
        .trim()
        .to_owned()
    };
    let before = size(&f);
    // A small real terminal (script gives a pty) typing into the watcher.
    let cmd = format!(
        "stty cols 40 rows 10; {} --socket {} watch sh0",
        support::bin("fleetctl").display(),
        f.socket.display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Collect what the watcher's terminal shows.
    let mut stdout = child.stdout.take().unwrap();
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = shown.clone();
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let seen = |needle: &str| String::from_utf8_lossy(&shown.lock().unwrap()).contains(needle);
    // Ready once tmux has drawn its status line (the terminal is raw then).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen("[sh0-wa") {
        assert!(Instant::now() < deadline, "watcher never drew");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clients = String::from_utf8_lossy(
        &f.tmux(&["list-clients", "-F", "#{client_readonly} #{session_name}"])
            .stdout,
    )
    .into_owned();
    assert!(
        clients.lines().any(|l| l.starts_with("1 sh0-watch-")),
        "read-only client: {clients:?}"
    );
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo TYPED-INTO-WATCHER\r").await.unwrap();
    // Keys closer together than tmux's assume-paste-time (1 ms) count as a
    // paste and trigger no binding, so pace the prefix keys like a typist.
    let pace = || tokio::time::sleep(Duration::from_millis(50));
    stdin.flush().await.unwrap();
    pace().await;
    stdin.write_all(b"\x02:kill-server\r").await.unwrap();
    stdin.flush().await.unwrap();
    pace().await;
    // A read-only client may still detach (C-b d). tmux handles a client's
    // keys in order, so once it has detached every key above was handled.
    stdin.write_all(b"\x02d").await.unwrap();
    stdin.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen("[detached") {
        assert!(
            Instant::now() < deadline,
            "no detach: {}",
            String::from_utf8_lossy(&shown.lock().unwrap())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `script` runs until its input ends.
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the watcher ended")
        .unwrap();
    assert!(status.success(), "{status}");
    let _ = reader.await;
    assert!(
        !screen(&f, "sh0").contains("TYPED-INTO-WATCHER"),
        "{}",
        screen(&f, "sh0")
    );
    assert!(
        f.tmux(&["list-sessions"]).status.success(),
        "tmux server survived"
    );
    assert_eq!(
        size(&f),
        before,
        "the watcher's small terminal shrank the agent"
    );
    let sessions =
        String::from_utf8_lossy(&f.tmux(&["list-sessions", "-F", "#{session_name}"]).stdout)
            .into_owned();
    assert!(
        !sessions.contains("-watch-"),
        "watch session removed on detach: {sessions}"
    );
    let agents = f.agents().await;
    assert!(
        agents.iter().all(|a| !a.name.contains("-watch-")),
        "watchers are not agents"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_text_and_busy_agents() {
    let f = fleet().await;
    // The demo agent reads lines in canonical mode: no bracketed paste, so
    // each line would be submitted on its own. --strict refuses.
    let (code, _, err) = send(&f, &["demo0", "line one\nline two", "--strict"]);
    assert_eq!(code, 1);
    assert!(err.contains("line by line"), "{err}");
    let (code, r, err) = send(&f, &["demo0", "line one\nline two", "--verify"]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["line_by_line"], true);
    assert_eq!(r["bracketed_paste"], "no");
    // bash uses bracketed paste: one submission, no warning.
    let (code, r, _) = send(&f, &["sh0", "echo one\necho two", "--verify"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["line_by_line"], false);
    wait_screen(&f, "sh0", |s| s.contains("\none\n") || s.contains("\ntwo")).await;

    // --when-idle waits for the running turn (the second line) to end.
    let (code, r, err) = send(&f, &["demo0", "long job", "--verify", "--when-idle"]);
    assert_eq!(code, 0, "{r} {err}");
    // The demo agent reads no input while a turn runs: what the terminal
    // echoes is type-ahead, queued at best, never accepted.
    let (code, r, err) = send(&f, &["demo0", "meanwhile", "--verify"]);
    assert_eq!(code, 5, "{r} {err}");
    assert!(r["detail"].as_str().unwrap().contains("type-ahead"), "{r}");
    let turn = |a: &[fleet_proto::v1::AgentRow]| {
        row(a, "demo0")
            .heartbeat
            .as_ref()
            .and_then(|h| h.turn)
            .unwrap_or(0)
    };
    let before = turn(&f.agents().await);
    let (code, r, err) = send(&f, &["demo0", "after the job", "--verify", "--when-idle"]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["evidence"], "acknowledged");
    let after = f
        .wait_for("turn advanced", Duration::from_secs(5), |a| {
            turn(a) > before
        })
        .await;
    assert!(turn(&after) > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_watch_sessions_are_swept() {
    // An agent whose name looks like a watcher's is still an agent.
    let roster = format!(
        "{}  - name: sh-watch-1\n    runtime: shell\n    command: bash --norc --noprofile\n",
        roster()
    );
    let mut f = Fleet::new(&roster, "resync_ms = 300\n");
    f.start().await;
    f.wait_for("alive", Duration::from_secs(20), |a| a.len() == 6)
        .await;
    // What a killed `fleetctl watch` leaves behind: a grouped session,
    // marked as a watcher, that nobody is attached to.
    assert!(
        f.tmux(&[
            "new-session",
            "-d",
            "-t",
            "=sh0",
            "-s",
            "sh0-peek",
            ";",
            "set-option",
            "-t",
            "=sh0-peek:",
            "@fleet-watcher",
            "1"
        ])
        .status
        .success()
    );
    let agents = f.agents().await;
    assert!(
        agents.iter().all(|a| a.name != "sh0-peek"),
        "a watcher is not an agent"
    );
    f.wait_event("swept", |e| {
        e.kind == "watcher-swept" && e.message.contains("sh0-peek")
    })
    .await;
    assert!(!f.tmux(&["has-session", "-t", "=sh0-peek"]).status.success());
    assert!(
        f.tmux(&["has-session", "-t", "=sh-watch-1"])
            .status
            .success(),
        "an agent named like a watcher stays"
    );
    let row = f.agents().await;
    let row = row.iter().find(|a| a.name == "sh-watch-1").expect("listed");
    assert_eq!(row.pane, PaneState::Alive as i32, "{row:?}");
    assert!(
        f.tmux(&["has-session", "-t", "=sh0"]).status.success(),
        "the agent stays"
    );
}
