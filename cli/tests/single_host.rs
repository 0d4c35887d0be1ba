//! The single-host fleet end to end: real hostd, real tmux, real processes,
//! real Unix socket. Every wait polls a condition with a deadline.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use fleet_proto::v1::{AgentStatus, Health, HeartbeatSource, PaneState};
use support::{Fleet, find, row};

const DEMO: i32 = PaneState::Alive as i32;

fn alive(a: &fleet_proto::v1::AgentRow) -> bool {
    a.pane == DEMO && a.process.is_some()
}

fn health(a: &fleet_proto::v1::AgentRow) -> Health {
    Health::try_from(a.heartbeat.as_ref().map_or(0, |h| h.health)).unwrap()
}

fn source(a: &fleet_proto::v1::AgentRow) -> HeartbeatSource {
    HeartbeatSource::try_from(a.heartbeat.as_ref().map_or(0, |h| h.source)).unwrap()
}

const MIXED: &str = "\
version: 1
transport: tmux
defaults:
  heartbeat_interval_secs: 0.3
agents:
  - name: native0
    runtime: demo
    class: implementer
    model_hint: hint-model
    command: fleet-demo-agent --model demo-9 --busy-ms 200
  - name: shell0
    runtime: shell
    command: bash --norc --noprofile
  - name: canary-pi
    runtime: pi
    model_hint: openai-codex/gpt-5.5:high
    command: fleet-demo-agent --no-heartbeat
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_tells_the_truth_about_a_mixed_fleet() {
    let mut f = Fleet::new(MIXED, "");
    f.start().await;
    // A session the roster does not name.
    let out = f.tmux(&["new-session", "-d", "-s", "stray", "sleep 300"]);
    assert!(out.status.success());
    let agents = f
        .wait_for(
            "all alive, native healthy, stray found",
            Duration::from_secs(15),
            |a| {
                a.len() == 4
                    && a.iter().all(alive)
                    && find(a, "native0").is_some_and(|r| {
                        health(r) == Health::Healthy && source(r) == HeartbeatSource::Native
                    })
                    && find(a, "shell0").is_some_and(|r| health(r) == Health::Healthy)
                    // drift is raised after a start-up grace of a second.
                    && find(a, "canary-pi").is_some_and(|r| r.flags.iter().any(|f| f == "drift"))
                    // `bash -c 'sleep 300'` execs sleep a moment after the pane starts.
                    && find(a, "stray").is_some_and(|r| {
                        r.process.as_ref().is_some_and(|p| p.name == "sleep")
                    })
            },
        )
        .await;
    for a in &agents {
        assert_eq!(a.tenant_id, "acme", "{a:?}");
        assert_eq!(a.host, "box1", "{a:?}");
    }
    let native = row(&agents, "native0");
    assert_eq!(
        native.model, "demo-9",
        "self-reported model wins over the hint"
    );
    assert_eq!(native.model_source, "self-reported");
    assert_eq!(native.process.as_ref().unwrap().name, "fleet-demo-agent");
    assert!(native.flags.is_empty(), "{:?}", native.flags);
    assert_eq!(native.heartbeat.as_ref().unwrap().turn, Some(0));

    let shell = row(&agents, "shell0");
    assert_eq!(source(shell), HeartbeatSource::Fallback);
    assert_eq!(shell.process.as_ref().unwrap().name, "bash");
    assert!(
        f.hb_path("shell0").exists(),
        "hostd writes the fallback beat"
    );

    let canary = row(&agents, "canary-pi");
    assert!(canary.flags.contains(&"drift".to_owned()), "{canary:?}");
    assert_eq!(canary.model, "openai-codex/gpt-5.5:high");
    assert_eq!(canary.model_source, "roster-hint");

    f.wait_event("drift event", |e| {
        e.kind == "drift" && e.agent == "canary-pi"
    })
    .await;

    let stray = row(&agents, "stray");
    assert!(stray.flags.contains(&"unmanaged".to_owned()));
    assert_eq!(stray.process.as_ref().unwrap().name, "sleep");

    // The pane got the FLEET_* variables and the heartbeat file path.
    let pid = native.process.as_ref().unwrap().pid;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("FLEET_AGENT=native0"));
    assert!(environ.contains("FLEET_TENANT=acme"));
    assert!(environ.contains(&format!(
        "FLEET_HEARTBEAT_FILE={}",
        f.hb_path("native0").display()
    )));
    assert!(environ.contains("FLEET_HEARTBEAT_INTERVAL=0.3"));

    // The runtime is the pane's own process (exec'd), not a child of a shell.
    assert_eq!(native.pane_pid, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_json_has_the_documented_shape() {
    let mut f = Fleet::new(MIXED, "");
    f.start().await;
    f.wait_for("alive", Duration::from_secs(15), |a| {
        a.len() == 3 && a.iter().all(alive)
    })
    .await;
    let out = f.fleetctl(&["ps", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "fleet.ps/v1");
    let agents = doc["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    for a in agents {
        for key in [
            "tenant_id",
            "host",
            "name",
            "runtime",
            "class",
            "model",
            "pane",
            "pid",
            "process",
            "idle_seconds",
            "heartbeat",
            "flags",
            "restarts",
            "last_event",
        ] {
            assert!(a.get(key).is_some(), "missing {key} in {a}");
        }
        assert_eq!(a["tenant_id"], "acme");
        assert_eq!(a["host"], "box1");
        assert_eq!(a["pane"], "alive");
        for key in [
            "health",
            "status",
            "source",
            "age_seconds",
            "interval_seconds",
        ] {
            assert!(
                a["heartbeat"].get(key).is_some(),
                "missing heartbeat.{key} in {a}"
            );
        }
    }
    assert_eq!(doc["hosts"][0]["tenant_id"], "acme");
    // And the text table names every agent with a header.
    let out = f.fleetctl(&["ps"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("TENANT"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when not a tty: {text}");
    for n in ["native0", "shell0", "canary-pi"] {
        assert!(text.contains(n), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pane_is_dead_within_a_second_with_an_event() {
    let mut f = Fleet::new(MIXED, "");
    f.start().await;
    let agents = f
        .wait_for("alive", Duration::from_secs(15), |a| {
            a.len() == 3 && a.iter().all(alive)
        })
        .await;
    for name in ["shell0", "native0"] {
        let pid = row(&agents, name).pane_pid;
        let t = Instant::now();
        support::kill(pid, rustix::process::Signal::KILL);
        f.wait_for("dead", Duration::from_secs(5), |a| {
            find(a, name).is_some_and(|r| r.pane == PaneState::Dead as i32)
        })
        .await;
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{name} took {took:?} to show dead"
        );
        let ev = f
            .wait_event("died", |e| e.kind == "died" && e.agent == name)
            .await;
        assert_eq!(ev.fields.get("pid").unwrap(), &pid.to_string());
    }
    // tmux eventually reports how it ended (after the SIGCHLD nudge if
    // 3.3a lost it): killed by signal 9.
    f.wait_for("exit signal", Duration::from_secs(5), |a| {
        find(a, "shell0").is_some_and(|r| r.exit_signal == Some(9))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_native_writer_is_taken_over_and_a_dead_one_vouches_for_nothing() {
    let roster = "\
version: 1
transport: tmux
agents:
  - name: native0
    runtime: demo
    # A child of the pane's shell: tmux would SIGCONT a stopped pane process.
    command: sh -c 'fleet-demo-agent; exit 3'
    heartbeat_interval_secs: 0.2
";
    let mut f = Fleet::new(roster, "");
    f.start().await;
    let agents = f
        .wait_for("healthy native", Duration::from_secs(15), |a| {
            a.len() == 1
                && health(&a[0]) == Health::Healthy
                && source(&a[0]) == HeartbeatSource::Native
                && a[0].process.as_ref().is_some_and(|p| {
                    p.pid != a[0].pane_pid && Some(p.pid) == a[0].heartbeat.as_ref().map(|h| h.pid)
                })
        })
        .await;
    // A writer that falls silent while its process lives: after 2 x
    // interval its marker is old and hostd's fallback takes over.
    let pid = agents[0].pane_pid;
    let writer = agents[0].process.as_ref().unwrap().pid;
    support::kill(writer, rustix::process::Signal::STOP);
    let taken = f
        .wait_for("fallback takes over", Duration::from_secs(5), |a| {
            source(&a[0]) == HeartbeatSource::Fallback
        })
        .await;
    assert_eq!(taken[0].heartbeat.as_ref().unwrap().pid, pid, "{taken:?}");
    // Once the process is gone its last beat vouches for nothing.
    support::kill(writer, rustix::process::Signal::KILL);
    let dead = f
        .wait_for("unknown once dead", Duration::from_secs(5), |a| {
            health(&a[0]) == Health::Unknown
        })
        .await;
    let hb = dead[0].heartbeat.as_ref().unwrap();
    assert!(hb.reason.contains("ended"), "{hb:?}");
    assert_eq!(
        source(&dead[0]),
        HeartbeatSource::None,
        "a dead pane gets no fallback"
    );
    f.wait_event("unknown event", |e| {
        e.kind == "heartbeat-unknown" && e.agent == "native0" && e.message.contains("ended")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_native_marker_suppresses_the_fallback_writer() {
    let roster = "\
version: 1
transport: tmux
runtimes:
  idle:
    command: sleep 1000
agents:
  - name: quiet
    runtime: idle
    heartbeat_interval_secs: 0.3
";
    let mut f = Fleet::new(roster, "");
    std::fs::create_dir_all(&f.run_dir).unwrap();
    let hb = f.hb_path("quiet");
    let marker = fleet_proto::heartbeat::native_marker_path(&hb);
    std::fs::write(&marker, "").unwrap();
    f.start().await;
    // Keep the marker fresh for ~2 s: hostd must write nothing meanwhile.
    let until = Instant::now() + Duration::from_secs(2);
    let mut saw_native = false;
    while Instant::now() < until {
        std::fs::File::options()
            .write(true)
            .open(&marker)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        let agents = f.agents().await;
        if let Some(r) = find(&agents, "quiet")
            && r.pane == PaneState::Alive as i32
        {
            assert_eq!(source(r), HeartbeatSource::Native);
            saw_native = true;
        }
        assert!(
            !hb.exists(),
            "hostd wrote a fallback beat while the native marker was fresh"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_native);
    let agents = f
        .wait_for("unknown without a file", Duration::from_secs(2), |a| {
            health(&a[0]) == Health::Unknown
        })
        .await;
    assert!(!agents[0].heartbeat.as_ref().unwrap().reason.is_empty());
    // Marker goes stale (2 x interval): the fallback writer takes over.
    f.wait_for("fallback healthy", Duration::from_secs(5), |a| {
        source(&a[0]) == HeartbeatSource::Fallback && health(&a[0]) == Health::Healthy
    })
    .await;
    assert!(hb.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostd_restart_adopts_without_restarting_agents() {
    let mut f = Fleet::new(MIXED, "");
    f.start().await;
    let before = f
        .wait_for("alive", Duration::from_secs(15), |a| {
            a.len() == 3 && a.iter().all(alive)
        })
        .await;
    // The history goes on across the restart: what the new hostd did is
    // what comes after the old one's last event.
    let last = f.events().await.last().map_or(0, |e| e.seq);
    f.kill_hostd();
    f.start().await;
    let after = f
        .wait_for("alive again", Duration::from_secs(15), |a| {
            a.len() == 3 && a.iter().all(alive)
        })
        .await;
    for b in &before {
        let a = row(&after, &b.name);
        assert_eq!(a.pane_pid, b.pane_pid, "{} was restarted", b.name);
        assert_eq!(a.pane_id, b.pane_id);
    }
    let events: Vec<_> = f
        .events()
        .await
        .into_iter()
        .filter(|e| e.seq > last)
        .collect();
    let adopted = events.iter().filter(|e| e.kind == "adopted").count();
    assert_eq!(adopted, 3, "{events:#?}");
    assert!(!events.iter().any(|e| e.kind == "started"), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_the_last_good_roster() {
    let roster = "\
version: 1
transport: tmux
agents:
  - name: a0
    runtime: shell
";
    let mut f = Fleet::new(roster, "");
    f.start().await;
    f.wait_for("a0", Duration::from_secs(15), |a| {
        a.len() == 1 && alive(&a[0])
    })
    .await;
    std::fs::write(
        &f.roster,
        format!("{roster}  - name: ../x\n    runtime: shell\n"),
    )
    .unwrap();
    f.signal_hostd(rustix::process::Signal::HUP);
    let ev = f
        .wait_event("roster-rejected", |e| e.kind == "roster-rejected")
        .await;
    assert!(
        ev.message.contains("roster.yaml:"),
        "names file and line: {}",
        ev.message
    );
    assert!(ev.message.contains("../x"), "{}", ev.message);
    let agents = f.agents().await;
    assert_eq!(agents.len(), 1);
    assert!(alive(&agents[0]));
    // A good roster with one more agent is picked up from the file change alone.
    std::fs::write(
        &f.roster,
        format!("{roster}  - name: a1\n    runtime: shell\n"),
    )
    .unwrap();
    f.wait_for("a1 started", Duration::from_secs(10), |a| {
        a.len() == 2 && a.iter().all(alive)
    })
    .await;
    f.wait_event("roster-reloaded", |e| e.kind == "roster-reloaded")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_garbage_is_unknown_with_a_reason() {
    let roster = "\
version: 1
transport: tmux
runtimes:
  idle:
    command: sleep 1000
agents:
  - name: g0
    runtime: idle
    heartbeat_interval_secs: 5
";
    let mut f = Fleet::new(roster, "");
    std::fs::create_dir_all(&f.run_dir).unwrap();
    let hb = f.hb_path("g0");
    // A fresh native marker keeps hostd from overwriting the garbage.
    std::fs::write(fleet_proto::heartbeat::native_marker_path(&hb), "").unwrap();
    f.start().await;
    for (garbage, hint) in [
        (b"\x00\x01\x02binary".to_vec(), "binary"),
        (b"ts=2026-11-2".to_vec(), "ts"),
        (vec![b'a'; 100_000], "bytes"),
        (
            b"ts=2099-01-01T00:00:00Z pid=1 status=ok".to_vec(),
            "future",
        ),
        (b"pid=1 status=ok".to_vec(), "missing ts"),
    ] {
        std::fs::write(&hb, &garbage).unwrap();
        let agents = f
            .wait_for("unknown", Duration::from_secs(5), |a| {
                health(&a[0]) == Health::Unknown
                    && a[0].heartbeat.as_ref().unwrap().reason.contains(hint)
            })
            .await;
        assert!(alive(&agents[0]), "hostd keeps going on garbage");
    }
    // A fresh, well-formed beat from a process outside the pane's tree
    // vouches for nothing.
    let beat = fleet_proto::heartbeat::Beat {
        ts: time::OffsetDateTime::now_utc(),
        pid: std::process::id(),
        status: fleet_proto::heartbeat::Status::Idle,
        model: None,
        turn: None,
        key: None,
    };
    std::fs::write(&hb, fleet_proto::heartbeat::format(&beat)).unwrap();
    let agents = f
        .wait_for("foreign pid", Duration::from_secs(5), |a| {
            health(&a[0]) == Health::Unknown
                && a[0]
                    .heartbeat
                    .as_ref()
                    .unwrap()
                    .reason
                    .contains("not the pane's process")
        })
        .await;
    assert!(alive(&agents[0]));
    assert!(f.hostd.as_mut().unwrap().try_wait().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_is_refused_on_the_socket() {
    let mut f = Fleet::new(MIXED, "");
    f.start().await;
    if std::process::Command::new("runuser")
        .arg("--help")
        .output()
        .is_err()
    {
        panic!("runuser is required for this test (util-linux)");
    }
    // Open the doors the filesystem closes (0700 dir, 0600 socket), so the
    // peer-credential check itself is what refuses.
    use std::os::unix::fs::PermissionsExt;
    for p in [f.dir.path(), f.socket.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    // A copy of fleetctl the other uid can reach wherever the checkout lives.
    let exe = f.dir.path().join("fleetctl");
    std::fs::copy(support::bin("fleetctl"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&exe)
        .arg("--socket")
        .arg(&f.socket)
        .arg("ps")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    // The owner is still served.
    assert!(f.fleetctl(&["ps"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_enable_is_flagged_from_systemd_state() {
    let dir = tempfile::tempdir().unwrap();
    let systemctl = dir.path().join("systemctl");
    let loginctl = dir.path().join("loginctl");
    // Recorded answers of a host where the unit runs but is not enabled.
    std::fs::write(
        &systemctl,
        "#!/bin/sh\nprintf 'ActiveState=active\\nUnitFileState=disabled\\nLoadState=loaded\\n'\n",
    )
    .unwrap();
    std::fs::write(&loginctl, "#!/bin/sh\nprintf 'Linger=yes\\n'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [&systemctl, &loginctl] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let extra = format!(
        "[systemd]\nprobe = true\nsystemctl = \"{}\"\nloginctl = \"{}\"\n",
        systemctl.display(),
        loginctl.display()
    );
    let mut f = Fleet::new(MIXED, &extra);
    f.start().await;
    let agents = f
        .wait_for("boot-enable", Duration::from_secs(10), |a| {
            !a.is_empty()
                && a.iter()
                    .all(|r| r.flags.contains(&"boot-enable".to_owned()))
        })
        .await;
    assert!(!agents.is_empty());
    let out = f.fleetctl(&["ps"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would not start at boot"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_watch_redraws_on_change() {
    let mut f = Fleet::new(MIXED, "");
    f.start().await;
    let agents = f
        .wait_for("alive", Duration::from_secs(15), |a| {
            a.len() == 3 && a.iter().all(alive)
        })
        .await;
    let mut child = tokio::process::Command::new(support::bin("fleetctl"))
        .arg("--socket")
        .arg(&f.socket)
        .args(["ps", "--watch", "--json"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(doc["agents"].as_array().unwrap().len(), 3);
    let pid = row(&agents, "shell0").pane_pid;
    support::kill(pid, rustix::process::Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("no redraw after the pane died")
            .unwrap()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        let dead = doc["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "shell0" && a["pane"] == "dead");
        if dead {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tmux_server_is_reported_and_the_roster_recreated() {
    let roster = "\
version: 1
transport: tmux
agents:
  - name: a0
    runtime: shell
";
    let mut f = Fleet::new(roster, "");
    f.start().await;
    let before = f
        .wait_for("a0", Duration::from_secs(15), |a| {
            a.len() == 1 && alive(&a[0])
        })
        .await;
    assert!(f.tmux(&["kill-server"]).status.success());
    f.wait_event("tmux-server-lost", |e| e.kind == "tmux-server-lost")
        .await;
    let after = f
        .wait_for("a0 back", Duration::from_secs(10), |a| {
            a.len() == 1 && alive(&a[0]) && a[0].pane_pid != before[0].pane_pid
        })
        .await;
    assert_eq!(after[0].name, "a0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_status_and_turn_come_from_the_native_writer() {
    let roster = "\
version: 1
transport: tmux
agents:
  - name: d0
    runtime: demo
    command: fleet-demo-agent --busy-ms 1500
    heartbeat_interval_secs: 0.3
";
    let mut f = Fleet::new(roster, "");
    f.start().await;
    f.wait_for("healthy", Duration::from_secs(15), |a| {
        a.len() == 1 && health(&a[0]) == Health::Healthy
    })
    .await;
    // Type a prompt the plain way (issue-free here: test input, fixed text).
    assert!(
        f.tmux(&["send-keys", "-t", "=d0:", "hello", "Enter"])
            .status
            .success()
    );
    let busy = f
        .wait_for("busy", Duration::from_secs(5), |a| {
            a[0].heartbeat.as_ref().unwrap().status == AgentStatus::Busy as i32
        })
        .await;
    assert_eq!(busy[0].heartbeat.as_ref().unwrap().turn, Some(1));
    f.wait_for("ok again", Duration::from_secs(5), |a| {
        a[0].heartbeat.as_ref().unwrap().status == AgentStatus::Ok as i32
    })
    .await;
}

#[test]
fn invalid_rosters_are_refused_before_anything_starts() {
    for (bad, needle) in [
        (
            "version: 1\ntransport: tmux\nagents:\n  - name: ../x\n    runtime: shell\n",
            "../x",
        ),
        (
            "version: 1\ntransport: tmux\nagents:\n  - name: a:b\n    runtime: shell\n",
            "a:b",
        ),
        (
            "version: 1\ntransport: tmux\nagents:\n  - name: a.b\n    runtime: shell\n",
            "a.b",
        ),
        (
            "version: 1\ntransport: tmux\nagents:\n  - name: a\n    runtime: nope\n",
            "nope",
        ),
        ("version: 1\ntransport: ssh\nagents: []\n", "transport"),
    ] {
        let f = Fleet::new(bad, "");
        let out = f.hostd_command().arg("--check-config").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{bad}: {stderr}");
        assert!(stderr.contains("roster.yaml:"), "file and line: {stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        // Nothing started: no tmux server on the test socket.
        assert!(!f.tmux(&["list-sessions"]).status.success());
        assert!(!f.socket.exists());
    }
}

#[test]
fn a_roster_that_is_a_fifo_is_refused_at_once() {
    // Directly, and behind a symlink: opened non-blocking, never waited on.
    let f = Fleet::new("version: 1\nagents: []\n", "");
    let fifo = f.dir.path().join("fifo.yaml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::remove_file(&f.roster).unwrap();
    std::os::unix::fs::symlink(&fifo, &f.roster).unwrap();
    let start = Instant::now();
    let out = f.hostd_command().arg("--check-config").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("FIFO"), "{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn check_config_reports_what_would_run() {
    let f = Fleet::new(MIXED, "");
    let out = f.hostd_command().arg("--check-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tenant acme host box1"), "{text}");
    assert!(text.contains("canary-pi (pi)"), "{text}");
}

#[test]
fn fleetctl_without_hostd_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::bin("fleetctl"))
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .arg("ps")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no fleet-hostd is running"), "{stderr}");
    assert!(stderr.contains("fleet-hostd --roster"), "{stderr}");
}

#[test]
fn bad_names_are_refused_by_fleetctl_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::bin("fleetctl"))
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .args(["events", "--agent", "a:b"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn environment_layer_overrides_the_file_and_flags_override_both() {
    let f = Fleet::new(MIXED, "");
    let out = f
        .hostd_command()
        .arg("--check-config")
        .env("FLEET_HOSTD_TENANT", "globex")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tenant globex host box1"), "{text}");
    let out = f
        .hostd_command()
        .args(["--check-config", "--tenant", "initech"])
        .env("FLEET_HOSTD_TENANT", "globex")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("tenant initech"));
    let out = f
        .hostd_command()
        .arg("--check-config")
        .env("FLEET_HOSTD_TENNANT", "typo")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "unknown keys are errors in every layer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_only_on_a_terminal_and_never_with_no_color() {
    let mut f = Fleet::new(MIXED, "");
    f.start().await;
    f.wait_for("alive", Duration::from_secs(15), |a| {
        a.len() == 3 && a.iter().all(alive)
    })
    .await;
    // `script` gives fleetctl a real pseudo-terminal.
    let on_tty = |no_color: bool| {
        let cmd = format!(
            "{} --socket {} ps",
            support::bin("fleetctl").display(),
            f.socket.display()
        );
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]).env("COLUMNS", "300");
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(on_tty(false).contains("\x1b[32malive"), "colour on a tty");
    let plain = on_tty(true);
    assert!(!plain.contains("\x1b["), "NO_COLOR: {plain}");
    assert!(plain.contains("canary-pi"));
}

/// tmux 3.3a loses a pane's exit status in a good share of deaths (the
/// child stays a zombie, `pane-died` never fires); hostd must still see each
/// death at once and get tmux to report it (SIGCHLD nudge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_death_is_seen_and_reported_even_when_tmux_loses_it() {
    let mut roster = String::from(
        "version: 1\ntransport: tmux\nruntimes:\n  idle:\n    command: sleep 1000\nagents:\n",
    );
    for i in 0..10 {
        roster.push_str(&format!("  - name: d{i}\n    runtime: idle\n"));
    }
    let mut f = Fleet::new(&roster, "");
    f.start().await;
    let agents = f
        .wait_for("all alive", Duration::from_secs(15), |a| {
            a.len() == 10 && a.iter().all(alive)
        })
        .await;
    for a in &agents {
        let t = Instant::now();
        support::kill(a.pane_pid, rustix::process::Signal::TERM);
        f.wait_for("dead", Duration::from_secs(5), |rows| {
            find(rows, &a.name).is_some_and(|r| r.pane == PaneState::Dead as i32)
        })
        .await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{} took {:?}",
            a.name,
            t.elapsed()
        );
    }
    // tmux itself reports every death, nudged where it had lost it.
    f.wait_for(
        "every exit reported by tmux",
        Duration::from_secs(10),
        |rows| {
            rows.iter()
                .all(|r| r.exit_signal == Some(15) || r.exit_status.is_some())
        },
    )
    .await;
    // No zombie is left behind by the tmux server.
    for a in &agents {
        assert!(
            fleet_hostd_proc_gone(a.pane_pid),
            "pid {} still exists",
            a.pane_pid
        );
    }
}

fn fleet_hostd_proc_gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_gets_a_grace_and_a_cleared_drift_is_an_event() {
    let roster = r#"version: 1
runtimes:
  py:
    command: python3
    process_names: [python3]
agents:
  - name: quick
    runtime: py
    command: sh -c 'sleep 0.3; exec python3 -c "import time; time.sleep(300)"'
  - name: slow
    runtime: py
    command: sh -c 'sleep 3; exec python3 -c "import time; time.sleep(300)"'
"#;
    let mut f = Fleet::new(roster, "");
    f.start().await;
    // `slow` runs `sleep` past the grace: drift, then python3: cleared.
    f.wait_event("drift", |e| e.kind == "drift" && e.agent == "slow")
        .await;
    let cleared = f
        .wait_event("drift cleared", |e| {
            e.kind == "drift-cleared" && e.agent == "slow"
        })
        .await;
    assert!(cleared.message.contains("python3"), "{cleared:?}");
    // `quick` execs within the grace: never called drift.
    let events = f.events().await;
    assert!(
        !events
            .iter()
            .any(|e| e.agent == "quick" && e.kind.starts_with("drift")),
        "{events:#?}"
    );
    let rows = f.agents().await;
    assert!(row(&rows, "quick").flags.is_empty(), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hostd_on_the_same_run_dir_or_tmux_socket_is_refused() {
    let mut f = Fleet::new(MIXED, "");
    f.start().await;
    let first = f.hostd_pid().to_string();
    let refused = |c: &mut std::process::Command| {
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(75), "{err}");
        assert!(
            err.contains("already runs") && err.contains(&first),
            "{err}"
        );
        err
    };
    // The same configuration: the same run dir.
    let err = refused(&mut f.hostd_command());
    assert!(err.contains("in "), "{err}");
    // Another run dir and socket, the same tmux socket.
    let other = f.dir.path().join("other.toml");
    let cfg = std::fs::read_to_string(&f.config)
        .unwrap()
        .replace(
            &f.run_dir.display().to_string(),
            &f.dir.path().join("run2").display().to_string(),
        )
        .replace(
            &f.socket.display().to_string(),
            &f.dir.path().join("h2.sock").display().to_string(),
        );
    std::fs::write(&other, cfg).unwrap();
    let mut c = std::process::Command::new(support::bin("fleet-hostd"));
    c.arg("--config").arg(&other);
    let err = refused(&mut c);
    assert!(err.contains("tmux socket"), "{err}");
    // The first one is untouched and still answers.
    assert_eq!(f.agents().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selections_are_applied_by_hostd_and_a_row_leaving_one_is_removed() {
    let mut f = Fleet::new(MIXED, "");
    f.start().await;
    let agents = f
        .wait_for("alive", Duration::from_secs(15), |a| {
            a.len() == 3 && a.iter().all(alive)
        })
        .await;
    let lines = |args: &[&str]| -> Vec<String> {
        let out = f.fleetctl(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let mut all = lines(&["ps", "-o", "name"]);
    all.sort();
    assert_eq!(
        all,
        [
            "acme/box1/canary-pi",
            "acme/box1/native0",
            "acme/box1/shell0"
        ]
    );
    assert_eq!(
        lines(&["ps", "-o", "name", "canary-*"]),
        ["acme/box1/canary-pi"]
    );
    assert!(lines(&["ps", "-o", "name", "--host", "elsewhere"]).is_empty());
    let table = lines(&["ps", "--no-headers", "native0"]);
    assert_eq!(table.len(), 1, "{table:?}");
    assert!(table[0].contains("native0") && !table[0].contains("NAME"));
    let summary: serde_json::Value =
        serde_json::from_str(&lines(&["ps", "--summary", "--json"]).join("\n")).unwrap();
    assert_eq!(summary["schema"], "fleet.summary/v1");
    assert_eq!(summary["total"]["agents"], 3);
    assert_eq!(summary["total"]["pane"]["alive"], 3);
    assert_eq!(summary["hosts"][0]["host"], "box1");
    let out = f.fleetctl(&["ps", "--status", "sleepy"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("idle, ok, busy, waiting, unknown"));
    let out = f.fleetctl(&["ps", "coder-["]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Events by name glob: only that agent's, no host-level ones.
    let events = lines(&["events", "--no-follow", "--json", "--since", "1h", "shell*"]);
    assert!(!events.is_empty());
    for e in &events {
        let e: serde_json::Value = serde_json::from_str(e).unwrap();
        assert_eq!(e["agent"], "shell0", "{e}");
    }
    assert!(
        lines(&[
            "events",
            "--no-follow",
            "--since",
            "0s",
            "--kind",
            "roster-loaded"
        ])
        .is_empty()
    );

    // Watching the alive ones: a pane that dies leaves the selection.
    let mut child = tokio::process::Command::new(support::bin("fleetctl"))
        .arg("--socket")
        .arg(&f.socket)
        .args(["ps", "--watch", "--json", "--pane", "alive"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let names = |line: &str| -> Vec<String> {
        let doc: serde_json::Value = serde_json::from_str(line).unwrap();
        doc["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = out.next_line().await.unwrap().unwrap();
    assert_eq!(names(&first).len(), 3);
    support::kill(
        row(&agents, "shell0").pane_pid,
        rustix::process::Signal::KILL,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), out.next_line())
            .await
            .expect("the dead pane never left the selection")
            .unwrap()
            .unwrap();
        let now = names(&line);
        if !now.iter().any(|n| n == "shell0") {
            assert_eq!(now.len(), 2, "{now:?}");
            break;
        }
    }
}
