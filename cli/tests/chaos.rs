//! The chaos suite: a bad day and a careless (or hostile) agent, with real
//! tmux, real processes and real sockets. hostd never hangs and never gives
//! up silently.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use fleet_proto::v1::{Health, HostRow, ListHostsRequest, PaneState};
use rustix::process::Signal;
use support::{Fleet, row};

const TWO_SHELLS: &str = "\
version: 1
transport: tmux
supervision:
  respawn:
    initial_delay_secs: 0.2
    max_delay_secs: 1
agents:
  - name: sh0
    runtime: shell
    command: bash --norc --noprofile
  - name: sh1
    runtime: shell
    command: bash --norc --noprofile
";

async fn host(f: &Fleet) -> HostRow {
    let mut c = f.client().await;
    c.list_hosts(ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts
        .remove(0)
}

async fn wait_host(f: &Fleet, what: &str, pred: impl Fn(&HostRow) -> bool) -> HostRow {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = host(f).await;
        if pred(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {h:?}\n{}",
            f.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGCONT for a stopped tmux server, also when the test fails (the drop
/// that tears the fleet down needs a server that answers).
struct Continue(u32);
impl Drop for Continue {
    fn drop(&mut self) {
        support::kill(self.0, Signal::CONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_tmux_freezes_nothing_and_everything_recovers() {
    let mut f = Fleet::new(TWO_SHELLS, "supervise = true\ntmux_timeout_ms = 500\n");
    f.start().await;
    let agents = f
        .wait_for("both alive", Duration::from_secs(20), |a| {
            a.len() == 2 && a.iter().all(|r| r.pane == PaneState::Alive as i32)
        })
        .await;
    let server: u32 = String::from_utf8_lossy(&f.tmux(&["display-message", "-p", "#{pid}"]).stdout)
        .trim()
        .parse()
        .unwrap();
    let victim = row(&agents, "sh0").pane_pid;
    support::kill(server, Signal::STOP);
    let _cont = Continue(server);
    // A death while tmux is stopped is seen at once (pidfd), not when tmux
    // answers again.
    support::kill(victim, Signal::KILL);
    let killed = Instant::now();
    let seen = f
        .wait_for("sh0 dead with tmux stopped", Duration::from_secs(3), |a| {
            let r = row(a, "sh0");
            r.pane == PaneState::Dead as i32
                && r.heartbeat
                    .as_ref()
                    .is_some_and(|h| h.health != Health::Healthy as i32)
        })
        .await;
    eprintln!(
        "dead on the row {:?} after the kill, tmux stopped",
        killed.elapsed()
    );
    assert_eq!(row(&seen, "sh1").pane, PaneState::Alive as i32);
    // The host says so, with an event.
    wait_host(&f, "tmux-unresponsive", |h| {
        h.flags.iter().any(|f| f == "tmux-unresponsive")
    })
    .await;
    f.wait_event("tmux-unresponsive event", |e| e.kind == "tmux-unresponsive")
        .await;
    // Commands fail fast with a clear error instead of hanging.
    let t = Instant::now();
    let out = f.fleetctl(&["restart", "sh1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not answering"),
        "{err}"
    );
    let out = f.fleetctl(&["send", "sh1", "echo hi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not answering"),
        "{err}"
    );
    eprintln!("restart and send both refused in {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refused in {:?}, not after tmux's silence",
        t.elapsed()
    );
    // SIGCONT: the flag clears, and the dead agent is respawned.
    support::kill(server, Signal::CONT);
    wait_host(&f, "tmux answers", |h| {
        !h.flags.iter().any(|f| f == "tmux-unresponsive")
    })
    .await;
    f.wait_event("tmux-responsive event", |e| e.kind == "tmux-responsive")
        .await;
    f.wait_for("sh0 respawned", Duration::from_secs(15), |a| {
        let r = row(a, "sh0");
        r.pane == PaneState::Alive as i32 && r.pane_pid != victim
    })
    .await;
    let out = f.fleetctl(&["send", "sh1", "echo back"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_or_last_pane_is_a_death_and_is_respawned() {
    let mut f = Fleet::new(TWO_SHELLS, "supervise = true\n");
    f.start().await;
    f.wait_for("both alive", Duration::from_secs(20), |a| {
        a.len() == 2 && a.iter().all(|r| r.pane == PaneState::Alive as i32)
    })
    .await;
    assert!(f.tmux(&["kill-session", "-t", "=sh0:"]).status.success());
    let pane = row(&f.agents().await, "sh1").pane_id.clone();
    // remain-on-exit keeps a dead pane; kill-pane removes the last one.
    assert!(f.tmux(&["kill-pane", "-t", &pane]).status.success());
    for name in ["sh0", "sh1"] {
        f.wait_event("respawning", |e| e.kind == "respawning" && e.agent == name)
            .await;
    }
    f.wait_for("both back", Duration::from_secs(15), |a| {
        a.iter().all(|r| r.pane == PaneState::Alive as i32)
    })
    .await;
    // An operator's stop is not a death.
    assert!(f.fleetctl(&["stop", "sh0"]).status.success());
    // Not a wait for readiness: several supervisor ticks in which nothing
    // may happen.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let agents = f.agents().await;
    assert_eq!(row(&agents, "sh0").pane, PaneState::Missing as i32);
    let respawns = f
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == "respawning" && e.agent == "sh0")
        .count();
    assert_eq!(respawns, 1, "a stopped agent is never respawned");
}

/// Waits (bounded) for a child to exit; `None` if it is still running.
async fn exits_within(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first line a streaming client prints (its stream is open), bounded.
fn first_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(out);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep reading so the client never blocks on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the client printed nothing");
    assert!(
        !line.is_empty(),
        "the client ended before its stream opened"
    );
    line
}

/// Reads one datagram from systemd's notify socket, bounded.
fn notified(sock: &std::os::unix::net::UnixDatagram) -> String {
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_streams_open_ends_them_and_both_daemons_exit_within_two_seconds() {
    use support::fed;
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let fed::OneHost {
        dir: _dir,
        pki,
        mut agg,
        host: mut box1,
    } = fed::one_linked_host(
        &["read", "watch"],
        TWO_SHELLS,
        &[("NOTIFY_SOCKET", notify_path.display().to_string())],
    )
    .await;
    assert!(notified(&notify).contains("READY=1"), "Type=notify: ready");
    // Streams open on both daemons.
    let (cert, key) = pki.pair("operator-alice");
    let watch_agg = |args: &[&str]| {
        std::process::Command::new(support::bin("fleetctl"))
            .args(["--aggregator", &agg.address()])
            .arg("--ca")
            .arg(pki.ca())
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut agg_clients = [watch_agg(&["ps", "--watch"]), watch_agg(&["events"])];
    let mut local_clients = [
        box1.fleetctl_spawn(&["ps", "--watch"]),
        box1.fleetctl_spawn(&["events"]),
    ];
    // A stream is open once its client printed what it received.
    for c in agg_clients.iter_mut().chain(local_clients.iter_mut()) {
        first_line(c);
    }
    let t = Instant::now();
    support::kill(agg.child.as_ref().unwrap().id(), Signal::TERM);
    let status = exits_within(agg.child.as_mut().unwrap(), Duration::from_secs(2)).await;
    assert!(
        status.is_some(),
        "the aggregator lingers with streams open:\n{}",
        agg.log()
    );
    eprintln!("aggregator exited {:?} after SIGTERM", t.elapsed());
    for c in &mut agg_clients {
        assert!(
            exits_within(c, Duration::from_secs(5)).await.is_some(),
            "an aggregator client hangs"
        );
    }
    agg.child = None;
    // hostd's link was told to reconnect: it is back once the aggregator is.
    agg.start();
    fed::wait_ps(
        &pki,
        &agg,
        "alice",
        "relinked",
        Duration::from_secs(30),
        |d| fed::hosts(d).iter().any(|h| h["link"] == "connected"),
    )
    .await;
    let t = Instant::now();
    box1.signal_hostd(Signal::TERM);
    let status = exits_within(box1.hostd.as_mut().unwrap(), Duration::from_secs(2)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "hostd lingers with streams open ({status:?}):\n{}",
        box1.log()
    );
    eprintln!("hostd exited {:?} after SIGTERM", t.elapsed());
    assert!(
        notified(&notify).contains("STOPPING=1"),
        "Type=notify: stopping"
    );
    for c in &mut local_clients {
        assert!(
            exits_within(c, Duration::from_secs(5)).await.is_some(),
            "a local client hangs"
        );
    }
    box1.hostd = None;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_caller_is_its_uid_whatever_it_claims() {
    use fleet_proto::v1::{ControlAction, ControlRequest};
    let mut f = Fleet::new(TWO_SHELLS, "");
    f.start().await;
    f.wait_for("alive", Duration::from_secs(20), |a| a.len() == 2)
        .await;
    let mut c = f.client().await;
    c.control(ControlRequest {
        agent: "sh0".into(),
        action: ControlAction::Stop as i32,
        traceparent: String::new(),
        operator: "alice".into(),
    })
    .await
    .unwrap();
    let uid = rustix::process::getuid().as_raw();
    let stop = f
        .wait_event("stop", |e| e.kind == "stop" && e.agent == "sh0")
        .await;
    let by = stop.fields.get("operator").cloned().unwrap_or_default();
    assert!(by.contains(&format!("uid {uid}")), "{stop:?}");
    assert!(
        !stop.message.contains("alice") && !by.contains("alice"),
        "{stop:?}"
    );
}

/// Opens `n` connections to a Unix socket, says so, and holds them (never
/// sending a byte) until its stdin closes.
const HOLD_CONNECTIONS: &str = r#"
import socket, sys
path, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    held.append(s)
print("held", len(held), flush=True)
sys.stdin.read()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_idle_connections_leave_hostd_able_to_run_tmux_and_answer() {
    let mut f = Fleet::new(TWO_SHELLS, "supervise = true\n");
    f.start().await;
    let agents = f
        .wait_for("both alive", Duration::from_secs(20), |a| {
            a.len() == 2 && a.iter().all(|r| r.pane == PaneState::Alive as i32)
        })
        .await;
    let victim = row(&agents, "sh0").pane_pid;
    let mut c = f.client().await;
    // Four holders of 5,000 each (a process's own descriptor limit).
    let mut holders: Vec<std::process::Child> = (0..4)
        .map(|_| {
            std::process::Command::new("python3")
                .args(["-c", HOLD_CONNECTIONS])
                .arg(&f.socket)
                .arg("5000")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for h in &mut holders {
        let line = first_line(h);
        assert!(line.starts_with("held 5000"), "{line}");
    }
    // hostd still has descriptors for tmux: a death is respawned.
    support::kill(victim, Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(30);
    // An open connection made before the flood keeps answering.
    loop {
        let rows = c
            .list_agents(fleet_proto::v1::ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents;
        let r = row(&rows, "sh0");
        if r.pane == PaneState::Alive as i32 && r.pane_pid != victim {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sh0 never respawned: {r:?}\n{}",
            f.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new client gets in once the idle ones reach their preface deadline.
    let flooded = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = f.fleetctl(&["ps", "--json"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "a new client answered {:?} after the flood",
        flooded.elapsed()
    );
    assert!(f.hostd.as_mut().unwrap().try_wait().unwrap().is_none());
    for mut h in holders {
        drop(h.stdin.take());
        let _ = h.kill();
        let _ = h.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_caller_went_away_stops_and_says_so() {
    use fleet_proto::v1::SendRequest;
    // Echo off and nothing reading: typed text never shows, so a verify
    // would wait out its whole timeout.
    let roster = "\
version: 1
transport: tmux
agents:
  - name: mute0
    runtime: shell
    command: sh -c 'stty -echo; exec sleep 100000'
";
    let mut f = Fleet::new(roster, "");
    f.start().await;
    f.wait_for("alive", Duration::from_secs(20), |a| {
        a.len() == 1 && a[0].process.as_ref().is_some_and(|p| p.name == "sleep")
    })
    .await;
    let mut c = f.client().await;
    let mut req = tonic::Request::new(SendRequest {
        agent: "mute0".into(),
        text: b"hello".to_vec(),
        verify: true,
        verify_timeout_ms: 4_000_000_000,
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(400));
    let err = c.send(req).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    let gone = f
        .wait_event("send-abandoned", |e| {
            e.kind == "send-abandoned" && e.agent == "mute0"
        })
        .await;
    assert!(gone.message.contains("went away"), "{gone:?}");
    // The one-writer queue is free again: the next input does not wait.
    let mut req = tonic::Request::new(SendRequest {
        agent: "mute0".into(),
        text: b"again".to_vec(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(20));
    let r = c.send(req).await.unwrap().into_inner();
    assert!(r.queued_ms < 1000, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_deleted_run_dir_is_reported_truly_and_recovered() {
    let roster = "\
version: 1
transport: tmux
agents:
  - name: sh0
    runtime: shell
    command: bash --norc --noprofile
    heartbeat_interval_secs: 0.2
";
    let mut f = Fleet::new(roster, "");
    let _fs = support::Tmpfs::mount(&f.run_dir, "64k");
    f.start().await;
    f.wait_for("healthy", Duration::from_secs(20), |a| {
        a.len() == 1
            && a[0]
                .heartbeat
                .as_ref()
                .is_some_and(|h| h.health == Health::Healthy as i32)
    })
    .await;
    // Fill the disk: the fallback beat cannot be written.
    let filler = f.run_dir.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 128 * 1024]);
    let hb = f.hb_path("sh0");
    let _ = std::fs::remove_file(&hb);
    let rows = f
        .wait_for("the real error", Duration::from_secs(10), |a| {
            a[0].heartbeat.as_ref().is_some_and(|h| {
                h.health == Health::Unknown as i32 && h.reason.contains("No space left")
            })
        })
        .await;
    assert!(
        rows[0]
            .heartbeat
            .as_ref()
            .unwrap()
            .reason
            .contains("cannot write")
    );
    // Several failed writes later: no litter.
    tokio::time::sleep(Duration::from_millis(600)).await; // three beat intervals of failures to look for litter from
    let litter: Vec<String> = std::fs::read_dir(&f.run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(litter.is_empty(), "{litter:?}");
    // Room again: healthy again.
    std::fs::remove_file(&filler).unwrap();
    f.wait_for("healthy again", Duration::from_secs(10), |a| {
        a[0].heartbeat
            .as_ref()
            .is_some_and(|h| h.health == Health::Healthy as i32)
    })
    .await;
    drop(_fs);
    // Deleted: recreated, with an event, and healthy again.
    std::fs::remove_dir_all(&f.run_dir).unwrap();
    f.wait_event("recreated", |e| e.kind == "run-dir-recreated")
        .await;
    let rows = f
        .wait_for("healthy after recreation", Duration::from_secs(10), |a| {
            a[0].heartbeat
                .as_ref()
                .is_some_and(|h| h.health == Health::Healthy as i32)
        })
        .await;
    assert_eq!(rows[0].pane, PaneState::Alive as i32);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&f.run_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_edges_sighup_bursts_hostile_names_dash_and_closed_pipes() {
    let roster = "\
version: 1
transport: tmux
agents:
  - name: dash0
    runtime: shell
    command: dash
";
    let mut f = Fleet::new(roster, "");
    f.start().await;
    f.wait_for("dash running", Duration::from_secs(20), |a| {
        a.len() == 1 && a[0].process.as_ref().is_some_and(|p| p.name == "dash")
    })
    .await;
    // 100 SIGHUPs within a second: one reload (or two), not 100.
    for _ in 0..100 {
        f.signal_hostd(Signal::HUP);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f.wait_event("a reload", |e| e.kind == "roster-reloaded")
        .await;
    // Not a wait for readiness: the quiet spell in which no more may come.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let reloads = f
        .events()
        .await
        .iter()
        .filter(|e| e.kind == "roster-reloaded")
        .count();
    assert!(reloads <= 2, "{reloads} reloads for one burst");
    // A rejected roster never echoes a hostile name whole.
    let long = "x".repeat(5000);
    std::fs::write(
        &f.roster,
        format!("version: 1\nagents:\n  - name: {long}\n    runtime: shell\n"),
    )
    .unwrap();
    f.signal_hostd(Signal::HUP);
    let rejected = f
        .wait_event("rejected", |e| e.kind == "roster-rejected")
        .await;
    assert!(
        rejected.message.len() < 1000,
        "{} bytes",
        rejected.message.len()
    );
    assert!(
        rejected.message.contains("5000 bytes"),
        "{}",
        rejected.message
    );
    // dash has no bracketed paste, whatever `runtime: shell` says.
    let out = f.fleetctl(&["send", "dash0", "echo hi", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["bracketed_paste"], "no", "{receipt}");
    // A reader that went away (`fleetctl … | head`): quiet, and success.
    for args in [
        &["ps"][..],
        &["events", "--no-follow", "--json"],
        &["hosts", "--json"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(support::bin("fleetctl"))
            .arg("--socket")
            .arg(&f.socket)
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_shows_each_uplink_and_why_it_fails() {
    use support::fed::{self, Aggregator, Pki};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // Started and killed: nobody answers on its port any more.
    let mut agg = Aggregator::new(dir.path(), &pki, "", "");
    agg.start();
    agg.kill();
    let mut f = fed::linked_hostd(&pki, &agg, "acme", "box1", TWO_SHELLS);
    f.start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let doc = loop {
        let out = f.fleetctl(&["hosts", "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if doc["hosts"][0]["uplinks"][0]["state"] == "retrying" {
            break doc;
        }
        assert!(Instant::now() < deadline, "{doc:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let up = &doc["hosts"][0]["uplinks"][0];
    assert_eq!(up["address"], agg.address());
    assert!(!up["error"].as_str().unwrap().is_empty(), "{up}");
    let out = f.fleetctl(&["hosts"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("retrying"), "{table}");
}

fn mkfifo(at: &std::path::Path) {
    let _ = std::fs::remove_file(at);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(at)
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_in_the_run_dir_or_as_the_roster_block_nothing() {
    let mut f = Fleet::new(TWO_SHELLS, "");
    f.start().await;
    f.wait_for("healthy", Duration::from_secs(20), |a| {
        a.len() == 2
            && a.iter().all(|r| {
                r.heartbeat
                    .as_ref()
                    .is_some_and(|h| h.health == Health::Healthy as i32)
            })
    })
    .await;
    // What any agent of the tenant can do to its own files.
    let hb = f.hb_path("sh0");
    mkfifo(&hb);
    mkfifo(&fleet_proto::heartbeat::native_marker_path(&hb));
    mkfifo(&fleet_proto::heartbeat::lock_path(&hb));
    let rows = f
        .wait_for("sh0 unknown, said why", Duration::from_secs(10), |a| {
            let h = row(a, "sh0").heartbeat.clone().unwrap_or_default();
            h.health == Health::Unknown as i32 && h.reason.contains("not a regular file")
        })
        .await;
    assert_eq!(
        row(&rows, "sh1").heartbeat.as_ref().unwrap().health,
        Health::Healthy as i32,
        "the others are untouched"
    );
    // The owner still acts at once.
    let out = f.fleetctl(&["stop", "sh1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A roster swapped for a link to a FIFO is refused on reload; the last
    // good one stays.
    // The swap is one rename, so hostd (which also watches the file) never
    // sees the roster missing in between.
    let fifo = f.dir.path().join("roster.fifo");
    mkfifo(&fifo);
    let link = f.dir.path().join("roster.link");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    std::fs::rename(&link, &f.roster).unwrap();
    f.signal_hostd(Signal::HUP);
    let rejected = f
        .wait_event("rejected", |e| e.kind == "roster-rejected")
        .await;
    assert!(
        rejected.message.contains("not a regular file"),
        "{rejected:?}"
    );
    assert_eq!(f.agents().await.len(), 2);
    // Put right: healthy again.
    for p in [
        hb.clone(),
        fleet_proto::heartbeat::native_marker_path(&hb),
        fleet_proto::heartbeat::lock_path(&hb),
    ] {
        std::fs::remove_file(p).unwrap();
    }
    f.wait_for("sh0 healthy again", Duration::from_secs(10), |a| {
        row(a, "sh0")
            .heartbeat
            .as_ref()
            .is_some_and(|h| h.health == Health::Healthy as i32)
    })
    .await;
    assert!(f.hostd.as_mut().unwrap().try_wait().unwrap().is_none());
}
