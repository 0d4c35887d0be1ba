//! The durable event history of a real hostd: a `kill -9` and a restart
//! lose no event and the numbering goes on; `fleetctl events --since`
//! reads what is older than memory and `--until` bounds the window; a
//! damaged or misconfigured database stops hostd at start with what to do.
// Tests run real programs (tmux, hostd) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use fleet_proto::v1::PaneState;
use support::Fleet;

const ROSTER: &str = "\
version: 1
transport: tmux
agents:
  - name: sh0
    runtime: shell
    command: bash --norc --noprofile
";

/// Every kind, so the per-turn ones are not left out.
fn all_kinds() -> String {
    fleet_proto::v1::EventKind::ALL
        .iter()
        .map(|k| k.word())
        .collect::<Vec<_>>()
        .join(",")
}

fn events_json(f: &Fleet, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["events", "--no-follow", "--json"];
    all.extend_from_slice(args);
    let out = f.fleetctl(&all);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_and_a_restart_lose_no_event_and_the_numbering_goes_on() {
    // A small backlog: most of the history is only in the database.
    let mut f = Fleet::new(ROSTER, "event_backlog = 10\n");
    f.start().await;
    let first = f
        .wait_for("sh0 alive", Duration::from_secs(20), |a| {
            a.len() == 1 && a[0].pane == PaneState::Alive as i32
        })
        .await;
    // Deaths and restarts: events of their own.
    for _ in 0..6 {
        let out = f.fleetctl(&["restart", "sh0"]);
        assert!(out.status.success(), "{out:?}");
    }
    let before = f.events().await;
    let last = before.last().unwrap().seq;
    assert!(last > 10, "more events than memory keeps: {before:#?}");
    let _ = first;
    // The history is committed within a moment; then no goodbye.
    let db = f.dir.path().join("history.db");
    support::eventually(
        "events in the database",
        Duration::from_secs(10),
        async || {
            let n = std::fs::metadata(db.with_extension("db-wal"))
                .map(|m| m.len())
                .unwrap_or(0)
                + std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
            if n > 8192 {
                Ok(())
            } else {
                Err(format!("{n} bytes"))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.kill_hostd();
    f.start().await;
    f.wait_event("adopted after the restart", |e| e.kind == "adopted")
        .await;
    let after = f.events().await;
    assert!(
        after
            .iter()
            .all(|e| e.seq > last || before.iter().any(|b| b.seq == e.seq)),
        "{after:#?}"
    );
    assert!(
        after.iter().any(|e| e.kind == "adopted" && e.seq > last),
        "numbering continues after {last}: {after:#?}"
    );
    // Older than memory (10 events): read from the history, every one.
    let since = events_json(&f, &["--since", "1h", "--kind", &all_kinds()]);
    let seqs: Vec<u64> = since.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    for seq in 1..=last {
        assert!(seqs.contains(&seq), "event {seq} lost: {seqs:?}");
    }
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, seqs, "oldest first, each once");
    // A window ending before the restart holds nothing after it.
    let cut = before.last().unwrap().ts_unix_ms;
    let until = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(cut) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let window = events_json(&f, &["--since", "1h", "--until", &until]);
    assert!(!window.is_empty());
    assert!(
        window.iter().all(|e| e["seq"].as_u64().unwrap() <= last),
        "{window:#?}"
    );
    let kinds = events_json(&f, &["--since", "1h", "--kind", "restart"]);
    assert_eq!(kinds.len(), 6, "each restart, once: {kinds:#?}");
    assert!(kinds.iter().all(|e| e["kind"] == "restart"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_misplaced_database_stops_hostd_at_start_saying_what_to_do() {
    let f = Fleet::new(ROSTER, "");
    std::fs::write(f.dir.path().join("history.db"), vec![0x5au8; 16384]).unwrap();
    let out = f.hostd_command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("damaged") && err.contains("move it aside"),
        "{err}"
    );

    let g = Fleet::new(ROSTER, "history_db = \"/proc/version/history.db\"\n");
    let out = g.hostd_command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "a misconfigured path: {err}");
    assert!(err.contains("history_db"), "{err}");
}

/// `fleetctl events --since 1h` through `agg` as `who`.
fn agg_events(
    pki: &support::fed::Pki,
    agg: &support::fed::Aggregator,
    who: &str,
    args: &[&str],
) -> Vec<serde_json::Value> {
    let mut all = vec!["events", "--no-follow", "--json", "--since", "1h"];
    all.extend_from_slice(args);
    let out = support::fed::fleetctl_as(pki, agg, who, &all, &[]);
    assert!(out.status.success(), "{out:?}\n{}", agg.log());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What the aggregator's history holds after a `kill -9`: the intent line
/// of a command it was relaying when it died (written before the relay),
/// and — after a restart — every event of the earlier run, numbered before
/// the new run's, read back through `fleetctl events --since` within the
/// caller's grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregators_history_keeps_a_relayed_commands_audit_and_its_events_across_a_kill() {
    use support::fed::{Aggregator, Pki, linked_hostd, wait_ps};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    pki.operator("bob");
    let grants = "[operators.alice]\ntenants = [\"*\"]\nverbs = [\"read\", \"send\"]\n\n[operators.bob]\ntenants = [\"globex\"]\nverbs = [\"read\"]\n";
    let mut agg = Aggregator::new(dir.path(), &pki, grants, "event_backlog = 10\n");
    agg.start();
    let mut host = linked_hostd(&pki, &agg, "acme", "box1", ROSTER);
    host.start().await;
    let linked = |d: &serde_json::Value| {
        support::fed::hosts(d)
            .iter()
            .any(|h| h["host"] == "box1" && h["link"] == "connected")
            && support::fed::agents(d)
                .iter()
                .any(|a| a["name"] == "sh0" && a["pane"] == "alive")
    };
    wait_ps(
        &pki,
        &agg,
        "alice",
        "box1 linked",
        Duration::from_secs(30),
        linked,
    )
    .await;
    // More events than the aggregator's memory keeps (10).
    for _ in 0..6 {
        let out = host.fleetctl(&["restart", "sh0"]);
        assert!(out.status.success(), "{out:?}");
    }
    let before = support::eventually(
        "the restarts forwarded",
        Duration::from_secs(20),
        async || {
            let evs = agg_events(&pki, &agg, "alice", &["--kind", "restart"]);
            (evs.len() == 6).then_some(()).ok_or(format!("{evs:#?}"))?;
            Ok::<_, String>(agg_events(&pki, &agg, "alice", &[]))
        },
    )
    .await;
    assert!(
        before.len() > 10,
        "more than memory holds: {}",
        before.len()
    );

    // A relay in flight when the aggregator dies: the host is stopped, so
    // the send waits; its intent line is in the database already.
    host.signal_hostd(rustix::process::Signal::STOP);
    let mut send = std::process::Command::new(support::bin("fleetctl"));
    let (cert, key) = pki.pair("operator-alice");
    send.args(["--aggregator", &agg.address()])
        .arg("--ca")
        .arg(pki.ca())
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["send", "acme/box1/sh0", "echo in-flight"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut send = send.spawn().unwrap();
    let audit = agg.audit.clone();
    support::eventually("the intent line", Duration::from_secs(10), async || {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        text.lines()
            .any(|l| l.contains("\"phase\":\"intent\"") && l.contains("acme/box1/sh0"))
            .then_some(())
            .ok_or(text)
    })
    .await;
    agg.kill();
    let _ = send.kill();
    let _ = send.wait();
    host.signal_hostd(rustix::process::Signal::CONT);
    {
        let cfg = fleet_store::Config {
            path: agg.history_db(),
            max_age: Duration::from_secs(86_400),
            max_bytes: 1 << 30,
        };
        let opened = fleet_store::Store::open(&cfg, 10).unwrap();
        let rows = opened.store.audit_since(0, 10_000).unwrap();
        let intent = rows
            .iter()
            .find(|r| {
                r.verb == "send"
                    && r.target == "acme/box1/sh0"
                    && r.phase.as_deref() == Some("intent")
            })
            .unwrap_or_else(|| panic!("no intent row: {rows:#?}"));
        assert!(
            !rows
                .iter()
                .any(|r| r.command_id == intent.command_id && r.phase.as_deref() == Some("done")),
            "the relay was cut off before its outcome: {rows:#?}"
        );
        assert!(intent.line.contains("\"who\""), "{intent:?}");
        assert!(opened.last_seq >= before.last().unwrap()["seq"].as_u64().unwrap());
    }

    // A new run: the old events come back first, the numbering goes on.
    agg.start();
    wait_ps(
        &pki,
        &agg,
        "alice",
        "box1 linked again",
        Duration::from_secs(30),
        linked,
    )
    .await;
    let after = support::eventually(
        "the new run's host-connected",
        Duration::from_secs(20),
        async || {
            let evs = agg_events(&pki, &agg, "alice", &[]);
            let old_last = before.last().unwrap()["seq"].as_u64().unwrap();
            evs.iter()
                .any(|e| e["kind"] == "host-connected" && e["seq"].as_u64().unwrap() > old_last)
                .then_some(evs.clone())
                .ok_or(format!("{evs:#?}"))
        },
    )
    .await;
    let seqs: Vec<u64> = after.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for e in &before {
        assert!(
            after
                .iter()
                .any(|a| a["seq"] == e["seq"] && a["kind"] == e["kind"]),
            "lost {e}"
        );
    }
    assert_eq!(
        agg_events(&pki, &agg, "alice", &["--kind", "restart"]).len(),
        6
    );
    // Grants apply to the history: bob reads only globex.
    assert!(
        agg_events(&pki, &agg, "bob", &[]).is_empty(),
        "bob sees acme's history"
    );
}

/// A full disk: the history stops being written, the host row says so
/// (`history-failing`) and an event says why, while every event still
/// reaches `fleetctl events`; room again, and the history is written again
/// (`history-recovered`), the flag gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_host_flag_and_an_event_and_events_still_flow() {
    let scratch = tempfile::tempdir().unwrap();
    let disk = support::Tmpfs::mount(&scratch.path().join("disk"), "1m");
    let db = disk.0.join("history.db");
    let mut f = Fleet::new(ROSTER, &format!("history_db = \"{}\"\n", db.display()));
    f.start().await;
    f.wait_for("sh0 alive", Duration::from_secs(20), |a| {
        a.len() == 1 && a[0].pane == PaneState::Alive as i32
    })
    .await;
    // Fill what is left of the disk.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut w = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while w.write_all(&block).is_ok() {}
        let _ = w.sync_all();
    }
    let flags = |f: &Fleet| -> Vec<String> {
        let out = f.fleetctl(&["hosts", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["hosts"][0]["flags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    // Events keep coming; the history cannot take them.
    let mut restarts = 0;
    support::eventually("history-failing", Duration::from_secs(30), async || {
        let out = f.fleetctl(&["restart", "sh0"]);
        assert!(out.status.success(), "{out:?}");
        restarts += 1;
        flags(&f)
            .iter()
            .any(|x| x == "history-failing")
            .then_some(())
            .ok_or(format!("flags {:?}\n{}", flags(&f), f.log()))
    })
    .await;
    let failing = support::eventually(
        "the history-failing event",
        Duration::from_secs(10),
        async || {
            let evs = events_json(&f, &["--kind", "history-failing"]);
            evs.first().cloned().ok_or(format!("{evs:#?}"))
        },
    )
    .await;
    let evs = events_json(&f, &["--kind", &all_kinds()]);
    assert!(
        failing["message"].as_str().unwrap().contains("full"),
        "the reason is said: {failing}"
    );
    assert_eq!(
        evs.iter().filter(|e| e["kind"] == "restart").count(),
        restarts,
        "every restart reached the reader"
    );
    // Room again.
    std::fs::remove_file(&filler).unwrap();
    support::eventually("history-recovered", Duration::from_secs(30), async || {
        let out = f.fleetctl(&["restart", "sh0"]);
        assert!(out.status.success(), "{out:?}");
        let evs = events_json(&f, &["--kind", "history-recovered"]);
        (!evs.is_empty() && !flags(&f).iter().any(|x| x == "history-failing"))
            .then_some(())
            .ok_or(format!("flags {:?}", flags(&f)))
    })
    .await;
    f.kill_hostd();
}
