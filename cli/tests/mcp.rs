//! `fleetctl mcp` with a real MCP client (the Python SDK from PyPI, in
//! /opt/fleet-py) run inside agents' panes of a real hostd: the tools and
//! their schemas, each tool's answer checked against `ps --json` and the
//! events, a send from one agent racing an operator's send to the same
//! agent (both whole, one after the other), a send outside the agent's
//! grant refused and audited, need-human reaching the first mate, an agent
//! that may read only itself, and a caller in no pane refused.
// Tests run real programs (tmux, python) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleet_proto::v1::{AgentStatus, PaneState};
use support::{Fleet, eventually};

const ROSTER: &str = "\
version: 1
transport: tmux
defaults:
  heartbeat_interval_secs: 0.5
supervision:
  first_mate: mate
  digest_interval_secs: 3600
agents:
  - name: coord
    runtime: shell
    command: bash --norc --noprofile
    mcp: true
    may:
      send: [worker]
  - name: worker
    runtime: demo
    command: fleet-demo-agent --busy-ms 100
  - name: mate
    runtime: demo
    command: fleet-demo-agent --busy-ms 100
  - name: loner
    runtime: shell
    command: bash --norc --noprofile
    may:
      read: [loner]
      need_human: false
";

const WAIT: Duration = Duration::from_secs(30);

fn python() -> PathBuf {
    let p = PathBuf::from(
        std::env::var("FLEET_TEST_PYTHON").unwrap_or_else(|_| "/opt/fleet-py/bin/python3".into()),
    );
    assert!(
        p.is_file(),
        "{} is missing: deploy/prereqs.sh ensure_python_grpc installs the MCP SDK there",
        p.display()
    );
    p
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_client.py")
}

/// The client's command line for `plan`, writing to `out`.
fn client_line(f: &Fleet, plan: &serde_json::Value, name: &str) -> (String, PathBuf) {
    let plan_path = f.dir.path().join(format!("{name}.plan.json"));
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let out = f.dir.path().join(format!("{name}.out.json"));
    let line = format!(
        "{} {} {} {} {} {}",
        python().display(),
        fixture().display(),
        support::bin("fleetctl").display(),
        f.socket.display(),
        plan_path.display(),
        out.display()
    );
    (line, out)
}

/// Types `line` into agent `agent`'s shell (an operator's send).
fn type_into(f: &Fleet, agent: &str, line: &str) {
    let out = f.fleetctl(&["send", agent, line]);
    assert!(out.status.success(), "{out:?}");
}

async fn output(out: &Path) -> serde_json::Value {
    eventually("the MCP client's answers", WAIT, async || {
        std::fs::read(out)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    })
    .await
}

fn call(doc: &serde_json::Value, i: usize) -> (&str, bool) {
    let c = &doc["calls"][i];
    (c["text"].as_str().unwrap(), c["is_error"] == true)
}

