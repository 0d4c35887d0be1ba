//! Federation, end to end with real parts only: a development CA and
//! certificates from `fleetctl certs`, the real `fleet-aggregator` binary on
//! a loopback port, real hostds with their own tenant/host certificates and
//! tmux servers, and `fleetctl` as different operators.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_proto::v1::fleet_client::FleetClient;
use fleet_proto::v1::host_link_client::HostLinkClient;
use fleet_proto::v1::{
    ControlAction, ControlRequest, HostMessage, ListAgentsRequest, host_message,
};
use support::eventually;
use support::fed::{
    self, Aggregator, Pki, agents, fleetctl_as, fleetctl_with, hosts, linked_hostd, wait_ps,
};

use support::fed::ROSTER_BOX1;

const ROSTER_BOX2: &str = "\
version: 1
transport: tmux
agents:
  - name: worker
    runtime: demo
    command: fleet-demo-agent
    heartbeat_interval_secs: 1
  - name: reviewer
    runtime: shell
    command: bash --norc --noprofile
";

const GRANTS_ALICE: &str = "\
[operators.alice]
tenants = [\"*\"]
verbs = [\"read\", \"watch\", \"send\", \"control\", \"attach\"]

";

const GRANTS: &str = "\
[operators.alice]
tenants = [\"*\"]
verbs = [\"read\", \"watch\", \"send\", \"control\", \"attach\"]

[operators.bob]
tenants = [\"acme\"]
verbs = [\"read\"]
";

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn all_connected(doc: &serde_json::Value, n_hosts: usize, n_agents: usize) -> bool {
    let a = agents(doc);
    let h = hosts(doc);
    a.len() == n_agents
        && a.iter()
            .all(|r| r["pane"] == "alive" && r["heartbeat"]["health"] == "healthy")
        && h.len() == n_hosts
        && h.iter().all(|h| h["link"] == "connected")
}

fn keys(doc: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = agents(doc)
        .iter()
        .map(|r| {
            format!(
                "{}/{}/{}",
                r["tenant_id"].as_str().unwrap(),
                r["host"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

/// The usual bed: a PKI with `operators`, an aggregator, acme/box1 and
/// globex/box2 linked to it, and alice seeing every agent healthy.
struct Bed {
    dir: tempfile::TempDir,
    pki: Pki,
    agg: Aggregator,
    box1: support::Fleet,
    box2: support::Fleet,
    doc: serde_json::Value,
}

async fn two_hosts(operators: &[&str]) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    for op in operators {
        pki.operator(op);
    }
    let mut agg = Aggregator::new(dir.path(), &pki, GRANTS, "");
    agg.start();
    let mut box1 = linked_hostd(&pki, &agg, "acme", "box1", ROSTER_BOX1);
    box1.start().await;
    let mut box2 = linked_hostd(&pki, &agg, "globex", "box2", ROSTER_BOX2);
    box2.start().await;
    let doc = wait_ps(
        &pki,
        &agg,
        "alice",
        "both hosts, every agent healthy",
        Duration::from_secs(30),
        |d| all_connected(d, 2, 4),
    )
    .await;
    Bed {
        dir,
        pki,
        agg,
        box1,
        box2,
        doc,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_view_of_two_tenants_with_relayed_commands_and_default_deny() {
    // One view across tenants and hosts.
    let Bed {
        dir: _dir,
        pki,
        agg,
        box1,
        box2,
        doc,
    } = two_hosts(&["alice", "bob", "eve"]).await;
    assert_eq!(
        keys(&doc),
        [
            "acme/box1/coder0",
            "acme/box1/worker",
            "globex/box2/reviewer",
            "globex/box2/worker"
        ]
    );
    let out = fleetctl_as(&pki, &agg, "alice", &["hosts", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for row in h["hosts"].as_array().unwrap() {
        assert_eq!(row["link"], "connected");
        assert_eq!(row["via"], "agg-test");
        assert_eq!(row["agents_total"], 2);
        assert!(row["last_seen_unix_ms"].as_i64().unwrap() > 0);
    }

    // bob is granted tenant acme only: he never sees globex.
    let doc = wait_ps(
        &pki,
        &agg,
        "bob",
        "bob's view",
        Duration::from_secs(5),
        |d| agents(d).len() == 2,
    )
    .await;
    assert_eq!(keys(&doc), ["acme/box1/coder0", "acme/box1/worker"]);

    // A short address matching two hosts is an error listing both.
    let out = fleetctl_as(&pki, &agg, "alice", &["send", "worker", "hi"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("ambiguous")
            && e.contains("acme/box1/worker")
            && e.contains("globex/box2/worker"),
        "{e}"
    );

    // send --verify goes to the right host, with the caller's trace id.
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let out = fleetctl_as(
        &pki,
        &agg,
        "alice",
        &[
            "send",
            "box2/worker",
            "hello from afar",
            "--verify",
            "--json",
        ],
        &[("TRACEPARENT", tp)],
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), agg.log());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tenant_id"], "globex");
    assert_eq!(r["host"], "box2");
    assert_eq!(r["verdict"], "accepted");
    assert_eq!(r["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    let sent = box2
        .wait_event("sent on box2", |e| e.kind == "sent" && e.agent == "worker")
        .await;
    assert_eq!(sent.fields["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert!(
        !box1.events().await.iter().any(|e| e.kind == "sent"),
        "box1 got a send"
    );

    // watch --once is relayed too.
    let out = fleetctl_as(
        &pki,
        &agg,
        "alice",
        &["watch", "--once", "--json", "globex/box2/reviewer"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            f["tenant_id"].as_str(),
            f["host"].as_str(),
            f["agent"].as_str()
        ),
        (Some("globex"), Some("box2"), Some("reviewer"))
    );
    assert!(f["lines"].as_array().unwrap().len() >= 5);

    // control: stop then start through the aggregator. A command's answer
    // comes after the change it made: the very next `ps` shows it.
    let pane_of = |name: &str| -> String {
        let out = fleetctl_as(&pki, &agg, "alice", &["ps", "--json"], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        agents(&d)
            .iter()
            .find(|r| r["host"] == "box1" && r["name"] == name)
            .map(|r| r["pane"].as_str().unwrap().to_owned())
            .unwrap()
    };
    for (verb, pane) in [("stop", "missing"), ("start", "alive")] {
        let out = fleetctl_as(&pki, &agg, "alice", &[verb, "acme/box1/coder0"], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(pane_of("coder0"), pane, "right after {verb}");
    }

    // Default deny: bob may only read; eve has no grant at all.
    for args in [
        vec!["send", "acme/box1/worker", "x"],
        vec!["watch", "--once", "acme/box1/worker"],
        vec!["stop", "acme/box1/worker"],
        vec!["reset", "acme/box1/worker"],
    ] {
        let out = fleetctl_as(&pki, &agg, "bob", &args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("refused by the aggregator: operator bob may not"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let (cert, key) = pki.pair("operator-bob");
    let mut bob = fleetctl::client::connect_remote(&fleetctl::client::Remote {
        aggregator: Some(agg.address()),
        ca: Some(pki.ca()),
        cert: Some(cert),
        key: Some(key),
        server_name: None,
        context: None,
    })
    .await
    .unwrap();
    let denied = bob
        .control(ControlRequest {
            agent: "acme/box1/worker".into(),
            action: ControlAction::Attach as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let out = fleetctl_as(&pki, &agg, "eve", &["ps"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("operator eve has no grants"),
        "{}",
        stderr(&out)
    );

    // The audit log: one line per command and per refusal.
    let audit = agg.audit_lines();
    let send_line = audit
        .iter()
        .find(|l| l["verb"] == "send" && l["outcome"] == "accepted")
        .expect("audited send");
    assert_eq!(send_line["who"], "spiffe://fleet.test/operator/alice");
    assert_eq!(send_line["target"], "globex/box2/worker");
    assert_eq!(send_line["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(send_line["bytes"], 15);
    for verb in ["send", "watch", "control", "attach"] {
        assert!(
            audit
                .iter()
                .any(|l| l["who"] == "spiffe://fleet.test/operator/bob"
                    && l["verb"] == verb
                    && l["outcome"].as_str().unwrap().starts_with("denied")),
            "no denial of {verb} audited: {audit:#?}"
        );
    }
    assert!(
        audit
            .iter()
            .any(|l| l["who"] == "spiffe://fleet.test/operator/eve" && l["kind"] == "security")
    );
    assert!(
        !audit
            .iter()
            .any(|l| l["verb"] == "beat" || l["verb"] == "hello" && l["outcome"] == "ok")
    );

    // Events of every host reach the operator through the aggregator.
    let out = fleetctl_as(
        &pki,
        &agg,
        "alice",
        &["events", "--no-follow", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let evs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        evs.iter()
            .any(|e| e["kind"] == "sent" && e["host"] == "box2")
    );
    assert!(
        evs.iter()
            .any(|e| e["kind"] == "host-connected" && e["host"] == "box1")
    );

    // Grants reload without a restart: bob may now watch.
    std::fs::write(
        &agg.authz,
        "[operators.bob]\ntenants = [\"acme\"]\nverbs = [\"read\", \"watch\"]\n",
    )
    .unwrap();
    eventually("grants reloaded", Duration::from_secs(10), async || {
        let out = fleetctl_as(
            &pki,
            &agg,
            "bob",
            &["watch", "--once", "acme/box1/worker"],
            &[],
        );
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| stderr(&out))
    })
    .await;
    drop(box1);
    drop(box2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_at_the_handshake_and_a_host_cannot_claim_another() {
    fleet_net::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    let mut agg = Aggregator::new(dir.path(), &pki, GRANTS, "");
    agg.start();
    // A healthy host link, which the certificate rotation below must not drop.
    let mut box9 = linked_hostd(&pki, &agg, "acme", "box9", ROSTER_BOX1);
    box9.start().await;
    wait_ps(
        &pki,
        &agg,
        "alice",
        "box9 linked",
        Duration::from_secs(30),
        |d| all_connected(d, 1, 2),
    )
    .await;

    // A certificate from another CA.
    let other = Pki::new(&dir.path().join("other"));
    let (cert, key) = other.operator("alice");
    let out = fleetctl_with(&agg, [&pki.ca(), &cert, &key], &["ps", "--json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach fleet-aggregator")
            && stderr(&out).contains("refused this client's certificate"),
        "{}",
        stderr(&out)
    );
    // ... and an operator who trusts another CA refuses the aggregator.
    let (cert_a, key_a) = pki.pair("operator-alice");
    let out = fleetctl_with(&agg, [&other.ca(), &cert_a, &key_a], &["ps", "--json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not trust the aggregator's certificate"),
        "{}",
        stderr(&out)
    );

    // No client certificate at all.
    let roots = fleet_net::tls::load_roots(&pki.ca()).unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(agg.address()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let refused = match tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
    {
        Err(_) => true,
        Ok(mut s) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 64];
            !matches!(s.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate got through");

    // A hostd certificate for acme/box1 saying Hello as globex/box1.
    let (hcert, hkey) = pki.host("acme", "box1");
    let channel = channel_as(&pki, &agg, &hcert, &hkey);
    let hello = HostMessage {
        msg: Some(host_message::Msg::Hello(fleet_proto::v1::Hello {
            tenant_id: "globex".into(),
            host: "box1".into(),
            boot_epoch: 7,
            protocol: 1,
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello).await.unwrap();
    let err = HostLinkClient::new(channel.clone())
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("tenant acme host box1"),
        "{}",
        err.message()
    );
    // ... and a host certificate is not an operator.
    let err = FleetClient::new(channel)
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    eventually("refusals audited", Duration::from_secs(20), async || {
        let audit = agg.audit_lines();
        let handshake = audit.iter().filter(|l| l["verb"] == "handshake").count();
        let hello = audit.iter().any(|l| {
            l["verb"] == "hello"
                && l["who"] == "spiffe://fleet.test/tenant/acme/host/box1"
                && l["target"] == "globex/box1"
                && l["outcome"].as_str().unwrap().starts_with("refused")
        });
        (handshake >= 2 && hello)
            .then_some(())
            .ok_or_else(|| format!("{audit:#?}"))
    })
    .await;

    // The aggregator's certificate is replaced on disk: new connections get
    // the new one, without a restart.
    let before = server_cert(&pki, &agg).await;
    std::fs::remove_file(pki.dir.join("aggregator.pem")).unwrap();
    std::fs::remove_file(pki.dir.join("aggregator.key")).unwrap();
    fed_issue_aggregator(&pki);
    let new = std::fs::read(pki.dir.join("aggregator.pem")).unwrap();
    let new_der = rustls::pki_types::CertificateDer::from_pem_slice(&new).unwrap();
    assert_ne!(before, new_der.as_ref());
    eventually("rotation picked up", Duration::from_secs(10), async || {
        (server_cert(&pki, &agg).await == new_der.as_ref())
            .then_some(())
            .ok_or_else(|| agg.log())
    })
    .await;

    // A CA rollover: the other CA is added to the bundle on disk, and its
    // operator certificate is let in without a restart.
    let bundle = [
        std::fs::read_to_string(pki.ca()).unwrap(),
        std::fs::read_to_string(other.ca()).unwrap(),
    ]
    .concat();
    std::fs::write(pki.ca(), bundle).unwrap();
    eventually(
        "CA rollover picked up",
        Duration::from_secs(10),
        async || {
            let out = fleetctl_with(&agg, [&pki.ca(), &cert, &key], &["ps", "--json"], &[]);
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| format!("{}\n{}", stderr(&out), agg.log()))
        },
    )
    .await;

    // A bundle edited into garbage is refused and audited; the last good one
    // stays in force.
    let good = dir.path().join("good-ca.pem");
    std::fs::copy(pki.ca(), &good).unwrap();
    std::fs::write(pki.ca(), "not a certificate\n").unwrap();
    eventually(
        "refused bundle audited",
        Duration::from_secs(10),
        async || {
            let audit = agg.audit_lines();
            audit
                .iter()
                .any(|l| {
                    l["verb"] == "reload"
                        && l["target"] == "ca"
                        && l["outcome"].as_str().unwrap().starts_with("refused")
                })
                .then_some(())
                .ok_or_else(|| format!("{audit:#?}"))
        },
    )
    .await;
    let out = fleetctl_with(&agg, [&good, &cert, &key], &["ps", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::copy(&good, pki.ca()).unwrap();

    // Through all of it, box9's link was never dropped.
    let log = agg.log();
    let ups = log
        .lines()
        .filter(|l| l.contains("host link up") && l.contains("acme/box9"))
        .count();
    assert_eq!(ups, 1, "{log}");
    assert!(!log.contains("host link down"), "{log}");
}

use rustls::pki_types::pem::PemObject;

fn fed_issue_aggregator(pki: &Pki) {
    let out = std::process::Command::new(support::bin("fleetctl"))
        .args(["certs", "issue", "--dir"])
        .arg(&pki.dir)
        .args(["aggregator", "--ip", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The certificate a fresh connection is served.
async fn server_cert(pki: &Pki, agg: &Aggregator) -> Vec<u8> {
    let (cert, key) = pki.pair("operator-alice");
    let me = fleet_net::tls::Reloading::load(&cert, &key).unwrap();
    let cfg =
        fleet_net::tls::client_config(fleet_net::tls::Trust::load(&pki.ca()).unwrap(), me).unwrap();
    let tcp = tokio::net::TcpStream::connect(agg.address()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_survives_an_aggregator_kill_and_a_partitioned_host_is_unreachable_not_gone() {
    let Bed {
        dir: _dir,
        pki,
        mut agg,
        box1,
        box2,
        ..
    } = two_hosts(&["alice"]).await;
    let pids = |a: Vec<fleet_proto::v1::AgentRow>| {
        let mut p: Vec<(String, u32)> = a.into_iter().map(|r| (r.name, r.pane_pid)).collect();
        p.sort();
        p
    };
    let before = (pids(box1.agents().await), pids(box2.agents().await));

    // kill -9 and start again on the same port: the hostds bring it all back.
    agg.kill();
    let out = fleetctl_as(&pki, &agg, "alice", &["ps"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing listens there"),
        "{}",
        stderr(&out)
    );
    agg.start();
    let t0 = Instant::now();
    wait_ps(
        &pki,
        &agg,
        "alice",
        "the view after a restart",
        Duration::from_secs(20),
        |d| all_connected(d, 2, 4),
    )
    .await;
    eprintln!("full view back {:?} after the restart", t0.elapsed());
    assert_eq!(
        (pids(box1.agents().await), pids(box2.agents().await)),
        before,
        "an agent was restarted"
    );

    // Freeze box1's hostd (its traffic stops, its socket stays open): after
    // the lease it is unreachable, its rows kept, dated and marked.
    box1.signal_hostd(rustix::process::Signal::STOP);
    let doc = wait_ps(
        &pki,
        &agg,
        "alice",
        "box1 unreachable",
        Duration::from_secs(15),
        |d| {
            hosts(d)
                .iter()
                .any(|h| h["host"] == "box1" && h["link"] == "unreachable")
        },
    )
    .await;
    let box1_rows: Vec<_> = agents(&doc)
        .into_iter()
        .filter(|r| r["host"] == "box1")
        .collect();
    assert_eq!(
        box1_rows.len(),
        2,
        "rows of an unreachable host must be kept"
    );
    for r in &box1_rows {
        assert_eq!(r["heartbeat"]["health"], "unknown");
        assert!(
            r["heartbeat"]["reason"]
                .as_str()
                .unwrap()
                .contains("host unreachable; last seen")
        );
        assert!(
            r["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "unreachable")
        );
        assert!(r["pid"].as_u64().unwrap() > 0, "last known values kept");
    }
    assert!(
        hosts(&doc)
            .iter()
            .any(|h| h["host"] == "box2" && h["link"] == "connected")
    );
    // Commands to it fail fast and say why; nothing is queued.
    let t = Instant::now();
    let out = fleetctl_as(
        &pki,
        &agg,
        "alice",
        &["send", "box1/coder0", "are you there"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );

    box1.signal_hostd(rustix::process::Signal::CONT);
    wait_ps(
        &pki,
        &agg,
        "alice",
        "box1 back",
        Duration::from_secs(30),
        |d| all_connected(d, 2, 4),
    )
    .await;
    assert!(
        !box1.events().await.iter().any(|e| e.kind == "sent"),
        "a command was queued and replayed"
    );
}

mod otlp {
    //! A real OTLP/gRPC receiver: the collector's trace, logs and metrics
    //! services.
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    pub use opentelemetry_proto::tonic::logs::v1::LogRecord;
    pub use opentelemetry_proto::tonic::metrics::v1::Metric;

    /// (service.name, span name, trace id hex) of every span received.
    #[derive(Clone, Default)]
    pub struct Receiver(pub Arc<Mutex<Vec<(String, String, String)>>>);

    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut got = self.0.lock().unwrap();
            for rs in req.into_inner().resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| r.attributes.iter())
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        let id: String = s.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        got.push((service.clone(), s.name, id));
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    fn service_of(r: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
        r.into_iter()
            .flat_map(|r| r.attributes.iter())
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default()
    }

    /// Every log record received, with the service that sent it.
    #[derive(Clone, Default)]
    pub struct Logs(pub Arc<Mutex<Vec<(String, LogRecord)>>>);

    #[tonic::async_trait]
    impl LogsService for Logs {
        async fn export(
            &self,
            req: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let mut got = self.0.lock().unwrap();
            for rl in req.into_inner().resource_logs {
                let service = service_of(rl.resource.as_ref());
                for sl in rl.scope_logs {
                    got.extend(sl.log_records.into_iter().map(|l| (service.clone(), l)));
                }
            }
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        }
    }

    /// The newest metrics each service sent, by name.
    #[derive(Clone, Default)]
    pub struct Metrics(pub Arc<Mutex<std::collections::HashMap<(String, String), Metric>>>);

    #[tonic::async_trait]
    impl MetricsService for Metrics {
        async fn export(
            &self,
            req: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let mut got = self.0.lock().unwrap();
            for rm in req.into_inner().resource_metrics {
                let service = service_of(rm.resource.as_ref());
                for sm in rm.scope_metrics {
                    for m in sm.metrics {
                        got.insert((service.clone(), m.name.clone()), m);
                    }
                }
            }
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    /// A collector answering traces, logs and metrics on one port.
    pub async fn start() -> (String, Receiver, Logs, Metrics) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Receiver::default();
        let logs = Logs::default();
        let metrics = Metrics::default();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r.clone()))
                .add_service(LogsServiceServer::new(logs.clone()))
                .add_service(MetricsServiceServer::new(metrics.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (format!("http://{addr}"), r, logs, metrics)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_is_one_trace_across_fleetctl_aggregator_hostd_and_tmux() {
    let (endpoint, receiver, logs, metrics) = otlp::start().await;
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "200".to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    let mut agg = Aggregator::new(dir.path(), &pki, GRANTS, "");
    agg.env = env.clone();
    agg.start();
    let mut box1 = linked_hostd(&pki, &agg, "acme", "box1", ROSTER_BOX1);
    box1.env = env.clone();
    box1.start().await;
    wait_ps(
        &pki,
        &agg,
        "alice",
        "box1 linked",
        Duration::from_secs(30),
        |d| all_connected(d, 1, 2),
    )
    .await;

    let out = fleetctl_as(
        &pki,
        &agg,
        "alice",
        &["send", "acme/box1/worker", "traced", "--verify", "--json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let trace = r["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(trace.len(), 32);

    eventually("one whole trace", Duration::from_secs(15), async || {
        let spans: Vec<(String, String, String)> = receiver
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.2 == trace)
            .cloned()
            .collect();
        let from = |svc: &str, name: &str| spans.iter().any(|s| s.0.contains(svc) && s.1 == name);
        (from("\"fleetctl\"", "fleetctl")
            && from("\"fleet-aggregator\"", "aggregator")
            && from("\"fleet-hostd\"", "hostd")
            && from("\"fleet-hostd\"", "tmux"))
        .then_some(())
        .ok_or_else(|| {
            format!(
                "trace {trace} incomplete; spans with it: {spans:#?}\nall: {}",
                receiver.0.lock().unwrap().len()
            )
        })
    })
    .await;

    // The lifecycle events as OTLP log records: the send's carries its
    // trace and verdict, from hostd and (forwarded) from the aggregator.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let attr = |l: &otlp::LogRecord, k: &str| {
        l.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default()
    };
    eventually(
        "the sent event as a log record",
        Duration::from_secs(15),
        async || {
            let got = logs.0.lock().unwrap().clone();
            let sent = |svc: &str| {
                got.iter().any(|(s, l)| {
                    s.contains(svc)
                        && l.event_name == "fleet.sent"
                        && hex(&l.trace_id) == trace
                        && attr(l, "fleet.verdict").contains("VERDICT_")
                        && attr(l, "fleet.agent").contains("worker")
                })
            };
            let started = got
                .iter()
                .any(|(s, l)| s.contains("\"fleet-hostd\"") && l.event_name == "fleet.started");
            (sent("\"fleet-hostd\"") && sent("\"fleet-aggregator\"") && started)
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "log records: {:#?}",
                        got.iter()
                            .map(|(s, l)| (s.clone(), l.event_name.clone(), hex(&l.trace_id)))
                            .collect::<Vec<_>>()
                    )
                })
        },
    )
    .await;

    // The metrics Prometheus serves, the same registry over OTLP: agents
    // as a gauge (two on box1), sends as a monotonic sum with a verdict.
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
    let value = |v: &Option<Value>| match v {
        Some(Value::AsDouble(d)) => *d,
        Some(Value::AsInt(i)) => *i as f64,
        None => 0.0,
    };
    eventually("agents and sends as OTLP metrics", Duration::from_secs(15), async || {
        let got = metrics.0.lock().unwrap().clone();
        let agents = |svc: &str| match got
            .get(&(svc.to_owned(), "fleet_agents".to_owned()))
            .and_then(|m| m.data.clone())
        {
            Some(Data::Gauge(g)) => g.data_points.iter().map(|p| value(&p.value)).sum::<f64>(),
            _ => -1.0,
        };
        let sends = |svc: &str| match got
            .get(&(svc.to_owned(), "fleet_sends".to_owned()))
            .and_then(|m| m.data.clone())
        {
            Some(Data::Sum(s)) if s.is_monotonic => {
                s.data_points.iter().map(|p| value(&p.value)).sum::<f64>()
            }
            _ => -1.0,
        };
        let latency = matches!(
            got.get(&("Some(StringValue(\"fleet-hostd\"))".to_owned(), "fleet_send_verdict_seconds".to_owned()))
                .and_then(|m| m.data.clone()),
            Some(Data::Histogram(h)) if h.data_points.iter().any(|p| p.count >= 1 && p.bucket_counts.len() == p.explicit_bounds.len() + 1)
        );
        let hostd = "Some(StringValue(\"fleet-hostd\"))";
        let agg = "Some(StringValue(\"fleet-aggregator\"))";
        (agents(hostd) == 2.0 && agents(agg) == 2.0 && sends(hostd) >= 1.0 && sends(agg) >= 1.0 && latency)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "agents {} / {}, sends {} / {}, latency histogram {latency}; names: {:?}",
                    agents(hostd),
                    agents(agg),
                    sends(hostd),
                    sends(agg),
                    got.keys().collect::<Vec<_>>()
                )
            })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_aggregators_side_by_side_each_have_the_whole_view() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    let mut a = Aggregator::new(dir.path(), &pki, GRANTS, "");
    let mut b = Aggregator::new(&dir.path().join("b"), &pki, GRANTS, "");
    a.start();
    b.start();
    let (cert, key) = pki.host("acme", "box1");
    let both = format!(
        "aggregators = [\"{}\", \"{}\"]\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        a.address(),
        b.address(),
        pki.ca().display(),
        cert.display(),
        key.display()
    );
    let mut box1 = support::Fleet::with_identity("acme", "box1", ROSTER_BOX1, &both);
    box1.start().await;
    for agg in [&a, &b] {
        wait_ps(
            &pki,
            agg,
            "alice",
            "the view on each aggregator",
            Duration::from_secs(30),
            |d| all_connected(d, 1, 2),
        )
        .await;
    }
    // Losing one aggregator disturbs neither the other nor the agents.
    let pids: Vec<u32> = box1.agents().await.iter().map(|r| r.pane_pid).collect();
    a.kill();
    let out = fleetctl_as(
        &pki,
        &b,
        "alice",
        &["send", "coder0", "still here", "--verify", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_ps(
        &pki,
        &b,
        "alice",
        "b still connected",
        Duration::from_secs(5),
        |d| all_connected(d, 1, 2),
    )
    .await;
    assert_eq!(
        box1.agents()
            .await
            .iter()
            .map(|r| r.pane_pid)
            .collect::<Vec<_>>(),
        pids
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_generated_from_proto_works_unchanged() {
    let python =
        std::env::var("FLEET_TEST_PYTHON").unwrap_or_else(|_| "/opt/fleet-py/bin/python3".into());
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} missing: deploy/test.sh installs grpcio (ensure_python_grpc)"
    );
    let Bed {
        dir,
        pki,
        agg,
        box1: _box1,
        box2: _box2,
        ..
    } = two_hosts(&["alice", "bob"]).await;

    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let stubgen = std::process::Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg("fleet/v1/fleet.proto")
        .output()
        .unwrap();
    assert!(stubgen.status.success(), "{}", stderr(&stubgen));
    let (cert, key) = pki.pair("operator-bob");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/py_client.py");
    let out = std::process::Command::new(&python)
        .arg(fixture)
        .arg(&stubs)
        .arg(format!("localhost:{}", agg.port))
        .arg(pki.ca())
        .arg(cert)
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["health"], "SERVING");
    // bob reads tenant acme only, and may not send.
    assert_eq!(
        r["agents"],
        serde_json::json!(["acme/box1/coder0", "acme/box1/worker"])
    );
    assert_eq!(r["links"], serde_json::json!(["acme/box1=connected"]));
    assert_eq!(r["send"], "PERMISSION_DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn need_human_reaches_the_operators_of_that_tenant_through_the_aggregator() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    pki.operator("bob");
    let mut agg = Aggregator::new(dir.path(), &pki, GRANTS, "");
    agg.start();
    let roster = "\
version: 1
runtimes:
  crasher:
    command: sleep 0.3
    process_names: [sleep]
supervision:
  tick_ms: 50
  respawn:
    max_deaths: 1
    initial_delay_secs: 0
agents:
  - name: flaky
    runtime: crasher
  - name: asker
    runtime: demo
    command: fleet-demo-agent --busy-ms 50
";
    let config = format!(
        "supervise = true\n{}",
        fed::link_config(&pki, &agg, "acme", "box1")
    );
    let mut box1 = support::Fleet::with_identity("acme", "box1", roster, &config);
    box1.start().await;
    // bob reads tenant acme: he sees the escalation, with its reason.
    let need = eventually(
        "need-human through the aggregator",
        Duration::from_secs(20),
        async || {
            let out = fleetctl_as(&pki, &agg, "bob", &["events", "--no-follow", "--json"], &[]);
            assert!(out.status.success(), "{}", stderr(&out));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let need: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|e| e["kind"] == "need-human")
                .collect();
            need.into_iter()
                .next()
                .ok_or_else(|| format!("{text}\n{}", box1.log()))
        },
    )
    .await;
    assert_eq!(
        (
            need["tenant_id"].as_str(),
            need["host"].as_str(),
            need["agent"].as_str()
        ),
        (Some("acme"), Some("box1"), Some("flaky"))
    );
    assert!(
        need["message"].as_str().unwrap().contains("not respawning"),
        "{need}"
    );
    // An agent asking a human: the event reaches bob, and the merged view
    // says waiting, natively.
    box1.wait_for("asker up", Duration::from_secs(20), |a| {
        support::find(a, "asker").is_some_and(|r| r.process.is_some())
    })
    .await;
    let out = box1.fleetctl(&["send", "asker", "/ask deploy to production?", "--verify"]);
    assert!(matches!(out.status.code(), Some(0 | 5)), "{}", stderr(&out));
    let waiting = eventually(
        "waiting through the aggregator",
        Duration::from_secs(20),
        async || {
            let out = fleetctl_as(&pki, &agg, "bob", &["events", "--no-follow", "--json"], &[]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|e| e["kind"] == "waiting-for-human" && e["agent"] == "asker")
                .ok_or_else(|| "no waiting-for-human yet".to_owned())
        },
    )
    .await;
    assert_eq!(waiting["tenant_id"], "acme");
    let out = fleetctl_as(&pki, &agg, "bob", &["ps", "--json"], &[]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "asker")
        .unwrap()
        .clone();
    assert_eq!(row["heartbeat"]["status"], "waiting", "{row}");
    assert_eq!(row["heartbeat"]["status_source"], "native", "{row}");
}

/// A raw client as operator `name` (what fleetctl would never send).
fn operator_channel(pki: &Pki, agg: &Aggregator, name: &str) -> tonic::transport::Channel {
    let (cert, key) = pki.pair(&format!("operator-{name}"));
    channel_as(pki, agg, &cert, &key)
}

/// An mTLS channel to `agg` presenting `cert`/`key`, trusting the test CA.
fn channel_as(
    pki: &Pki,
    agg: &Aggregator,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> tonic::transport::Channel {
    let me = fleet_net::tls::Reloading::load(cert, key).unwrap();
    let dial = fleet_net::transport::Dial {
        address: agg.address(),
        tls: Some(Arc::new(
            fleet_net::tls::client_config(fleet_net::tls::Trust::load(&pki.ca()).unwrap(), me)
                .unwrap(),
        )),
        server_name: None,
    };
    fleet_net::transport::channel(&dial, Duration::from_secs(5)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_early_still_leaves_one_complete_audit_line_per_command() {
    use fleet_proto::v1::SendRequest;
    let Bed {
        dir: _dir,
        pki,
        agg,
        box1,
        box2: _box2,
        ..
    } = two_hosts(&["alice", "bob"]).await;
    let mut c = FleetClient::new(operator_channel(&pki, &agg, "alice"));
    let trace = |i: usize| format!("{:032x}", 0xfeed_0000 + i);
    let mut traces = Vec::new();
    for i in 0..5 {
        let mut req = tonic::Request::new(SendRequest {
            agent: "acme/box1/worker".into(),
            text: format!("prompt {i}").into_bytes(),
            verify: true,
            verify_timeout_ms: 4_000_000_000,
            traceparent: format!("00-{}-00f067aa0ba902b7-01", trace(i)),
            ..Default::default()
        });
        req.set_timeout(Duration::from_millis(10 + 10 * i as u64));
        let _ = c.send(req).await;
        traces.push(trace(i));
    }
    let mut req = tonic::Request::new(ControlRequest {
        agent: "acme/box1/coder0".into(),
        action: ControlAction::Stop as i32,
        traceparent: format!("00-{}-00f067aa0ba902b7-01", trace(9)),
        operator: String::new(),
    });
    req.set_timeout(Duration::from_millis(10));
    let _ = c.control(req).await;
    traces.push(trace(9));
    // bob may not send: the denial names its target.
    let mut bob = FleetClient::new(operator_channel(&pki, &agg, "bob"));
    let err = bob
        .send(SendRequest {
            agent: "acme/box1/worker".into(),
            text: b"no".to_vec(),
            traceparent: format!("00-{}-00f067aa0ba902b7-01", trace(7)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    eventually(
        "every command audited",
        Duration::from_secs(20),
        async || {
            let audit = agg.audit_lines();
            let done = |t: &str| {
                audit
                    .iter()
                    .filter(|l| l["trace_id"] == t && l["phase"] == "done")
                    .count()
            };
            if traces.iter().all(|t| done(t) == 1) {
                Ok(())
            } else {
                Err(format!("{audit:#?}"))
            }
        },
    )
    .await;
    let audit = agg.audit_lines();
    for t in &traces {
        let lines: Vec<&serde_json::Value> = audit.iter().filter(|l| l["trace_id"] == *t).collect();
        assert_eq!(
            lines.len(),
            2,
            "one intent and one outcome for {t}: {lines:#?}"
        );
        let (intent, done) = (lines[0], lines[1]);
        assert_eq!(intent["phase"], "intent");
        assert_eq!(done["phase"], "done");
        assert_eq!(intent["command_id"], done["command_id"]);
        assert_eq!(done["who"], "spiffe://fleet.test/operator/alice");
        assert!(
            done["target"].as_str().unwrap().starts_with("acme/box1/"),
            "{done}"
        );
        assert!(!done["outcome"].as_str().unwrap().is_empty(), "{done}");
    }
    let sends: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|l| l["verb"] == "send" && l["phase"] == "done")
        .collect();
    assert!(
        sends.iter().all(|l| l["bytes"].as_u64().is_some()),
        "{sends:#?}"
    );
    assert!(
        sends
            .iter()
            .any(|l| l["outcome"].as_str().unwrap().contains("caller gone")),
        "{sends:#?}"
    );
    let denial = audit
        .iter()
        .find(|l| l["who"] == "spiffe://fleet.test/operator/bob" && l["verb"] == "send")
        .expect("bob's denial");
    assert_eq!(denial["target"], "acme/box1/worker", "{denial}");
    // The host was told: the verify loops nobody waits for stopped there.
    box1.wait_event("send abandoned on the host", |e| {
        e.kind == "send-abandoned" && e.agent == "worker"
    })
    .await;
    assert_eq!(denial["trace_id"], trace(7), "{denial}");
    assert_eq!(denial["bytes"], 2, "{denial}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_host_would_refuse_is_refused_before_it_can_break_the_link() {
    use fleet_proto::v1::SendRequest;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    let mut agg = Aggregator::new(dir.path(), &pki, GRANTS, "");
    agg.start();
    // Its own send limit above what its link decodes (4 MiB).
    let mut box1 = support::Fleet::with_identity(
        "acme",
        "box1",
        ROSTER_BOX1,
        &format!(
            "send_limit_bytes = 16777216\n{}",
            fed::link_config(&pki, &agg, "acme", "box1")
        ),
    );
    box1.start().await;
    let mut box3 = linked_hostd(&pki, &agg, "acme", "box3", ROSTER_BOX1);
    box3.start().await;
    wait_ps(
        &pki,
        &agg,
        "alice",
        "linked",
        Duration::from_secs(30),
        |d| all_connected(d, 2, 4),
    )
    .await;
    let mut c = FleetClient::new(operator_channel(&pki, &agg, "alice"));
    let send = |agent: &str, n: usize| SendRequest {
        agent: agent.into(),
        text: vec![b'x'; n],
        ..Default::default()
    };
    // Over the host's send limit (64 KiB by default).
    let err = c.send(send("acme/box3/worker", 100_000)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("send_limit_bytes"),
        "{}",
        err.message()
    );
    // Within the host's send limit but over what its link decodes.
    let err = c
        .send(send("acme/box1/worker", 5_000_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("4194304"), "{}", err.message());
    // Neither link broke: both hosts take the next command at once.
    for agent in ["acme/box1/worker", "acme/box3/worker"] {
        c.send(send(agent, 10)).await.unwrap();
    }
    let doc = wait_ps(
        &pki,
        &agg,
        "alice",
        "still linked",
        Duration::from_secs(5),
        |d| all_connected(d, 2, 4),
    )
    .await;
    assert_eq!(hosts(&doc).len(), 2);
    let audit = agg.audit_lines();
    for (target, bytes) in [
        ("acme/box3/worker", 100_000),
        ("acme/box1/worker", 5_000_000),
    ] {
        assert!(
            audit.iter().any(|l| l["target"] == target
                && l["bytes"] == bytes
                && l["outcome"].as_str().unwrap().starts_with("failed")),
            "{target}: {audit:#?}"
        );
    }
}

/// A raw host link as `tenant`/`host` with that host's own certificate:
/// the messages go up as the test writes them.
async fn raw_host(
    pki: &Pki,
    agg: &Aggregator,
    tenant: &str,
    host: &str,
    epoch: u64,
) -> (
    tokio::sync::mpsc::Sender<HostMessage>,
    Result<tonic::Streaming<fleet_proto::v1::AggregatorMessage>, tonic::Status>,
) {
    let (cert, key) = pki.host(tenant, host);
    let channel = channel_as(pki, agg, &cert, &key);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(HostMessage {
        msg: Some(host_message::Msg::Hello(fleet_proto::v1::Hello {
            tenant_id: tenant.into(),
            host: host.into(),
            boot_epoch: epoch,
            protocol: 1,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let down = HostLinkClient::new(channel)
        .max_encoding_message_size(64 * 1024 * 1024)
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    (tx, down.map(tonic::Response::into_inner))
}

fn snapshot(
    epoch: u64,
    seq: u64,
    agents: Vec<fleet_proto::v1::AgentRow>,
    more: bool,
) -> HostMessage {
    HostMessage {
        msg: Some(host_message::Msg::Update(fleet_proto::v1::FleetUpdate {
            epoch,
            seq,
            update: Some(fleet_proto::v1::fleet_update::Update::Snapshot(
                fleet_proto::v1::Snapshot {
                    agents,
                    hosts: vec![],
                    more,
                },
            )),
            generated_at_unix_ms: 0,
        })),
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_can_neither_inject_into_a_terminal_nor_grow_the_aggregator() {
    use fleet_proto::v1::{AgentRow, Process};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    let mut agg = Aggregator::new(dir.path(), &pki, GRANTS, "");
    agg.start();
    // A host whose agents carry terminal escapes, and a row whose name is
    // no name.
    let (tx, _down) = raw_host(&pki, &agg, "acme", "box7", 7).await;
    let _down = _down.unwrap();
    let hostile = "\u{1b}]52;c;aGkK\u{7}\u{1b}[31mred";
    let rows = vec![
        AgentRow {
            name: "ok0".into(),
            process: Some(Process {
                pid: 1,
                name: hostile.into(),
                cmdline: hostile.into(),
            }),
            ..Default::default()
        },
        AgentRow {
            name: format!("bad{hostile}"),
            ..Default::default()
        },
    ];
    tx.send(snapshot(7, 1, rows, false)).await.unwrap();
    for (seq, agent) in [(1, format!("evil{hostile}")), (2, "ok0".to_owned())] {
        tx.send(HostMessage {
            msg: Some(host_message::Msg::Event(fleet_proto::v1::Event {
                seq,
                agent,
                kind: "started".into(),
                message: format!("said {hostile}"),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    }
    let doc = wait_ps(
        &pki,
        &agg,
        "alice",
        "box7's rows",
        Duration::from_secs(10),
        |d| !agents(d).is_empty(),
    )
    .await;
    let names: Vec<String> = agents(&doc)
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["ok0"], "a row whose name is no name is refused");
    let out = fleetctl_as(&pki, &agg, "alice", &["ps"], &[("COLUMNS", "400")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07),
        "raw escapes reached the terminal: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\\x1b"));
    // Events: the one naming no agent is refused; the other is printed
    // with its escapes shown.
    let out = fleetctl_as(&pki, &agg, "alice", &["events", "--no-follow"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07),
        "{text:?}"
    );
    assert!(
        text.contains("acme/box7/ok0") && !text.contains("evil"),
        "{text}"
    );
    eventually(
        "the refused row audited",
        Duration::from_secs(5),
        async || {
            agg.audit_lines()
                .iter()
                .any(|l| {
                    l["verb"] == "update" && l["target"] == "acme/box7" && l["kind"] == "security"
                })
                .then_some(())
                .ok_or_else(|| "no audit line yet".to_owned())
        },
    )
    .await;

    // A host sending "more to come" forever is cut off at its bound.
    let pid = agg.child.as_ref().unwrap().id();
    let before = rss_kib(pid);
    let (tx, down) = raw_host(&pki, &agg, "acme", "box8", 8).await;
    let mut down = down.unwrap();
    let big = |k: usize| AgentRow {
        name: format!("a{k}"),
        process: Some(Process {
            pid: 1,
            name: "x".into(),
            cmdline: "y".repeat(64 * 1024),
        }),
        ..Default::default()
    };
    let mut sent = 0;
    for chunk in 0..100u64 {
        let rows = (0..60).map(|k| big(chunk as usize * 60 + k)).collect();
        if tx.send(snapshot(8, chunk + 1, rows, true)).await.is_err() {
            break;
        }
        sent += 1;
    }
    // The link ends with RESOURCE_EXHAUSTED, said and audited.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(20), down.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => break None,
            Ok(Err(s)) => break Some(s),
            Err(_) => panic!("the link was never ended ({sent} chunks sent)"),
        }
    };
    if let Some(s) = &ended {
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    }
    let after = rss_kib(pid);
    eprintln!("aggregator RSS {before} KiB -> {after} KiB after {sent} chunks of ~3.9 MB");
    assert!(
        after < before + 160 * 1024,
        "the aggregator grew from {before} KiB to {after} KiB"
    );
    eventually("the bound audited", Duration::from_secs(5), async || {
        agg.audit_lines()
            .iter()
            .any(|l| {
                l["target"] == "acme/box8"
                    && l["outcome"].as_str().unwrap().contains("over its bounds")
            })
            .then_some(())
            .ok_or_else(|| "no audit line yet".to_owned())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hostd_with_one_identity_is_refused_not_allowed_to_flap() {
    let fed::OneHost {
        dir: _dir,
        pki,
        agg,
        host: mut box1,
    } = fed::one_linked_host(&["read"], ROSTER_BOX1, &[]).await;
    // Another process with box1's certificate and its own boot epoch.
    for attempt in 0..3 {
        let (_tx, down) = raw_host(&pki, &agg, "acme", "box1", 4242 + attempt).await;
        let err = down.unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
        assert!(err.message().contains("another hostd"), "{}", err.message());
    }
    let doc = wait_ps(
        &pki,
        &agg,
        "alice",
        "flagged",
        Duration::from_secs(5),
        |d| {
            hosts(d)[0]["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "duplicate-identity")
        },
    )
    .await;
    // The first keeps its link and its rows: nothing flapped.
    assert!(all_connected(&doc, 1, 2), "{doc:#}");
    assert_eq!(keys(&doc), ["acme/box1/coder0", "acme/box1/worker"]);
    let refusals = agg
        .audit_lines()
        .into_iter()
        .filter(|l| {
            l["kind"] == "security"
                && l["target"] == "acme/box1"
                && l["outcome"].as_str().unwrap().contains("another hostd")
        })
        .count();
    assert_eq!(refusals, 3);
    // A real restart still takes over at once.
    box1.kill_hostd();
    box1.start().await;
    wait_ps(
        &pki,
        &agg,
        "alice",
        "box1 back",
        Duration::from_secs(30),
        |d| all_connected(d, 1, 2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hostd_backs_off_says_so_once_and_recovers_when_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    let mut agg = Aggregator::new(dir.path(), &pki, GRANTS, "");
    agg.start();
    let (good_cert, good_key) = pki.host("acme", "box1");
    let (other_cert, other_key) = pki.host("acme", "box2");
    let (cert, key) = (dir.path().join("link.pem"), dir.path().join("link.key"));
    std::fs::copy(&good_cert, &cert).unwrap();
    std::fs::copy(&good_key, &key).unwrap();
    let config = format!(
        "link_refused_retry_secs = 1\naggregators = [\"{}\"]\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        agg.address(),
        pki.ca().display(),
        cert.display(),
        key.display()
    );
    let mut box1 = support::Fleet::with_identity("acme", "box1", ROSTER_BOX1, &config);
    box1.start().await;
    wait_ps(
        &pki,
        &agg,
        "alice",
        "linked",
        Duration::from_secs(30),
        |d| all_connected(d, 1, 2),
    )
    .await;
    // Its certificate is swapped for another host's (re-read within 5 s);
    // after an aggregator restart every Hello is refused.
    std::fs::copy(&other_cert, &cert).unwrap();
    std::fs::copy(&other_key, &key).unwrap();
    eventually("tls reloaded", Duration::from_secs(15), async || {
        box1.log()
            .contains("tls files reloaded")
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    agg.kill();
    agg.start();
    let uplink = |f: &support::Fleet| -> serde_json::Value {
        let out = f.fleetctl(&["hosts", "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["hosts"][0]["uplinks"][0].clone()
    };
    eventually("uplink refused", Duration::from_secs(20), async || {
        let u = uplink(&box1);
        (u["state"] == "refused")
            .then_some(u.clone())
            .ok_or(u.to_string())
    })
    .await;
    // Several refusals, each at least the configured second apart, and one
    // event for all of them.
    eventually("three refusals", Duration::from_secs(20), async || {
        let n = agg
            .audit_lines()
            .iter()
            .filter(|l| l["target"] == "acme/box1" && l["verb"] == "hello")
            .count();
        (n >= 3).then_some(()).ok_or(format!("{n} refusals"))
    })
    .await;
    let times: Vec<time::OffsetDateTime> = agg
        .audit_lines()
        .iter()
        .filter(|l| l["target"] == "acme/box1" && l["verb"] == "hello")
        .map(|l| {
            time::OffsetDateTime::parse(
                l["ts"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= time::Duration::milliseconds(900),
            "retried after {} (the floor is 1 s)",
            w[1] - w[0]
        );
    }
    let refused_events = box1
        .events()
        .await
        .iter()
        .filter(|e| e.kind == "uplink-refused")
        .count();
    assert_eq!(refused_events, 1);
    // Fixed: the right certificate in place; the link comes up on its own.
    std::fs::copy(&good_cert, &cert).unwrap();
    std::fs::copy(&good_key, &key).unwrap();
    eventually("linked once fixed", Duration::from_secs(30), async || {
        let u = uplink(&box1);
        (u["state"] == "connected").then_some(()).ok_or_else(|| {
            let log = box1.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            format!("{u}\n{}", tail.join("\n"))
        })
    })
    .await;
    box1.wait_event("recovered", |e| e.kind == "uplink-recovered")
        .await;
    assert_eq!(uplink(&box1)["state"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_is_one_audit_line_and_a_count_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut agg = Aggregator::new(dir.path(), &pki, GRANTS, "");
    agg.start();
    for _ in 0..300 {
        // Connects, speaks no TLS, hangs up.
        let mut s = tokio::net::TcpStream::connect(agg.address()).await.unwrap();
        use tokio::io::AsyncWriteExt;
        let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    }
    let lines = eventually("the window closed", Duration::from_secs(30), async || {
        let lines: Vec<serde_json::Value> = agg
            .audit_lines()
            .into_iter()
            .filter(|l| l["verb"] == "handshake")
            .collect();
        lines
            .iter()
            .any(|l| l["outcome"].as_str().unwrap().contains("more times"))
            .then_some(lines.clone())
            .ok_or(format!("{lines:#?}"))
    })
    .await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let summary = lines[1]["outcome"].as_str().unwrap();
    let n: u64 = summary
        .strip_prefix("refused ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // All 300 (and the start-up probe's connection) in two lines.
    assert!((299..=301).contains(&n), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_ends_or_refilters_open_streams_at_once() {
    use fleet_proto::v1::{EventsRequest, WatchFleetRequest, WatchScreenRequest, fleet_update};
    let Bed {
        dir: _dir,
        pki,
        agg,
        box1: _box1,
        box2: _box2,
        ..
    } = two_hosts(&["alice", "bob"]).await;
    let grants = |bob: &str| format!("{GRANTS_ALICE}{bob}");
    std::fs::write(
        &agg.authz,
        grants(
            "[operators.bob]\ntenants = [\"acme\", \"globex\"]\nverbs = [\"read\", \"watch\"]\n",
        ),
    )
    .unwrap();
    let mut bob = FleetClient::new(operator_channel(&pki, &agg, "bob"));
    eventually("bob sees globex", Duration::from_secs(10), async || {
        let n = bob
            .list_agents(ListAgentsRequest::default())
            .await
            .map(|r| r.into_inner().agents.len())
            .unwrap_or(0);
        (n == 4).then_some(()).ok_or(format!("{n} agents"))
    })
    .await;
    let mut fleet = bob
        .watch_fleet(WatchFleetRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut events = bob
        .events(EventsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut screen = bob
        .watch_screen(WatchScreenRequest {
            agent: "globex/box2/reviewer".into(),
            max_fps: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        screen.message().await.unwrap().is_some(),
        "the screen streams"
    );
    // globex is taken away from bob.
    std::fs::write(
        &agg.authz,
        grants("[operators.bob]\ntenants = [\"acme\"]\nverbs = [\"read\", \"watch\"]\n"),
    )
    .unwrap();
    // The screen of a globex agent ends, denied.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), screen.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("ended without saying why"),
            Ok(Err(s)) => break s,
            Err(_) => panic!("the screen kept streaming after the revocation"),
        }
    };
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended:?}");
    // The fleet view drops globex's rows.
    let removed = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), fleet.message())
            .await
            .expect("the view was not re-filtered")
            .unwrap()
            .unwrap();
        if let Some(fleet_update::Update::Delta(d)) = m.update
            && !d.removals.is_empty()
        {
            break d.removals;
        }
    };
    assert!(
        removed.iter().all(|k| k.tenant_id == "globex"),
        "{removed:?}"
    );
    assert_eq!(removed.len(), 2, "{removed:?}");
    // bob loses everything: both remaining streams end, denied.
    std::fs::write(&agg.authz, grants("")).unwrap();
    for (what, status) in [
        (
            "fleet",
            loop {
                match tokio::time::timeout(Duration::from_secs(10), fleet.message()).await {
                    Ok(Ok(Some(_))) => continue,
                    Ok(Err(s)) => break s,
                    other => panic!("fleet stream: {other:?}"),
                }
            },
        ),
        (
            "events",
            loop {
                match tokio::time::timeout(Duration::from_secs(10), events.message()).await {
                    Ok(Ok(Some(_))) => continue,
                    Ok(Err(s)) => break s,
                    other => panic!("events stream: {other:?}"),
                }
            },
        ),
    ] {
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{what}: {status:?}"
        );
    }
    let revoked = agg
        .audit_lines()
        .into_iter()
        .filter(|l| {
            l["who"] == "spiffe://fleet.test/operator/bob"
                && l["outcome"].as_str().unwrap().starts_with("revoked")
        })
        .count();
    assert_eq!(revoked, 3, "one audit line per stream ended");
}

/// A call no stub would make: bytes that are no protobuf, as operator
/// alice over mTLS.
const PY_GARBAGE: &str = r#"
import grpc, sys
ca, cert, key, addr = sys.argv[1:5]
creds = grpc.ssl_channel_credentials(open(ca, "rb").read(), open(key, "rb").read(), open(cert, "rb").read())
ch = grpc.secure_channel(addr, creds)
try:
    ch.unary_unary("/fleet.v1.Fleet/Send")(b"\xff\xff\xff\xff\x0f", timeout=10)
    print("accepted")
except grpc.RpcError as e:
    print("code", e.code().name)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_refused_at_decode_is_audited_too() {
    let python =
        std::env::var("FLEET_TEST_PYTHON").unwrap_or_else(|_| "/opt/fleet-py/bin/python3".into());
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.operator("alice");
    let mut agg = Aggregator::new(dir.path(), &pki, GRANTS, "");
    agg.start();
    let out = std::process::Command::new(python)
        .args(["-c", PY_GARBAGE])
        .arg(pki.ca())
        .arg(cert)
        .arg(key)
        .arg(format!("localhost:{}", agg.port))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("code "), "{said}{}", stderr(&out));
    let line = eventually("the refusal audited", Duration::from_secs(5), async || {
        agg.audit_lines()
            .into_iter()
            .find(|l| l["verb"] == "send")
            .ok_or_else(|| "no line".to_owned())
    })
    .await;
    assert_eq!(line["who"], "spiffe://fleet.test/operator/alice", "{line}");
    assert!(
        line["outcome"]
            .as_str()
            .unwrap()
            .starts_with("refused at decode"),
        "{line}"
    );
    assert_eq!(
        agg.audit_lines()
            .iter()
            .filter(|l| l["verb"] == "send")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregator_applies_selections_within_the_callers_grants() {
    let Bed {
        dir: _dir,
        pki,
        agg,
        box1: _box1,
        box2,
        ..
    } = two_hosts(&["alice", "bob"]).await;
    let names = |who: &str, args: &[&str]| -> Vec<String> {
        let mut all = vec!["ps", "-o", "name"];
        all.extend_from_slice(args);
        let out = fleetctl_as(&pki, &agg, who, &all, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names("alice", &["worker"]),
        ["acme/box1/worker", "globex/box2/worker"]
    );
    assert_eq!(
        names("alice", &["--host", "box[2]", "--tenant", "globex"]),
        ["globex/box2/reviewer", "globex/box2/worker"]
    );
    // A selection never widens a grant: bob asking for globex sees nothing.
    assert!(names("bob", &["--tenant", "globex"]).is_empty());
    let out = fleetctl_as(&pki, &agg, "alice", &["ps", "--summary", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["total"]["agents"], 4);
    assert_eq!(s["tenants"].as_array().unwrap().len(), 2);
    assert_eq!(s["hosts"][1]["link"], "connected");
    let out = fleetctl_as(&pki, &agg, "bob", &["ps", "--summary", "--json"], &[]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["total"]["agents"], 2, "{s}");
    let out = fleetctl_as(&pki, &agg, "alice", &["hosts", "-o", "name"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["acme/box1", "globex/box2"]
    );

    // A watch of alive panes: the one that dies on box2 is removed.
    let (cert, key) = pki.pair("operator-alice");
    let mut child = tokio::process::Command::new(support::bin("fleetctl"))
        .args(["--aggregator", &agg.address()])
        .arg("--ca")
        .arg(pki.ca())
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["ps", "--watch", "--json", "--pane", "alive"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value =
        serde_json::from_str(&out.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(keys(&first).len(), 4);
    let victim = box2
        .agents()
        .await
        .into_iter()
        .find(|a| a.name == "reviewer")
        .unwrap();
    support::kill(victim.pane_pid, rustix::process::Signal::KILL);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), out.next_line())
            .await
            .expect("the dead pane never left the selection")
            .unwrap()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        if !keys(&doc).iter().any(|k| k == "globex/box2/reviewer") {
            assert_eq!(keys(&doc).len(), 3, "{doc}");
            break;
        }
    }
}
