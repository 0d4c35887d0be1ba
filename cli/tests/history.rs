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