fn pane_text(f: &Fleet, agent: &str) -> String {
    let out = f.tmux(&[
        "capture-pane",
        "-p",
        "-J",
        "-S",
        "-200",
        "-t",
        &format!("={agent}:"),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_use_the_fleet_through_mcp_as_themselves_within_their_grants() {
    python();
    let mut f = Fleet::new(ROSTER, "supervise = true\n");
    f.start().await;
    f.wait_for("four agents alive", WAIT, |a| {
        a.len() == 4
            && a.iter()
                .all(|r| r.pane == PaneState::Alive as i32 && r.process.is_some())
    })
    .await;
    // A shell has no MCP client to configure: said, not pretended.
    let off = f
        .wait_event("mcp-off for coord", |e| e.kind == "mcp-off")
        .await;
    assert_eq!(off.agent, "coord");
    assert!(off.message.contains("no MCP client"), "{off:?}");
    // The supervisor's first digest makes the mate busy for a turn: the
    // client's two digests must see a fleet that has settled after it.
    f.wait_event("the first digest to the mate", |e| {
        e.kind == "digest" && e.agent == "mate"
    })
    .await;
    f.wait_for("the mate idle after its digest turn", WAIT, |a| {
        a.iter().any(|r| {
            r.name == "mate"
                && r.heartbeat.as_ref().is_some_and(|h| {
                    h.turn.is_some_and(|t| t >= 1) && h.status == AgentStatus::Ok as i32
                })
        })
    })
    .await;

    let go = f.dir.path().join("go");
    let plan = serde_json::json!([
        ["fleet_ps", {}],
        ["fleet_ps", {"name": "work*"}],
        ["fleet_digest", {}],
        ["fleet_digest", {}],
        ["@wait", {"path": go}],
        ["fleet_send", {"agent": "worker", "text": "task from coord: build the parser"}],
        ["fleet_send", {"agent": "loner", "text": "not allowed"}],
        ["fleet_need_human", {"text": "coord needs a decision on the schema"}],
        ["fleet_events", {"kind": "sent,agent-refused,need-human"}],
    ]);
    let (line, out) = client_line(&f, &plan, "coord");
    type_into(&f, "coord", &line);
    // The client waits at `@wait`; the operator's send races its send.
    let reached = PathBuf::from(format!("{}.reached", go.display()));
    eventually("the client at its barrier", WAIT, async || {
        if reached.exists() {
            Ok(())
        } else {
            Err(pane_text(&f, "coord"))
        }
    })
    .await;
    std::fs::write(&go, "").unwrap();
    let operator = f.fleetctl(&["send", "worker", "operator says: review PR 7"]);
    assert!(operator.status.success(), "{operator:?}");
    let doc = output(&out).await;

    // The tools, each with a schema a model can act on.
    assert_eq!(doc["server"], "fleet");
    let mut names: Vec<&str> = doc["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "fleet_digest",
            "fleet_events",
            "fleet_need_human",
            "fleet_ps",
            "fleet_send"
        ]
    );
    for t in doc["tools"].as_array().unwrap() {
        assert_eq!(t["schema"]["type"], "object", "{t}");
        assert!(t["description"].as_str().unwrap().len() > 40, "{t}");
    }
    let send_schema = &doc["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fleet_send")
        .unwrap()["schema"];
    assert_eq!(
        send_schema["required"],
        serde_json::json!(["agent", "text"])
    );

    // fleet_ps says what ps --json says (statuses move with the sends
    // since: the facts that do not are compared, and the source).
    let (ps, err) = call(&doc, 0);
    assert!(!err, "{ps}");
    let table = f.fleetctl(&["ps", "--json"]);
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).unwrap();
    assert_eq!(
        ps.lines().count(),
        1 + table["agents"].as_array().unwrap().len(),
        "{ps}"
    );
    for a in table["agents"].as_array().unwrap() {
        let word = |k: &str| a[k].as_str().unwrap().to_owned();
        let line = ps
            .lines()
            .find(|l| l.starts_with(&format!("box1/{} ", word("name"))))
            .unwrap_or_else(|| panic!("{} not in fleet_ps:\n{ps}", word("name")));
        for fact in [
            format!("pane={}", word("pane")),
            format!("class={}", word("class")),
            format!("runtime={}", word("runtime")),
            format!("({})", a["heartbeat"]["status_source"].as_str().unwrap()),
        ] {
            assert!(line.contains(&fact), "{fact:?} not in {line:?}");
        }
    }
    let (only, _) = call(&doc, 1);
    assert!(only.starts_with("1 agents\nbox1/worker "), "{only}");
    // The digest, then no change.
    let (d1, _) = call(&doc, 2);
    assert!(d1.starts_with("[fleet digest] "), "{d1}");
    assert!(d1.contains("worker alive"), "{d1}");
    let (d2, _) = call(&doc, 3);
    assert!(d2.starts_with("no change since "), "{d2}");

    // The granted send: a receipt, and both texts whole in the worker.
    let (receipt, err) = call(&doc, 4);
    assert!(!err, "{receipt}");
    assert!(
        receipt.starts_with("verdict=accepted") || receipt.starts_with("verdict=queued"),
        "{receipt}"
    );
    let screen = eventually("both texts in the worker", WAIT, async || {
        let s = pane_text(&f, "worker");
        let whole = |t: &str| s.lines().any(|l| l.contains(t));
        if whole("task from coord: build the parser") && whole("operator says: review PR 7") {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert!(
        !screen.contains("task from coord: build theoperator")
            && !screen.contains("operator says: review PR 7task"),
        "interleaved:\n{screen}"
    );
    // Who sent what, in the events.
    let events = f.events().await;
    let sent_by = |who: &str| {
        events.iter().any(|e| {
            e.kind == "sent"
                && e.agent == "worker"
                && e.fields.get("who").is_some_and(|w| w.contains(who))
        })
    };
    assert!(sent_by("agent:acme/box1/coord"), "{events:#?}");
    assert!(
        sent_by("uid "),
        "the operator's send names its uid: {events:#?}"
    );

    // Outside the grant: refused, an event and an audit line with who,
    // what and which target.
    let (denied, err) = call(&doc, 5);
    assert!(err, "{denied}");
    assert!(denied.contains("may not send acme/box1/loner"), "{denied}");
    assert!(
        events.iter().any(|e| e.kind == "agent-refused"
            && e.fields.get("who").map(String::as_str) == Some("agent:acme/box1/coord")
            && e.fields.get("target").map(String::as_str) == Some("acme/box1/loner")),
        "{events:#?}"
    );
    let audit = std::fs::read_to_string(f.run_dir.join("agents-audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |verb: &str, target: &str, outcome: &str| {
        lines.iter().any(|l| {
            l["who"] == "agent:acme/box1/coord"
                && l["verb"] == verb
                && l["target"] == target
                && l["outcome"].as_str().unwrap().starts_with(outcome)
        })
    };
    assert!(has("send", "acme/box1/loner", "denied"), "{audit}");
    assert!(
        has("send", "acme/box1/worker", "accepted") || has("send", "acme/box1/worker", "queued"),
        "{audit}"
    );
    assert!(
        has("need-human", "agent:acme/box1/coord", "raised"),
        "{audit}"
    );

    // need-human: an event with who, and the first mate is told.
    let (raised, err) = call(&doc, 6);
    assert!(!err, "{raised}");
    assert!(raised.contains("first mate are told"), "{raised}");
    assert!(events.iter().any(|e| e.kind == "need-human"
        && e.agent == "coord"
        && e.fields.get("who").map(String::as_str) == Some("agent:acme/box1/coord")));
    eventually("the first mate told", WAIT, async || {
        let s = pane_text(&f, "mate");
        if s.contains("[fleet NEED HUMAN] coord asks: coord needs a decision on the schema") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    let (recent, _) = call(&doc, 7);
    for kind in [" sent ", " agent-refused ", " need-human "] {
        assert!(recent.contains(kind), "{kind:?} in fleet_events:\n{recent}");
    }

    // An agent that may read only itself sees only itself, and may not
    // ask for a human.
    let plan = serde_json::json!([
        ["fleet_ps", {}],
        ["fleet_events", {"agent": "worker"}],
        ["fleet_need_human", {"text": "let me out"}],
    ]);
    let (line, out) = client_line(&f, &plan, "loner");
    type_into(&f, "loner", &line);
    let doc = output(&out).await;
    let (ps, _) = call(&doc, 0);
    assert!(ps.starts_with("1 agents\nbox1/loner "), "{ps}");
    let (ev, _) = call(&doc, 1);
    assert!(!ev.contains("worker"), "{ev}");
    let (nh, err) = call(&doc, 2);
    assert!(err && nh.contains("may.need_human: false"), "{nh}");

    // The same client outside every pane is no agent: refused.
    let plan = serde_json::json!([["fleet_ps", {}]]);
    let (_, out) = client_line(&f, &plan, "stranger");
    let status = Command::new(python())
        .arg(fixture())
        .arg(support::bin("fleetctl"))
        .arg(&f.socket)
        .arg(f.dir.path().join("stranger.plan.json"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let doc = output(&out).await;
    let (why, err) = call(&doc, 0);
    assert!(err && why.contains("runs in no agent's pane"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_host_send_goes_through_the_aggregator_for_a_granted_agent_only() {
    use support::fed::{Aggregator, Pki, agents, hosts, linked_hostd, wait_ps};
    python();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    let grants = "[operators.alice]\ntenants = [\"acme\"]\nverbs = [\"read\"]\n\
                  [agents.\"acme/box1/coord\"]\nread = [\"box2/*\"]\nsend = [\"box2/worker\"]\n";
    let mut agg = Aggregator::new(dir.path(), &pki, grants, "");
    agg.start();
    let both = "  - name: coord\n    runtime: shell\n    command: bash --norc --noprofile\n    may:\n      read: [\"*\", \"box2/*\"]\n      send: [\"box2/*\"]\n  - name: other\n    runtime: shell\n    command: bash --norc --noprofile\n    may:\n      send: [\"box2/*\"]\n";
    let mut box1 = linked_hostd(
        &pki,
        &agg,
        "acme",
        "box1",
        &format!("version: 1\ntransport: tmux\nagents:\n{both}"),
    );
    box1.start().await;
    let mut box2 = linked_hostd(
        &pki,
        &agg,
        "acme",
        "box2",
        "version: 1\ntransport: tmux\ndefaults:\n  heartbeat_interval_secs: 0.5\nagents:\n  - name: worker\n    runtime: demo\n    command: fleet-demo-agent --busy-ms 100\n",
    );
    box2.start().await;
    wait_ps(
        &pki,
        &agg,
        "alice",
        "both hosts linked, three agents alive",
        WAIT,
        |d| {
            hosts(d).iter().filter(|h| h["link"] == "connected").count() == 2
                && agents(d).len() == 3
                && agents(d).iter().all(|a| a["pane"] == "alive")
        },
    )
    .await;

    // Granted on both sides: read and send across.
    let plan = serde_json::json!([
        ["fleet_ps", {}],
        ["fleet_send", {"agent": "box2/worker", "text": "cross-host hello from coord"}],
    ]);
    let (line, out) = client_line(&box1, &plan, "coord");
    type_into(&box1, "coord", &line);
    let doc = output(&out).await;
    let (ps, _) = call(&doc, 0);
    assert!(ps.lines().any(|l| l.starts_with("box2/worker ")), "{ps}");
    assert!(ps.lines().any(|l| l.starts_with("box1/coord ")), "{ps}");
    let (receipt, err) = call(&doc, 1);
    assert!(!err, "{receipt}");
    assert!(receipt.contains("agent=box2/worker"), "{receipt}");
    eventually("the text in box2's worker", WAIT, async || {
        let s = pane_text(&box2, "worker");
        if s.contains("cross-host hello from coord") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    let events = box2.events().await;
    assert!(
        events.iter().any(|e| e.kind == "sent"
            && e.fields.get("who").map(String::as_str) == Some("agent:acme/box1/coord")),
        "the target's hostd names who asked: {events:#?}"
    );
    let audited = |who: &str, outcome: &str| {
        agg.audit_lines().iter().any(|l| {
            l["who"] == who
                && l["verb"] == "send"
                && l["target"] == "acme/box2/worker"
                && l["outcome"].as_str().unwrap_or("").starts_with(outcome)
        })
    };
    assert!(
        audited("agent:acme/box1/coord", "accepted") || audited("agent:acme/box1/coord", "queued")
    );

    // Its roster lets `other` send there too, but the aggregator has no
    // grant for it: refused there, and audited on both sides.
    let plan = serde_json::json!([
        ["fleet_send", {"agent": "box2/worker", "text": "other was here"}],
    ]);
    let (line, out) = client_line(&box1, &plan, "other");
    type_into(&box1, "other", &line);
    let doc = output(&out).await;
    let (why, err) = call(&doc, 0);
    assert!(err && why.contains("has no grant"), "{why}");
    assert!(
        agg.audit_lines()
            .iter()
            .any(|l| l["who"] == "agent:acme/box1/other"
                && l["outcome"].as_str().unwrap_or("").starts_with("denied")),
        "{:#?}",
        agg.audit_lines()
    );
    let local = std::fs::read_to_string(box1.run_dir.join("agents-audit.jsonl")).unwrap();
    assert!(
        local
            .lines()
            .any(|l| l.contains("agent:acme/box1/other") && l.contains("failed")),
        "{local}"
    );
    assert!(!pane_text(&box2, "worker").contains("other was here"));
}
