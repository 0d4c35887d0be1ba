//! Metrics with the real tools: a hostd and an aggregator serve
//! `/metrics`, `promtool check metrics` passes their text, and a real
//! Prometheus server scrapes both and answers the agent counts through
//! its HTTP API.
// Tests run real programs (tmux, hostd, the aggregator, prometheus).
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use support::fed::{Aggregator, Pki, ROSTER_BOX1 as ROSTER, fleetctl_as, link_config, wait_ps};

const GRANTS: &str = "\
[operators.alice]
tenants = [\"*\"]
verbs = [\"read\", \"send\"]
";

/// `GET path` over plain HTTP/1.0: (head, body).
fn get(addr: SocketAddr, path: &str, accept: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_owned(), body.to_owned())
}

/// The value of the one sample of `text` named `name` whose labels include
/// every one of `labels`, summed over the matches.
fn sum_of(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn promtool() -> String {
    std::env::var("FLEET_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

/// `promtool check metrics` on `text`: its verdict and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; deploy/prereqs.sh ensure_prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// hostd says where it serves metrics in its log.
async fn hostd_metrics_addr(f: &support::Fleet) -> SocketAddr {
    support::eventually(
        "hostd's metrics address",
        Duration::from_secs(10),
        async || {
            let log = f.log();
            log.lines()
                .filter(|l| l.contains("serving metrics"))
                .find_map(|l| {
                    l.split("listen=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .ok_or(log)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostd_and_the_aggregator_serve_metrics_promtool_passes_and_prometheus_scrapes_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    let mut agg = Aggregator::new(
        dir.path(),
        &pki,
        GRANTS,
        "metrics_listen = \"127.0.0.1:0\"\n",
    );
    agg.start();
    let agg_metrics = agg
        .metrics
        .expect("the aggregator's readiness names its metrics address");
    let mut host = support::Fleet::with_identity(
        "acme",
        "box1",
        ROSTER,
        &format!(
            "metrics_listen = \"127.0.0.1:0\"\n{}",
            link_config(&pki, &agg, "acme", "box1")
        ),
    );
    host.start().await;
    let host_metrics = hostd_metrics_addr(&host).await;
    wait_ps(
        &pki,
        &agg,
        "alice",
        "box1 linked",
        Duration::from_secs(30),
        |d| {
            support::fed::agents(d).len() == 2
                && support::fed::hosts(d)
                    .iter()
                    .any(|h| h["link"] == "connected")
        },
    )
    .await;
    // One send, so the send counters and the latency histogram have a
    // sample on both sides.
    let out = fleetctl_as(
        &pki,
        &agg,
        "alice",
        &["send", "acme/box1/worker", "counted", "--verify", "--json"],
        &[],
    );
    assert!(out.status.success(), "{out:?}");

    for (who, addr) in [("hostd", host_metrics), ("aggregator", agg_metrics)] {
        let text = support::eventually(
            &format!("{who}'s metrics with the send"),
            Duration::from_secs(15),
            async || {
                let (head, body) = get(addr, "/metrics", "*/*");
                (head.contains("text/plain; version=0.0.4")
                    && sum_of(&body, "fleet_sends_total", &["host=\"box1\""]) >= 1.0
                    && sum_of(&body, "fleet_agents", &["tenant=\"acme\"", "host=\"box1\""]) == 2.0)
                    .then_some(body.clone())
                    .ok_or(format!("{head}\n{body}"))
            },
        )
        .await;
        let (ok, said) = promtool_check(&text);
        assert!(
            ok,
            "promtool check metrics refused {who}'s text: {said}\n{text}"
        );
        assert!(
            sum_of(&text, "fleet_send_verdict_seconds_count", &[]) >= 1.0,
            "{who}: {text}"
        );
        assert!(
            sum_of(
                &text,
                "fleet_certificate_expiry_seconds",
                &["role=\"certificate\""]
            ) > 86_400.0,
            "{who}'s certificate expires in more than a day: {text}"
        );
        assert!(
            sum_of(&text, "fleet_certificate_expiry_seconds", &["role=\"ca\""]) > 86_400.0,
            "{who}: {text}"
        );
        // OpenMetrics for a scraper that asks for it.
        let (head, body) = get(
            addr,
            "/metrics",
            "application/openmetrics-text; version=1.0.0",
        );
        assert!(head.contains("application/openmetrics-text"), "{head}");
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
    }
    let (_, h) = get(host_metrics, "/metrics", "*/*");
    assert!(
        sum_of(&h, "fleet_tmux_call_seconds_count", &["client=\"control\""]) >= 1.0,
        "{h}"
    );
    let (_, a) = get(agg_metrics, "/metrics", "*/*");
    assert_eq!(
        sum_of(&a, "fleet_aggregator_hosts", &["state=\"connected\""]),
        1.0,
        "{a}"
    );
    assert!(
        sum_of(&a, "fleet_aggregator_links_up_total", &[]) >= 1.0,
        "{a}"
    );
    assert!(
        sum_of(
            &a,
            "fleet_aggregator_relay_seconds_count",
            &["verb=\"send\""]
        ) >= 1.0,
        "{a}"
    );

    // A real Prometheus scrapes both and answers the agent counts.
    let prom =
        support::prom::Prometheus::start(&[("hostd", host_metrics), ("aggregator", agg_metrics)]);
    for job in ["hostd", "aggregator"] {
        let q = format!("sum(fleet_agents{{job=\"{job}\",tenant=\"acme\",host=\"box1\"}})");
        support::eventually(
            &format!("prometheus's answer for {job}"),
            Duration::from_secs(30),
            async || {
                let v = prom.query(&q);
                let n = v["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|s| s.parse::<f64>().ok());
                (n == Some(2.0)).then_some(()).ok_or(format!("{v}"))
            },
        )
        .await;
    }
}
