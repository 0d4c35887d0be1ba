//! Supervision with real tmux and real processes: crashed agents respawned
//! with growing delays then escalated, operator stops respected, idle
//! orchestrators poked (and not while a worker works), and the first mate's
//! change-only digest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleet_proto::v1::{Event, PaneState};
use support::{Fleet, row};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn fleet(roster: &str) -> Fleet {
    let mut f = Fleet::new(roster, "supervise = true\n");
    f.start().await;
    f
}

fn of_kind<'a>(evs: &'a [Event], kind: &str, agent: &str) -> Vec<&'a Event> {
    evs.iter()
        .filter(|e| e.kind == kind && e.agent == agent)
        .collect()
}

/// Polls the events until `pred` holds on the list.
async fn wait_events(
    f: &Fleet,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let evs = f.events().await;
        if pred(&evs) {
            return evs;
        }
        assert!(
            Instant::now() < deadline,
            "no {what}; events: {evs:#?}\nlog:\n{}",
            f.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_agent_is_respawned_with_growing_delays_then_escalated() {
    let f = fleet(
        "version: 1
runtimes:
  sleeper:
    command: sleep 1000
    process_names: [sleep]
supervision:
  tick_ms: 50
  respawn:
    max_deaths: 3
    initial_delay_secs: 0.3
    max_delay_secs: 5
agents:
  - name: crash
    runtime: sleeper
",
    )
    .await;
    let mut pids = Vec::new();
    for death in 1..=4u32 {
        let rows = f
            .wait_for("crash alive", Duration::from_secs(10), |a| {
                let r = row(a, "crash");
                r.pane == PaneState::Alive as i32 && r.pane_pid > 0 && !pids.contains(&r.pane_pid)
            })
            .await;
        let r = row(&rows, "crash").clone();
        pids.push(r.pane_pid);
        assert_eq!(r.restarts, death - 1);
        let pid = rustix::process::Pid::from_raw(r.pane_pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        if death <= 3 {
            wait_events(&f, "a respawn", Duration::from_secs(10), |e| {
                of_kind(e, "respawning", "crash").len() == death as usize
            })
            .await;
        }
    }
    let evs = wait_events(&f, "need-human", Duration::from_secs(10), |e| {
        !of_kind(e, "need-human", "crash").is_empty()
    })
    .await;
    assert!(
        of_kind(&evs, "need-human", "crash")[0]
            .message
            .contains("4 times")
    );
    // Delay from each death to its respawn grows: 0.3 s, 0.6 s, 1.2 s.
    let died = of_kind(&evs, "died", "crash");
    let resp = of_kind(&evs, "respawning", "crash");
    assert_eq!(resp.len(), 3);
    let delays: Vec<i64> = (0..3)
        .map(|i| resp[i].ts_unix_ms - died[i].ts_unix_ms)
        .collect();
    assert!(
        delays[0] >= 250 && delays[1] >= 550 && delays[2] >= 1150,
        "{delays:?}"
    );
    assert!(delays[0] < delays[1] && delays[1] < delays[2], "{delays:?}");
    // Given up: the pane stays dead and ps says why.
    let rows = f
        .wait_for("gave-up shown", Duration::from_secs(5), |a| {
            row(a, "crash").supervision.starts_with("gave-up")
        })
        .await;
    assert_eq!(row(&rows, "crash").pane, PaneState::Dead as i32);
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        // The longest delay was 1.2 s: a respawn would have happened by now.
        assert_eq!(of_kind(&f.events().await, "respawning", "crash").len(), 3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = f.fleetctl(&["ps", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let crash = doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "crash")
        .unwrap();
    assert!(
        crash["supervision"]
            .as_str()
            .unwrap()
            .contains("need human"),
        "{crash:#}"
    );
    // A hostd restart forgets nothing: the restart count, the give-up.
    let mut f = f;
    let last = f.events().await.last().map_or(0, |e| e.seq);
    f.kill_hostd();
    f.start().await;
    let rows = f
        .wait_for("gave-up remembered", Duration::from_secs(10), |a| {
            a.len() == 1 && row(a, "crash").supervision.starts_with("gave-up")
        })
        .await;
    assert_eq!(row(&rows, "crash").restarts, 3, "{rows:?}");
    assert_eq!(row(&rows, "crash").pane, PaneState::Dead as i32);
    let since_restart: Vec<_> = f
        .events()
        .await
        .into_iter()
        .filter(|e| e.seq > last)
        .collect();
    assert!(
        of_kind(&since_restart, "respawning", "crash").is_empty(),
        "the new hostd respawns nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_by_an_operator_is_never_respawned() {
    let f = fleet(
        "version: 1
runtimes:
  sleeper:
    command: sleep 1000
    process_names: [sleep]
supervision:
  tick_ms: 50
  respawn:
    initial_delay_secs: 0
agents:
  - name: w1
    runtime: sleeper
",
    )
    .await;
    f.wait_for("alive", Duration::from_secs(10), |a| {
        row(a, "w1").pane == PaneState::Alive as i32
    })
    .await;
    let out = f.fleetctl(&["stop", "w1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Watch for a while (a respawn would take one 50 ms tick).
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        let a = f.agents().await;
        assert_ne!(
            row(&a, "w1").pane,
            PaneState::Alive as i32,
            "a stopped agent came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(of_kind(&f.events().await, "respawning", "w1").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_orchestrator_is_poked_only_when_no_worker_progresses_and_once_per_cooldown() {
    let f = fleet(
        "version: 1
runtimes:
  sleeper:
    command: sleep 1000
    process_names: [sleep]
supervision:
  tick_ms: 50
  poke:
    idle_secs: 1
    cooldown_secs: 4
agents:
  - name: boss
    runtime: demo
    class: orchestrator
    command: fleet-demo-agent --busy-ms 100
    heartbeat_interval_secs: 1
  - name: w1
    runtime: demo
    command: fleet-demo-agent --busy-ms 3000
    heartbeat_interval_secs: 1
",
    )
    .await;
    f.wait_for("healthy", Duration::from_secs(15), |a| {
        a.len() == 2
            && a.iter().all(|r| {
                r.heartbeat
                    .as_ref()
                    .is_some_and(|h| h.health == fleet_proto::v1::Health::Healthy as i32)
            })
    })
    .await;
    // Keep the worker busy for 3 s: no poke while it works.
    let out = f.fleetctl(&["send", "w1", "long task", "--verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let busy_from = fleet_proto::clock::now_ms();
    // A poke may be decided before the worker got its task (the boss was
    // idle and nobody progressed), never while it works (3 s from the
    // receipt). A poke's event is written when its send ends, so it says
    // when it was decided.
    let decided = |p: &Event| p.fields["decided_unix_ms"].parse::<i64>().unwrap();
    let evs = wait_events(&f, "a poke", Duration::from_secs(20), |e| {
        of_kind(e, "poke", "boss")
            .iter()
            .any(|p| decided(p) >= busy_from)
    })
    .await;
    let pokes = of_kind(&evs, "poke", "boss");
    for p in &pokes {
        assert!(
            !p.fields["text"].contains("w1 busy")
                && !(busy_from..busy_from + 2_900).contains(&decided(p)),
            "poked while the worker was busy: {p:?}"
        );
    }
    let first = pokes
        .iter()
        .find(|p| decided(p) >= busy_from)
        .copied()
        .unwrap()
        .clone();
    assert_eq!(first.fields["verdict"], "accepted", "{first:?}");
    assert!(
        first.fields["text"].contains("Workers: w1 idle, quiet"),
        "{first:?}"
    );
    // One poke per cooldown (4 s), then another.
    let t0 = first.ts_unix_ms;
    let evs = wait_events(&f, "a second poke", Duration::from_secs(20), |e| {
        of_kind(e, "poke", "boss").iter().any(|p| p.ts_unix_ms > t0)
    })
    .await;
    let second = *of_kind(&evs, "poke", "boss")
        .iter()
        .find(|p| p.ts_unix_ms > t0)
        .unwrap();
    assert!(
        second.ts_unix_ms - t0 >= 4_000,
        "poked again within the cooldown: {} ms",
        second.ts_unix_ms - t0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_mate_gets_a_digest_on_change_only_and_again_after_a_draft() {
    // An accepting first mate: one digest, then only on change.
    let f = fleet(
        "version: 1
runtimes:
  sleeper:
    command: sleep 1000
    process_names: [sleep]
supervision:
  tick_ms: 50
  first_mate: mate
  digest_interval_secs: 0.5
agents:
  - name: mate
    runtime: demo
    command: fleet-demo-agent --busy-ms 50
  - name: w1
    runtime: sleeper
",
    )
    .await;
    let evs = wait_events(&f, "a digest", Duration::from_secs(20), |e| {
        of_kind(e, "digest", "mate")
            .iter()
            .any(|d| d.fields.get("verdict").is_some_and(|v| v == "accepted"))
    })
    .await;
    let n = of_kind(&evs, "digest", "mate").len();
    tokio::time::sleep(Duration::from_millis(1500)).await; // three intervals with no change
    assert_eq!(
        of_kind(&f.events().await, "digest", "mate").len(),
        n,
        "an unchanged digest was sent again"
    );
    assert!(f.fleetctl(&["stop", "w1"]).status.success());
    let evs = wait_events(
        &f,
        "a digest after a change",
        Duration::from_secs(10),
        |e| of_kind(e, "digest", "mate").len() > n,
    )
    .await;
    let last = of_kind(&evs, "digest", "mate").last().unwrap().fields["text"].clone();
    assert!(last.contains("w1 missing"), "{last}");
    drop(f);

    // A first mate that leaves everything as a draft: sent again and again.
    let f = fleet(&format!(
        "version: 1
runtimes:
  sleeper:
    command: sleep 1000
    process_names: [sleep]
  stubborn:
    command: python3 {}
    process_names: [python3]
supervision:
  tick_ms: 50
  first_mate: mate
  digest_interval_secs: 0.5
agents:
  - name: mate
    runtime: stubborn
  - name: w1
    runtime: sleeper
",
        fixture("ignores_enter.py").display()
    ))
    .await;
    let evs = wait_events(&f, "two draft digests", Duration::from_secs(40), |e| {
        of_kind(e, "digest", "mate")
            .iter()
            .filter(|d| d.fields.get("verdict").is_some_and(|v| v == "draft"))
            .count()
            >= 2
    })
    .await;
    let d = of_kind(&evs, "digest", "mate");
    assert_eq!(
        d[0].fields["text"], d[1].fields["text"],
        "the same digest is re-sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asking_a_human_is_an_event_and_an_alert_to_the_first_mate() {
    let f = fleet(
        "version: 1
supervision:
  tick_ms: 50
  first_mate: mate
  digest_interval_secs: 60
agents:
  - name: mate
    runtime: demo
    command: fleet-demo-agent --busy-ms 50
  - name: w1
    runtime: demo
    command: fleet-demo-agent --busy-ms 50
",
    )
    .await;
    let out = f.fleetctl(&["send", "w1", "/ask may I delete the cache?", "--verify"]);
    assert!(
        matches!(out.status.code(), Some(0 | 5)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = wait_events(&f, "waiting and the alert", Duration::from_secs(20), |e| {
        !of_kind(e, "waiting-for-human", "w1").is_empty()
            && of_kind(e, "alert", "mate").iter().any(|a| {
                a.fields
                    .get("verdict")
                    .is_some_and(|v| v == "accepted" || v == "queued")
            })
    })
    .await;
    let waiting = &of_kind(&evs, "waiting-for-human", "w1")[0];
    assert_eq!(waiting.fields["source"], "native");
    let alert = &of_kind(&evs, "alert", "mate")[0];
    assert!(
        alert.fields["text"].contains("[fleet WAITING] w1"),
        "{:?}",
        alert.fields
    );
    let row = f.agents().await;
    let w1 = support::row(&row, "w1");
    let hb = w1.heartbeat.as_ref().unwrap();
    assert_eq!(hb.status, fleet_proto::v1::AgentStatus::Waiting as i32);
    // A send would answer the question: refused, the operator answers
    // by attaching (here: typing directly into the pane).
    let out = f.fleetctl(&["send", "w1", "y"]);
    let screen = f.tmux(&["capture-pane", "-p", "-t", "=w1:"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&screen.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("asking a human"));
    assert!(
        f.tmux(&["send-keys", "-t", "=w1:", "y", "Enter"])
            .status
            .success()
    );
    wait_events(&f, "waiting cleared", Duration::from_secs(10), |e| {
        !of_kind(e, "waiting-cleared", "w1").is_empty()
    })
    .await;
}
